"""File helpers shared by the loaders: errors, decompression, CSV parsing, atomic writes."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np

__all__ = ["DataFormatError"]


class DataFormatError(ValueError):
    """A data file is malformed (wrong columns, bad cells, truncated archive, missing keys...).

    The message names the file and, where it applies, the row, column, key or
    member at fault. Loaders raise it before returning or writing anything.
    """


def require_dir(path: Path, what: str) -> Path:
    """``path`` as an existing folder, or a FileNotFoundError naming it."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {path}")
    return path


def require_file(path: Path, what: str) -> Path:
    """``path`` as an existing file, or a FileNotFoundError naming it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def read_bytes(path: Path) -> bytes:
    """Contents of ``path``, transparently gunzipped when its name ends in ``.gz``.

    A truncated or corrupt gzip stream raises :class:`DataFormatError` naming the file.
    """
    path = Path(path)
    raw = path.read_bytes()
    if path.suffix == ".gz":
        return gunzip(raw, str(path))
    return raw


def gunzip(raw: bytes, name: str) -> bytes:
    """Decompress a complete gzip stream or raise :class:`DataFormatError` naming ``name``."""
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataFormatError(f"{name}: truncated or corrupt gzip file ({exc})") from None


def parse_csv(raw: bytes, name: str, n_columns: int) -> np.ndarray:
    """Parse a headerless comma-separated file of numbers into a float64 matrix.

    Every non-empty line must hold exactly ``n_columns`` finite numbers; the
    first offending line raises :class:`DataFormatError` with the file name,
    the 1-based line and column and the offending cell.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": reported below
            data = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError:
        _locate_csv_error(raw, name, n_columns)
        raise  # pragma: no cover - _locate_csv_error always raises for input loadtxt rejects
    if data.shape[0] == 0:
        raise DataFormatError(f"{name}: the file has no data rows")
    if data.shape[1] != n_columns:
        raise DataFormatError(f"{name}: line 1 has {data.shape[1]} columns, expected {n_columns}")
    bad = ~np.isfinite(data)
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        line = _data_line_numbers(raw)[row]
        raise DataFormatError(
            f"{name}: line {line}, column {col + 1}: non-finite value {float(data[row, col])!r} (NaN or inf)"
        )
    return data


def _data_line_numbers(raw: bytes) -> list[int]:
    """1-based line numbers of the non-blank lines (loadtxt skips blank lines)."""
    return [i + 1 for i, line in enumerate(raw.splitlines()) if line.strip()]


def _locate_csv_error(raw: bytes, name: str, n_columns: int) -> None:
    """Scan line by line for the first malformed line and raise a precise error."""
    for i, line in enumerate(raw.splitlines()):
        if not line.strip():
            continue
        cells = line.split(b",")
        if len(cells) != n_columns:
            raise DataFormatError(f"{name}: line {i + 1} has {len(cells)} columns, expected {n_columns}")
        for j, cell in enumerate(cells):
            try:
                float(cell)
            except ValueError:
                text = cell.decode("utf-8", "replace")
                raise DataFormatError(f"{name}: line {i + 1}, column {j + 1}: not a number: {text!r}") from None
    raise DataFormatError(f"{name}: could not be parsed as comma-separated numbers")


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(dest: Path):
    """Yield a temporary path beside ``dest``; on success it replaces ``dest`` atomically.

    On any exception or interruption the temporary file is removed and
    ``dest`` is left as it was, so a reader never sees a partial file and no
    ``.part`` file is left behind.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(name)
    try:
        os.close(fd)
        yield tmp
        os.replace(tmp, dest)
    finally:  # (after a successful replace there is nothing left to remove)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
