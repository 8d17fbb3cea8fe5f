"""MuonHD and the Muon recipe (Muon for the hidden matrices, AdamW for the rest).

MuonHD at ``hypergrad_lr=0`` is torch.optim.Muon bit for bit in every flag combination; its rate
changes by exactly ``-beta`` times the hypergradient taken by a finite difference through
torch.optim.Muon itself (float64); it follows its reference twin in every rule and granularity;
checkpoints travel both ways. ``muon_param_groups`` splits a model by shape and by role, and
``MuonWithAdamWHD`` steps the split as torch's Muon and AdamW (``hypergrad_lr=0``) or as MuonHD and
AdamWHD side by side, under a scheduler, through a checkpoint and under Lightning.
"""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
from torch import nn

import hypergrad
from cases import BASE_FLAGS, flag_id, follow_twin, hd_variants, make_batches, pick, same, train, with_beta
from hypergrad import MuonHD, MuonWithAdamWHD, muon_param_groups
from hypergrad.reference import MuonHDReference

if not hasattr(torch.optim, "Muon"):
    pytest.skip("torch.optim.Muon needs torch >= 2.9", allow_module_level=True)


class MatrixNet(nn.Module):
    """Two bias-free layers and a tanh: a tall (9 x 6) and a wide (2 x 9) weight matrix."""

    def __init__(self, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.hidden = nn.Linear(6, 9, bias=False, dtype=dtype)
        self.out = nn.Linear(9, 2, bias=False, dtype=dtype)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator, dtype=dtype) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(x)))


def _assert_same_params(model_a: nn.Module, model_b: nn.Module) -> None:
    for a, b in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(a, b)


# -- torch.optim.Muon at hypergrad_lr=0 ------------------------------------------------------------
@pytest.mark.parametrize("flags", BASE_FLAGS[torch.optim.Muon], ids=flag_id)
def test_zero_hypergrad_lr_is_torch_muon_step_for_step(flags):
    batches = make_batches(8)
    ours, theirs = MatrixNet(), MatrixNet()
    optimizer = MuonHD(ours.parameters(), lr=0.05, hypergrad_lr=0, **flags)
    base = torch.optim.Muon(theirs.parameters(), lr=0.05, **flags)
    for batch in batches:
        train(ours, optimizer, [batch])
        train(theirs, base, [batch])
        _assert_same_params(ours, theirs)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(optimizer.state[p]["momentum_buffer"], base.state[q]["momentum_buffer"])
    assert optimizer.param_groups[0]["lr"] == 0.05


def test_zero_hypergrad_lr_is_torch_muon_in_float32_with_its_other_arguments():
    flags = dict(momentum=0.8, ns_coefficients=(3.0, -3.2, 1.2), eps=1e-5, ns_steps=3, weight_decay=0.02)
    batches = make_batches(6, torch.float32)
    ours, theirs = MatrixNet(torch.float32), MatrixNet(torch.float32)
    train(ours, MuonHD(ours.parameters(), lr=0.05, hypergrad_lr=0, **flags), batches)
    train(theirs, torch.optim.Muon(theirs.parameters(), lr=0.05, **flags), batches)
    _assert_same_params(ours, theirs)


def test_bfloat16_momentum_buffer_is_not_divided_in_place():
    """torch.optim.Muon (2.13) normalises a bfloat16 update in place: without Nesterov that
    update is its momentum buffer. MuonHD orthogonalises a copy."""
    p = nn.Parameter(torch.randn(4, 3, dtype=torch.bfloat16))
    p.grad = torch.randn(4, 3, dtype=torch.bfloat16)
    optimizer = MuonHD([p], nesterov=False)
    optimizer.step()
    assert torch.equal(optimizer.state[p]["momentum_buffer"], torch.zeros_like(p).lerp_(p.grad, 0.05))


# -- the hypergradient, through torch.optim.Muon ---------------------------------------------------
EXACT = pick("muon", "muon-no-decay", "muon-plain-match")
STEPS_BEFORE = 4


def _around_step(case, **overrides):
    """Train to t-2 and snapshot parameters and momentum buffers; take steps t-1 and t; the
    rates (by name) after each of them."""
    batches = make_batches(STEPS_BEFORE + 2)
    model = MatrixNet()
    optimizer = case.make(model.parameters(), **overrides)
    train(model, optimizer, batches[:STEPS_BEFORE])
    snapshot = copy.deepcopy(model.state_dict())
    buffers = {name: optimizer.state[p]["momentum_buffer"].clone() for name, p in model.named_parameters()}
    rates = []
    for batch in batches[STEPS_BEFORE:]:
        train(model, optimizer, [batch])
        rates.append(optimizer.learning_rates(model.named_parameters()))
    return batches, snapshot, buffers, rates


def _hypergradient(case, rates, snapshot, buffers, batches, perturbed):
    """d loss_t / d rate of step t-1 of the parameters named in ``perturbed``: a central
    difference through torch.optim.Muon (one group per parameter) from the t-2 snapshot."""

    def loss_after(delta):
        model = MatrixNet()
        model.load_state_dict(snapshot)
        groups = [{"params": [p], "lr": rates[name] + (delta if name in perturbed else 0.0)}
                  for name, p in model.named_parameters()]
        base = torch.optim.Muon(groups, **case.base_settings())
        for name, p in model.named_parameters():
            base.state[p]["momentum_buffer"] = buffers[name].clone()
        train(model, base, [batches[STEPS_BEFORE]])
        with torch.no_grad():
            x, y = batches[STEPS_BEFORE + 1]
            return nn.functional.mse_loss(model(x), y).item()

    h = 1e-6
    return (loss_after(h) - loss_after(-h)) / (2 * h)


@pytest.mark.parametrize("name", list(EXACT))
def test_lr_change_is_the_hypergradient_through_torch_muon(name):
    case = EXACT[name]
    batches, snapshot, buffers, (previous, now) = _around_step(case)
    names = set(previous)
    hypergradient = _hypergradient(case, previous, snapshot, buffers, batches, names)
    change = now["hidden.weight"] - previous["hidden.weight"]
    expected = -case.settings["hypergrad_lr"] * hypergradient
    assert abs(change - expected) < 1e-7 * abs(expected), (change, expected)


@pytest.mark.parametrize("name", list(EXACT))
def test_each_tensor_rate_change_is_its_hypergradient(name):
    case = EXACT[name]
    batches, snapshot, buffers, (previous, now) = _around_step(case, granularity="tensor")
    assert previous["hidden.weight"] != previous["out.weight"]
    for parameter in previous:
        hypergradient = _hypergradient(case, previous, snapshot, buffers, batches, {parameter})
        expected = -case.settings["hypergrad_lr"] * hypergradient
        change = now[parameter] - previous[parameter]
        assert abs(change - expected) < 1e-7 * abs(expected), (parameter, change, expected)


# -- the reference twin ----------------------------------------------------------------------------
TWIN_RUNS = [("muon-plain-match", variant) for variant in hd_variants()] + [
    ("muon", variant) for variant in hd_variants() if variant["granularity"] == "group" and len(variant) == 2
]


@pytest.mark.parametrize("name, variant", TWIN_RUNS, ids=lambda v: v if isinstance(v, str) else flag_id(v))
def test_follows_the_reference_twin(name, variant):
    lrs, _ = follow_twin(EXACT[name], MatrixNet, 10, **with_beta(EXACT[name], variant))
    if variant["granularity"] == "group" and "lr_limit" not in variant:
        assert len(set(lrs)) >= 3, "the rate should adapt in this test"


# -- checkpoints both ways -------------------------------------------------------------------------
def test_torch_muon_checkpoint_continues_in_muon_hd():
    batches = make_batches(8)
    theirs = MatrixNet()
    base = torch.optim.Muon(theirs.parameters(), lr=0.05)
    train(theirs, base, batches[:4])
    for hypergrad_lr in (0.0, 0.05):
        ours = MatrixNet()
        ours.load_state_dict(theirs.state_dict())
        optimizer = MuonHD(ours.parameters(), lr=0.01, hypergrad_lr=hypergrad_lr)
        optimizer.load_state_dict(copy.deepcopy(base.state_dict()))
        assert optimizer.param_groups[0]["lr"] == 0.05 and optimizer.param_groups[0]["hypergrad_lr"] == hypergrad_lr
        continued = copy.deepcopy((theirs, base))
        # The first step after loading knows no u_{t-1} (torch keeps none): torch's step, rate kept.
        assert train(ours, optimizer, batches[4:5]) == [0.05]
        train(continued[0], continued[1], batches[4:5])
        _assert_same_params(ours, continued[0])
        rates = train(ours, optimizer, batches[5:])
        train(continued[0], continued[1], batches[5:])
        if hypergrad_lr == 0:
            _assert_same_params(ours, continued[0])
        else:
            assert rates[0] != 0.05


def test_muon_hd_checkpoint_continues_in_torch_muon():
    batches = make_batches(8)
    ours = MatrixNet()
    optimizer = MuonHD(ours.parameters(), lr=0.05)
    lrs = train(ours, optimizer, batches[:4])
    assert lrs[-1] != 0.05
    theirs = MatrixNet()
    theirs.load_state_dict(ours.state_dict())
    base = torch.optim.Muon(theirs.parameters())
    base.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    assert base.param_groups[0]["lr"] == lrs[-1]
    optimizer.param_groups[0]["hypergrad_lr"] = 0.0  # from here on a fixed rate, as torch's
    train(ours, optimizer, batches[4:])
    train(theirs, base, batches[4:])
    _assert_same_params(ours, theirs)


@pytest.mark.parametrize("name", ["muon", "muon-plain-match"])
def test_resume_is_bit_for_bit(name, tmp_path):
    case = EXACT[name]
    batches = make_batches(10)
    whole = MatrixNet()
    expected = train(whole, case.make(whole.parameters(), granularity="tensor"), batches)
    first = MatrixNet()
    optimizer = case.make(first.parameters(), granularity="tensor")
    lrs = train(first, optimizer, batches[:5])
    torch.save({"model": first.state_dict(), "optimizer": optimizer.state_dict()}, tmp_path / "checkpoint.pt")
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    resumed = MatrixNet()
    resumed.load_state_dict(checkpoint["model"])
    resumed_optimizer = case.make(resumed.parameters(), granularity="tensor")
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    assert lrs + train(resumed, resumed_optimizer, batches[5:]) == expected
    _assert_same_params(resumed, whole)


# -- arguments -------------------------------------------------------------------------------------
def test_arguments_and_defaults_are_torch_muons_and_the_twins():
    ours = inspect.signature(MuonHD).parameters
    torchs = inspect.signature(torch.optim.Muon).parameters
    twins = inspect.signature(MuonHDReference).parameters
    assert list(ours)[:len(torchs)] == list(torchs)
    assert all(ours[name].default == p.default and ours[name].kind == p.kind for name, p in torchs.items())
    assert [(p.name, p.kind, p.default) for p in twins.values()] == [(p.name, p.kind, p.default) for p in ours.values()]
    params = [nn.Parameter(torch.zeros(3, 2))]
    for rule in ("scalefree", "additive", "multiplicative"):
        beta = MuonHD(params, hypergrad_rule=rule).param_groups[0]["hypergrad_lr"]
        assert MuonHDReference(params, hypergrad_rule=rule).param_groups[0]["hypergrad_lr"] == beta


def test_non_matrix_parameter_is_refused_with_torch_muon_error():
    bias = nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError) as theirs:
        torch.optim.Muon([bias])
    with pytest.raises(ValueError) as ours:
        MuonHD([bias])
    assert str(ours.value) == str(theirs.value)
    optimizer = MuonHD([nn.Parameter(torch.zeros(3, 2))])
    with pytest.raises(ValueError, match="2D parameters"):
        optimizer.add_param_group({"params": [bias]})
    assert len(optimizer.param_groups) == 1
    with pytest.raises(ValueError, match="complex"):
        MuonHD([nn.Parameter(torch.zeros(3, 2, dtype=torch.complex64))])


@pytest.mark.parametrize("argument, value, error", [
    ("adjust_lr_fn", "sqrt", ValueError), ("ns_steps", 100, ValueError), ("ns_steps", -1, ValueError),
    ("ns_steps", 2.0, TypeError), ("ns_coefficients", (3.0, -4.0), ValueError), ("ns_coefficients", "abc", ValueError),
    ("momentum", -0.1, ValueError), ("weight_decay", -0.1, ValueError), ("eps", float("nan"), ValueError),
    ("lr", -1e-3, ValueError),
])
def test_bad_arguments_are_refused_naming_them(argument, value, error):
    with pytest.raises(error, match=argument if argument != "adjust_lr_fn" else "adjust_lr_fn.*original"):
        MuonHD([nn.Parameter(torch.zeros(3, 2))], **{argument: value})


# -- the recipe: muon_param_groups and MuonWithAdamWHD ---------------------------------------------
class Recipe(nn.Module):
    """Every role the split tells apart: an embedding, a convolution, hidden matrices (a linear
    layer's and one of the model's own), a norm, biases and the read-out."""

    def __init__(self, vocabulary: int = 11, width: int = 6) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.token = nn.Embedding(vocabulary, width, dtype=torch.float64)
        self.conv = nn.Conv1d(width, width, 3, padding=1, dtype=torch.float64)
        self.hidden = nn.Linear(width, 8, dtype=torch.float64)
        self.norm = nn.LayerNorm(8, dtype=torch.float64)
        self.mixer = nn.Parameter(torch.empty(8, 8, dtype=torch.float64))
        self.head = nn.Linear(8, vocabulary, dtype=torch.float64)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * 0.3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.conv(self.token(tokens).transpose(1, 2)).transpose(1, 2)
        return self.head(self.norm(nn.functional.gelu(self.hidden(h))) @ self.mixer)


MUON_NAMES = {"hidden.weight", "mixer"}


def _token_batches(count: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return [torch.randint(0, 11, (4, 7), generator=generator) for _ in range(count)]


def _recipe_step(model: nn.Module, optimizers: list, tokens: torch.Tensor, scheduler=None) -> None:
    for optimizer in optimizers:
        optimizer.zero_grad()
    logits = model(tokens[:, :-1])
    nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)).backward()
    for optimizer in optimizers:
        optimizer.step()
    if scheduler is not None:
        scheduler.step()


def _names(model: nn.Module, params: list[torch.Tensor]) -> set[str]:
    ids = {id(p) for p in params}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def test_split_by_shape_and_role():
    model = Recipe()
    muon, adamw = muon_param_groups(model)
    assert muon["use_muon"] and not adamw["use_muon"] and (muon["name"], adamw["name"]) == ("muon", "adamw")
    assert _names(model, muon["params"]) == MUON_NAMES
    assert _names(model, adamw["params"]) == {name for name, _ in model.named_parameters()} - MUON_NAMES


def test_split_overrides_by_name_and_output_tied_and_frozen():
    model = Recipe()
    model.norm.weight.requires_grad_(False)
    muon, adamw = muon_param_groups(model, output="hidden", muon=["head.weight"], adamw=["mix*"])
    assert _names(model, muon["params"]) == {"head.weight"}
    assert "norm.weight" not in _names(model, adamw["params"])
    tied = nn.Sequential(nn.Embedding(11, 8), nn.Linear(8, 8), nn.Linear(8, 11, bias=False), nn.Linear(11, 11))
    tied[2].weight = tied[0].weight  # a read-out tied to the embedding, and a layer after it
    (only,) = [group for group in muon_param_groups(tied, output=tied[3]) if group["use_muon"]]
    assert _names(tied, only["params"]) == {"1.weight"}


@pytest.mark.parametrize("arguments, error, match", [
    (dict(muon=["nothing*"]), ValueError, "muon: 'nothing"), (dict(adamw="head.weight"), TypeError, "adamw"),
    (dict(muon=["head.*"], adamw=["head.weight"]), ValueError, "both"), (dict(muon=["norm.weight"]), ValueError, "2-D"),
    (dict(output="tail"), ValueError, "output"), (dict(output=nn.Linear(2, 2)), ValueError, "output"),
])
def test_split_refuses_bad_overrides(arguments, error, match):
    with pytest.raises(error, match=match):
        muon_param_groups(Recipe(), **arguments)


def test_combined_refuses_bad_groups_and_arguments():
    model = Recipe()
    with pytest.raises(ValueError, match="use_muon"):
        MuonWithAdamWHD(model.parameters())
    with pytest.raises(ValueError, match="2D parameters"):
        MuonWithAdamWHD([{"params": model.norm.parameters(), "use_muon": True}])
    with pytest.raises(ValueError, match="adamw_lr"):
        MuonWithAdamWHD(muon_param_groups(model), adamw_lr=-1.0)
    with pytest.raises(ValueError, match="betas"):
        MuonWithAdamWHD(muon_param_groups(model), adamw_betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="ns_steps"):
        MuonWithAdamWHD(muon_param_groups(model), ns_steps=100)


def test_combined_at_zero_hypergrad_lr_is_torch_muon_and_adamw():
    batches = _token_batches(6)
    ours, theirs = Recipe(), Recipe()
    combined = MuonWithAdamWHD(muon_param_groups(ours), lr=0.02, weight_decay=0.05, adamw_lr=0.01,
                               adamw_betas=(0.8, 0.95), hypergrad_lr=0)
    muon, adamw = muon_param_groups(theirs)
    bases = [torch.optim.Muon(muon["params"], lr=0.02, weight_decay=0.05),
             # our default path on the CPU is torch's fused kernel (as AdamWHD's)
             torch.optim.AdamW(adamw["params"], lr=0.01, betas=(0.8, 0.95), fused=True)]
    for tokens in batches:
        _recipe_step(ours, [combined], tokens)
        _recipe_step(theirs, bases, tokens)
    _assert_same_params(ours, theirs)


@pytest.mark.parametrize("rule", ["scalefree", "additive"])
def test_combined_steps_each_group_as_its_own_hd_optimizer(rule):
    """Muon groups as MuonHD and AdamW groups as AdamWHD, side by side, each with its own rate
    (``hypergrad_lr=None``: each base rule's default beta)."""
    batches = _token_batches(8)
    ours, theirs = Recipe(), Recipe()
    combined = MuonWithAdamWHD(muon_param_groups(ours), lr=0.02, adamw_lr=0.01, hypergrad_rule=rule)
    muon, adamw = muon_param_groups(theirs)
    apart = [MuonHD(muon["params"], lr=0.02, hypergrad_rule=rule),
             hypergrad.AdamWHD(adamw["params"], lr=0.01, hypergrad_rule=rule)]
    assert [g["hypergrad_lr"] for g in combined.param_groups] == [g["hypergrad_lr"] for o in apart for g in o.param_groups]
    for tokens in batches:
        _recipe_step(ours, [combined], tokens)
        _recipe_step(theirs, apart, tokens)
    _assert_same_params(ours, theirs)
    rates = [g["lr"] for g in combined.param_groups]
    assert rates == [o.param_groups[0]["lr"] for o in apart]
    assert rates[0] != 0.02 and rates[1] != 0.01


def test_combined_with_a_scheduler_resumes_bit_for_bit_and_reports_every_rate(tmp_path):
    batches = _token_batches(10)

    def make(model):
        optimizer = MuonWithAdamWHD(muon_param_groups(model), lr=0.02, adamw_lr=0.01, granularity="tensor")
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1 / (1 + t))

    whole = Recipe()
    optimizer, scheduler = make(whole)
    for tokens in batches:
        _recipe_step(whole, [optimizer], tokens, scheduler)
    rates = hypergrad.learning_rates(optimizer, whole.named_parameters())
    assert set(rates) == {name for name, _ in whole.named_parameters()}
    assert len(set(rates.values())) == len(rates)  # each tensor its own rate

    first = Recipe()
    first_optimizer, first_scheduler = make(first)
    for tokens in batches[:5]:
        _recipe_step(first, [first_optimizer], tokens, first_scheduler)
    torch.save({"model": first.state_dict(), "optimizer": first_optimizer.state_dict(),
                "scheduler": first_scheduler.state_dict()}, tmp_path / "checkpoint.pt")
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    resumed = Recipe()
    resumed.load_state_dict(checkpoint["model"])
    resumed_optimizer, resumed_scheduler = make(resumed)
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    resumed_scheduler.load_state_dict(checkpoint["scheduler"])
    for tokens in batches[5:]:
        _recipe_step(resumed, [resumed_optimizer], tokens, resumed_scheduler)
    _assert_same_params(resumed, whole)
    assert hypergrad.learning_rates(resumed_optimizer, resumed.named_parameters()) == rates
    assert same(resumed_optimizer.state_dict(), optimizer.state_dict())


def test_combined_deepcopy_keeps_its_kinds():
    model = Recipe()
    optimizer = MuonWithAdamWHD(muon_param_groups(model, adamw=["mixer"]), adamw_lr=0.005)
    copied = copy.deepcopy(optimizer)
    copied.add_param_group({"params": [nn.Parameter(torch.zeros(3, 3))], "use_muon": False})
    assert copied.param_groups[-1]["lr"] == 0.005 and copied.param_groups[-1]["betas"] == (0.9, 0.999)


def test_combined_under_lightning_logs_each_group_rate(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from hypergrad.integrations.lightning import HypergradRateMonitor

    batches = _token_batches(6)

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = Recipe()

        def training_step(self, tokens, index):
            logits = self.net(tokens[:, :-1])
            return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))

        def configure_optimizers(self):
            return MuonWithAdamWHD(muon_param_groups(self.net), lr=0.02, adamw_lr=0.01)

    monitor = HypergradRateMonitor()
    module = Module()
    runner = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        callbacks=[monitor])
    runner.fit(module, torch.utils.data.DataLoader(torch.cat(batches), batch_size=4))
    by_hand = Recipe()
    optimizer = MuonWithAdamWHD(muon_param_groups(by_hand), lr=0.02, adamw_lr=0.01)
    for tokens in batches:
        _recipe_step(by_hand, [optimizer], tokens)
    _assert_same_params(module.net, by_hand)
    expected = {"lr-MuonWithAdamWHD": optimizer.param_groups[0]["lr"],
                "lr-MuonWithAdamWHD/pg1": optimizer.param_groups[1]["lr"]}
    assert monitor.history[-1] == expected
