"""``python -m experiments reproduce``: cache keys, reuse of finished runs, ``--only``, summary.md.

The studies run end to end through the real runner, on tiny synthetic datasets (64 training and
32 validation images per task, monkeypatched into the runner's dataset loader) and tiny budgets.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import experiments.reproduce as reproduce_module
import experiments.runner as runner_module
from experiments.__main__ import main
from experiments.data import DatasetSource, DatasetSplits
from experiments.reproduce import BUDGETS, STUDY_NAMES, RunSpec, SuiteBudget, TaskBudget, parse_only, reproduce

TINY = TaskBudget(epochs=2)
TINY_BUDGET = SuiteBudget(
    name="quick",
    comparison={"logreg": TINY, "mlp": TINY, "cnn": TINY},
    sensitivity={"logreg": TINY, "mlp": TINY},
    convergence=TINY,
    lr_sweep=TINY,
    lr_finder_iterations=20,
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


def test_finished_runs_are_reused_and_summary_is_written(tiny_suite, tmp_path):
    files = reproduce(tmp_path, only=["comparison", "lr_sweep"], progress=lambda text: None)
    assert len(tiny_suite) == 3 * 6 + 5  # six methods on three tasks, five fixed lrs
    for name in ("logreg", "mlp", "cnn", "lr_sweep"):
        assert tmp_path / f"{name}.png" in files and (tmp_path / f"{name}.pdf").is_file()
    summary = (tmp_path / "summary.md").read_text()
    assert "logreg.png" in summary and "lr_sweep.png" in summary and "sensitivity.png" not in summary
    assert not list(tmp_path.glob("runs/*/checkpoints"))  # finished runs keep no checkpoint
    (tmp_path / "logreg.png").unlink()

    tiny_suite.clear()
    reproduce(tmp_path, only=["comparison", "lr_sweep"], progress=lambda text: None)
    assert tiny_suite == []  # nothing retrained
    assert (tmp_path / "logreg.png").is_file()  # figures are redrawn from the CSVs


def test_interrupted_run_is_redone(tiny_suite, tmp_path):
    reproduce(tmp_path, only=["lr_sweep"], progress=lambda text: None)
    done_files = sorted(tmp_path.glob("runs/*/done.json"))
    assert len(done_files) == 5
    done_files[0].unlink()  # as if the session had stopped before the run finished
    tiny_suite.clear()
    reproduce(tmp_path, only=["lr_sweep"], progress=lambda text: None)
    assert len(tiny_suite) == 1 and done_files[0].is_file()


def test_only_selects_studies_from_the_command_line(tiny_suite, tmp_path, capsys):
    assert main(["reproduce", "--quick", "--out", str(tmp_path), "--only", "lr_finder,sensitivity"]) == 0
    written = {path.name for path in tmp_path.iterdir()}
    assert {"lr_finder.png", "sensitivity.png", "summary.md"} <= written
    assert not written & {"logreg.png", "peers.png", "convergence.png", "lr_sweep.png"}
    assert {run[0] for run in tiny_suite} == {"logreg", "mlp"}
    assert "summary.md" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["reproduce", "--only", "nonsense", "--out", str(tmp_path)])


def test_every_study_runs(tiny_suite, tmp_path):
    files = reproduce(tmp_path, progress=lambda text: None)
    names = {path.name for path in files}
    for study_file in ("logreg.png", "mlp.png", "cnn.png", "sensitivity.png", "convergence.png", "surfaces.png",
                       "surfaces.gif", "lr_sweep.png", "lr_finder.png", "peers.png", "summary.md"):
        assert study_file in names and (tmp_path / study_file).is_file()
    summary = (tmp_path / "summary.md").read_text()
    assert all(f"{name}" in summary for name in ("convergence.png", "peers.png", "surfaces.png"))
    assert len(STUDY_NAMES) == 7
