"""Run files: the atomic run directory of :meth:`RunResult.save` and the state file (:func:`save_state`, :func:`load_state`)."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np

from . import _backend as B
from ._stored import UnreadableNpz, read_npz
from .algorithms.base import TALLIES, State

__all__ = ["RUN_FILES", "staged_directory", "save_state", "load_state"]

#: The files of a run directory written by :meth:`proxfed.RunResult.save`.
RUN_FILES = ("config.json", "history.npz", "summary.json", "state.npz")


def _check_run_directory(path: Path) -> None:
    """Refuse to replace a file, or a directory holding anything but a run's files."""
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"cannot save a run to {path}: it exists and is not a directory")
    if path.is_dir():
        other = sorted(p.name for p in path.iterdir() if p.name not in RUN_FILES)
        if other:
            raise FileExistsError(f"cannot save a run to {path}: it holds files other than a saved run's "
                                  f"({', '.join(other[:5])}{', ...' if len(other) > 5 else ''}); choose a new "
                                  "directory")


def _sibling(path: Path, suffix: str) -> Path:
    """A fresh hidden name beside ``path`` (``.<name>.<random>.<suffix>``)."""
    return path.with_name(f".{path.name}.{os.urandom(4).hex()}.{suffix}")


@contextlib.contextmanager
def staged_directory(path: Path):
    """Yield an empty temporary directory beside ``path``; on success it replaces ``path``.

    On any exception (or interruption) the temporary directory is removed
    and ``path`` is left as it was.
    """
    path = Path(os.path.abspath(Path(path).expanduser()))
    _check_run_directory(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    try:
        tmp.mkdir()  # (the umask's permissions, as a plain mkdir)
        yield tmp
        _check_run_directory(path)  # (again: something may have appeared meanwhile)
        _swap_in(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # (gone already after a successful swap)


def _swap_in(new: Path, path: Path) -> None:
    """Rename ``new`` to ``path``; an existing ``path`` is moved aside first and removed after.

    If the final rename fails, the earlier ``path`` is moved back.
    """
    if not path.exists():
        os.replace(new, path)
        return
    old = _sibling(path, "old")
    os.replace(path, old)
    try:
        os.replace(new, path)
    except BaseException:
        os.replace(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


#: Arrays every state file holds (:func:`save_state`); ``seed``, ``stretch_t``/``stretch_w`` and
#: ``extra_<name>`` are optional.
_STATE_ARRAYS = ("w", "h", "t", "communications", "bits_up", "bits_down", "values_up", "upload_nnz")


def save_state(state: State, path) -> None:
    """Save a state's arrays to an ``.npz`` file (host copies).

    Besides the iterates, control variates, iteration and accounting, the file
    keeps the state's ``seed`` and ``stretch`` (see :class:`State`) and its
    ``extras``, so that :func:`load_state` gives back a state from which
    :func:`run` continues the same trajectory.
    """
    arrays = {"w": B.to_numpy(state.w), "h": B.to_numpy(state.h), "t": np.asarray(state.t)}
    state = state.with_host_tallies()
    for name in ("communications", *TALLIES):
        arrays[name] = np.asarray(getattr(state, name))
    if state.seed is not None:
        arrays["seed"] = np.asarray(state.seed, dtype=np.int64)
    if state.stretch is not None:
        arrays["stretch_t"] = np.asarray(state.stretch[0], dtype=np.int64)
        arrays["stretch_w"] = B.to_numpy(state.stretch[1])
    for key, value in state.extras.items():
        arrays[f"extra_{key}"] = B.to_numpy(value)
    np.savez_compressed(path, **arrays)


def load_state(path, like=None) -> State:
    """Load a state written by :func:`save_state` (or :meth:`RunResult.save`), onto ``like``'s library and device.

    Parameters
    ----------
    path : str or path-like
        A ``state.npz`` file.
    like : array, optional
        The arrays are moved to its library, device and floating dtype
        (default: NumPy arrays as saved).

    Returns
    -------
    State
        Its arrays C-contiguous, whatever their layout when saved, so that a
        run resumed from it computes exactly what the uninterrupted run did.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    proxfed.data.DataFormatError
        (a ``ValueError``) If the file is truncated or corrupt, is not an
        ``.npz`` archive, lacks arrays or holds arrays of the wrong type or
        shape; the message names the file and what is wrong.
    """
    from .data._io import DataFormatError

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"state file not found: {path}")
    try:
        arrays = read_npz(path)
    except UnreadableNpz as exc:
        if str(exc).startswith("a single .npy"):
            raise DataFormatError(f"{path}: not a state file (a single .npy array, not an .npz archive)") from None
        raise DataFormatError(f"{path}: not a readable state file: truncated or corrupt ({exc})") from None
    missing = [k for k in _STATE_ARRAYS if k not in arrays]
    if missing:
        raise DataFormatError(f"{path}: not a state file: missing arrays {missing}")

    def fail(what):
        raise DataFormatError(f"{path}: {what}")

    w, h, t = arrays["w"], arrays["h"], arrays["t"]
    if w.dtype.kind != "f" or w.ndim < 2:
        fail(f"w must be a floating array of shape (..., N, d), got {w.dtype} of shape {w.shape}")
    if h.shape != w.shape or h.dtype != w.dtype:
        fail(f"h must have the shape and dtype of w {w.shape} {w.dtype}, got {h.shape} {h.dtype}")
    if t.shape != () or t.dtype.kind not in "iu" or t < 0:
        fail(f"t must be a non-negative integer, got {t!r}")
    batch, N = w.shape[:-2], w.shape[-2]
    for name in _STATE_ARRAYS[3:]:
        want = batch if name == "communications" else batch + (N,)
        a = arrays[name]
        if a.dtype.kind not in "iu" or a.shape != want:
            fail(f"{name} must be an integer array of shape {want}, got {a.dtype} of shape {a.shape}")
    seed = None
    if "seed" in arrays:
        a = arrays["seed"]
        if a.dtype.kind not in "iu" or a.ndim > 1 or np.any(a < 0):
            fail(f"seed must be a non-negative integer or a 1-d array of them, got {a!r}")
        seed = int(a) if a.ndim == 0 else tuple(int(v) for v in a)
    stretch = None
    if "stretch_t" in arrays or "stretch_w" in arrays:
        st, sw = arrays.get("stretch_t"), arrays.get("stretch_w")
        if st is None or sw is None or st.shape != () or st.dtype.kind not in "iu" or sw.shape != w.shape:
            fail("stretch_t and stretch_w must be an integer and an array of the shape of w")
        stretch = (int(st), np.ascontiguousarray(sw))
    put = np.ascontiguousarray if like is None else (lambda a: B.from_numpy(np.ascontiguousarray(a), like=like))
    extras = {k[len("extra_"):]: put(v) for k, v in arrays.items() if k.startswith("extra_")}
    if like is not None and stretch is not None:  # (jumps run on NumPy arrays only)
        moved = put(stretch[1])
        stretch = (stretch[0], moved) if isinstance(moved, np.ndarray) else None
    return State(
        w=put(w), h=put(h), t=int(t),
        communications=arrays["communications"], bits_up=arrays["bits_up"], bits_down=arrays["bits_down"],
        values_up=arrays["values_up"], upload_nnz=arrays["upload_nnz"], extras=extras, seed=seed, stretch=stretch,
    )

