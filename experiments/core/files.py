"""Every file the experiments write or read back: one atomic writer and the CSV/JSON formats.

:func:`atomic_write` lets a callback write a temporary file beside the target and renames it into
place, so a reader sees the old file or the new one, never half of one (Ctrl-C, crash, full disk).
The temporary file is created with mode ``0666`` minus the process's umask (``0644`` under the
usual ``022``), the mode a plain ``open(path, "w")`` would give, not ``mkstemp``'s ``0600``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import pickle
import re
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["atomic_write", "read_csv_columns", "read_csv_rows", "read_json", "read_torch", "write_csv", "write_json",
           "write_text", "write_torch"]


def atomic_write(path: str | os.PathLike, write_file: Callable[[str], None]) -> Path:
    """Let ``write_file(temporary_path)`` write a file beside ``path``, then rename it over ``path``.

    On any error the temporary file is removed and ``path`` keeps its old content. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies
    try:
        write_file(str(temporary))
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def _write_stream(path: str | os.PathLike, write: Callable[[io.TextIOBase], None]) -> Path:
    """Atomically write a UTF-8 text file through ``write(stream)``."""

    def write_file(temporary: str) -> None:
        with open(temporary, "w", newline="", encoding="utf-8") as stream:
            write(stream)

    return atomic_write(path, write_file)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file (UTF-8) atomically."""
    return _write_stream(path, lambda stream: stream.write(text))


def write_csv(path: str | os.PathLike, columns: Sequence[str], rows: Sequence[Sequence]) -> Path:
    """Write a CSV atomically; floats in full precision (``repr``) so reruns compare exactly."""

    def write(stream) -> None:
        writer = csv.writer(stream)
        writer.writerow(columns)
        writer.writerows([[repr(v) if isinstance(v, float) else v for v in row] for row in rows])

    return _write_stream(path, write)


def _json_ready(value: Any) -> Any:
    """NaN and infinities as ``None`` (JSON ``null``), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    return value


def write_json(path: str | os.PathLike, content: Any) -> Path:
    """Write JSON atomically (NaN and infinities as JSON ``null``)."""
    return _write_stream(path, lambda stream: json.dump(_json_ready(content), stream, indent=2, default=str))


def read_json(path: str | os.PathLike, keys: Sequence[str] = ()) -> Any:
    """The content of a JSON file; with ``keys``, a JSON object that must hold each of them.

    Raises:
        ValueError: naming the file, when it is not valid UTF-8 JSON or lacks one of ``keys``.
    """
    try:
        content = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path} is not a valid JSON file ({error})") from None
    if keys and not (isinstance(content, dict) and all(key in content for key in keys)):
        raise ValueError(f"{path} is not the expected JSON object (with keys {', '.join(keys)})")
    return content


def write_torch(path: str | os.PathLike, content: Any) -> Path:
    """``torch.save`` atomically."""
    return atomic_write(path, lambda temporary: torch.save(content, temporary))


def read_torch(path: str | os.PathLike, *, weights_only: bool) -> Any:
    """``torch.load`` onto the CPU (``weights_only``: tensors and plain data only, nothing that runs code).

    Raises:
        ValueError: naming the file, when it is truncated or not a file ``torch.save`` wrote, or
            (``weights_only``) when it holds anything else; the message names what it holds
            and never suggests loading it without ``weights_only``.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as error:
        if weights_only and "Weights only load failed" in str(error):
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
            what = (f"it refers to {found.group(1)}, and a file read here may hold only tensors and plain data"
                    if found else "it is not a file of tensors and plain data only")
            raise ValueError(f"{path}: refused to load it: {what} (nothing in it is run)") from None
        raise ValueError(f"{path} is not a readable torch file (UnpicklingError: {_first_line(error)})") from None
    except Exception as error:  # truncated zip (RuntimeError), empty (EOFError)...
        raise ValueError(f"{path} is not a readable torch file ({type(error).__name__}: {_first_line(error)})") from None


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else "no details"


def read_csv_columns(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A CSV of numbers as ``{column: float array}`` (empty cells and ``None`` are NaN)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        if not lines:
            raise ValueError("empty CSV")
        columns = lines[0].split(",")
        rows = [[float(cell) if cell not in ("", "None") else math.nan for cell in line.split(",")]
                for line in lines[1:]]
        values = np.array(rows, dtype=float).reshape(len(rows), len(columns))
    except ValueError as error:  # empty, not UTF-8, a cell that is no number, rows of unequal length
        raise ValueError(f"{path} is not a valid CSV of numbers ({error})") from None
    return {name: values[:, i] for i, name in enumerate(columns)}


def read_csv_rows(path: str | os.PathLike) -> list[dict[str, str]]:
    """A CSV with text cells as one ``{column: cell}`` dict per row."""
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))
