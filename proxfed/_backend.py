"""Array-library primitives that the Array API standard lacks.

Every function takes arrays of any supported library (NumPy, CuPy, torch,
array-api-strict) and returns arrays of the same library on the same device.
Randomness is drawn on the host with NumPy and moved to the device, so coin
flips and random initialisations are bit-identical across backends.
"""

from __future__ import annotations

import numbers
from typing import Any

import array_api_compat
import numpy as np

__all__ = [
    "namespace",
    "device_of",
    "to_numpy",
    "from_numpy",
    "device_constant",
    "array_template",
    "index_dtype",
    "float_dtype",
    "topk_mask",
    "top_scores_mask",
    "topk",
    "soft_threshold",
    "segment_sum",
    "logsumexp",
    "nnz",
    "rng",
    "coin_flips",
    "COIN_STREAM",
    "INIT_STREAM",
]

#: Stream identifiers used as the last element of an RNG key, so that coin
#: flips and initialisations of the same (seed, run) never share random bits.
COIN_STREAM = 0
INIT_STREAM = 1


def namespace(*arrays: Any):
    """Return the Array API namespace of ``arrays`` (NumPy for Python scalars)."""
    arrays = [a for a in arrays if a is not None and not isinstance(a, (numbers.Number, bool))]
    if not arrays:
        return array_api_compat.array_namespace(np.empty(0))
    return array_api_compat.array_namespace(*arrays)


def device_of(x: Any):
    """Device of array ``x`` (``"cpu"`` for NumPy)."""
    return array_api_compat.device(x)


def to_numpy(x: Any) -> np.ndarray:
    """Copy an array of any supported library to a host NumPy array."""
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (numbers.Number, bool, np.generic)):
        return np.asarray(x)
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    if hasattr(x, "to_device") and array_api_compat.is_array_api_strict_namespace(
        array_api_compat.array_namespace(x)
    ):
        import array_api_strict

        x = x.to_device(array_api_strict.Device("CPU_DEVICE"))
        return np.from_dlpack(x)
    return np.asarray(x)


def from_numpy(a: np.ndarray, like: Any, dtype: Any = None):
    """Move host array ``a`` to the namespace and device of ``like``.

    ``dtype`` defaults to ``like``'s dtype for floating ``a`` and to the
    namespace's indexing dtype for integer ``a``; booleans stay booleans.
    """
    xp = namespace(like)
    dev = device_of(like)
    a = np.asarray(a)
    if dtype is None:
        if a.dtype.kind == "f":
            dtype = like.dtype
        elif a.dtype.kind in "iu":
            dtype = index_dtype(xp, dev)
        elif a.dtype.kind == "b":
            dtype = xp.bool
    return xp.asarray(a, dtype=dtype, device=dev)


_DEVICE_CONSTANTS: dict = {}
_DEVICE_CONSTANTS_MAX = 64


def device_constant(a: np.ndarray, like: Any):
    """:func:`from_numpy` for a small host array used again and again (hyperparameters, run indices).

    The copy on ``like``'s device is made once and reused: a transfer from the host
    synchronizes a GPU, and a step must not wait for one. Keyed by the values, not
    the object, so an array changed in place is moved again; the last 64 are kept.
    Treat the result as read-only.
    """
    a = np.asarray(a)
    if isinstance(like, np.ndarray):
        return from_numpy(a, like=like)
    key = (a.tobytes(), a.dtype.str, a.shape, namespace(like).__name__, str(device_of(like)), str(like.dtype))
    out = _DEVICE_CONSTANTS.get(key)
    if out is None:
        if len(_DEVICE_CONSTANTS) >= _DEVICE_CONSTANTS_MAX:
            _DEVICE_CONSTANTS.pop(next(iter(_DEVICE_CONSTANTS)))
        out = _DEVICE_CONSTANTS[key] = from_numpy(a, like=like)
    return out


BACKENDS = ("numpy", "torch", "cupy")


def array_template(backend: str = "numpy", device=None, dtype: str = "float64"):
    """An empty array of ``backend`` on ``device`` with ``dtype``: pass it as ``like`` to run there.

    Parameters
    ----------
    backend : {"numpy", "torch", "cupy"}
    device : str or int, optional
        torch: ``"cpu"`` (default), ``"cuda"``, ``"cuda:1"``...; CuPy: a GPU
        index (default 0); NumPy: None or ``"cpu"``.
    dtype : {"float64", "float32"}

    >>> array_template().dtype, array_template(dtype="float32").shape
    (dtype('float64'), (0,))
    """
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    if backend == "numpy":
        if device not in (None, "cpu"):
            raise ValueError(f"NumPy arrays live on the CPU; got device {device!r}")
        return np.empty(0, dtype=dtype)
    if backend == "torch":
        try:
            import torch
        except ImportError:
            raise ValueError("backend 'torch' needs torch installed (pip install torch)") from None
        return torch.empty(0, dtype=getattr(torch, dtype), device=device or "cpu")
    if backend == "cupy":
        try:
            import cupy
        except ImportError:
            raise ValueError("backend 'cupy' needs CuPy and a CUDA GPU") from None
        with cupy.cuda.Device(int(device or 0)):
            return cupy.empty(0, dtype=dtype)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def index_dtype(xp, device=None):
    """Default indexing dtype of namespace ``xp`` on ``device``."""
    try:
        return xp.__array_namespace_info__().default_dtypes(device=device)["indexing"]
    except (AttributeError, TypeError, KeyError):  # pragma: no cover - old wrappers
        return xp.int64


def float_dtype(xp, device=None):
    """Default real floating dtype of namespace ``xp`` on ``device``."""
    try:
        return xp.__array_namespace_info__().default_dtypes(device=device)["real floating"]
    except (AttributeError, TypeError, KeyError):  # pragma: no cover - old wrappers
        return xp.float64


def _low_end_ties(a: np.ndarray, rows: int = 64) -> float:
    """Share of entries equal to their row's minimum, in about ``rows`` evenly spaced rows."""
    lead = a.shape[:-1]
    n = int(np.prod(lead, dtype=np.int64))
    if n == 0 or a.shape[-1] == 0:
        return 0.0
    if a.ndim == 1:
        sample = a[None, :]
    else:  # gathers the sampled rows only: no copy of a non-contiguous ``a``
        sample = a[np.unravel_index(np.arange(0, n, max(1, n // rows)), lead)]
    return float(np.count_nonzero(sample == sample.min(axis=-1, keepdims=True))) / sample.size


def _kth_largest(a, k: int, xp):
    """The k-th largest entry of ``a`` along the last axis.

    Returns an array of shape ``a.shape[:-1] + (1,)``. Uses a partial
    selection where the library has one (NumPy/CuPy ``partition``, torch
    ``kthvalue``) and a full sort otherwise.
    """
    d = a.shape[-1]
    if array_api_compat.is_numpy_array(a):
        if a.dtype.kind == "f" and _low_end_ties(a) > 0.4:
            # the k-th smallest of -a (exact): NumPy's SIMD quickselect runs ~7x slower with one value
            # repeated at the low end (the exact zeros of a sparse model's magnitudes, as in FedIHT's
            # local steps) than at the high end, and ~10% slower on -a without them (bench_prox_kernels.py)
            return -np.partition(-a, k - 1, axis=-1)[..., k - 1 : k]
        return np.partition(a, d - k, axis=-1)[..., d - k : d - k + 1]
    if array_api_compat.is_cupy_array(a):  # pragma: no cover - needs a GPU
        import cupy

        return cupy.partition(a, d - k, axis=-1)[..., d - k : d - k + 1]
    if array_api_compat.is_torch_array(a):
        return a.kthvalue(d - k + 1, dim=-1, keepdim=True).values
    s = xp.sort(a, axis=-1, descending=True)
    return s[..., k - 1 : k]


def topk_mask(x, k):
    """Boolean mask of the ``k`` entries of largest magnitude along the last axis.

    Exactly ``k`` entries are selected in every row (``1 <= k <= d``); among
    entries of equal magnitude at the threshold the lowest indices win, so
    the result is deterministic.

    Parameters
    ----------
    x : array, shape (..., d)
    k : int or integer array broadcastable to ``x.shape[:-1]``
        Number of entries kept per row.

    Returns
    -------
    mask : bool array, shape (..., d)
    """
    return top_scores_mask(namespace(x).abs(x), k)


def top_scores_mask(a, k):
    """Boolean mask of the ``k`` largest entries of ``a`` along the last axis (no ``abs``).

    :func:`topk_mask` is ``top_scores_mask(|x|, k)``. Scores may be negative
    (e.g. ``-1`` to rank a coordinate below every magnitude); ties go to the
    lowest index, exactly ``k`` entries per row.

    Parameters
    ----------
    a : array, shape (..., d)
    k : int or integer array broadcastable to ``a.shape[:-1]``

    Returns
    -------
    mask : bool array, shape (..., d)
    """
    x = a
    xp = namespace(a)
    d = a.shape[-1]
    if isinstance(k, numbers.Integral):
        k = int(k)
        if not 1 <= k <= d:
            raise ValueError(f"k must be in [1, {d}], got {k}")
        if k == d:
            return xp.ones(x.shape, dtype=xp.bool, device=device_of(x))
        thr = _kth_largest(a, k, xp)
        kk = k
    else:
        k_np = to_numpy(k).astype(np.int64)
        if np.any(k_np < 1) or np.any(k_np > d):
            raise ValueError(f"every k must be in [1, {d}], got {k_np}")
        kk = device_constant(k_np, like=x)  # the library's index dtype (from_numpy's rule for integers)
        kk = xp.broadcast_to(kk[..., None] if kk.ndim else kk, x.shape[:-1] + (1,))
        if array_api_compat.is_torch_array(a):  # selection of the largest max(k), not a full sort
            import torch

            top = torch.topk(a, int(k_np.max()), dim=-1, largest=True, sorted=True).values
            thr = torch.take_along_dim(top, kk - 1, dim=-1)
        else:
            # ascending and unstable: the threshold needs neither a flipped copy nor a stable (8x slower) sort
            s = xp.sort(a, axis=-1, stable=False)
            thr = xp.take_along_axis(s, d - kk, axis=-1)
    greater = a > thr
    equal = a == thr
    if isinstance(a, np.ndarray):
        return _resolve_ties_numpy(greater, equal, kk)
    n_greater = xp.sum(xp.astype(greater, index_dtype(xp, device_of(x))), axis=-1, keepdims=True)
    rank = xp.cumulative_sum(xp.astype(equal, index_dtype(xp, device_of(x))), axis=-1)
    return greater | (equal & (rank <= kk - n_greater))


def _resolve_ties_numpy(greater, equal, kk):
    """``greater``, plus the lowest-index ``kk - #greater`` entries of ``equal``, per row.

    Rows with no more ties at the threshold than free slots (the usual case) take all their ties
    without a running count; only the others pay for a cumulative sum.
    """
    d = greater.shape[-1]
    n_greater = np.count_nonzero(greater, axis=-1)
    slots = np.broadcast_to(np.asarray(kk)[..., 0] if np.ndim(kk) else kk, n_greater.shape) - n_greater
    excess = np.count_nonzero(equal, axis=-1) > slots
    mask = np.logical_or(greater, equal, order="C")  # C order: the row fix below writes through a reshape view
    if excess.any():
        rows = np.flatnonzero(excess)
        flat_eq, flat_mask = equal.reshape(-1, d)[rows], mask.reshape(-1, d)
        rank = np.cumsum(flat_eq, axis=-1)
        flat_mask[rows] = greater.reshape(-1, d)[rows] | (flat_eq & (rank <= slots.reshape(-1)[rows, None]))
    return mask


def topk(x, k):
    """Keep the ``k`` entries of largest magnitude along the last axis, zero the rest.

    This is the Euclidean projection onto ``{v : ||v||_0 <= k}`` with the
    deterministic tie-break of :func:`topk_mask`.
    """
    xp = namespace(x)
    zero = xp.zeros((), dtype=x.dtype, device=device_of(x))  # broadcast: no (..., d) buffer of zeros
    return xp.where(topk_mask(x, k), x, zero)


def soft_threshold(x, tau):
    """``sign(x) * max(|x| - tau, 0)``, the prox of ``tau * ||.||_1``.

    ``tau`` (non-negative) is a scalar or an array broadcastable to ``x``.
    Computed as ``x - clip(x, -tau, tau)``: the same numbers (rounding is
    symmetric in sign; zeros come out as +0) in two passes instead of five
    (2.5x faster on NumPy; ``benchmarks/bench_prox_kernels.py``).
    """
    xp = namespace(x)
    return x - xp.clip(x, min=-tau, max=tau)


def segment_sum(values, offsets, axis: int = 0):
    """Sum ``values`` over the contiguous segments ``offsets[i]:offsets[i+1]`` of ``axis``.

    Parameters
    ----------
    values : array
    offsets : sequence of int, length N + 1, non-decreasing, ``offsets[0] = 0``
        and ``offsets[-1] = values.shape[axis]``.
    axis : int

    Returns
    -------
    array with ``values.shape[axis]`` replaced by N.
    """
    xp = namespace(values)
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or offsets[0] != 0 or offsets[-1] != values.shape[axis] or np.any(
        np.diff(offsets) < 0
    ):
        raise ValueError("offsets must be non-decreasing from 0 to values.shape[axis]")
    axis = axis % values.ndim
    if array_api_compat.is_numpy_array(values) and np.all(np.diff(offsets) > 0):
        return np.add.reduceat(values, offsets[:-1], axis=axis)
    parts = []
    for lo, hi in zip(offsets[:-1], offsets[1:]):
        sl = (slice(None),) * axis + (slice(int(lo), int(hi)), Ellipsis)
        parts.append(xp.sum(values[sl], axis=axis, keepdims=True))
    return xp.concat(parts, axis=axis)


def logsumexp(x, axis: int = -1, keepdims: bool = False):
    """``log(sum(exp(x), axis))`` computed stably by subtracting the maximum."""
    xp = namespace(x)
    m = xp.max(x, axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    total = xp.sum(xp.exp(x - m), axis=axis, keepdims=True)
    # log(0) = -inf for an all -inf slice, without a divide-by-zero warning
    safe = xp.where(total > 0, total, xp.ones_like(total))
    out = xp.where(total > 0, xp.log(safe), xp.full_like(total, -float("inf"))) + m
    return out if keepdims else xp.squeeze(out, axis=axis)


def nnz(x, axis: int = -1):
    """Number of non-zero entries along ``axis`` (as an array of the index dtype)."""
    if isinstance(x, np.ndarray):  # a counting loop, no boolean temporary
        return np.count_nonzero(x, axis=axis).astype(np.int64, copy=False)
    xp = namespace(x)
    if hasattr(xp, "count_nonzero"):  # one kernel (array API 2023.12)
        return xp.astype(xp.count_nonzero(x, axis=axis), index_dtype(xp, device_of(x)), copy=False)
    return xp.sum(xp.astype(x != 0, index_dtype(xp, device_of(x))), axis=axis)


def _check_seed(seed, name: str = "seed") -> int:
    """One seed: an integer >= 0 (TypeError for another type, ValueError for a negative one)."""
    from ._validation import check_seed

    return check_seed(seed, name, sequence=False)


def rng(seed: int, *key: int) -> np.random.Generator:
    """A host NumPy generator for the stream keyed by ``(seed, *key)``.

    Keys are e.g. ``(run, stream)`` or ``(run, round, client, stream)``;
    distinct keys give independent streams and the same key always gives
    the same stream, whatever else was drawn before.
    """
    seed = _check_seed(seed)
    key = tuple(int(k) for k in key)
    if any(k < 0 for k in key):
        raise ValueError(f"RNG key entries must be non-negative, got {key}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def coin_flips(seed: int, p, iterations: int, run: int = 0, start: int = 0) -> np.ndarray:
    """Bernoulli(``p``) communication coins ``theta_start, ..., theta_{start+iterations-1}``.

    Coin ``t`` of run ``run`` is ``u_t < p`` with ``u`` the uniform stream
    keyed by ``(seed, run, COIN_STREAM)``; it does not depend on ``start``,
    so a resumed run sees the same coins. Runs with the same seed and run
    index but different ``p`` share ``u`` (common random numbers).
    """
    if not 0 < p <= 1:
        raise ValueError(f"p must be in (0, 1], got {p}")
    if iterations < 0 or start < 0:
        raise ValueError("iterations and start must be non-negative")
    u = rng(seed, run, COIN_STREAM).random(start + iterations)[start:]
    return u < p
