"""The rule study (docs/rule-study.md): how each hypergradient rule fares from every initial rate.

For each candidate rule, base optimizer and alpha_0, one run of a benchmark workload (the
``--quick`` sizes of ``python -m experiments benchmark``, seed 1, one torch thread), reported as

* ``ratio``: the validation loss after N steps (the workload's target-setting length, as the
  sensitivity study runs) over the best the base optimizer reaches from any alpha_0 of
  ``BASE_ALPHA0S`` in N steps (``inf``: diverged). The goal: <= 1.25 from every alpha_0.
* with ``--steps``, also ``reach``: the step at which a 2N-step run first reaches the
  benchmark's ``--quick`` target (evaluated every N/5 steps, as the benchmark does; ``-``: never);
* the rate after 1, 10, 20, 40 and N steps.

The library's named rules (``scalefree``, ``bracket``, ...) run as users run them
(``hypergrad_rule=NAME``). The prototypes the study tried and dropped are written out below as
plain-float rules, one rate per group, added to the rules registry under ``probe_NAME`` (its
documented way to add a rule). The relative bound on the first update (``+bound``) is the
library's ``first_step_bound=0.1`` (it began here as a step wrapper); without ``+bound`` a run
takes ``first_step_bound=None``, so that every rule is measured alone. The bounds ``+tight``
(0.02, first update) and ``+every`` (0.1, every update) and the start below alpha_0 (``+start``)
wrap the optimizer's step;
``gain_cap`` bounds every rate predictively, ``alpha_t <= 0.1 |theta_{t-1}| / |u_{t-1}|``.

    python benchmarks/rule_probe.py --rules scalefree,bracket --optimizers sgdn,adam
    python benchmarks/rule_probe.py --rules bracket+bound --alpha0s 1e-5,1e-3,0.1 --steps
    python benchmarks/rule_probe.py --list

Each run is cached in ``--cache`` (default ``results/rule_probe``) under its settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import torch

import hypergrad
from experiments.core.methods import METHODS, Method, MethodSettings
from experiments.core.runs import train
from experiments.core.workloads import WORKLOADS, load_workload_data
from hypergrad._rules import DOT_AND_NORMS, FLOAT_OPS, RULES, Rule, bracket, register, scalefree

TARGETS = {"logreg_mnist": 0.9025, "mlp_mnist": 0.926, "cnn_fashion": 0.708, "transformer_fortunes": 2.825,
           "mlp_diabetes": 4041.0, "fullbatch_breast_cancer": 0.1689}
"""The benchmark's ``--quick`` targets (docs/benchmark.md)."""
BASE_ALPHA0S = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
OPTIMIZERS: dict[str, tuple[str, Callable]] = {
    "adam": ("adam", lambda params, lr, **hd: hypergrad.AdamHD(params, lr=lr, **hd)),
    "sgdn": ("sgdn", lambda params, lr, **hd: hypergrad.SGDHD(params, lr=lr, momentum=0.9, nesterov=True, **hd)),
    "sgd": ("sgdn", lambda params, lr, **hd: hypergrad.SGDHD(params, lr=lr, **hd)),
    "sgdm": ("sgdn", lambda params, lr, **hd: hypergrad.SGDHD(params, lr=lr, momentum=0.9, **hd)),
}
"""name -> (the torch.optim base its ratio is taken against, constructor taking the HD keywords)."""
BASES = {"adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
         "sgdn": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True)}
LN2 = math.log(2.0)
CONTEXT: dict[str, float | None] = {}
"""What the step wrappers measure for the prototypes: ``theta_sq``, ``|theta_{t-1}|^2``."""


# -- prototypes: plain floats, one rate, memory a list ----------------------------------------------
def _moments(memory, c, mu=0.9, nu=0.99):
    m = mu * memory[0] + (1 - mu) * c
    v = nu * memory[1] + (1 - nu) * c * c
    return m, v, (max(-1.0, min(1.0, m / math.sqrt(v))) if v > 0 else 0.0)


def _guard(memory, g_squared, kappa=16.0, rho=0.9):
    """The scale-free rule's guard on |g|^2 (memory[2] its running mean); True when it fires."""
    reference = memory[2]
    memory[2] = rho * reference + (1 - rho) * g_squared if reference > 0 else g_squared
    return reference > 0 and g_squared > kappa * reference


def rprop(d0=0.05, up=1.5, down=0.5, dmin=1e-3, dmax=LN2, smoothed=False):
    """Rprop on log alpha: the step grows x up while the cosine's sign (or with ``smoothed`` the sign
    of the scale-free m/sqrt(v)) holds, x down when it flips. memory: m, v, r, delta, sign."""
    def rule(memory, lr, c, g_squared):
        memory[3] = memory[3] or d0
        memory[0], memory[1], s = _moments(memory, c)
        signal = s if smoothed else c
        sign = (signal > 0) - (signal < 0)
        if _guard(memory, g_squared):
            memory[0], memory[3], memory[4] = min(memory[0], 0.0), max(memory[3] * down, dmin), -1
            return lr / 2
        if sign == 0:
            return lr
        if sign == memory[4]:
            memory[3] = min(memory[3] * up, dmax)
        elif memory[4] != 0:
            memory[3] = max(memory[3] * down, dmin)
        memory[4] = sign
        return lr * math.exp(memory[3] * sign)
    return rule


def gain(beta=0.05, up=1.5, cap=16.0, down=None, agree=True):
    """Scale-free steps times a gain that grows x up while s_t keeps its sign (and, with ``agree``,
    the newest cosine agrees with it), back to 1 otherwise (with ``down``: x down when the cosine
    disagrees). memory: m, v, r, gain, sign."""
    def rule(memory, lr, c, g_squared):
        memory[3] = memory[3] or 1.0
        memory[0], memory[1], s = _moments(memory, c)
        if _guard(memory, g_squared):
            memory[0], memory[3], memory[4] = min(memory[0], 0.0), 1.0, -1
            return lr / 2
        sign = (s > 0) - (s < 0)
        if down is None:
            holds = sign != 0 and sign == memory[4] and (not agree or c * s > 0)
            memory[3] = min(memory[3] * up, cap) if holds else 1.0
        elif sign != memory[4]:
            memory[3] = 1.0
        elif c * s > 0:
            memory[3] = min(memory[3] * up, cap)
        elif c * s < 0:
            memory[3] = max(memory[3] * down, 1.0)
        memory[4] = sign
        return lr * math.exp(beta * memory[3] * s)
    return rule


def delta_bar_delta(kappa=0.05, phi=0.5, theta=0.7, d0=0.05, dmax=2.0):
    """Jacobs' delta-bar-delta on log alpha: its step size grows by kappa while the cosine agrees with
    its running average, shrinks x phi when not; log alpha moves by step * c_t. memory: bar, -, r, step."""
    def rule(memory, lr, c, g_squared):
        memory[3] = memory[3] or d0
        bar = memory[0]
        if _guard(memory, g_squared):
            memory[3], memory[0] = max(memory[3] * phi, 1e-3), min(bar, 0.0)
            return lr / 2
        if c * bar > 0:
            memory[3] = min(memory[3] + kappa, dmax)
        elif c * bar < 0:
            memory[3] *= phi
        memory[0] = (1 - theta) * c + theta * bar
        return lr * math.exp(max(-LN2, min(LN2, memory[3] * c)))
    return rule


def capped(rule, r=0.1):
    """``rule``, then alpha_t <= r |theta_{t-1}| / |u_{t-1}| (|theta|^2 from the step wrapper)."""
    def bounded(memory, lr, c, g_squared, u_squared=None):
        new = rule(memory, lr, c, g_squared)
        theta_sq = CONTEXT.get("theta_sq") or 0.0
        if theta_sq > 0 and u_squared:
            new = min(new, r * math.sqrt(theta_sq / u_squared))
        return new
    return bounded


def horizon(beta=0.05, mu=0.99, nu=0.999):
    """The scale-free rule with a ten times longer horizon for its signal: the cosine's averages
    over about 100 steps (``mu = 0.99``, ``nu = 0.999``) instead of about 10, so that the rate
    follows the trend of the hypergradient rather than the last few minibatches (the
    short-horizon bias). memory: m, v, r."""
    def rule(memory, lr, c, g_squared):
        memory[0], memory[1], s = _moments(memory, c, mu, nu)
        if _guard(memory, g_squared):
            memory[0] = min(memory[0], 0.0)
            return lr / 2
        return lr * math.exp(beta * s)
    return rule


def library_rule(math_function, beta=0.05, while_growing=False, r=0.1):
    """A library rule's math (``hypergrad._rules``) on plain floats with the predictive cap
    ``alpha_t <= r |theta_{t-1}| / |u_{t-1}|``: at every step, or (``while_growing``) only while
    the bracketing rule's phase ``p < 2`` (its climb and first move back). memory: the rule's."""
    def rule(memory, lr, c, g_squared, u_squared=None):
        statistics = [c * math.sqrt(g_squared * u_squared), g_squared, u_squared]
        new, updated = math_function(FLOAT_OPS, lr, statistics, beta, memory)
        memory[:len(updated)] = updated
        growing = not while_growing or memory[4] < 2
        theta_sq = CONTEXT.get("theta_sq") or 0.0
        if growing and theta_sq > 0 and u_squared:
            new = min(new, r * math.sqrt(theta_sq / u_squared))
        return new
    return rule


def gated_bracket(tau=0.01, beta=0.05):
    """The library's bracketing rule whose gain may carry the rate only up to where the update
    predicted from the previous direction moves the weights by ``tau`` of their norm,
    ``alpha |u_{t-1}| <= tau |theta_{t-1}|``: a rate that moves the weights by less is certainly
    too small, one that moves them by more may be in the good range, where the one-step signal
    must be followed at the scale-free rule's speed. The scale-free step itself is not gated."""
    def rule(memory, lr, c, g_squared, u_squared=None):
        statistics = [c * math.sqrt(g_squared * u_squared), g_squared, u_squared]
        plain_memory = list(memory)
        plain, _ = scalefree(FLOAT_OPS, lr, statistics, beta, plain_memory[:3])
        gained, updated = bracket(FLOAT_OPS, lr, statistics, beta, memory)
        memory[:len(updated)] = updated
        theta_sq = CONTEXT.get("theta_sq") or 0.0
        if gained > plain and theta_sq > 0 and u_squared:
            return max(plain, min(gained, tau * math.sqrt(theta_sq / u_squared)))
        return gained
    return rule


def traced(beta=0.05):
    """The scale-free rule on the cosine of ``g_t`` with a trace of the recent updates instead of the
    last direction, ``E_{t-1} = gamma E_{t-2} + (theta_{t-2} - theta_{t-1})`` (``trace_cosine`` from
    the step wrapper :func:`trace_updates`): the signal "did the last ~1/(1-gamma) steps move
    downhill along the current gradient", a longer horizon by construction (MetaOptimize's
    eligibility trace, without its Hessian term). memory: m, v, r."""
    def rule(memory, lr, c, g_squared):
        c = CONTEXT.get("trace_cosine")
        if c is None:
            return lr
        memory[0], memory[1], s = _moments(memory, c)
        if _guard(memory, g_squared):
            memory[0] = min(memory[0], 0.0)
            return lr / 2
        return lr * math.exp(beta * s)
    return rule


PROTOTYPES: dict[str, Callable] = {
    "trace90": traced(), "trace97": traced(),
    "bracket_gate": gated_bracket(),
    "bracket_cap": library_rule(bracket), "bracket_capgrow": library_rule(bracket, while_growing=True),
    "scalefree_cap": library_rule(scalefree),
    "rprop": rprop(), "rprop_smoothed": rprop(smoothed=True), "gain": gain(), "gain_any": gain(agree=False),
    "gain2": gain(up=2.0, cap=14.0, down=0.5), "gain15": gain(up=1.5, cap=14.0, down=0.5),
    "dbd": delta_bar_delta(), "gain_cap": capped(gain()), "gain_cap03": capped(gain(), 0.03),
    "horizon": horizon(),
}
"""The prototypes tried (docs/rule-study.md); ``probe_NAME`` in the registry."""


def _registered(name: str, rule: Callable) -> str:
    key = f"probe_{name}"
    if key in RULES:
        return key

    def update(lr, statistics, beta, memory):
        dot, g_squared, u_squared = (float(x) for x in statistics[:3])
        rate = float(lr)
        values = [float(x) for x in memory]
        if not all(math.isfinite(x) for x in (dot, g_squared, u_squared)):
            return torch.as_tensor(rate / 2, dtype=torch.float64)
        if g_squared * u_squared <= 0:
            return torch.as_tensor(rate, dtype=torch.float64)
        c = dot / math.sqrt(g_squared * u_squared)
        extra = {"u_squared": u_squared} if "u_squared" in rule.__code__.co_varnames else {}
        new = rule(values, rate, c, g_squared, **extra)
        memory.copy_(torch.tensor(values, dtype=memory.dtype))
        return torch.as_tensor(new, dtype=torch.float64)

    register(Rule(key, update, DOT_AND_NORMS, memory=("a", "b", "c", "d", "e")))
    return key


# -- step wrappers -----------------------------------------------------------------------------------
def update_bound(optimizer, r: float, every: bool = False) -> None:
    """The first step (with ``every``, each step) moves the parameters by at most ``r |theta|``
    (the step is scaled back after the fact, exactly: no base rule's direction depends on the
    rate), and the rate with it."""
    step, taken = optimizer.step, []

    def bounded(closure=None):
        if taken and not every:
            return step(closure)
        taken.append(True)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        before = [p.detach().clone() for p in params]
        loss = step(closure)
        with torch.no_grad():
            moved = math.sqrt(sum(float((p - b).pow(2).sum()) for p, b in zip(params, before)))
            size = math.sqrt(sum(float(b.pow(2).sum()) for b in before))
            if size > 0 and moved > r * size:
                scale = r * size / moved
                for p, b in zip(params, before):
                    p.copy_(b + (p - b) * scale)
                for group in optimizer.param_groups:
                    group["lr"] = group["lr"] * scale
        return loss

    optimizer.step = bounded


def measure_theta(optimizer) -> None:
    """|theta_{t-1}|^2 into CONTEXT before each step (for the ``capped`` prototypes)."""
    step = optimizer.step
    params = [p for group in optimizer.param_groups for p in group["params"]]

    def measured(closure=None):
        with torch.no_grad():
            CONTEXT["theta_sq"] = sum(float(p.pow(2).sum()) for p in params)
        return step(closure)

    optimizer.step = measured


def trace_updates(optimizer, gamma: float) -> None:
    """Keep ``E`` (see :func:`traced`) and put ``cos(g_t, E_{t-1})`` into CONTEXT before each step."""
    step = optimizer.step
    params = [p for group in optimizer.param_groups for p in group["params"]]
    traces = [torch.zeros_like(p) for p in params]

    def traced_step(closure=None):
        with torch.no_grad():
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            dot = sum(float((g * e).sum()) for g, e in zip(grads, traces))
            norms = math.sqrt(sum(float(g.pow(2).sum()) for g in grads) * sum(float(e.pow(2).sum()) for e in traces))
            CONTEXT["trace_cosine"] = dot / norms if norms > 0 else None
            before = [p.detach().clone() for p in params]
        loss = step(closure)
        with torch.no_grad():
            for e, b, p in zip(traces, before, params):
                e.mul_(gamma).add_(b - p)
        return loss

    optimizer.step = traced_step


# -- runs ----------------------------------------------------------------------------------------------
WRAPPERS = ("bound", "tight", "every", "start")
"""``+bound``: the first update at most 0.1 |theta_0| (the library's ``first_step_bound``;
``+tight``: 0.02 |theta_0|, a wrapper); ``+every``: every update at most 0.1 |theta| (after the
fact); ``+start``: start at alpha_0 / 100."""


@dataclasses.dataclass(frozen=True)
class Candidate:
    """``NAME[+WRAPPER...]``: a library rule or ``probe_NAME``, with the step wrappers."""

    rule: str
    wrappers: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> Candidate:
        name, *wrappers = text.split("+")
        if name in PROTOTYPES:
            name = _registered(name, PROTOTYPES[name])
        elif name not in RULES:
            raise SystemExit(f"unknown rule {name!r}: library rules {list(RULES)}, prototypes {list(PROTOTYPES)}")
        unknown = set(wrappers) - set(WRAPPERS)
        if unknown:
            raise SystemExit(f"unknown wrapper(s) {sorted(unknown)} (from {WRAPPERS})")
        return cls(name, frozenset(wrappers))


_DATA: dict[str, object] = {}


def _run(cache: Path, workload: str, label: str, build: Callable, alpha0: float, steps: int) -> dict:
    key = hashlib.sha256(json.dumps([workload, label, alpha0, steps]).encode()).hexdigest()[:16]
    path = cache / f"{workload}-{label}-{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    w = WORKLOADS[workload]
    if workload not in _DATA:
        _DATA[workload] = load_workload_data(w, "quick")
    rates: list[float] = []

    def built(params, settings):
        optimizer = build(params, settings.lr)
        step = optimizer.step

        def logged(closure=None):
            loss = step(closure)
            rates.append(float(optimizer.param_groups[0]["lr"]))
            return loss

        optimizer.step = logged
        return optimizer

    METHODS["rule_probe"] = Method("rule_probe", "rule probe", built, "torch.SGD")
    settings = MethodSettings(alpha0, None, 0.0, workload == "cnn_fashion")
    result = train(w, _DATA[workload], "quick", "rule_probe", settings, 1, steps)
    result["rates"] = rates
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return result


def _builder(candidate: Candidate, optimizer: str) -> Callable:
    def build(params, lr):
        start = 0.01 if "start" in candidate.wrappers else 1.0
        bound = 0.1 if "bound" in candidate.wrappers else None
        made = OPTIMIZERS[optimizer][1](params, lr * start, hypergrad_rule=candidate.rule, first_step_bound=bound)
        if candidate.rule.startswith("probe_") and ("cap" in candidate.rule or "gate" in candidate.rule):
            measure_theta(made)
        if candidate.rule.startswith("probe_trace"):
            trace_updates(made, {"probe_trace90": 0.9, "probe_trace97": 0.97}[candidate.rule])
        if candidate.wrappers & {"tight", "every"}:
            update_bound(made, 0.02 if "tight" in candidate.wrappers else 0.1, every="every" in candidate.wrappers)
        return made
    return build


def base_best(cache: Path, workload: str, base: str) -> float:
    losses = []
    for alpha0 in BASE_ALPHA0S:
        result = _run(cache, workload, f"base-{base}", BASES[base], alpha0, WORKLOADS[workload].steps["quick"])
        losses.append(math.inf if result["final_loss"] is None else result["final_loss"])
    return min(losses)


def _reached(result: dict, workload: str) -> int | None:
    goal, target = WORKLOADS[workload].goal, TARGETS[workload]
    for step, value in zip(result["steps"], result["metric"]):
        if (value >= target) if goal == "max" else (value <= target):
            return step
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rules", default="scalefree,bracket",
                        help="comma-separated: library rules and prototypes, each optionally +bound")
    parser.add_argument("--optimizers", default="sgdn,adam", help=f"from {list(OPTIMIZERS)}")
    parser.add_argument("--workloads", default=",".join(TARGETS))
    parser.add_argument("--alpha0s", default="1e-5,1e-3,0.1")
    parser.add_argument("--steps", action="store_true", help="also the steps to the target in 2N steps")
    parser.add_argument("--cache", default="results/rule_probe")
    parser.add_argument("--list", action="store_true", help="list the candidates and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("library rules:", ", ".join(r for r in RULES if not r.startswith("probe_")))
        print("prototypes:", ", ".join(PROTOTYPES))
        print("wrappers (NAME+WRAPPER+...):", ", ".join(WRAPPERS))
        return 0
    torch.set_num_threads(1)
    cache = Path(args.cache)
    worst: dict[tuple[str, str, str], tuple[float, float]] = {}
    print("| rule | workload | optimizer | alpha_0 | ratio at N | reach (2N) | rate at 1, 10, 20, 40, N |")
    print("|---|---|---|---:|---:|---:|---|")
    for text in args.rules.split(","):
        candidate = Candidate.parse(text)
        for workload in args.workloads.split(","):
            n = WORKLOADS[workload].steps["quick"]
            for optimizer in args.optimizers.split(","):
                reference = base_best(cache, workload, OPTIMIZERS[optimizer][0])
                for alpha0 in (float(a) for a in args.alpha0s.split(",")):
                    label = f"{text}-{optimizer}"
                    result = _run(cache, workload, label, _builder(candidate, optimizer), alpha0, n)
                    loss = math.inf if result["final_loss"] is None else result["final_loss"]
                    reach = "" if not args.steps else _reached(
                        _run(cache, workload, label, _builder(candidate, optimizer), alpha0, 2 * n), workload)
                    key = (text, workload, optimizer)
                    worst[key] = max(worst.get(key, (-1.0, alpha0)), (loss / reference, alpha0))
                    rates = result["rates"]
                    shown = " ".join(f"{rates[i - 1]:.2g}" for i in (1, 10, 20, 40, n) if i <= len(rates))
                    print(f"| {text} | {workload} | {optimizer} | {alpha0:g} | {loss / reference:.3g} | "
                          f"{'-' if reach is None else reach} | {shown} |", flush=True)
    _print_goal(worst, args.rules.split(","))
    return 0


def _print_goal(worst: dict[tuple[str, str, str], tuple[float, float]], rules: list[str]) -> None:
    """Per (workload, optimizer) and rule, the worst ratio over the alpha_0 run and where; the
    pairs within 1.25x."""
    pairs = sorted({(w, o) for _, w, o in worst}, key=lambda pair: (list(TARGETS).index(pair[0]), pair[1]))
    print(f"\n| workload | optimizer | {' | '.join(rules)} |\n|---|---|{'---:|' * len(rules)}")
    met = dict.fromkeys(rules, 0)
    for workload, optimizer in pairs:
        cells = []
        for rule in rules:
            ratio, alpha0 = worst[(rule, workload, optimizer)]
            met[rule] += ratio <= 1.25
            shown = "div" if math.isinf(ratio) else f"{ratio:.3g}"
            cells.append(f"{shown} ({alpha0:g})" + ("" if ratio <= 1.25 else " **no**"))
        print(f"| {workload} | {optimizer} | {' | '.join(cells)} |")
    print(f"| pairs within 1.25x | | {' | '.join(f'{met[r]} of {len(pairs)}' for r in rules)} |")


if __name__ == "__main__":
    sys.exit(main())
