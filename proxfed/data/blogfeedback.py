"""BlogFeedback (UCI dataset 304): one client per blog, min-max scaled features, bias column."""

from __future__ import annotations

import math
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .. import _backend as B
from .._validation import check_real, check_seed
from ._io import DataFormatError, gunzip, parse_csv, read_bytes
from .cache import cached, source_fingerprint
from .dataset import FederatedDataset, Split
from .download import fetch

__all__ = ["load_blogfeedback"]

N_COLUMNS = 281  # 280 features and the target, as in the UCI files
N_KEY_COLUMNS = 50  # the first 50 columns identify the blog (the client)
TRAIN_NAMES = ("blogData_train.csv", "blogData_train.csv.gz")
TEST_PATTERN = re.compile(r"^blogData_test-\d{4}\.\d{2}\.\d{2}\.\d{2}_\d{2}\.csv(\.gz)?$")
_SPLIT_STREAM = 0
_VERSION = 1  # bump when the preprocessing changes, so old caches are not reused


def _read_folder(folder: Path):
    """(train bytes, [(name, test bytes)], source files) from a UCI folder."""
    for name in TRAIN_NAMES:
        train_path = folder / name
        if train_path.is_file():
            break
    else:
        raise FileNotFoundError(f"BlogFeedback training file not found: {folder / TRAIN_NAMES[0]} (or .gz)")
    test_paths = sorted(p for p in folder.iterdir() if TEST_PATTERN.match(p.name))
    if not test_paths:
        raise FileNotFoundError(f"no BlogFeedback test files (blogData_test-*.csv) in {folder}")
    train = (str(train_path), read_bytes(train_path))
    tests = [(str(p), read_bytes(p)) for p in test_paths]
    return train, tests, [train_path, *test_paths]


def _read_zip(path: Path):
    """(train bytes, [(name, test bytes)], source files) from the UCI zip (members matched by base name)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataFormatError(f"{path}: not a readable zip file ({exc})") from None
    with archive:
        members = {}
        for info in archive.infolist():
            if not info.is_dir():
                members.setdefault(info.filename.rsplit("/", 1)[-1], info)
        train_name = next((n for n in TRAIN_NAMES if n in members), None)
        test_names = sorted(n for n in members if TEST_PATTERN.match(n))
        missing = ([] if train_name else [TRAIN_NAMES[0]]) + ([] if test_names else ["blogData_test-*.csv"])
        if missing:
            raise DataFormatError(f"{path}: zip lacks the expected BlogFeedback members {missing}")

        def member(name):
            label = f"{path}:{members[name].filename}"
            try:
                raw = archive.read(members[name])
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:  # (zlib: a damaged deflate stream)
                raise DataFormatError(f"{label}: corrupt zip member ({type(exc).__name__}: {exc})") from None
            except (NotImplementedError, RuntimeError) as exc:  # an unsupported compression, an encrypted member
                raise DataFormatError(f"{label}: unreadable zip member ({exc})") from None
            return label, gunzip(raw, label) if name.endswith(".gz") else raw

        return member(train_name), [member(n) for n in test_names], [path]


def _split_rows(client: np.ndarray, n_val: int, gen: np.random.Generator):
    """Seeded row split that leaves every client at least one training row.

    A uniformly random permutation puts its first ``n_val`` rows in
    validation. Each client left without a training row takes back its
    validation row that comes last in the permutation, in exchange for the
    training row, first in the permutation, of a client that keeps at least two.
    """
    n = client.shape[0]
    perm = gen.permutation(n)
    val, train = perm[:n_val].copy(), perm[n_val:].copy()
    n_clients = int(client.max()) + 1
    train_count = np.bincount(client[train], minlength=n_clients)
    for c in np.flatnonzero(train_count == 0):
        vi = np.flatnonzero(client[val] == c)[-1]
        donors = np.flatnonzero(train_count[client[train]] >= 2)
        if donors.size == 0:  # pragma: no cover - needs more clients than training rows
            raise ValueError("validation_fraction is too large to leave every client a training row")
        ti = donors[0]
        train_count[client[train[ti]]] -= 1
        val[vi], train[ti] = train[ti], val[vi]
        train_count[c] += 1
    return np.sort(train), np.sort(val)


#: Feature scalings of :func:`load_blogfeedback` (``scaling=``).
SCALINGS = ("minmax", "standard", "none")


def _scaling(scale, scaling) -> str:
    """The one scaling asked for by ``scale`` (older bool) or ``scaling``."""
    if scale is not None:
        if not isinstance(scale, (bool, np.bool_)):
            raise TypeError(f"scale must be True or False, got {scale!r}")
        if scaling is not None:
            raise ValueError("give scaling= or the older scale=, not both")
        return "minmax" if scale else "none"
    if scaling is None:
        return "minmax"
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {', '.join(map(repr, SCALINGS))}, got {scaling!r}")
    return scaling


def _build(train, tests, sources, validation_fraction, seed, scaling, bias, name):
    train_name, train_raw = train
    data = parse_csv(train_raw, train_name, N_COLUMNS)
    test_blocks = [parse_csv(raw, label, N_COLUMNS) for label, raw in tests]
    test = np.concatenate(test_blocks)

    keys, client = np.unique(data[:, :N_KEY_COLUMNS], axis=0, return_inverse=True)
    client = client.reshape(-1)
    n = data.shape[0]
    n_val = math.ceil(validation_fraction * n) if validation_fraction > 0 else 0
    if n - n_val < keys.shape[0]:
        raise ValueError(
            f"validation_fraction={validation_fraction} leaves {n - n_val} training rows for {keys.shape[0]} clients"
        )
    train_rows, val_rows = _split_rows(client, n_val, B.rng(seed, _SPLIT_STREAM))

    # clients in key order, each client's rows in file order
    order = train_rows[np.argsort(client[train_rows], kind="stable")]
    sizes = np.bincount(client[order], minlength=keys.shape[0])
    offsets = np.concatenate([[0], np.cumsum(sizes)])

    X = data[order, :-1]
    constant = X.max(axis=0) == X.min(axis=0)
    if scaling == "minmax":
        lo, span = X.min(axis=0), X.max(axis=0) - X.min(axis=0)
    elif scaling == "standard":
        lo, span = X.mean(axis=0), X.std(axis=0)
    else:
        lo, span = np.zeros(X.shape[1]), np.ones(X.shape[1])
    span[constant] = 1.0  # constant columns map to 0 on the training part, no division by zero

    def features(rows):
        p = rows.shape[1]
        Z = np.empty((rows.shape[0], p + 1 if bias else p))
        np.subtract(rows, lo, out=Z[:, :p])
        Z[:, :p] /= span
        if bias:
            Z[:, p] = 1.0
        return Z

    key_index = {k.tobytes(): i for i, k in enumerate(keys)}

    def client_of(rows):
        return np.array([key_index.get(r.tobytes(), -1) for r in np.ascontiguousarray(rows[:, :N_KEY_COLUMNS])],
                        dtype=np.int64)

    validation = None
    if n_val:
        validation = Split(features(data[val_rows, :-1]), data[val_rows, -1])
    return FederatedDataset(
        features(X),
        data[order, -1],
        offsets,
        test=Split(features(test[:, :-1]), test[:, -1]),
        validation=validation,
        name=name,
        meta={
            "keys": keys,
            "train_row": order,
            "validation_row": val_rows,
            "validation_client": client[val_rows],
            "test_client": client_of(test),
            "test_file": np.repeat(np.arange(len(tests)), [b.shape[0] for b in test_blocks]),
            "test_files": [Path(label).name for label, _ in tests],
            "feature_min": lo,
            "feature_scale": span,
            "scaling": scaling,
            "constant_columns": np.flatnonzero(constant),
            "seed": int(seed),
            "validation_fraction": float(validation_fraction),
            "sources": [str(s) for s in sources],
        },
    )


def load_blogfeedback(
    path=None,
    *,
    validation_fraction: float = 0.1,
    seed: int = 0,
    scale: bool | None = None,
    bias: bool = True,
    cache_dir=None,
    scaling: str | None = None,
    download: bool = False,
    url: str | None = None,
    sha256: str | None = None,
) -> FederatedDataset:
    """Load BlogFeedback (Buza, 2014; UCI dataset 304) as a federated regression dataset.

    Reads the UCI files: ``blogData_train.csv`` (or ``blogData_train.csv.gz``)
    and the ``blogData_test-2012.MM.DD.HH_00.csv`` files, from a folder or
    from the UCI zip. Each file is comma-separated, headerless, 281 columns:
    280 features and the target (comments in the next 24 hours) last.

    Preprocessing, exactly:

    1. **Clients.** One client per distinct value of the first 50 columns of
       the training file (the blog's statistics, constant within a blog);
       clients are ordered by that key (lexicographic, ``numpy.unique``), each
       client's rows in file order. The UCI training file has 554 keys.
    2. **Validation split.** ``ceil(validation_fraction * n)`` rows of the
       training file, chosen by a random permutation from
       ``rng(seed, 0)``, form the validation split (5,240 of 52,397 rows, leaving
       the paper's n = 47,157). Clients are defined on the whole file, and the
       split keeps every client in the training part: a client left without a
       training row takes back one of its rows in exchange for a training row of
       a client that keeps at least two (sizes unchanged). So N = 554 for every seed.
    3. **Scaling** (``scaling``). ``"minmax"`` (default): each of the 280
       features is mapped to ``(x - min) / (max - min)``, with min and max
       taken over the training part only; the same map is applied to
       validation and test, which may therefore fall slightly outside
       [0, 1]. ``"standard"``: ``(x - mean) / std`` (population std) over
       the training part. A column constant on the training part has its
       span or std replaced by 1, so it maps to 0 there. ``"none"`` keeps
       the raw features.
    4. **Target** unscaled (a count, stored as float64).
    5. **Bias.** A column of ones is appended (``bias=True``): d = 281.
    6. **Test** = all test files in name (date) order, pooled.

    Parameters
    ----------
    path : str or path-like, optional
        The folder with the UCI files, or the UCI zip. With ``download=True``:
        the folder to download into (default :func:`default_cache_dir`).
    validation_fraction : float in [0, 1)
        Share of the training file held out for validation (0: none).
    seed : int
        Seed of the validation split.
    scale : bool, optional
        Older spelling: ``True`` is ``scaling="minmax"``, ``False`` is
        ``scaling="none"`` (give one of the two).
    bias : bool
        Append the bias column.
    cache_dir : str or path-like, optional
        If given, the parsed dataset is saved there as ``.npz`` (see
        :func:`save_dataset`) and later calls with the same sources (path,
        size, modification time) and options load it instead of parsing the CSV.
    scaling : {"minmax", "standard", "none"}, optional
        Feature scaling (step 3; default ``"minmax"``, as ALGORITHMS.md).
    download : bool
        Fetch the UCI zip (sha256-verified, written atomically) into ``path``
        unless a verified copy is already there.
    url, sha256 : str, optional
        Override the download address and checksum (default from :data:`REMOTE_FILES`).

    Returns
    -------
    FederatedDataset
        Named ``"blogfeedback"``, with ``validation`` and ``test`` splits and
        ``meta``: ``keys`` (N x 50 raw key of each client), ``train_row`` (row
        of the training file of every dataset row, 0-based), ``validation_row``,
        ``validation_client`` and ``test_client`` (client of each validation /
        test row; -1 for a test key absent from the training file),
        ``test_file`` (index into ``test_files``), ``feature_min`` and
        ``feature_scale`` (the map ``(x - feature_min) / feature_scale``),
        ``scaling``, ``constant_columns``, ``seed``, ``sources``.

    Raises
    ------
    FileNotFoundError
        Missing folder, zip, training file or test files.
    DataFormatError
        Wrong column count, non-numeric or non-finite cell (file, line and
        column named), truncated gzip, zip without the expected members.

    Examples
    --------
    >>> from proxfed.data import load_blogfeedback
    >>> ds = load_blogfeedback("../shared/data/blogfeedback")  # doctest: +SKIP
    >>> ds.n_clients, ds.n_samples, ds.n_features  # doctest: +SKIP
    (554, 47157, 281)
    """
    check_real(validation_fraction, "validation_fraction", low=0.0, high=1.0, high_open=True)
    check_seed(seed, sequence=False)
    scaling = _scaling(scale, scaling)
    if download:
        path = fetch("blogfeedback", path, url=url, sha256=sha256)
    elif path is None:
        raise ValueError("give the path of the BlogFeedback folder or zip, or download=True")
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"BlogFeedback folder or zip not found: {path}")
    if path.is_dir():
        reader = _read_folder
        sources = [p for p in sorted(path.iterdir()) if p.name in TRAIN_NAMES or TEST_PATTERN.match(p.name)]
    else:
        reader = _read_zip
        sources = [path]
    key = {
        "loader": "blogfeedback",
        "version": _VERSION,
        "sources": source_fingerprint(sources),
        "validation_fraction": float(validation_fraction),
        "seed": int(seed),
        "scaling": scaling,
        "bias": bool(bias),
    }

    def build():
        train, tests, used = reader(path)
        return _build(train, tests, used, validation_fraction, seed, scaling, bias, "blogfeedback")

    return cached(cache_dir, "blogfeedback", key, build)


def missing_files(path) -> str | None:
    """What a ``--data-dir`` for BlogFeedback lacks (None: :func:`load_blogfeedback` finds its files).

    ``path`` is the UCI zip, the folder of its CSV files, or a folder holding a ``blogfeedback/`` one;
    a zip's members are checked by the loader.
    """
    path = Path(path)
    folder = path / "blogfeedback" if (path / "blogfeedback").is_dir() else path
    if folder.is_file():
        return None
    names = [p.name for p in folder.iterdir()]
    if not any(n in TRAIN_NAMES for n in names) or not any(TEST_PATTERN.match(n) for n in names):
        return ("no BlogFeedback files (blogData_train.csv and blogData_test-*.csv, or the UCI zip) in it or in "
                "its blogfeedback/ folder")
    return None
