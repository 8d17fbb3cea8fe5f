"""Muon-HD: ``torch.optim.Muon`` whose learning rate learns online; and the usual recipe, Muon
for the hidden weight matrices and AdamW for the rest, as one optimizer (see docs/muon.md)."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ._kernels import LearningRate, descend, direction_buffer
from ._keywords import rule_hypergrad_lr
from ._validation import check_adam_arguments, check_lr, check_muon_arguments
from .adam import AdamWHD
from .optimizer import GroupTensors, HypergradOptimizer, PreviousDirections

__all__ = ["MuonHD", "MuonWithAdamWHD", "muon_param_groups"]

#: torch.optim.Muon's defaults (Keller Jordan's quintic Newton-Schulz coefficients).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
EPS = 1e-7


class MuonHD(HypergradOptimizer):
    r"""Muon (momentum orthogonalised by Newton-Schulz iterations, for 2-D weight matrices) whose
    learning rate adapts online by hypergradient descent.

    Every argument of :class:`torch.optim.Muon` keeps its name, default and meaning; with
    ``hypergrad_lr=0`` this is exactly ``torch.optim.Muon``, and checkpoints load both ways.
    Only 2-D parameters, as there (the same ``ValueError``); give biases, norms, embeddings and
    the output layer to AdamW, e.g. through :class:`MuonWithAdamWHD`.

    .. math::
        \begin{aligned}
            &B_t = \mu B_{t-1} + (1 - \mu)\, g_t \quad(B_0 = 0), \qquad
                \tilde B_t = (1 - \mu)\, g_t + \mu B_t \ (\text{nesterov}),
                \ \tilde B_t = B_t \ (\text{otherwise}) \\
            &O_t = \mathrm{NS}_k^{(a,b,c)}(\tilde B_t;\ \epsilon), \qquad
                \rho = \sqrt{\max(1, A/B)}\ (\text{original}),
                \ \rho = 0.2 \sqrt{\max(A, B)}\ (\text{match\_rms\_adamw}) \\
            &u_t = \lambda\, \theta_{t-1} + \rho\, O_t, \qquad
                \theta_t = \theta_{t-1}(1 - \alpha_t \lambda) - \alpha_t \rho\, O_t
                = \theta_{t-1} - \alpha_t u_t \\
            &\alpha_t = \alpha_{t-1} + \beta\, g_t \cdot u_{t-1}
                \quad\text{or}\quad \alpha_{t-1}\bigl(1 + \beta\cos(g_t, u_{t-1})\bigr)
                \quad\text{or the scale-free rule}
        \end{aligned}

    ``A x B`` is the parameter's shape, ``lambda`` the (decoupled) weight decay, which torch
    scales by the rate and so belongs to the direction, as AdamW's does. The Newton-Schulz
    iterations are torch's, in bfloat16 (see :func:`orthogonalised`). Memory: one buffer,
    ``state["hypergrad_direction"]`` (``u_{t-1}``: ``O_{t-1}`` cannot be had again without
    another Newton-Schulz pass). Cost: the buffer's write and the dot products, against the
    ``k`` pairs of matrix products that dominate a Muon step (docs/muon.md).

    Args:
        params: 2-D parameters or param groups; a group may override any setting.
        lr: initial learning rate ``alpha_0`` (default 1e-3, as torch); afterwards
            ``param_groups[i]["lr"]`` holds the adapted one.
        weight_decay, momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn: as in
            ``torch.optim.Muon`` (``ns_steps`` in [0, 100), ``adjust_lr_fn`` one of None,
            ``"original"`` and ``"match_rms_adamw"``).
        hypergrad_lr: ``beta``; ``None`` (the default) is the rule's own: 0.05 for the
            scale-free rule; 1e-6 for the additive and multiplicative rules (``g . u`` grows
            like the gradient's nuclear norm, between SGD's ``|g|^2`` and Adam's ``sum |g_i|``).
        hypergrad_rule, lr_bounds, granularity, lr_limit, lr_limit_power, first_step_bound: see
            :class:`hypergrad.HypergradOptimizer`.
    """

    paper_hypergrad_lr = 1e-6
    check_base_arguments = staticmethod(check_muon_arguments)

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
        eps: float = EPS,
        ns_steps: int = NS_STEPS,
        adjust_lr_fn: str | None = None,
        **hypergrad: Any,
    ) -> None:
        defaults = dict(
            lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
            ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn,
            maximize=False, foreach=None,
        )
        super().__init__(params, defaults, **hypergrad)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch.optim's, refusing a parameter that is not a real 2-D matrix (torch's error for
        the shape), here for groups added later too."""
        check_matrices(param_group)
        super().add_param_group(param_group)

    def _init_state(self, group: dict[str, Any], param: Tensor, state: dict[str, Any]) -> None:
        muon_init_state(param, state)

    def _coupled_weight_decay(self, group: dict[str, Any]) -> float:
        return 0.0

    def _previous_directions(self, group: dict[str, Any], tensors: GroupTensors) -> PreviousDirections:
        return muon_previous_directions(tensors)

    def _update_params(self, group: dict[str, Any], tensors: GroupTensors, lr: LearningRate) -> None:
        muon_update(group, tensors, lr)


def check_matrices(param_group: dict[str, Any]) -> None:
    """Every parameter of a Muon group a real 2-D tensor: torch.optim.Muon's ``ValueError`` for
    another shape; a complex one is refused too (torch refuses it at the step)."""
    params = param_group["params"]
    params = param_group["params"] = [params] if isinstance(params, Tensor) else list(params)
    for p in params:
        if isinstance(p, Tensor) and p.ndim != 2:
            raise ValueError(f"Muon only supports 2D parameters whereas we found a parameter with size: {p.size()}")
        if isinstance(p, Tensor) and p.is_complex():
            raise ValueError("Invalid params: Muon does not support complex parameters")


def muon_init_state(param: Tensor, state: dict[str, Any]) -> None:
    """torch.optim.Muon's state: ``momentum_buffer``, zeros before the first step."""
    if "momentum_buffer" not in state:
        state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)


def muon_previous_directions(tensors: GroupTensors) -> PreviousDirections:
    """``u_{t-1}``, kept by the last step (a parameter at its first step has none: ``u_0 = 0``)."""
    indices = [i for i, s in enumerate(tensors.states) if "hypergrad_direction" in s]
    return PreviousDirections(indices, [tensors.states[i]["hypergrad_direction"] for i in indices])


def adjusted_ratio(adjust_lr_fn: str | None, shape: Sequence[int]) -> float:
    """``rho``, the factor torch.optim.Muon applies to the rate of an ``A x B`` matrix:
    ``sqrt(max(1, A / B))`` (``"original"``, the default) or ``0.2 sqrt(max(A, B))``
    (``"match_rms_adamw"``)."""
    rows, columns = shape[0], shape[1]
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, columns))
    return math.sqrt(max(1, rows / columns))


def orthogonalised(matrix: Tensor, coefficients: tuple[float, float, float], steps: int, eps: float) -> Tensor:
    """``NS_k^{(a,b,c)}(M; eps)``: ``X_0 = M / max(|M|_F, eps)`` (the wide orientation), then
    ``k`` times ``X <- a X + (b A + c A^2) X`` with ``A = X X^T``: roughly ``U V^T`` of
    ``M = U S V^T``. In bfloat16 with torch.optim.Muon's operations in its order, so that the
    result is torch's bit for bit; on a copy (torch divides a bfloat16 input in place, which
    corrupts its momentum buffer for bfloat16 parameters without Nesterov)."""
    a, b, c = coefficients
    x = matrix.to(torch.bfloat16, copy=True)
    tall = matrix.size(0) > matrix.size(1)
    if tall:
        x = x.T
    x.div_(x.norm().clamp(min=eps))
    for _ in range(steps):
        gram = x @ x.T
        polynomial = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, polynomial, x, beta=a)
    return x.T if tall else x


def muon_update(group: dict[str, Any], tensors: GroupTensors, lr: LearningRate) -> None:
    """torch.optim.Muon's step, arithmetic for arithmetic, keeping ``u_t = lambda theta_{t-1} +
    rho O_t`` in ``state["hypergrad_direction"]`` before the parameter moves."""
    momentum, weight_decay = group["momentum"], group["weight_decay"]
    for param, grad, state in zip(tensors.params, tensors.grads, tensors.states):
        buf = state["momentum_buffer"]
        buf.lerp_(grad, 1 - momentum)
        update = grad.lerp(buf, momentum) if group["nesterov"] else buf
        update = orthogonalised(update, group["ns_coefficients"], group["ns_steps"], group["eps"])
        ratio = adjusted_ratio(group["adjust_lr_fn"], param.shape)
        direction = direction_buffer(state, param)
        if weight_decay != 0:
            torch.mul(param, weight_decay, out=direction).add_(update, alpha=ratio)
            param.mul_(1 - lr * weight_decay)
        else:
            direction.copy_(update).mul_(ratio)  # in the parameter's dtype, not bfloat16's
        descend(param, update, lr * ratio)


class MuonWithAdamWHD(HypergradOptimizer):
    r"""The usual Muon recipe as one hypergradient optimizer: Muon (:class:`MuonHD`) for the
    param groups with ``"use_muon": True`` (the hidden weight matrices), AdamW
    (:class:`hypergrad.AdamWHD`) for those with ``"use_muon": False`` (embeddings, the output
    layer, norms, biases, convolutions); each group adapts its own rate.

    One optimizer, so that one lr scheduler, one ``state_dict``, ``learning_rates`` and the
    integrations (Lightning, Hugging Face, timm) see every parameter. :func:`muon_param_groups`
    makes the groups::

        optimizer = MuonWithAdamWHD(muon_param_groups(model), lr=0.02, adamw_lr=3e-4)

    Each group holds the settings of its base rule under torch's names (a Muon group
    ``momentum``, ``ns_steps``, ...; an AdamW group ``betas``, ``amsgrad``, ...; both ``lr``,
    ``eps`` and ``weight_decay``), filled from this constructor: Muon's arguments as in
    :class:`torch.optim.Muon`, AdamW's with an ``adamw_`` prefix and torch.optim.AdamW's
    defaults. With ``hypergrad_lr=0`` the Muon groups step exactly as ``torch.optim.Muon`` and
    the AdamW groups as ``torch.optim.AdamW``; ``hypergrad_lr=None`` is each base rule's default
    beta (the same 0.05 under the scale-free rule).

    Args:
        params: param groups, each with ``"use_muon"`` (a bool); every parameter of a Muon group
            2-D.
        lr, weight_decay, momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn: the
            Muon groups' defaults, as :class:`MuonHD`'s.
        adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay, adamw_amsgrad: the AdamW groups'
            ``lr``, ``betas``, ``eps``, ``weight_decay`` and ``amsgrad``, as
            ``torch.optim.AdamW``'s.
        hypergrad_lr, hypergrad_rule, lr_bounds, granularity, lr_limit, lr_limit_power, first_step_bound:
            every group's (a group may override them); see :class:`hypergrad.HypergradOptimizer`.
    """

    paper_hypergrad_lr = MuonHD.paper_hypergrad_lr

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
        eps: float = EPS,
        ns_steps: int = NS_STEPS,
        adjust_lr_fn: str | None = None,
        *,
        adamw_lr: float | Tensor = 1e-3,
        adamw_betas: tuple[float, float] = (0.9, 0.999),
        adamw_eps: float = 1e-8,
        adamw_weight_decay: float = 1e-2,
        adamw_amsgrad: bool = False,
        **hypergrad: Any,
    ) -> None:
        muon = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                    ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn)
        adamw = dict(lr=adamw_lr, betas=adamw_betas, eps=adamw_eps, weight_decay=adamw_weight_decay,
                     amsgrad=adamw_amsgrad, decoupled_weight_decay=True, fused=None)
        check_lr(adamw_lr, "adamw_lr")
        adamw.update(check_adam_arguments(adamw))
        muon.update(check_muon_arguments(muon))
        # Each kind's settings fill its groups; the optimizer's own defaults are only what every
        # group shares (torch.optim would copy each of them into every group).
        self._kind_defaults = {True: muon, False: adamw}
        super().__init__(params, dict(lr=lr, maximize=False, foreach=None), **hypergrad)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_kind_defaults": self._kind_defaults}

    @staticmethod
    def check_base_arguments(settings: Any) -> dict[str, Any]:
        """The group's base rule's checks (none for the shared defaults, whose kinds' settings
        the constructor checked)."""
        if "use_muon" not in settings:
            return {}
        return check_muon_arguments(settings) if settings["use_muon"] else check_adam_arguments(settings)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """A Muon or an AdamW group, by its ``"use_muon"``, filled with that kind's settings
        (``hypergrad_lr=None``: that base rule's default beta for the group's rule)."""
        use_muon = param_group.get("use_muon")
        if not isinstance(use_muon, bool):
            raise ValueError(
                f"Invalid param group: 'use_muon' must be True (Muon) or False (AdamW), got {use_muon!r}; "
                "hypergrad.muon_param_groups(model) makes both groups"
            )
        param_group = {**self._kind_defaults[use_muon], **param_group}
        if use_muon:
            check_matrices(param_group)
        if param_group.get("hypergrad_lr", self.defaults["hypergrad_lr"]) is None:
            rule = param_group.get("hypergrad_rule", self.defaults["hypergrad_rule"])
            paper = (MuonHD if use_muon else AdamWHD).paper_hypergrad_lr
            param_group["hypergrad_lr"] = rule_hypergrad_lr(rule, paper)
        super().add_param_group(param_group)

    # The two base rules' pieces, by group; each reads only its group and the shared machinery.
    def _init_state(self, group: dict[str, Any], param: Tensor, state: dict[str, Any]) -> None:
        if group["use_muon"]:
            muon_init_state(param, state)
        else:
            AdamWHD._init_state(self, group, param, state)  # type: ignore[arg-type]

    def _coupled_weight_decay(self, group: dict[str, Any]) -> float:
        return 0.0

    def _previous_directions(self, group: dict[str, Any], tensors: GroupTensors) -> PreviousDirections:
        if group["use_muon"]:
            return muon_previous_directions(tensors)
        return AdamWHD._previous_directions(self, group, tensors)  # type: ignore[arg-type]

    def _update_params(self, group: dict[str, Any], tensors: GroupTensors, lr: LearningRate) -> None:
        if group["use_muon"]:
            muon_update(group, tensors, lr)
        else:
            AdamWHD._update_params(self, group, tensors, lr)  # type: ignore[arg-type]

    def _finish_step(self, group: dict[str, Any], tensors: GroupTensors) -> None:
        if not group["use_muon"]:
            AdamWHD._finish_step(self, group, tensors)  # type: ignore[arg-type]

    _unwritten = AdamWHD._unwritten


_EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)


def muon_param_groups(
    model: nn.Module,
    *,
    output: nn.Module | str | None = None,
    muon: Iterable[str] = (),
    adamw: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """The usual Muon split of a model's trainable parameters, as param groups for
    :class:`MuonWithAdamWHD`: ``{"params": [...], "use_muon": True, "name": "muon"}`` for the
    hidden weight matrices and ``{..., "use_muon": False, "name": "adamw"}`` for everything
    else (a group without parameters is left out).

    By shape and by role: a parameter goes to Muon when it is 2-D and belongs neither to an
    embedding (``nn.Embedding``, ``nn.EmbeddingBag``; a weight tied to one counts as one) nor to
    the output layer. Biases, norms' gains, convolution kernels (4-D: ``torch.optim.Muon``
    takes 2-D parameters only) and every other shape go to AdamW.

    Args:
        model: the model whose trainable parameters (``requires_grad``) to split.
        output: the output layer, as a submodule or its name; ``None`` (the default): the last
            ``nn.Linear`` the model registers (a classifier's or a language model's read-out).
        muon, adamw: parameter names (``model.named_parameters()``'s) or ``fnmatch`` patterns
            (``"blocks.*.attn.*"``) forced into that group, over the rules above; each must
            match a trainable parameter, none both lists, and a forced Muon parameter must be 2-D.
    """
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    forced = {True: _matched(named, muon, "muon"), False: _matched(named, adamw, "adamw")}
    both = forced[True] & forced[False]
    if both:
        raise ValueError(f"Invalid muon and adamw: {sorted(both)} match both")
    excluded = {id(p) for module in model.modules() if isinstance(module, _EMBEDDINGS) for p in module.parameters()}
    excluded.update(id(p) for p in _output_layer(model, output).parameters())
    groups: dict[bool, list[Tensor]] = {True: [], False: []}
    for name, p in named:
        use_muon = name in forced[True] or (name not in forced[False] and p.ndim == 2 and id(p) not in excluded)
        if use_muon and p.ndim != 2:
            raise ValueError(f"Invalid muon: {name!r} has shape {tuple(p.shape)} (Muon takes 2-D parameters only)")
        groups[use_muon].append(p)
    return [
        {"params": params, "use_muon": use_muon, "name": "muon" if use_muon else "adamw"}
        for use_muon, params in groups.items() if params
    ]


def _matched(named: list[tuple[str, Tensor]], patterns: Iterable[str], argument: str) -> set[str]:
    """The names that ``patterns`` match; ``ValueError`` naming a pattern that matches none."""
    if isinstance(patterns, str):
        raise TypeError(f"{argument} must be an iterable of names or patterns, not a str")
    matched: set[str] = set()
    for pattern in patterns:
        hits = {name for name, _ in named if fnmatch.fnmatchcase(name, pattern)}
        if not hits:
            raise ValueError(f"Invalid {argument}: {pattern!r} matches no trainable parameter")
        matched |= hits
    return matched


def _output_layer(model: nn.Module, output: nn.Module | str | None) -> nn.Module:
    """The output layer: the module or name given, else the last ``nn.Linear`` registered (an
    empty module where there is none)."""
    if isinstance(output, str):
        try:
            return model.get_submodule(output)
        except AttributeError as error:
            raise ValueError(f"Invalid output: {output!r} is not a submodule of the model") from error
    if output is not None:
        if not any(module is output for module in model.modules()):
            raise ValueError("Invalid output: it must be a submodule of the model (or its name)")
        return output
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    return linears[-1] if linears else nn.Module()
