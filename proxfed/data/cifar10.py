"""CIFAR-10 from the standard python-pickle batches, and its federated split."""

from __future__ import annotations

import codecs
import io
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from ._io import DataFormatError
from .dataset import FederatedDataset, Split
from .download import fetch
from .partition import (
    federate,
    partition_dirichlet,
    partition_iid,
    partition_shards,
    partition_unbalanced_dirichlet,
)

__all__ = ["read_cifar10", "load_cifar10"]

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
FOLDER = "cifar-10-batches-py"
N_PIXELS = 3 * 32 * 32
N_CLASSES = 10

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct
    from numpy.core.numeric import _frombuffer

# The only globals a CIFAR-10 batch pickle refers to (written by Python 2 or 3, any numpy).
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy globals an array needs (no arbitrary code)."""

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch") from None


def _unpickle(raw: bytes, name: str) -> dict:
    try:
        obj = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - any failure to unpickle is a format error of this file
        raise DataFormatError(f"{name}: not a CIFAR-10 python pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise DataFormatError(f"{name}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _batch(raw: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(raw, name)
    for key in ("data", "labels"):
        if key not in d:
            raise DataFormatError(f"{name}: missing key {key!r}")
    data, labels = d["data"], d["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != N_PIXELS:
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise DataFormatError(f"{name}: data must be a uint8 array of shape (n, {N_PIXELS}), "
                              f"got shape {shape} and dtype {dtype}")
    try:
        y = np.asarray(labels)
    except (TypeError, ValueError):
        y = np.asarray([], dtype=object)
    if y.ndim != 1 or y.shape[0] != data.shape[0] or y.dtype.kind not in "iu":
        raise DataFormatError(f"{name}: labels must be {data.shape[0]} integers, got {y.shape} of dtype {y.dtype}")
    bad = np.flatnonzero((y < 0) | (y >= N_CLASSES))
    if bad.size:
        raise DataFormatError(f"{name}: label {int(y[bad[0]])} at index {int(bad[0])} is outside [0, {N_CLASSES})")
    return data, y.astype(np.int64)


def _members(path: Path) -> dict:
    """{batch name: (label for messages, raw bytes)} from a folder, its parent, or the tar.gz archive."""
    names = (*TRAIN_BATCHES, TEST_BATCH, META)
    if path.is_dir():
        folder = path / FOLDER if (path / FOLDER).is_dir() and not (path / META).exists() else path
        out = {}
        for n in names:
            f = folder / n
            if not f.is_file():
                raise FileNotFoundError(f"CIFAR-10 batch not found: {f}")
            out[n] = (str(f), f.read_bytes())
        return out
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 folder or archive not found: {path}")
    try:
        with tarfile.open(path, "r:*") as tar:
            found = {}
            for m in tar.getmembers():
                base = m.name.rsplit("/", 1)[-1]
                if m.isfile() and base in names and base not in found:
                    found[base] = m
            missing = [n for n in names if n not in found]
            if missing:
                raise DataFormatError(f"{path}: archive lacks the CIFAR-10 members {missing}")
            return {n: (f"{path}:{found[n].name}", tar.extractfile(found[n]).read()) for n in names}
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataFormatError(f"{path}: not a readable CIFAR-10 tar archive ({exc})") from None


def _layout(images: np.ndarray, layout: str) -> np.ndarray:
    x = images.reshape(-1, 3, 32, 32)
    return x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def read_cifar10(path, layout: str = "NCHW"):
    """Read the CIFAR-10 python batches as uint8 images and integer labels.

    Reads ``data_batch_1`` ... ``data_batch_5``, ``test_batch`` and
    ``batches.meta`` (Krizhevsky, 2009; the "python version" of CIFAR-10):
    each batch a pickled dict with ``data``, a ``uint8`` array of shape
    (10000, 3072) whose rows hold the 1024 red, then 1024 green, then 1024 blue
    values of a 32 x 32 image in row-major order, and ``labels``, a list of
    integers in [0, 10). The pickles are read with an unpickler that admits
    only the numpy globals an array needs, so a malicious file cannot run code.

    Parameters
    ----------
    path : str or path-like
        The ``cifar-10-batches-py`` folder, a folder containing it, or the
        ``cifar-10-python.tar.gz`` archive (read without extracting).
    layout : {"NCHW", "NHWC"}
        ``"NCHW"``: images of shape (n, 3, 32, 32), the file's own order (a
        view, no copy). ``"NHWC"``: shape (n, 32, 32, 3), channels last.

    Returns
    -------
    X_train : numpy.ndarray of uint8, shape (50000, 3, 32, 32) or (50000, 32, 32, 3)
        Batches 1 to 5 in order.
    y_train : numpy.ndarray of int64, shape (50000,)
    X_test : numpy.ndarray of uint8, shape (10000, ...)
    y_test : numpy.ndarray of int64, shape (10000,)
    label_names : list of str
        The 10 class names of ``batches.meta``.

    Raises
    ------
    FileNotFoundError
        A missing folder, archive or batch file.
    DataFormatError
        An unreadable pickle or archive, data not ``uint8`` of shape
        (n, 3072), labels of the wrong length or outside [0, 10), meta
        without 10 label names, an archive without the expected members.
    """
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    raw = _members(Path(path).expanduser())
    train = [_batch(raw[n][1], raw[n][0]) for n in TRAIN_BATCHES]
    X_test, y_test = _batch(raw[TEST_BATCH][1], raw[TEST_BATCH][0])
    meta_name = raw[META][0]
    meta = _unpickle(raw[META][1], meta_name)
    names = meta.get("label_names")
    if not isinstance(names, list) or len(names) != N_CLASSES:
        raise DataFormatError(f"{meta_name}: label_names must be a list of {N_CLASSES} names")
    names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]
    X_train = np.concatenate([b[0] for b in train])
    y_train = np.concatenate([b[1] for b in train])
    return _layout(X_train, layout), y_train, _layout(X_test, layout), y_test, names


def load_cifar10(
    path=None,
    *,
    n_clients: int = 10,
    partition="unbalanced_dirichlet",
    alpha: float = 0.3,
    sigma: float = 0.3,
    shards_per_client: int = 2,
    seed: int = 0,
    min_size: int = 1,
    layout: str = "NCHW",
    download: bool = False,
    url: str | None = None,
    sha256: str | None = None,
) -> FederatedDataset:
    """CIFAR-10 split among clients, as a :class:`FederatedDataset` of flattened images.

    The default reproduces the paper's split: FedLab's unbalanced Dirichlet
    partition with ``n_clients=10, alpha=0.3, sigma=0.3`` (see
    :func:`partition_unbalanced_dirichlet`).

    Preprocessing, exactly: the uint8 images of :func:`read_cifar10` are
    flattened in ``layout`` order (``"NCHW"``: 1024 red, 1024 green, 1024 blue
    values, the file's order; ``"NHWC"``: pixel by pixel, channels
    interleaved) and divided by 255, giving 3072 float64 features in [0, 1]; no
    mean/std normalization, no augmentation, no bias column. Labels are
    ``int64`` in [0, 10). The test batch is the pooled ``test`` split. The
    float64 copy of the full training set takes about 1.2 GB; torch models
    may rather take :func:`read_cifar10`'s uint8 arrays and the index lists of
    a partitioner.

    Parameters
    ----------
    path : str or path-like, optional
        As in :func:`read_cifar10`. With ``download=True``: the folder to
        download the archive into (default :func:`default_cache_dir`).
    n_clients : int
    partition : {"unbalanced_dirichlet", "dirichlet", "iid", "shards"} or list of index arrays
        The partitioner (called with ``seed`` and ``min_size``), or a
        ready partition of the 50,000 training rows.
    alpha, sigma : float
        Dirichlet concentration and log-normal size spread (the Dirichlet partitioners).
    shards_per_client : int
        For ``"shards"``.
    seed : int
    min_size : int
    layout : {"NCHW", "NHWC"}
        Flattening order; recorded in ``meta["image_shape"]``.
    download : bool
        Fetch ``cifar-10-python.tar.gz`` (sha256-verified, written
        atomically) into ``path`` unless a verified copy is there.
    url, sha256 : str, optional
        Override the download address and checksum.

    Returns
    -------
    FederatedDataset
        Named ``"cifar10"``; ``meta``: ``label_names``, ``image_shape``
        ((3, 32, 32) or (32, 32, 3)), ``layout``, ``partition`` (its name and
        parameters), ``row_index`` (training-set index of every row).
    """
    if download:
        path = fetch("cifar10", path, url=url, sha256=sha256)
    elif path is None:
        raise ValueError("give the path of the CIFAR-10 batches or archive, or download=True")
    X_train, y_train, X_test, y_test, names = read_cifar10(path, layout=layout)
    if isinstance(partition, str):
        if partition == "unbalanced_dirichlet":
            parts = partition_unbalanced_dirichlet(y_train, n_clients, alpha, sigma, seed, min_size=min_size)
            info = {"name": partition, "n_clients": n_clients, "alpha": alpha, "sigma": sigma, "seed": seed}
        elif partition == "dirichlet":
            parts = partition_dirichlet(y_train, n_clients, alpha, seed, min_size=min_size)
            info = {"name": partition, "n_clients": n_clients, "alpha": alpha, "seed": seed}
        elif partition == "iid":
            parts = partition_iid(y_train.size, n_clients, seed, min_size=min_size)
            info = {"name": partition, "n_clients": n_clients, "seed": seed}
        elif partition == "shards":
            parts = partition_shards(y_train, n_clients, shards_per_client, seed, min_size=min_size)
            info = {"name": partition, "n_clients": n_clients, "shards_per_client": shards_per_client, "seed": seed}
        else:
            raise ValueError(f"unknown partition {partition!r}; use unbalanced_dirichlet, dirichlet, iid or shards")
    else:
        parts = [np.asarray(p, dtype=np.int64) for p in partition]
        info = {"name": "custom", "n_clients": len(parts)}
    X = X_train.reshape(X_train.shape[0], -1) / 255.0
    Xt = X_test.reshape(X_test.shape[0], -1) / 255.0
    return federate(
        X, y_train, parts, test=Split(Xt, y_test), name="cifar10",
        meta={"label_names": names, "image_shape": list(X_train.shape[1:]), "layout": layout, "partition": info},
    )


def missing_files(path) -> str | None:
    """What a ``--data-dir`` for CIFAR-10 lacks (None: :func:`read_cifar10` finds its python batches).

    ``path`` is the ``.tar.gz`` (its members are checked by the reader), the batches' folder or a
    folder holding the archive's ``cifar-10-batches-py/``.
    """
    path = Path(path)
    if path.is_file():
        return None
    folder = path / FOLDER if (path / FOLDER).is_dir() and not (path / META).exists() else path
    missing = [n for n in (*TRAIN_BATCHES, TEST_BATCH, META) if not (folder / n).is_file()]
    if missing:
        return f"no CIFAR-10 python batches ({', '.join(missing)} missing) in it or in its {FOLDER}/ folder"
    return None
