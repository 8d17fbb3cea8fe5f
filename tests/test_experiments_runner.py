"""Tests for the experiment runner on tiny synthetic IDX data (fast; no real datasets)."""

from __future__ import annotations

import csv
import gzip
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from experiments.core import runner
from experiments.core import datasets as data
from experiments.core import training
from experiments.__main__ import main
from experiments.core.models import build_model
from experiments.core.runner import EPOCH_COLUMNS, ITERATION_COLUMNS, RunConfig, run_method, run_suite


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def make_idx_dataset(directory: Path, n_train: int, n_valid: int, seed: int = 0) -> Path:
    """Learnable tiny 28x28 data: the label decides which image row is bright."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_valid)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 60, (n, 28, 28))
        images[np.arange(n), 2 * labels + 4, :] = 255
        _write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return directory


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory) -> Path:
    return make_idx_dataset(tmp_path_factory.mktemp("mnist"), n_train=200, n_valid=60)


def tiny_config(data_dir: Path, **fields) -> RunConfig:
    defaults = dict(task="logreg", epochs=2, batch_size=32, data_dir=str(data_dir), device="cpu", eval_batch_size=64)
    defaults.update(fields)
    return RunConfig(**defaults)


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as stream:
        rows = list(csv.reader(stream))
    return rows[0], rows[1:]


def without_time(path: Path) -> list[list[str]]:
    header, rows = read_rows(path)
    time_column = header.index("time_s")
    return [row[:time_column] + row[time_column + 1:] for row in rows]


def test_csv_columns_row_zero_and_epoch_means(tmp_path, mnist_dir):
    config = tiny_config(mnist_dir)
    result = run_method(config, "sgdm", tmp_path)
    header, epochs = read_rows(tmp_path / "sgdm.epochs.csv")
    assert tuple(header) == EPOCH_COLUMNS
    iteration_header, iterations = read_rows(tmp_path / "sgdm.iterations.csv")
    assert tuple(iteration_header) == ITERATION_COLUMNS
    assert len(iterations) == 2 * math.ceil(200 / 32) == result.iterations
    assert [int(row[0]) for row in epochs] == [0, 1, 2]

    # Row 0: the seeded initial model evaluated on the full sets, computed independently here.
    splits = data.load_dataset("mnist", data_dir=mnist_dir)
    torch.manual_seed(config.seed)
    model = build_model("logreg")
    with torch.no_grad():
        train_loss = F.cross_entropy(model(splits.train_x), splits.train_y).item()
        valid_output = model(splits.valid_x)
        valid_loss = F.cross_entropy(valid_output, splits.valid_y).item()
        accuracy = (valid_output.argmax(1) == splits.valid_y).float().mean().item()
    assert float(epochs[0][3]) == pytest.approx(train_loss, rel=1e-5)
    assert float(epochs[0][4]) == pytest.approx(valid_loss, rel=1e-5)
    assert float(epochs[0][5]) == pytest.approx(accuracy)
    assert float(epochs[0][6]) == config.lr

    # Row e: mean minibatch loss and mean lr of epoch e's iterations.
    for epoch in (1, 2):
        rows = [row for row in iterations if int(row[1]) == epoch]
        assert float(epochs[epoch][3]) == pytest.approx(np.mean([float(r[3]) for r in rows]), rel=1e-12)
        assert float(epochs[epoch][6]) == pytest.approx(np.mean([float(r[4]) for r in rows]), rel=1e-12)
        assert int(epochs[epoch][1]) == int(rows[-1][0])
    assert float(epochs[2][3]) < float(epochs[0][3])

    # The checkpoint holds the final model: its validation loss is the last row's.
    checkpoint = torch.load(tmp_path / "checkpoints" / "sgdm.pt", weights_only=False)
    model.load_state_dict(checkpoint["model"])
    with torch.no_grad():
        final_valid = F.cross_entropy(model(splits.valid_x), splits.valid_y).item()
    assert float(epochs[2][4]) == pytest.approx(final_valid, rel=1e-5)
    assert result.status == "completed" and result.final_train_loss == pytest.approx(float(epochs[2][3]))


def test_same_seed_same_csvs_whatever_the_method_order(tmp_path, mnist_dir):
    config = tiny_config(mnist_dir)
    run_suite(config, ["sgd", "adam", "sgdn"], tmp_path / "a", print_summary=False)
    run_suite(config, ["sgdn", "adam", "sgd"], tmp_path / "b", print_summary=False)
    for method in ("sgd", "adam", "sgdn"):
        for kind in ("epochs", "iterations"):
            assert without_time(tmp_path / "a" / f"{method}.{kind}.csv") == without_time(
                tmp_path / "b" / f"{method}.{kind}.csv"
            )
    other_seed = tiny_config(mnist_dir, seed=2)
    run_method(other_seed, "sgd", tmp_path / "c")
    assert without_time(tmp_path / "a" / "sgd.epochs.csv") != without_time(tmp_path / "c" / "sgd.epochs.csv")


def _interrupt_after(monkeypatch, optimizer_class, calls: int) -> None:
    """Make ``optimizer_class.step`` raise KeyboardInterrupt on call number ``calls`` (a Ctrl-C)."""
    original = optimizer_class.step
    counter = {"n": 0}

    def step(self, *args, **kwargs):
        counter["n"] += 1
        if counter["n"] == calls:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(optimizer_class, "step", step)


@pytest.mark.parametrize(
    "method, task, optimizer_path",
    [("sgdm", "logreg", "torch.optim.SGD"), ("sgdn_hd", "logreg", "hypergrad.SGDHD"),
     ("adam_hd", "logreg", "hypergrad.AdamHD"), ("schedulefree_adamw", "cnn", "schedulefree.AdamWScheduleFree")],
)
def test_resume_after_interrupt_equals_uninterrupted_run(tmp_path, mnist_dir, monkeypatch, method, task, optimizer_path):
    data_dir = mnist_dir
    if task == "cnn":
        data_dir = make_idx_dataset(tmp_path / "fashion", n_train=48, n_valid=16, seed=1)
    config = tiny_config(data_dir, task=task, epochs=3, batch_size=16)
    run_method(config, method, tmp_path / "straight")

    module_name, class_name = optimizer_path.rsplit(".", 1)
    optimizer_class = getattr(__import__(module_name, fromlist=[class_name]), class_name)
    per_epoch = math.ceil((200 if task == "logreg" else 48) / 16)
    with monkeypatch.context() as patch:
        _interrupt_after(patch, optimizer_class, per_epoch + 2)  # inside epoch 2
        with pytest.raises(KeyboardInterrupt):
            run_method(config, method, tmp_path / "interrupted")
    # Only whole epochs were written, and no temporary files are left behind.
    _, rows = read_rows(tmp_path / "interrupted" / f"{method}.epochs.csv")
    assert [int(row[0]) for row in rows] == [0, 1]
    assert not list((tmp_path / "interrupted").rglob("*.tmp"))

    result = run_method(config, method, tmp_path / "interrupted", resume=True)
    assert result.status == "completed" and result.epochs_completed == 3
    for kind in ("epochs", "iterations"):
        assert without_time(tmp_path / "straight" / f"{method}.{kind}.csv") == without_time(
            tmp_path / "interrupted" / f"{method}.{kind}.csv"
        )


def test_resume_extends_a_finished_run_and_refuses_other_settings(tmp_path, mnist_dir):
    run_method(tiny_config(mnist_dir, epochs=3), "adam", tmp_path / "straight")
    run_method(tiny_config(mnist_dir, epochs=1), "adam", tmp_path / "extended")
    run_method(tiny_config(mnist_dir, epochs=3), "adam", tmp_path / "extended", resume=True)
    assert without_time(tmp_path / "straight" / "adam.iterations.csv") == without_time(
        tmp_path / "extended" / "adam.iterations.csv"
    )
    with pytest.raises(ValueError, match="cannot resume"):
        run_method(tiny_config(mnist_dir, epochs=3, lr=0.01), "adam", tmp_path / "extended", resume=True)


def test_amp_runs_the_forward_pass_in_bfloat16_and_is_part_of_the_run(tmp_path, mnist_dir, monkeypatch):
    dtypes = []
    real = F.cross_entropy

    def cross_entropy(output, *rest, **keywords):  # the dtype of the training steps' outputs
        if torch.is_grad_enabled():
            dtypes.append(output.dtype)
        return real(output, *rest, **keywords)

    monkeypatch.setattr(F, "cross_entropy", cross_entropy)
    run_method(tiny_config(mnist_dir, epochs=1, max_iterations=3, amp=True), "sgd_hd", tmp_path / "amp")
    assert dtypes == [torch.bfloat16] * 3
    dtypes.clear()
    run_method(tiny_config(mnist_dir, epochs=1, max_iterations=3), "sgd_hd", tmp_path / "full")
    assert torch.bfloat16 not in dtypes
    amp_losses = [float(row[3]) for row in read_rows(tmp_path / "amp" / "sgd_hd.iterations.csv")[1]]
    full_losses = [float(row[3]) for row in read_rows(tmp_path / "full" / "sgd_hd.iterations.csv")[1]]
    assert amp_losses != full_losses and np.allclose(amp_losses, full_losses, rtol=0.05)
    with pytest.raises(ValueError, match="cannot resume"):  # a full-precision run does not resume an AMP one
        run_method(tiny_config(mnist_dir, epochs=2), "sgd_hd", tmp_path / "amp", resume=True)


def test_diverging_method_is_recorded_and_the_suite_goes_on(tmp_path, mnist_dir):
    config = tiny_config(mnist_dir, lr=1e30, epochs=3)
    results = run_suite(config, ["sgd", "dog"], tmp_path, print_summary=False)  # DoG ignores alpha_0
    diverged = results[0]
    assert diverged.status == "diverged"
    _, iterations = read_rows(tmp_path / "sgd.iterations.csv")
    assert len(iterations) == diverged.diverged_at_iteration < 3 * math.ceil(200 / 32)
    assert not math.isfinite(float(iterations[-1][3]))
    assert all(math.isfinite(float(row[3])) for row in iterations[:-1])
    assert results[1].method == "dog" and results[1].epochs_completed == 3
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["methods"]["sgd"]["status"] == "diverged"
    assert record["methods"]["dog"]["status"] == "completed"


def test_run_json_records_arguments_versions_dataset_and_times(tmp_path, mnist_dir):
    run_suite(tiny_config(mnist_dir, epochs=1), ["sgd"], tmp_path, print_summary=False)
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["arguments"]["task"] == "logreg" and record["arguments"]["methods"] == ["sgd"]
    assert record["versions"]["torch"] == torch.__version__.split("+")[0] or record["versions"]["torch"] == torch.__version__
    splits = data.load_dataset("mnist", data_dir=mnist_dir)
    assert record["dataset"]["sha256"] == splits.source.sha256 and record["dataset"]["train_size"] == 200
    assert record["device"]["device"] == "cpu"
    assert record["methods"]["sgd"]["wall_time_s"] > 0


def test_max_iterations_train_fraction_and_scheduler(tmp_path, mnist_dir):
    def halve_every_step(optimizer, iterations_per_epoch, total_iterations):
        assert (iterations_per_epoch, total_iterations) == (4, 5)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)

    config = tiny_config(mnist_dir, epochs=5, train_fraction=0.5, max_iterations=5, lr_scheduler=halve_every_step)
    result = run_method(config, "sgd", tmp_path)
    _, iterations = read_rows(tmp_path / "sgd.iterations.csv")
    assert result.iterations == len(iterations) == 5 and result.epochs_completed == 2  # 4 + 1 (partial)
    np.testing.assert_allclose([float(row[4]) for row in iterations], [1e-3 * 0.5**k for k in range(1, 6)])
    assert json.dumps(config.to_dict())  # the factory is recorded by name
    assert "halve_every_step" in config.to_dict()["lr_scheduler"]


def test_random_crop_flip_matches_a_per_image_loop():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 8, 8)
    fill = torch.tensor([-1.0, -2.0, -3.0])
    out = training.random_crop_flip(x, 2, fill, torch.Generator().manual_seed(0))
    shift_y = torch.randint(0, 5, (6,), generator=generator)
    shift_x = torch.randint(0, 5, (6,), generator=generator)
    flip = torch.rand(6, generator=generator) < 0.5
    for i in range(6):
        padded = fill.view(3, 1, 1).repeat(1, 12, 12)
        padded[:, 2:10, 2:10] = x[i]
        crop = padded[:, shift_y[i]:shift_y[i] + 8, shift_x[i]:shift_x[i] + 8]
        if flip[i]:
            crop = crop.flip(-1)
        torch.testing.assert_close(out[i], crop, rtol=0, atol=0)


def test_config_validation_names_the_argument():
    with pytest.raises(ValueError, match="task must be one of"):
        RunConfig(task="resnet")
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        RunConfig(task="logreg", epochs=0)
    with pytest.raises(ValueError, match="train_fraction must be in"):
        RunConfig(task="logreg", train_fraction=1.5)
    with pytest.raises(TypeError, match="batch_size must be a number"):
        RunConfig(task="logreg", batch_size=12.5)
    with pytest.raises(ValueError, match="hypergrad_lr must be >= 0"):
        RunConfig(task="logreg", hypergrad_lr=-1.0)


def test_cli_runs_and_reports_bad_input(tmp_path, mnist_dir, capsys):
    assert main(["run", "logreg", "--methods", "sgd,adam", "--epochs", "1", "--batch-size", "50",
                 "--data-dir", str(mnist_dir), "--device", "cpu", "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "sgd" in printed and "adam" in printed and "train loss" in printed
    assert sorted(p.name for p in (tmp_path / "out").glob("*.csv")) == [
        "adam.epochs.csv", "adam.iterations.csv", "sgd.epochs.csv", "sgd.iterations.csv"]
    with pytest.raises(SystemExit) as caught:
        main(["run", "logreg", "--methods", "sgd,nosuch", "--out", str(tmp_path / "bad")])
    assert caught.value.code == 2 and "nosuch" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_vgg_on_tiny_cifar_batches_trains_with_augmentation(tmp_path):
    import pickle

    rng = np.random.default_rng(7)
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in (*data.CIFAR10_TRAIN_BATCHES, data.CIFAR10_VALID_BATCH):
        batch = {"data": rng.integers(0, 256, (4, 3072)).astype(np.uint8), "labels": rng.integers(0, 10, 4).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))
    config = RunConfig(task="vgg", epochs=1, batch_size=10, data_dir=str(tmp_path / "cifar"), device="cpu")
    first = run_method(config, "sgdn", tmp_path / "a")
    second = run_method(config, "sgdn", tmp_path / "b")
    assert first.status == "completed" and first.iterations == 2
    # Augmentation and dropout are seeded: the same seed gives the same losses.
    assert without_time(tmp_path / "a" / "sgdn.iterations.csv") == without_time(tmp_path / "b" / "sgdn.iterations.csv")
