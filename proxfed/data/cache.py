"""Save a parsed :class:`FederatedDataset` to ``.npz`` and load it back."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

from .._stored import UnreadableNpz, jsonable, read_npz
from ._io import DataFormatError, atomic_path
from .dataset import FederatedDataset, Split

__all__ = ["save_dataset", "load_dataset"]

#: Version of the on-disk layout; files of another version are rejected.
CACHE_FORMAT = 1


def _refuse(value):
    raise TypeError(f"meta value of type {type(value).__name__} cannot be saved (arrays, numbers, strings, "
                    "lists and dicts of those can)")


def save_dataset(dataset: FederatedDataset, path) -> Path:
    """Write ``dataset`` to an uncompressed ``.npz`` file, atomically.

    The file holds ``X``, ``y``, ``offsets``, the test and validation splits,
    the name, every array in ``meta`` (as ``meta.<key>``) and the other
    ``meta`` entries as JSON (numbers, strings, lists, dicts; tuples come back
    as lists). It is written to a temporary file beside ``path`` and renamed,
    so an interrupted save never leaves a partial file. Nothing is pickled.

    Parameters
    ----------
    dataset : FederatedDataset
    path : str or path-like
        Destination; ``.npz`` is appended when the name has no suffix.

    Returns
    -------
    pathlib.Path
        The file written.

    Examples
    --------
    >>> import tempfile, os
    >>> from proxfed.data import make_sparse_regression, save_dataset, load_dataset
    >>> ds = make_sparse_regression(n_clients=3, n_features=4, n_informative=2, seed=0)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     back = load_dataset(save_dataset(ds, os.path.join(tmp, "ds.npz")))
    >>> back.n_clients, bool((back.X == ds.X).all())
    (3, True)
    """
    if not isinstance(dataset, FederatedDataset):
        raise TypeError(f"expected a FederatedDataset, got {type(dataset).__name__}")
    path = Path(path).expanduser()
    if not path.suffix:
        path = path.with_suffix(".npz")
    arrays = {"X": dataset.X, "y": dataset.y, "offsets": dataset.offsets}
    for part in ("test", "validation"):
        split = getattr(dataset, part)
        if split is not None:
            arrays[f"{part}.X"] = split.X
            arrays[f"{part}.y"] = split.y
    other = {}
    for key, value in dataset.meta.items():
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "biufcUS":
                raise TypeError(f"meta[{key!r}] has dtype {value.dtype}, which cannot be saved without pickle")
            arrays[f"meta.{key}"] = value
        else:
            other[str(key)] = jsonable(value, nonfinite_to_none=False, arrays=False, other=_refuse)
    header = {"format": CACHE_FORMAT, "name": dataset.name, "meta": other}
    arrays["header"] = np.array(json.dumps(header))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return path


def load_dataset(path) -> FederatedDataset:
    """Load a dataset written by :func:`save_dataset`.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    FederatedDataset
        Equal to the saved one (arrays bit-identical, ``meta`` restored).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    DataFormatError
        If the file is not a dataset written by :func:`save_dataset` (or by an
        incompatible version of it), or is truncated.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"dataset cache not found: {path}")
    try:
        data = read_npz(path)
    except UnreadableNpz as exc:
        if str(exc).startswith("a single .npy"):
            raise DataFormatError(f"{path}: not a proxfed dataset file (a single .npy array, not an .npz archive)"
                                  ) from None
        raise DataFormatError(f"{path}: not a readable .npz dataset ({exc})") from None
    header = _read_header(data, path)
    missing = [k for k in ("X", "y", "offsets") if k not in data]
    if missing:
        raise DataFormatError(f"{path}: missing arrays {missing}")
    splits = {}
    for part in ("test", "validation"):
        if (f"{part}.X" in data) != (f"{part}.y" in data):
            raise DataFormatError(f"{path}: the {part} split has only one of {part}.X and {part}.y")
        if f"{part}.X" in data:
            splits[part] = (data.pop(f"{part}.X"), data.pop(f"{part}.y"))
    meta = dict(header.get("meta", {}))
    for key in [k for k in data if k.startswith("meta.")]:
        meta[key[len("meta."):]] = data.pop(key)
    try:
        return FederatedDataset(data["X"], data["y"], data["offsets"], name=header.get("name", "dataset"),
                                meta=meta, **{k: Split(*xy) for k, xy in splits.items()})
    except (TypeError, ValueError) as exc:
        raise DataFormatError(f"{path}: the arrays do not form a dataset ({exc})") from None


def _read_header(data: dict, path: Path) -> dict:
    """The JSON header of a cache file (removed from ``data``), or a DataFormatError naming the file."""
    if "header" not in data:
        raise DataFormatError(f"{path}: not a proxfed dataset file (no header)")
    raw = data.pop("header")
    if raw.shape != () or raw.dtype.kind != "U":
        raise DataFormatError(f"{path}: malformed header (expected one JSON string, got {raw.dtype} of shape "
                              f"{raw.shape})")
    try:
        header = json.loads(str(raw))
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}: malformed header (not JSON: {exc})") from None
    if not isinstance(header, dict):
        raise DataFormatError(f"{path}: malformed header (expected a JSON object, got {type(header).__name__})")
    if header.get("format") != CACHE_FORMAT:
        raise DataFormatError(f"{path}: dataset file format {header.get('format')!r}, expected {CACHE_FORMAT}")
    if not isinstance(header.get("meta", {}), dict) or not isinstance(header.get("name", ""), str):
        raise DataFormatError(f"{path}: malformed header (meta must be an object and name a string)")
    return header


def source_fingerprint(paths) -> list:
    """(absolute path, size, mtime in ns) of each source file: what a cache key depends on."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append([str(Path(p).resolve()), st.st_size, st.st_mtime_ns])
    return out


def cache_file(cache_dir, prefix: str, key: dict) -> Path:
    """The cache file for a loader call: ``<cache_dir>/<prefix>-<hash of key>.npz``."""
    text = json.dumps({"format": CACHE_FORMAT, **key}, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return Path(cache_dir).expanduser() / f"{prefix}-{digest}.npz"


def check_cache_dir(cache_dir) -> Path:
    """``cache_dir`` as a path where a cache file can be written, checked before any parsing.

    It must be a writable directory, or not exist yet below a writable
    directory (it is made only when the first cache file is written).

    Raises
    ------
    NotADirectoryError
        If ``cache_dir`` or one of its parents is a file.
    PermissionError
        If the directory (or its nearest existing parent) is not writable.
    """
    path = Path(os.path.abspath(Path(cache_dir).expanduser()))
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file, not a directory" if existing == path else f"cannot be made: {existing} is a file"
        raise NotADirectoryError(f"cache_dir {path} {where}")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "is not writable" if existing == path else f"cannot be made: {existing} is not writable"
        raise PermissionError(f"cache_dir {path} {where}")
    return path


def cached(cache_dir, prefix: str, key: dict, build) -> FederatedDataset:
    """Load the cached result of ``build()`` for ``key`` or build it and save it.

    A cache entry that cannot be read (truncated, damaged, of another format)
    is rebuilt with a warning naming it, never trusted. The cache directory is
    checked before ``build`` parses anything (:func:`check_cache_dir`); a
    read-only one still serves the entries it holds.
    """
    if cache_dir is None:
        return build()
    target = cache_file(cache_dir, prefix, key)
    if target.is_file():
        try:
            return load_dataset(target)
        except DataFormatError as exc:  # a stale or damaged cache entry: rebuild and overwrite it
            warnings.warn(f"ignoring a damaged dataset cache, parsing the data again: {exc}", stacklevel=3)
    check_cache_dir(cache_dir)
    dataset = build()
    save_dataset(dataset, target)
    return dataset
