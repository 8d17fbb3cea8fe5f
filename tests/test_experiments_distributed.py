"""``torchrun --nproc_per_node=2 -m experiments run ... --distributed ddp|fsdp`` on tiny synthetic
data: the logs equal a single-process run's, only rank 0 writes, and a DDP run resumes under FSDP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.core.runner import RunConfig, run_suite
from test_experiments_runner import make_idx_dataset, read_rows

REPOSITORY = Path(__file__).resolve().parent.parent
METHODS = "sgdn_hd,adam_hd"
ARGUMENTS = dict(task="logreg", batch_size=32, device="cpu", eval_batch_size=64, seed=3)
LAUNCH_TIMEOUT_S = 120


def torchrun(data_dir: Path, out: Path, mode: str, epochs: int, resume: bool = False) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "experiments", "run", "logreg", "--methods", METHODS, "--epochs", str(epochs),
        "--batch-size", str(ARGUMENTS["batch_size"]), "--seed", str(ARGUMENTS["seed"]), "--device", "cpu",
        "--data-dir", str(data_dir), "--out", str(out), "--distributed", mode,
    ] + (["--resume"] if resume else [])
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPOSITORY), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(command, cwd=REPOSITORY, env=environment, capture_output=True, text=True,
                            timeout=LAUNCH_TIMEOUT_S)
    # A failed launch says why (the ranks' tracebacks are on stderr), not only its exit status.
    assert result.returncode == 0, f"{mode} launch exited with {result.returncode}:\n{result.stderr[-6000:]}"
    return result


def logged(path: Path, columns: tuple[str, ...]) -> list[list[float]]:
    header, rows = read_rows(path)
    return [[float(row[header.index(column)]) for column in columns] for row in rows]


def assert_close_logs(observed: Path, expected: Path, columns: tuple[str, ...]) -> None:
    for got, want in zip(logged(observed, columns), logged(expected, columns), strict=True):
        for a, b in zip(got, want):
            assert abs(a - b) <= 1e-5 * max(abs(b), 1e-3), (observed.name, got, want)


@pytest.mark.skipif(sys.platform == "win32", reason="torchrun's standalone rendezvous on localhost")
def test_ddp_then_fsdp_resume_equals_one_process(tmp_path):
    data_dir = make_idx_dataset(tmp_path / "mnist", n_train=200, n_valid=60)
    single = tmp_path / "single"
    run_suite(RunConfig(epochs=2, data_dir=str(data_dir), **ARGUMENTS), METHODS.split(","), single,
              print_summary=False)

    parallel = tmp_path / "parallel"
    first = torchrun(data_dir, parallel, "ddp", epochs=1)
    assert first.stdout.count("train loss") == 1  # the summary table, printed by rank 0 alone
    second = torchrun(data_dir, parallel, "fsdp", epochs=2, resume=True)
    assert second.stdout.count("train loss") == 1

    assert sorted(p.name for p in parallel.iterdir()) == sorted(p.name for p in single.iterdir())
    for method in METHODS.split(","):
        assert_close_logs(parallel / f"{method}.iterations.csv", single / f"{method}.iterations.csv", ("loss", "lr"))
        assert_close_logs(parallel / f"{method}.epochs.csv", single / f"{method}.epochs.csv",
                          ("train_loss", "valid_loss", "valid_accuracy", "lr"))


def test_distributed_without_torchrun_or_with_an_unshardable_method_is_refused(tmp_path, monkeypatch, capsys):
    from experiments.__main__ import main

    for variable in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(variable, raising=False)
    data_dir = make_idx_dataset(tmp_path / "mnist", n_train=20, n_valid=10)
    common = ["run", "logreg", "--epochs", "1", "--device", "cpu", "--data-dir", str(data_dir)]
    with pytest.raises(SystemExit) as caught:
        main(common + ["--methods", "sgd_hd", "--distributed", "ddp", "--out", str(tmp_path / "a")])
    assert caught.value.code == 2 and "torchrun" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        main(common + ["--methods", "sgd_hd,prodigy", "--distributed", "fsdp", "--out", str(tmp_path / "b")])
    assert caught.value.code == 2 and "prodigy" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(ValueError, match="distributed must be"):
        RunConfig(task="logreg", distributed="zero")
