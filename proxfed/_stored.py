"""Reading back stored results: a damaged file is reported with a warning and recomputed, never trusted.

The pipelines (:func:`proxfed.experiments.paper.reproduce`, :func:`proxfed.tune.random_search`)
reuse results stored by an earlier call. A file truncated by a kill or a full disk, or
edited by hand, must not crash the resumed pipeline nor feed it wrong numbers: these
readers return None (with a :class:`StoredResultWarning` naming the file and the
problem) and the caller computes the result again, overwriting the file.

The writers' side lives here too: :func:`jsonable` turns NumPy values into plain JSON types and
:func:`write_json_atomic` writes a document through a temporary file, so that a killed writer
never leaves the partial file these readers would have to reject.
"""

from __future__ import annotations

import json
import math
import os
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

__all__ = ["StoredResultWarning", "UnreadableNpz", "read_npz", "read_back_json", "read_back_npz", "jsonable",
           "write_json_atomic"]


class StoredResultWarning(UserWarning):
    """A stored result could not be read back and is recomputed."""


def _warn(path: Path, problem: str) -> None:
    warnings.warn(f"{path}: {problem}; recomputing it", StoredResultWarning, stacklevel=3)


class UnreadableNpz(ValueError):
    """An ``.npz`` file that cannot be read whole; the message says why (each caller words the error)."""


#: What ``np.load`` and reading an archive's members raise on a truncated or corrupt file.
_NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


def read_npz(path) -> dict:
    """Every array of the ``.npz`` archive ``path``, read (and so CRC-checked) now.

    Raises
    ------
    UnreadableNpz
        The file is a single ``.npy`` array (message ``"a single .npy array, not an .npz archive"``)
        or truncated or corrupt (message ``"<exception type>: <message>"``).
    """
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise UnreadableNpz("a single .npy array, not an .npz archive")
        with npz:
            return {k: npz[k] for k in npz.files}
    except UnreadableNpz:
        raise
    except _NPZ_ERRORS as exc:
        raise UnreadableNpz(f"{type(exc).__name__}: {exc}") from None


def read_back_json(path, kind: type | None = dict):
    """The JSON document stored at ``path``, or None (with a warning) if it is unreadable.

    Parameters
    ----------
    path : path-like
        An existing file.
    kind : type, optional
        The document's expected top-level type (default a JSON object); another
        type counts as damaged.

    Returns
    -------
    object or None
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        _warn(path, f"damaged stored result ({type(exc).__name__}: {exc})")
        return None
    if kind is not None and not isinstance(doc, kind):
        _warn(path, f"damaged stored result (a JSON {type(doc).__name__}, expected a {kind.__name__})")
        return None
    return doc


def read_back_npz(path, required=(), length: int | None = None) -> dict | None:
    """The arrays stored in the ``.npz`` file ``path``, or None (with a warning) if it is unreadable.

    Every member is read (and so checked against its CRC) here, not later.

    Parameters
    ----------
    path : path-like
    required : sequence of str
        Arrays that must be there.
    length : int, optional
        The length every array must have along its first axis (e.g. the
        number of history records the summary states).

    Returns
    -------
    dict of str to ndarray, or None
    """
    path = Path(path)
    try:
        arrays = read_npz(path)
    except UnreadableNpz as exc:
        npy = str(exc).startswith("a single .npy")
        _warn(path, "damaged stored result (an .npy array, not an .npz archive)" if npy
              else f"damaged stored result ({exc})")
        return None
    missing = [k for k in required if k not in arrays]
    if missing:
        _warn(path, f"damaged stored result (missing arrays {missing})")
        return None
    if length is not None:
        wrong = sorted(k for k, a in arrays.items() if a.ndim == 0 or a.shape[0] != length)
        if wrong:
            _warn(path, f"damaged stored result ({wrong} do not have {length} records)")
            return None
    return arrays


def jsonable(obj, *, nonfinite_to_none: bool = True, arrays: bool = True, other=None):
    """``obj`` with NumPy values replaced by plain JSON types, through dicts, lists and tuples.

    Dict keys become ``str(key)``, tuples lists, NumPy scalars their ``.item()`` and (with
    ``arrays``) arrays their ``.tolist()``. A Python float that is not finite becomes None when
    ``nonfinite_to_none`` (NumPy scalars and array entries are kept as they are). A value of
    no JSON type (None, bool, int, float, str) is passed to ``other`` -- ``repr``, ``str``, or a
    function that raises -- or, without ``other``, kept as it is.

    As ``json.dumps(..., default=functools.partial(jsonable, other=repr))`` it is a ``default``
    hook: arrays and NumPy scalars are converted and anything else is written as its repr.

    >>> import numpy as np
    >>> jsonable({1: (np.int64(2), float("nan")), "a": np.arange(2)})
    {'1': [2, None], 'a': [0, 1]}
    """
    def walk(v):
        if isinstance(v, dict):
            return {str(k): walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v]
        if arrays and isinstance(v, np.ndarray):
            return v.tolist()
        if isinstance(v, np.generic):
            return v.item()
        if nonfinite_to_none and isinstance(v, float) and not math.isfinite(v):
            return None
        if other is not None and not (v is None or isinstance(v, (bool, int, float, str))):
            return other(v)
        return v

    return walk(obj)


def write_json_atomic(path, obj, *, indent: int = 2, convert: bool = True) -> None:
    """Write ``obj`` as JSON (``indent``) through a temporary file beside ``path`` and rename it.

    A killed writer never leaves a partial file. With ``convert`` the document is passed through
    :func:`jsonable` first (non-finite floats are written as null); otherwise it is written as given.
    Missing parent directories are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(jsonable(obj) if convert else obj, indent=indent))
    tmp.replace(path)
