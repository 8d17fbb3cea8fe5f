"""The benchmark's data beyond the image sets of :mod:`experiments.core.datasets`, read from the files that
packages install (every loader takes the files' location, so tests can point it at small copies):

* ``load_text_corpus``: the fortune cookies of the Debian package ``fortunes`` (version
  ``FORTUNES_VERSION``, ~2.6 MB of English text under ``/usr/share/games/fortunes``) as bytes;
  the last ``VALID_SHARE`` of the concatenated files validates.
* ``load_diabetes``: scikit-learn's bundled diabetes data (442 patients, 10 raw clinical
  features, disease progression a year later in its own units, 25..346): features standardised
  with the training rows' statistics, targets left raw.
* ``load_breast_cancer``: scikit-learn's bundled Wisconsin breast-cancer table, its ten "mean"
  features (with all thirty the classes are linearly separable, so the unregularised logistic
  loss would have no minimiser), standardised, with an intercept column of ones.
* ``load_logistic_problem``: a two-class full-batch problem of the HDM study (float64, the
  features standardised with an intercept column, labels 0/1) from a bundled table or MNIST.

Each returns a :class:`TableData`: tensors and a :class:`~experiments.core.datasets.DatasetSource` with one
SHA-256 over the files read.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from experiments.core.datasets import (DatasetFileError, DatasetNotFoundError, DatasetSource, load_dataset,
                                       sha256_of_files)

__all__ = ["FORTUNES_DIR", "FORTUNES_VERSION", "TableData", "load_breast_cancer", "load_diabetes",
           "load_logistic_problem", "load_text_corpus", "logistic_problem", "read_breast_cancer_table"]

FORTUNES_DIR = Path("/usr/share/games/fortunes")
FORTUNES_VERSION = "1:1.99.1-7.3"
"""The Debian package the text corpus comes from (``apt-get install fortunes=1:1.99.1-7.3``)."""
VALID_SHARE = 0.1
SPLIT_SEED = 0
"""Seeds the fixed training/validation split of the tables."""


def _sklearn_data() -> Path:
    import sklearn  # the experiments extra; only its bundled files are read

    return Path(sklearn.__file__).parent / "datasets" / "data"


@dataclass(frozen=True)
class TableData:
    """Training and validation tensors of one workload and where they came from."""

    train_x: torch.Tensor
    train_y: torch.Tensor | None
    valid_x: torch.Tensor
    valid_y: torch.Tensor | None
    source: DatasetSource


def load_text_corpus(directory: str | os.PathLike = FORTUNES_DIR) -> TableData:
    """The text files of ``directory`` (sorted by name; the ``fortunes`` package's ``.dat`` indexes,
    ``.u8`` links and subfolders skipped), concatenated as uint8 bytes (int64 tensors)."""
    directory = Path(directory)
    files = sorted(path for path in directory.glob("*")
                   if path.is_file() and not path.is_symlink() and path.suffix not in (".dat", ".u8"))
    if not files:
        raise DatasetNotFoundError(f"{directory}: no text files (apt-get install fortunes={FORTUNES_VERSION})")
    text = b"".join(path.read_bytes() for path in files)
    data = torch.from_numpy(np.frombuffer(text, dtype=np.uint8).astype(np.int64))
    cut = int(len(data) * (1 - VALID_SHARE))
    source = DatasetSource(f"Debian package fortunes {FORTUNES_VERSION}, {len(text)} bytes",
                           tuple(map(str, files)), sha256_of_files(files))
    return TableData(data[:cut], None, data[cut:], None, source)


def _split(count: int, valid_share: float) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(SPLIT_SEED).permutation(count)
    valid = max(1, round(valid_share * count))
    return order[valid:], order[:valid]


def _standardise(features: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Centre and scale by the training rows' mean and standard deviation (constant columns kept at 0)."""
    mean, scale = features[train].mean(axis=0), features[train].std(axis=0)
    return (features - mean) / np.where(scale > 0, scale, 1.0)


def _read_table(path: Path, **options) -> np.ndarray:
    try:
        with (gzip.open(path, "rt") if path.suffix == ".gz" else open(path)) as stream:
            return np.loadtxt(stream, ndmin=2, **options)
    except (OSError, ValueError) as error:
        raise DatasetFileError(f"{path}: not a readable table of numbers ({error})") from error


def load_diabetes(features: str | os.PathLike | None = None, targets: str | os.PathLike | None = None) -> TableData:
    """scikit-learn's raw diabetes files (or others of the same format): 20% of the rows validate."""
    folder = _sklearn_data()
    paths = [Path(features or folder / "diabetes_data_raw.csv.gz"), Path(targets or folder / "diabetes_target.csv.gz")]
    x, y = _read_table(paths[0]), _read_table(paths[1]).reshape(-1)
    if len(x) != len(y):
        raise DatasetFileError(f"{paths[1]}: {len(y)} targets for {len(x)} rows of {paths[0]}")
    train, valid = _split(len(y), 0.2)
    x = torch.from_numpy(_standardise(x, train)).float()
    y = torch.from_numpy(y).float().unsqueeze(1)
    source = DatasetSource("scikit-learn bundled diabetes (raw features and targets)", tuple(map(str, paths)),
                           sha256_of_files(paths))
    return TableData(x[train], y[train], x[valid], y[valid], source)


def read_breast_cancer_table(path: str | os.PathLike | None = None) -> np.ndarray:
    """scikit-learn's ``breast_cancer.csv`` as float64 rows of 30 features and the label (1 = benign):
    the one reader of this table (the benchmark's workload and the full-batch study's problem)."""
    return _read_table(Path(path or _sklearn_data() / "breast_cancer.csv"), delimiter=",", skiprows=1)


def load_breast_cancer(path: str | os.PathLike | None = None, columns: int = 10) -> TableData:
    """scikit-learn's ``breast_cancer.csv`` (a count line, then rows of 30 features and the label):
    every row trains and validates (a full-batch objective)."""
    path = Path(path or _sklearn_data() / "breast_cancer.csv")
    table = read_breast_cancer_table(path)
    every = np.arange(len(table))
    x = np.hstack([_standardise(table[:, :columns], every), np.ones((len(table), 1))])
    x, y = torch.from_numpy(x).float(), torch.from_numpy(table[:, -1:]).float()
    source = DatasetSource(f"scikit-learn bundled breast cancer (first {columns} features)", (str(path),),
                           sha256_of_files([path]))
    return TableData(x, y, x, y, source)


def logistic_problem(features: np.ndarray, labels: np.ndarray, source: DatasetSource) -> TableData:
    """A full-batch logistic problem: the non-constant features standardised, an intercept column
    appended, labels to {0, 1}, float64; every example trains and validates."""
    features = np.asarray(features, dtype=np.float64)
    scale = features.std(axis=0)
    kept = features[:, scale > 0]
    kept = (kept - kept.mean(axis=0)) / scale[scale > 0]
    x = torch.from_numpy(np.hstack([kept, np.ones((len(kept), 1))]))
    y = torch.from_numpy(np.asarray(labels, dtype=np.float64))
    return TableData(x, y, x, y, source)


SKLEARN_TABLES = {"iris": "iris.csv", "digits": "digits.csv.gz", "wine": "wine_data.csv"}
"""The scikit-learn bundled tables a full-batch problem may use, with the file each is read from."""


def load_logistic_problem(table: str, select: Callable[[np.ndarray], np.ndarray],
                          positive: Callable[[np.ndarray], np.ndarray], columns: slice = slice(None)) -> TableData:
    """:func:`logistic_problem` of the rows of a data set that ``select(target)`` keeps, labelled
    ``positive(target)``, with the features ``columns``. ``table``: ``breast_cancer`` (read by
    :func:`read_breast_cancer_table`, target 1 = benign), ``mnist`` (the training images, target
    the digit) or one of :data:`SKLEARN_TABLES` (through scikit-learn's loader)."""
    if table == "breast_cancer":
        path = _sklearn_data() / "breast_cancer.csv"
        rows = read_breast_cancer_table(path)
        features, target = rows[:, :-1], rows[:, -1]
        source = DatasetSource("scikit-learn bundled breast cancer", (str(path),), sha256_of_files([path]))
    elif table == "mnist":
        data = load_dataset("mnist")
        features, target, source = data.train_x.flatten(1).double().numpy(), data.train_y.numpy(), data.source
    else:
        from sklearn import datasets  # the experiments extra

        bunch = getattr(datasets, f"load_{table}")()
        path = _sklearn_data() / SKLEARN_TABLES[table]
        features, target = bunch.data, bunch.target
        source = DatasetSource(f"scikit-learn bundled {table}", (str(path),), sha256_of_files([path]))
    mask = select(target)
    return logistic_problem(features[mask][:, columns], positive(target[mask]), source)
