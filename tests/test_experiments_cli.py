"""``python -m experiments``: user errors end in one line naming the argument or file (exit 2, no
traceback, earlier results untouched), and every file written gets the umask's mode."""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_experiments_data import FakeOpener, _served_mnist, no_system_sources  # noqa: F401 (a fixture)
from test_experiments_reproduce import tiny_suite  # noqa: F401 (a fixture)
from test_experiments_runner import make_idx_dataset

from experiments.core import datasets as data
from experiments.paper import toy
from experiments.__main__ import main
from experiments.paper.reproduce import reproduce
from experiments.paper import surfaces, transfer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory) -> Path:
    return make_idx_dataset(tmp_path_factory.mktemp("mnist"), n_train=40, n_valid=20)


def cli(*arguments: str) -> subprocess.CompletedProcess:
    """``python -m experiments ARGUMENTS`` as a user runs it (under umask 022)."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-m", "experiments", *arguments], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=300, preexec_fn=lambda: os.umask(0o022))


def assert_one_line_error(process: subprocess.CompletedProcess, *names: str) -> str:
    assert process.returncode == 2, process.stderr
    assert "Traceback" not in process.stderr, process.stderr
    line = process.stderr.strip().splitlines()[-1]  # argparse puts its usage lines before it
    assert "error: " in line and all(name in line for name in names), line
    return line


def run_logreg(mnist_dir: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return cli("run", "logreg", "--methods", "sgd", "--epochs", "1", "--batch-size", "20", "--threads", "1",
               "--data-dir", str(mnist_dir), "--out", str(out), *extra)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, mnist_dir) -> Path:
    out = tmp_path_factory.mktemp("run") / "out"
    assert run_logreg(mnist_dir, out, "--device", "cpu").returncode == 0
    return out


@pytest.mark.parametrize("command", ["run", "reproduce"])
@pytest.mark.parametrize("device, expected", [("cudax", "'cudax'"), ("cuda", "CUDA is not available"),
                                              ("cuda:1", "CUDA is not available")])
def test_bad_device_is_one_line_and_writes_nothing(tmp_path, mnist_dir, command, device, expected):
    out = tmp_path / "out"
    if command == "run":
        process = run_logreg(mnist_dir, out, "--device", device)
    else:
        process = cli("reproduce", "--out", str(out), "--only", "lr_sweep", "--device", device)
    assert_one_line_error(process, "device", expected)
    assert not out.exists()


@pytest.mark.parametrize("command", ["run", "reproduce"])
def test_out_pointing_at_a_file_is_refused(tmp_path, command):
    out = tmp_path / "a-file"
    out.write_text("keep me")
    process = cli(command, *(["logreg"] if command == "run" else []), "--out", str(out))
    assert_one_line_error(process, "--out", str(out))
    assert out.read_text() == "keep me"


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"garbage", lambda b: b""],
                         ids=["truncated", "garbage", "empty"])
def test_resume_from_a_damaged_checkpoint_names_it(tmp_path, finished_run, mnist_dir, damage):
    out = tmp_path / "out"
    for name, content in snapshot(finished_run).items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(content)
    checkpoint = out / "checkpoints" / "sgd.pt"
    checkpoint.write_bytes(damage(checkpoint.read_bytes()))
    before = snapshot(out)
    process = run_logreg(mnist_dir, out, "--device", "cpu", "--resume", "--epochs", "2")
    assert_one_line_error(process, str(checkpoint))
    after = snapshot(out)
    # The record of earlier results is kept (run.json is rewritten with this command's arguments).
    assert {k: v for k, v in after.items() if k != "run.json"} == {k: v for k, v in before.items() if k != "run.json"}


def test_resume_with_a_corrupted_run_json_names_it(tmp_path, finished_run, mnist_dir):
    out = tmp_path / "out"
    for name, content in snapshot(finished_run).items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(content)
    (out / "run.json").write_text('{"arguments": {')
    before = snapshot(out)
    process = run_logreg(mnist_dir, out, "--device", "cpu", "--resume")
    assert_one_line_error(process, str(out / "run.json"))
    assert snapshot(out) == before


@pytest.mark.parametrize("study, pattern", [("lr_sweep", "runs/*/done.json"), ("lr_finder", "runs/*/result.json")])
def test_reproduce_names_a_corrupted_cache_file(tiny_suite, tmp_path, capsys, study, pattern):  # noqa: F811
    reproduce(tmp_path, only=[study], progress=lambda text: None)
    damaged = sorted(tmp_path.glob(pattern))[0]
    damaged.write_text("{not json")
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as caught:
        main(["reproduce", "--out", str(tmp_path), "--only", study])
    assert caught.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and str(damaged) in error[0], error
    assert snapshot(tmp_path) == before


def modes(folder: Path) -> dict[str, int]:
    return {str(path.relative_to(folder)): stat.S_IMODE(path.stat().st_mode)
            for path in folder.rglob("*") if path.is_file()}


def test_run_files_honour_the_umask(finished_run):
    written = modes(finished_run)
    assert {"run.json", "sgd.epochs.csv", "sgd.iterations.csv", "checkpoints/sgd.pt"} <= set(written)
    assert set(written.values()) == {0o644}, written


def test_downloaded_dataset_files_honour_the_umask(tmp_path, monkeypatch, no_system_sources):  # noqa: F811
    payloads, info = _served_mnist(np.random.default_rng(4), ("https://a/",))
    monkeypatch.setitem(data.DATASETS, "mnist", info)
    opener = FakeOpener({"https://a/" + name: payload for name, payload in payloads.items()})
    previous = os.umask(0o022)
    try:
        data.load_dataset("mnist", data_dir=tmp_path / "dl", download=True, opener=opener)
    finally:
        os.umask(previous)
    assert set(modes(tmp_path / "dl").values()) == {0o644}


def test_reproduce_files_honour_the_umask(tiny_suite, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(transfer, "PER_CLASS", 4)
    monkeypatch.setattr(transfer, "FINETUNE_EPOCHS", 1)
    monkeypatch.setattr(transfer, "RANGE_TEST", {"start_lr": 1e-7, "end_lr": 1.0, "num_iter": 10})
    short = {"rosenbrock": dataclasses.replace(toy.SURFACES["rosenbrock"], steps=6)}
    monkeypatch.setattr(toy, "SURFACES", short)
    monkeypatch.setattr(surfaces, "SURFACES", short)
    monkeypatch.setattr(surfaces, "GRID_POINTS", 20)
    monkeypatch.setattr(surfaces, "ROSENBROCK_MAX_STEPS", {"quick": 10, "full": 10})
    monkeypatch.setattr(surfaces, "GIF_FRAMES", 2)
    previous = os.umask(0o022)
    try:
        reproduce(tmp_path, only=["lr_sweep", "lr_finder", "transfer", "surfaces"], progress=lambda text: None)
    finally:
        os.umask(previous)
    written = modes(tmp_path)
    suffixes = {Path(name).suffix for name in written}
    assert {".csv", ".json", ".png", ".pdf", ".gif", ".md", ".pt"} <= suffixes, suffixes
    assert set(written.values()) == {0o644}, {k: oct(v) for k, v in written.items() if v != 0o644}
