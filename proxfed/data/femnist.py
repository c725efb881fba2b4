"""FEMNIST from LEAF's JSON output: one client per writer, 62 classes, 28 x 28 images."""

from __future__ import annotations

import itertools
import json
import numbers
from pathlib import Path

import numpy as np

from .. import _backend as B
from .._validation import check_seed
from ._io import DataFormatError, read_bytes, require_dir
from .cache import cached, source_fingerprint
from .dataset import FederatedDataset, Split

__all__ = ["load_femnist"]

IMAGE_SIZE = 784  # 28 x 28, flattened row-major
N_CLASSES = 62  # 0-9 digits, 10-35 upper case, 36-61 lower case
_SELECT_STREAM = 0
_VERSION = 1


def _json_files(folder: Path) -> list[Path]:
    """``*.json`` and ``*.json.gz`` files of ``folder`` by name; ``a.json`` wins over ``a.json.gz``."""
    plain = {p.name for p in folder.glob("*.json")}
    files = [p for p in folder.iterdir() if p.is_file() and (
        p.name.endswith(".json") or (p.name.endswith(".json.gz") and p.name[:-3] not in plain))]
    if not files:
        raise FileNotFoundError(f"no LEAF .json or .json.gz files in {folder}")
    return sorted(files, key=lambda p: p.name)


def _read_leaf_file(path: Path) -> dict:
    """Parse one LEAF file and check its structure; returns {writer: (x list, y list)}."""
    raw = read_bytes(path)
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise DataFormatError(f"{path}: expected a JSON object with keys users, num_samples, user_data")
    for key in ("users", "num_samples", "user_data"):
        if key not in doc:
            raise DataFormatError(f"{path}: missing key {key!r}")
    users, counts, data = doc["users"], doc["num_samples"], doc["user_data"]
    if not isinstance(users, list) or not isinstance(counts, list) or not isinstance(data, dict):
        raise DataFormatError(f"{path}: users and num_samples must be lists and user_data an object")
    if len(users) != len(counts):
        raise DataFormatError(f"{path}: {len(users)} users but {len(counts)} num_samples entries")
    out = {}
    for user, count in zip(users, counts):
        where = f"{path}: user {user!r}"
        if not isinstance(user, str):
            raise DataFormatError(f"{where}: user ids must be strings")
        if user in out:
            raise DataFormatError(f"{where}: listed twice in users")
        if user not in data:
            raise DataFormatError(f"{where}: missing from user_data")
        entry = data[user]
        for key in ("x", "y"):
            if not isinstance(entry, dict) or key not in entry:
                raise DataFormatError(f"{where}: missing key {key!r} in user_data")
        x, y = entry["x"], entry["y"]
        if not isinstance(x, list) or not isinstance(y, list):
            raise DataFormatError(f"{where}: x and y must be lists")
        if isinstance(count, bool) or not isinstance(count, int) or len(x) != count or len(y) != count:
            raise DataFormatError(f"{where}: num_samples is {count!r} but len(x) = {len(x)} and len(y) = {len(y)}")
        out[user] = (x, y)
    return out


def _read_split(folder: Path) -> tuple[dict, dict, list[Path]]:
    """All writers of one split: ({writer: (x, y)}, {writer: file}, files)."""
    files = _json_files(folder)
    writers, origin = {}, {}
    for path in files:
        for user, xy in _read_leaf_file(path).items():
            if user in writers:
                raise DataFormatError(f"{path}: user {user!r} also appears in {origin[user]}")
            writers[user] = xy
            origin[user] = path
    return writers, origin, files


def _to_arrays(x, y, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 784) float64 in [0, 1] and labels (n,) int64 in [0, 62), with errors naming the sample."""
    for i, row in enumerate(x):
        if not isinstance(row, list) or len(row) != IMAGE_SIZE:
            length = len(row) if isinstance(row, list) else type(row).__name__
            raise DataFormatError(f"{where}, sample {i}: image has length {length}, expected {IMAGE_SIZE}")
    # JSON numbers only: NumPy would read the string "0.25" and the booleans true/false as numbers
    if not set(map(type, itertools.chain.from_iterable(x))) <= {float, int}:
        for i, row in enumerate(x):
            for j, v in enumerate(row):
                if type(v) not in (float, int):
                    raise DataFormatError(f"{where}, sample {i}: pixel {j} = {v!r} is not a number "
                                          f"(a JSON {type(v).__name__})")
    X = np.array(x, dtype=np.float64).reshape(len(x), IMAGE_SIZE)
    bad = ~np.isfinite(X) | (X < 0) | (X > 1)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise DataFormatError(f"{where}, sample {i}: pixel {j} = {float(X[i, j])!r} is outside [0, 1]")
    for i, label in enumerate(y):
        ok = isinstance(label, numbers.Integral) or (isinstance(label, float) and label.is_integer())
        if isinstance(label, bool) or not ok or not 0 <= label < N_CLASSES:
            raise DataFormatError(f"{where}, sample {i}: label {label!r} is not an integer in [0, {N_CLASSES})")
    return X, np.array(y, dtype=np.int64).reshape(len(y))


def _build(folder: Path, n_writers, sample: bool, seed: int, invert: bool) -> FederatedDataset:
    train_dir = require_dir(folder / "train", "FEMNIST train")
    test_dir = require_dir(folder / "test", "FEMNIST test")
    train, train_origin, train_files = _read_split(train_dir)
    test, test_origin, test_files = _read_split(test_dir)
    available = sorted(train)
    if n_writers is None:
        chosen = available
    elif n_writers > len(available):
        raise ValueError(f"n_writers={n_writers} but {train_dir} holds only {len(available)} writers")
    elif sample:
        pick = B.rng(seed, _SELECT_STREAM).choice(len(available), n_writers, replace=False)
        chosen = [available[i] for i in np.sort(pick)]
    else:
        chosen = available[:n_writers]

    Xs, ys, Xt, yt = [], [], [], []
    for w in chosen:
        X, y = _to_arrays(*train[w], f"{train_origin[w]}: user {w!r}")
        if X.shape[0] == 0:
            raise DataFormatError(f"{train_origin[w]}: user {w!r} has no training samples")
        Xs.append(X)
        ys.append(y)
        if w in test:
            X, y = _to_arrays(*test[w], f"{test_origin[w]}: user {w!r}")
        else:
            X, y = np.empty((0, IMAGE_SIZE)), np.empty(0, dtype=np.int64)
        Xt.append(X)
        yt.append(y)
    X, y = np.concatenate(Xs), np.concatenate(ys)
    X_test, y_test = np.concatenate(Xt), np.concatenate(yt)
    if invert:
        X = 1.0 - X
        X_test = 1.0 - X_test
    sizes = [a.shape[0] for a in Xs]
    test_sizes = [a.shape[0] for a in Xt]
    return FederatedDataset(
        X,
        y,
        np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        test=Split(X_test, y_test) if X_test.shape[0] else None,
        name="femnist",
        meta={
            "writers": list(chosen),
            "test_offsets": np.concatenate([[0], np.cumsum(test_sizes)]).astype(np.int64),
            "n_classes": N_CLASSES,
            "image_shape": [28, 28],
            "inverted": bool(invert),
            "pixel_convention": "1.0 = ink (inverted)" if invert else "1.0 = white background (LEAF)",
            "sources": [str(p) for p in train_files + test_files],
        },
    )


def load_femnist(
    path,
    n_writers: int | None = 100,
    *,
    sample: bool = False,
    seed: int = 0,
    invert: bool = False,
    cache_dir=None,
) -> FederatedDataset:
    """Load FEMNIST from LEAF's JSON files: one client per writer.

    ``path`` holds ``train/`` and ``test/`` folders of LEAF output files
    (``*.json``, or ``*.json.gz`` compressed; ``a.json`` is preferred to
    ``a.json.gz`` when both exist), each
    ``{"users": [...], "num_samples": [...], "user_data": {user: {"x": [[784 floats]], "y": [int]}}}``.

    Data conventions, exactly:

    * **Images**: 28 x 28, flattened row-major to 784 float64 features in
      [0, 1]. LEAF's convention is kept by default: **1.0 is the white
      background** and the ink is dark (about 85 % of pixels are exactly 1.0).
      ``invert=True`` returns ``1 - x`` (background 0, ink near 1, as MNIST).
      No other scaling, and no bias column (the softmax problem has its own
      intercept).
    * **Labels**: ``int64`` in [0, 62): 0-9 digits, 10-35 upper-case and 36-61
      lower-case letters.
    * **Writers** (clients): those of ``train/``, in sorted order of their ids.
      The first ``n_writers`` are used (``n_writers=None``: all), or with
      ``sample=True`` a uniformly random subset drawn with ``rng(seed, 0)``,
      kept in sorted order. Each client holds its writer's training images in
      file order.
    * **Test**: LEAF splits every writer's images into train and test; the
      chosen writers' test images are pooled in writer order into
      ``dataset.test``, and ``meta["test_offsets"]`` (length N + 1) gives each
      writer's slice of it. Writers of ``test/`` that are not chosen are ignored.

    Parameters
    ----------
    path : str or path-like
        Folder with ``train/`` and ``test/``.
    n_writers : int or None
        Number of writers (clients). Default 100, as in the paper.
    sample : bool
        Choose the writers at random (seeded) instead of the first ones.
    seed : int
        Seed of the random choice.
    invert : bool
        Return ``1 - x`` (ink = 1).
    cache_dir : str or path-like, optional
        Save the parsed dataset there as ``.npz`` and reuse it (see
        :func:`load_blogfeedback`).

    Returns
    -------
    FederatedDataset
        Named ``"femnist"``; ``meta``: ``writers`` (ids, client order),
        ``test_offsets``, ``n_classes`` (62), ``image_shape`` ([28, 28]),
        ``inverted``, ``pixel_convention``, ``sources``.

    Raises
    ------
    FileNotFoundError
        Missing folder, ``train/`` or ``test/``, or no JSON files in them.
    DataFormatError
        Invalid JSON or truncated gzip, a missing key, ``len(x)`` or ``len(y)``
        different from ``num_samples``, an image whose length is not 784, a
        pixel outside [0, 1], a label outside [0, 62), a writer in two files of
        one split (the file and user are named).
    ValueError
        If ``n_writers`` exceeds the writers available.

    Examples
    --------
    >>> from proxfed.data import load_femnist
    >>> ds = load_femnist("../shared/data/femnist", n_writers=None)  # doctest: +SKIP
    >>> ds.n_clients, ds.n_samples, ds.test.n_samples  # doctest: +SKIP
    (105, 14640, 1677)
    """
    if n_writers is not None and (isinstance(n_writers, bool) or not isinstance(n_writers, numbers.Integral)
                                  or n_writers < 1):
        raise ValueError(f"n_writers must be a positive integer or None, got {n_writers!r}")
    check_seed(seed, sequence=False)
    folder = require_dir(Path(path), "FEMNIST")
    key = {"loader": "femnist", "version": _VERSION, "n_writers": None if n_writers is None else int(n_writers),
           "sample": bool(sample), "seed": int(seed) if sample else 0, "invert": bool(invert)}
    if cache_dir is not None:
        files = []
        for split in ("train", "test"):
            files += _json_files(require_dir(folder / split, f"FEMNIST {split}"))
        key["sources"] = source_fingerprint(files)
    return cached(cache_dir, "femnist", key,
                  lambda: _build(folder, None if n_writers is None else int(n_writers), bool(sample), seed,
                                 bool(invert)))


def missing_files(path) -> str | None:
    """What a ``--data-dir`` for FEMNIST lacks (None: LEAF's ``train/`` and ``test/`` folders are there).

    ``path`` is LEAF's output folder or a folder holding a ``femnist/`` one.
    """
    path = Path(path)
    folder = path / "femnist" if (path / "femnist").is_dir() else path
    if not all((folder / split).is_dir() for split in ("train", "test")):
        return "no FEMNIST train/ and test/ folders (LEAF's output) in it or in its femnist/ folder"
    return None
