"""Save a parsed :class:`FederatedDataset` to ``.npz`` and load it back."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from ._io import DataFormatError, atomic_path
from .dataset import FederatedDataset, Split

__all__ = ["save_dataset", "load_dataset"]

#: Version of the on-disk layout; files of another version are rejected.
CACHE_FORMAT = 1


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
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
            other[str(key)] = _jsonable(value)
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
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataFormatError(f"{path}: not a readable .npz dataset ({exc})") from None
    if "header" not in data:
        raise DataFormatError(f"{path}: not a proxfed dataset file (no header)")
    header = json.loads(str(data.pop("header")))
    if header.get("format") != CACHE_FORMAT:
        raise DataFormatError(f"{path}: dataset file format {header.get('format')!r}, expected {CACHE_FORMAT}")
    missing = [k for k in ("X", "y", "offsets") if k not in data]
    if missing:
        raise DataFormatError(f"{path}: missing arrays {missing}")
    splits = {}
    for part in ("test", "validation"):
        if f"{part}.X" in data:
            splits[part] = Split(data.pop(f"{part}.X"), data.pop(f"{part}.y"))
    meta = dict(header.get("meta", {}))
    for key in [k for k in data if k.startswith("meta.")]:
        meta[key[len("meta."):]] = data.pop(key)
    return FederatedDataset(data["X"], data["y"], data["offsets"], name=header.get("name", "dataset"),
                            meta=meta, **splits)


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


def cached(cache_dir, prefix: str, key: dict, build) -> FederatedDataset:
    """Load the cached result of ``build()`` for ``key`` or build it and save it."""
    if cache_dir is None:
        return build()
    target = cache_file(cache_dir, prefix, key)
    if target.is_file():
        try:
            return load_dataset(target)
        except DataFormatError:
            pass  # a stale or damaged cache entry: rebuild and overwrite it
    dataset = build()
    save_dataset(dataset, target)
    return dataset
