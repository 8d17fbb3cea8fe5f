"""``python -m experiments reproduce``: cache keys, reuse of finished runs, ``--only``, summary.md.

The studies run end to end through the real runner, on tiny synthetic datasets (64 training and
32 validation images per task, monkeypatched into the runner's dataset loader) and tiny budgets.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import experiments.reproduce as reproduce_module
import experiments.runner as runner_module
from experiments.studies import convergence, lr_sweep, peers, sensitivity
from experiments.studies import surfaces as surfaces_study
from experiments.__main__ import main
from experiments.data import DatasetSource, DatasetSplits
from experiments.reproduce import BUDGETS, STUDY_NAMES, RunSpec, SuiteBudget, TaskBudget, parse_only, reproduce

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
    monkeypatch.setattr(peers, "SCHEDULES", ("cosine",))
    calls = []
    real_run_method = reproduce_module.run_method

    def counting_run_method(config, method, out_dir, **kwargs):
        calls.append((config.task, method))
        return real_run_method(config, method, out_dir, **kwargs)

    monkeypatch.setattr(reproduce_module, "run_method", counting_run_method)
    return calls


def test_cache_key_changes_with_every_field_and_is_stable_otherwise():
    base = RunSpec(task="mlp", method="sgd_hd", epochs=3)
    assert base.key() == RunSpec(task="mlp", method="sgd_hd", epochs=3).key()
    # An explicit default beta is the same run as the implicit one.
    assert base.key() == RunSpec(task="mlp", method="sgd_hd", epochs=3, hypergrad_lr=1e-3).key()
    changed = {"task": "logreg", "method": "sgdn_hd", "epochs": 4, "lr": 1e-2, "hypergrad_lr": 1e-4, "seed": 2,
               "train_fraction": 0.5, "schedule": "cosine", "train_metrics": True, "batch_size": 64,
               "weight_decay": 0.0}
    assert set(changed) == {f.name for f in dataclasses.fields(RunSpec)}
    keys = {base.key()}
    for name, value in changed.items():
        keys.add(dataclasses.replace(base, **{name: value}).key())
    assert len(keys) == 1 + len(changed)


def test_run_spec_rejects_bad_input():
    with pytest.raises(ValueError, match="method"):
        RunSpec(task="mlp", method="nope", epochs=1)
    with pytest.raises(ValueError, match="schedule"):
        RunSpec(task="mlp", method="sgd", epochs=1, schedule="linear")
    with pytest.raises(ValueError, match="train_fraction"):
        RunSpec(task="mlp", method="sgd", epochs=1, train_fraction=0.0)
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


NOT_SURFACES = [name for name in STUDY_NAMES if name != "surfaces"]


def test_every_study_runs_and_a_second_run_reuses_the_cache(tiny_suite, tmp_path):
    # The surfaces study is run_surfaces (tests/test_surfaces.py) behind a reuse check tested below.
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


def test_surfaces_study_reuses_finished_files(monkeypatch, tmp_path):
    calls = []

    def fake_run_surfaces(out_dir, quick):
        calls.append(quick)
        for name in surfaces_study.FILES:
            (tmp_path / name).write_text("")
        hd = surfaces_study.HypergradSettings()
        settings = {"quick": quick, "hypergrad_rule": hd.rule, "hypergrad_lr": hd.hypergrad_lr,
                    "methods": surfaces_study.methods_available()}
        (tmp_path / "surfaces.json").write_text(json.dumps({"settings": settings}))
        (tmp_path / "surfaces.md").write_text("### Optimizer paths on 2-D test surfaces (surfaces.png)\n\ntable")
        return {"markdown": (tmp_path / "surfaces.md").read_text()}

    monkeypatch.setattr(surfaces_study, "run_surfaces", fake_run_surfaces)
    for mode in ("quick", "quick", "full"):
        reproduce(tmp_path, mode=mode, only=["surfaces"], progress=lambda text: None)
    assert calls == [True, False]  # the second quick run reused the files; --full redid them
    assert "table" in (tmp_path / "summary.md").read_text()
