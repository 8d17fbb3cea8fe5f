"""``python -m experiments reproduce``: cache keys, reuse of finished runs, ``--only``, summary.md.

The studies run end to end through the real runner, on tiny synthetic datasets (64 training and
32 validation images per task, monkeypatched into the runner's dataset loader) and tiny budgets.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from PIL import Image

import experiments.paper.reproduce as reproduce_module
import experiments.core.runner as runner_module
import experiments.core.runs as suite_module
from experiments.paper import alpha_sensitivity as sensitivity, convergence, lr_sweep, onecycle as schedules, peers, toy, transfer
from experiments.paper import surfaces as surfaces_study
from experiments.__main__ import main
from experiments.core.datasets import DatasetSource, DatasetSplits
from experiments.paper.reproduce import DEFAULT_STUDIES, STUDY_NAMES, parse_only, reproduce
from experiments.core.runs import BUDGETS, RunSpec, SuiteBudget, TaskBudget

TINY = TaskBudget(epochs=1)
TINY_BUDGET = SuiteBudget(
    name="quick",
    comparison={"logreg": TINY, "mlp": TINY, "cnn": TINY},
    sensitivity={"logreg": TINY, "mlp": TINY},
    convergence=TINY,
    lr_sweep=TINY,
    lr_finder_iterations=40,
    lr_finder_fraction={"logreg": 1.0, "mlp": 1.0, "cnn": 1.0},
    peers={"logreg": TINY, "mlp": TINY, "cnn": TINY},
    peer_seeds=(1, 2),
    schedules=TINY,
    transfer_seeds=(0, 1),
)


def _synthetic_splits(name: str, data_dir, download) -> DatasetSplits:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(96, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (96,), generator=generator)
    return DatasetSplits(name=name, train_x=images[:64], train_y=labels[:64], valid_x=images[64:],
                         valid_y=labels[64:], num_classes=10, source=DatasetSource("synthetic", (), ""))


@pytest.fixture
def tiny_suite(monkeypatch):
    """Synthetic data and tiny budgets; counts the runner's training calls."""
    monkeypatch.setattr(runner_module, "dataset_for", lambda config: _synthetic_splits(config.task, None, False))
    monkeypatch.setattr(reproduce_module, "BUDGETS", {**BUDGETS, "quick": TINY_BUDGET})
    # Smaller grids: every study still runs end to end, with a few runs each.
    monkeypatch.setattr(sensitivity, "TASK_NAMES", ("logreg",))
    monkeypatch.setattr(sensitivity, "ALPHA0S", (1e-3, 1e-1))
    monkeypatch.setattr(convergence, "ALPHA0S", (1e-3, 1e-1))
    monkeypatch.setattr(convergence, "BETAS", (1e-3,))
    monkeypatch.setattr(lr_sweep, "LEARNING_RATES", (1.0, 0.1, 0.01))
    monkeypatch.setattr(peers, "TASK_NAMES", ("logreg",))
    monkeypatch.setattr(peers, "PEERS", ("prodigy",))
    monkeypatch.setattr(peers, "LR_SCHEDULES", ("cosine",))
    calls = []
    real_run_method = suite_module.run_method

    def counting_run_method(config, method, out_dir, **kwargs):
        calls.append((config.task, method))
        return real_run_method(config, method, out_dir, **kwargs)

    monkeypatch.setattr(suite_module, "run_method", counting_run_method)
    return calls


def test_a_paper_run_is_a_step_budget_and_its_key_changes_with_every_key_field(monkeypatch, tmp_path):
    monkeypatch.setattr(runner_module, "dataset_for", lambda config: _synthetic_splits(config.task, None, False))
    cache = suite_module.RunCache(tmp_path)
    base = RunSpec.paper("mlp", "sgd_hd", TaskBudget(3, 0.5), "quick")
    assert (base.steps, base.eval_every) == (3, 1)  # 32 of 64 examples: one batch of 128 per epoch
    assert base.run_config().epochs == 3
    assert cache.folder(base) == cache.folder(RunSpec.paper("mlp", "sgd_hd", TaskBudget(3, 0.5), "quick"))
    # An explicit default beta is the same run as the implicit one.
    assert cache.folder(base) == cache.folder(RunSpec.paper("mlp", "sgd_hd", TaskBudget(3, 0.5), "quick",
                                                            hypergrad_lr=1e-3))
    changed = {"workload": "logreg", "method": "sgdn_hd", "seed": 2, "steps": 4, "schedule": "cosine",
               "eval_every": 2, "train_fraction": 0.25, "train_metrics": True,
               "settings": dataclasses.replace(base.settings, lr=1e-2)}
    folders = {cache.folder(base)}
    for name, value in changed.items():
        folders.add(cache.folder(dataclasses.replace(base, **{name: value})))
    assert len(folders) == 1 + len(changed)
    # Not keyed: the folder's readable prefix, the mode (a paper task is the same in both) and the
    # configuration's name (the settings it resolved to are).
    unkeyed = {"name", "mode", "configuration", "keyed_schedule"}
    assert set(changed) | unkeyed == {f.name for f in dataclasses.fields(RunSpec)}
    assert cache.folder(dataclasses.replace(base, mode="full")) == cache.folder(base)


def test_run_spec_rejects_bad_input(monkeypatch):
    monkeypatch.setattr(runner_module, "dataset_for", lambda config: _synthetic_splits(config.task, None, False))
    with pytest.raises(ValueError, match="method"):
        RunSpec.paper("mlp", "nope", TINY, "quick")
    with pytest.raises(ValueError, match="schedule"):
        RunSpec.paper("mlp", "sgd", TINY, "quick", schedule="linear")
    with pytest.raises(ValueError, match="train_fraction"):
        RunSpec.paper("mlp", "sgd", TaskBudget(1, 0.0), "quick")
    with pytest.raises(ValueError, match="HD method"):
        RunSpec.paper("mlp", "adam", TINY, "quick", schedule="hypergrad_cosine")
    with pytest.raises(ValueError, match="eval_every"):
        dataclasses.replace(RunSpec.paper("mlp", "sgd", TINY, "quick"), eval_every=None)
    with pytest.raises(ValueError, match="--only"):
        parse_only("comparison,bogus")
    assert parse_only("peers,comparison") == ["comparison", "peers"]  # suite order


def test_interrupted_run_is_redone(tiny_suite, tmp_path):
    reproduce(tmp_path, only=["lr_sweep"], progress=lambda text: None)
    done_files = sorted(tmp_path.glob("runs/*/done.json"))
    assert len(done_files) == 3
    done_files[0].unlink()  # as if the session had stopped before the run finished
    tiny_suite.clear()
    reproduce(tmp_path, only=["lr_sweep"], progress=lambda text: None)
    assert len(tiny_suite) == 1 and done_files[0].is_file()


def test_only_selects_studies_from_the_command_line(tiny_suite, tmp_path, capsys):
    assert main(["reproduce", "--quick", "--out", str(tmp_path), "--only", "lr_finder,sensitivity"]) == 0
    written = {path.name for path in tmp_path.iterdir()}
    assert {"lr_finder.png", "sensitivity.png", "summary.md"} <= written
    assert not written & {"logreg.png", "peers.png", "convergence.png", "lr_sweep.png"}
    assert {run[0] for run in tiny_suite} == {"logreg"}
    assert "summary.md" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["reproduce", "--only", "nonsense", "--out", str(tmp_path)])


NOT_SURFACES = [name for name in DEFAULT_STUDIES if name != "surfaces"]


def test_every_study_runs_and_a_second_run_reuses_the_cache(tiny_suite, tmp_path):
    # The surfaces study is tested on its own below (it trains nothing).
    files = reproduce(tmp_path, only=NOT_SURFACES, progress=lambda text: None)
    names = {path.name for path in files}
    for study_file in ("logreg.png", "mlp.png", "cnn.png", "sensitivity.png", "convergence.png", "lr_sweep.png",
                       "lr_finder.png", "peers.png", "summary.md"):
        assert study_file in names and (tmp_path / study_file).is_file()
        if study_file.endswith(".png"):
            assert (tmp_path / study_file).with_suffix(".pdf").is_file()
    summary = (tmp_path / "summary.md").read_text()
    for study_file in ("logreg.png", "cnn.png", "sensitivity.png", "convergence.png", "lr_sweep.png",
                       "lr_finder.png", "peers.png"):
        assert study_file in summary
    assert "python -m experiments reproduce" in summary
    assert "batch 128, weight decay 1e-4, seed 1" in summary  # read from the runs' specs
    assert not list(tmp_path.glob("runs/*/checkpoints"))  # finished runs keep no checkpoint
    # Runs shared between studies train once: comparison 18; sensitivity 8 - 2 (SGD and Adam at 1e-3 are
    # comparison runs); convergence 8 - 5 (its base cells are sensitivity runs, SGD-HD at 1e-3 with the default
    # beta a comparison run); lr_sweep 3; peers 2 seeds x 4 - 2 (seed-1 HD runs are comparison runs).
    assert len(tiny_suite) == 18 + 6 + 3 + 3 + 6
    assert len(list(tmp_path.glob("runs/*/done.json"))) == len(tiny_suite)

    (tmp_path / "logreg.png").unlink()
    tiny_suite.clear()
    reproduce(tmp_path, only=NOT_SURFACES, progress=lambda text: None)
    assert tiny_suite == []  # nothing retrained
    assert (tmp_path / "logreg.png").is_file()  # figures are redrawn from the CSVs


def test_schedules_and_transfer_are_off_by_default_and_run_with_only(tiny_suite, tmp_path, monkeypatch):
    assert set(STUDY_NAMES) - set(DEFAULT_STUDIES) == {"schedules", "transfer", "fullbatch"}
    assert parse_only(None) == list(DEFAULT_STUDIES)
    monkeypatch.setattr(schedules, "ALPHAS", (1e-3, 1e-2))
    monkeypatch.setattr(transfer, "PER_CLASS", 4)
    monkeypatch.setattr(transfer, "FINETUNE_EPOCHS", 2)
    monkeypatch.setattr(transfer, "RANGE_TEST", {"start_lr": 1e-7, "end_lr": 1.0, "num_iter": 30})
    files = reproduce(tmp_path, only=["schedules", "transfer"], progress=lambda text: None)
    assert {"schedules.png", "schedules.pdf", "transfer.png", "transfer.pdf", "transfer.csv"} <= {p.name for p in files}
    # Two one-cycle runs, then Adam, AdamHD and AdamHD with decayed beta per alpha_0.
    assert sorted(method for _, method in tiny_suite) == ["adam"] * 3 + ["adam_hd"] * 4 + ["sgdn"]
    summary = (tmp_path / "summary.md").read_text()
    assert "| adam_hd from alpha_0 0.01, cosine-decayed beta |" in summary  # the tables are generated
    assert "| adam_hd_layerwise |" in summary and "2 seeds" in summary
    rows = (tmp_path / "transfer.csv").read_text().splitlines()
    assert rows[0] == "variant,seed,lr,final_test_accuracy" and len(rows) == 1 + 2 * len(transfer.VARIANTS)
    cached = sorted(path.parent.name.rsplit("-", 1)[0] for path in tmp_path.glob("runs/*/result.*"))
    assert cached == ["lr_finder-logreg", "lr_finder-logreg-adam", "transfer-pretrained", "transfer-seed",
                      "transfer-seed"]

    tiny_suite.clear()
    monkeypatch.setattr(transfer, "pretrain", None)  # a second run must not pretrain (or fine-tune) again
    monkeypatch.setattr(transfer, "fine_tune_seed", None)
    reproduce(tmp_path, only=["schedules", "transfer"], progress=lambda text: None)
    assert tiny_suite == []
    assert (tmp_path / "summary.md").read_text() == summary


def test_surfaces_study_draws_from_cached_paths(monkeypatch, tmp_path):
    # Two rows (Rosenbrock is needed for its table), short runs and a coarse contour grid keep it fast.
    short = {key: dataclasses.replace(toy.SURFACES[key], steps=12) for key in ("rosenbrock", "saddle")}
    monkeypatch.setattr(toy, "SURFACES", short)
    monkeypatch.setattr(surfaces_study, "SURFACES", short)
    monkeypatch.setattr(surfaces_study, "GRID_POINTS", 60)
    monkeypatch.setattr(surfaces_study, "ROSENBROCK_MAX_STEPS", {"quick": 30, "full": 40})
    monkeypatch.setattr(surfaces_study, "GIF_FRAMES", 4)
    computed = []
    real_compute = surfaces_study.compute
    monkeypatch.setattr(surfaces_study, "compute", lambda *args: computed.append(args) or real_compute(*args))
    reproduce(tmp_path, only=["surfaces"], progress=lambda text: None)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"surfaces.png", "surfaces.pdf", "surfaces.gif", "surfaces_curves.png", "surfaces_curves.pdf"} <= names
    with Image.open(tmp_path / "surfaces.gif") as gif:
        assert gif.n_frames == 4
        gif.seek(3)
        assert gif.info["duration"] == pytest.approx(
            1000 / surfaces_study.GIF_FPS + 1000 * surfaces_study.GIF_FINAL_PAUSE_S, abs=10)
    with Image.open(tmp_path / "surfaces.png") as png:
        assert png.size[0] > 1500
    summary = (tmp_path / "summary.md").read_text()
    assert "not reached in 30" in summary and "| SGD |" in summary
    first = summary
    for mode in ("quick", "full"):
        reproduce(tmp_path, mode=mode, only=["surfaces"], progress=lambda text: None)
    assert len(computed) == 2  # the second quick run reused the cached paths; --full has its own table
    assert "not reached in 40" in (tmp_path / "summary.md").read_text()
    reproduce(tmp_path, only=["surfaces"], progress=lambda text: None)
    assert (tmp_path / "summary.md").read_text() == first and len(computed) == 2
