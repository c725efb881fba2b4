"""Per-run helpers of the batched update rules: seeds, coins, run selection and merging.

A batch of R runs shares one array axis; these helpers pick, merge and
broadcast along it (:func:`select_runs`, :func:`merge_runs`, :func:`take_runs`,
:func:`hyper_like`) and turn seeds and coins into per-run form
(:func:`seeds_and_keys`, :func:`coin_array`). Re-exported by :mod:`proxfed.algorithms.base`.
"""

from __future__ import annotations

import numbers

import array_api_compat
import numpy as np

from .. import _backend as B
from .._validation import check_seed
from ..prox import per_run

__all__ = ["per_run_length", "seeds_and_keys", "coin_array", "select_runs", "latest_upload", "comm_runs", "take_runs",
           "merge_runs", "hyper_like"]


def per_run_length(values) -> int | None:
    """``R`` when some of ``values`` are per-run 1-d arrays (all of length ``R``), else None.

    Raises
    ------
    ValueError
        When two per-run arrays have different lengths.
    """
    sizes = {int(np.shape(v)[0]) for v in values if v is not None and np.ndim(v) == 1}
    if len(sizes) > 1:
        raise ValueError(f"per-run hyperparameters have different lengths: {sorted(sizes)}")
    return sizes.pop() if sizes else None


def seeds_and_keys(seed, runs):
    """Per run, the seed and the run index of its streams: ``(seed, r)`` for one integer seed,
    ``(seed[r], 0)`` for one seed per run (checked by :func:`proxfed._validation.check_seed`)."""
    n = 1 if runs is None else int(runs)
    seed = check_seed(seed)
    if isinstance(seed, int):
        return [seed] * n, list(range(n))
    if len(seed) != n:
        raise ValueError(f"seed must be an int or have one entry per run ({n}), got {len(seed)}")
    return list(seed), [0] * n


def coin_array(coin, batch_shape: tuple) -> np.ndarray:
    """Validate a coin (bool or per-run bools) and broadcast it to the batch shape."""
    c = B.to_numpy(coin)
    if c.dtype.kind not in "bui":
        raise TypeError(f"coin must be boolean (or 0/1), got dtype {c.dtype}")
    if c.dtype.kind != "b" and not np.all((c == 0) | (c == 1)):
        raise ValueError("coin must be 0/1 or boolean")
    try:
        return np.broadcast_to(c.astype(bool), batch_shape)
    except ValueError:
        raise ValueError(f"coin has shape {c.shape}, expected () or {batch_shape}") from None


def select_runs(mask: np.ndarray, new, old):
    """``new`` where the per-run ``mask`` is true, else ``old`` (arrays of shape (..., N, d))."""
    if mask.all():
        return new
    if not mask.any():
        return old
    xp = B.namespace(old)
    m = B.device_constant(np.array(mask).reshape(mask.shape + (1, 1)), like=old)
    return xp.where(m, new, old)


def latest_upload(mask: np.ndarray, sent, previous):
    """Each run's most recent upload: ``sent`` where ``mask`` (batch shape) is true, else
    ``previous`` (zeros for runs that have not communicated yet)."""
    if mask.all():
        return sent
    if previous is None:
        xp = B.namespace(sent)
        previous = xp.zeros(sent.shape, dtype=sent.dtype, device=B.device_of(sent))
    return select_runs(mask, sent, previous)


def comm_runs(mask: np.ndarray):
    """Indices of the communicating runs when only some of a 1-d batch communicate, else None.

    Rules then compute their communication branch for those runs only
    (:func:`take_runs`, :func:`merge_runs`) instead of for all and
    discarding the rest.
    """
    if mask.ndim != 1 or mask.all() or not mask.any():
        return None
    return np.flatnonzero(mask)


def take_runs(x, runs):
    """Runs ``runs`` of a batched array (R, ...) or of a per-run hyperparameter (scalars, and
    ``runs=None``, pass through)."""
    if runs is None or x is None or isinstance(x, numbers.Real) or np.ndim(x) == 0:
        return x
    if isinstance(x, np.ndarray):
        return x[runs]
    xp = B.namespace(x)
    return xp.take(x, B.device_constant(np.asarray(runs, np.int64), like=x), axis=0)


def merge_runs(mask: np.ndarray, new, old):
    """Per-run merge: run ``r`` from ``new`` (which holds only the runs where ``mask`` is true, in
    order) where ``mask[r]``, else from ``old`` (all R runs; None reads as zeros). ``new`` and
    ``old`` have the same shape after the run axis (broadcast ``new`` first if it is smaller).

    NumPy: one pass that writes the result and reads only the rows it keeps. Other libraries:
    two kernels whatever R (a concatenation and one gather on the run axis), not one per run.
    """
    xp = B.namespace(new)
    mask = np.asarray(mask, bool)
    shape = tuple(new.shape[1:])
    n_new = int(new.shape[0])
    if isinstance(new, np.ndarray):
        out = np.empty((mask.size,) + shape, dtype=new.dtype)
        j = 0
        for r, m in enumerate(mask):
            if m:
                out[r] = new[j]
                j += 1
            else:
                out[r] = 0 if old is None else old[r]
        return out
    if old is None:
        old = xp.zeros((mask.size,) + shape, dtype=new.dtype, device=B.device_of(new))
    runs = B.device_constant(np.flatnonzero(mask).astype(np.int64), like=new)
    if array_api_compat.is_torch_array(new):  # writes R + n_new rows
        return old.expand((mask.size,) + shape).clone().index_copy_(0, runs, new.expand((n_new,) + shape))
    if array_api_compat.is_cupy_array(new):  # pragma: no cover - needs a GPU
        out = xp.broadcast_to(old, (mask.size,) + shape).copy()
        out[runs] = new
        return out
    source = np.where(mask, np.cumsum(mask) - 1, n_new + np.arange(mask.size))
    stacked = xp.concat([xp.broadcast_to(new, (n_new,) + shape), xp.broadcast_to(old, (mask.size,) + shape)], axis=0)
    return xp.take(stacked, B.device_constant(source.astype(np.int64), like=new), axis=0)


def hyper_like(value, x):
    """A hyperparameter (scalar or (R,)) broadcastable against iterates ``x`` (R, N, d)."""
    return per_run(value, x)

