"""Proximal operators with one signature: ``prox(x, step)`` and ``value(x)``.

``prox(x, step)`` returns ``argmin_z value(z) + ||z - x||^2 / (2 step)``.
Operators act on the last axis of ``x`` (one model per row), except
:class:`Consensus`, which acts on the client axis (``-2``). Scalars or
per-run arrays of shape ``(R,)`` are accepted wherever a parameter is
numeric, for run-batched iterates of shape ``(R, N, d)`` or ``(R, d)``.

Examples
--------
>>> import numpy as np
>>> from proxfed.prox import TopK, L1, Consensus
>>> TopK(2).prox(np.array([3.0, -4.0, 1.0, 4.0]), 1.0)
array([ 0., -4.,  0.,  4.])
>>> L1(1.0).prox(np.array([3.0, -0.5, -2.0]), 0.5)
array([ 2.5,  0. , -1.5])
>>> Consensus().prox(np.array([[1.0, 2.0], [3.0, 6.0]]), 1.0)
array([[2., 4.],
       [2., 4.]])
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import functools
import numbers
from fractions import Fraction
from typing import Any

import numpy as np

from . import _backend as B
from ._validation import check_positive_int

__all__ = ["ProxOperator", "Zero", "L1", "TopK", "Consensus", "per_run", "sparsity_to_k", "nan_passes_through"]


def sparsity_to_k(d: int, sparsity: float) -> int:
    """Kept entries ``K = d - round(s d)``, computed in exact rational arithmetic (at least 1).

    ``int((1 - s) d)`` in floating point gives 4866 instead of 4867 for
    ``d = 48670``, ``s = 0.9``; ``round`` is Python's (half to even).

    >>> sparsity_to_k(48670, 0.9)
    4867
    """
    check_positive_int(d, "d")
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    k = int(d) - round(Fraction(repr(float(sparsity))) * int(d))
    return max(1, k)



def per_run(param: Any, x: Any, lead: int = 1):
    """Make a scalar or per-run parameter broadcastable against ``x``.

    A scalar is returned as a Python float. A 1-d array of length ``R`` is
    reshaped to ``(R,) + (1,) * (x.ndim - lead)`` on ``x``'s device, where
    ``lead`` is the number of leading axes of ``x`` it applies to.
    """
    if isinstance(param, numbers.Real):
        return float(param)
    shape = tuple(getattr(param, "shape", ()))
    if len(shape) >= 2 and x.ndim >= 2 and shape[0] == x.shape[0] and all(s == 1 for s in shape[1:]):
        if len(shape) == x.ndim - lead + 1 and not isinstance(param, np.ndarray):
            return param  # already shaped per run on the iterates' device
        param = B.to_numpy(param).reshape(shape[0])
    a = B.to_numpy(param)
    if a.ndim == 0:
        return float(a)
    if a.ndim != 1 or a.shape[0] != x.shape[0] or x.ndim < 2:
        raise ValueError(
            f"a per-run parameter must have shape (R,) with R = x.shape[0]; "
            f"got shape {a.shape} for x of shape {tuple(x.shape)}"
        )
    shaped = a.reshape(a.shape + (1,) * (x.ndim - lead))
    if isinstance(x, np.ndarray):
        return B.from_numpy(shaped, like=x)
    return B.device_constant(shaped, like=x)


# What TopK does with a NaN in a NumPy row: "raise" (the default, for a caller's own array) or
# "propagate" (inside the drivers: the row comes back unchanged, NaN included, so that the driver sees
# the run diverge and handles it; a TopK that silently dropped the NaN would hide the divergence).
_TOPK_NAN = contextvars.ContextVar("proxfed_topk_nan", default="raise")


@contextlib.contextmanager
def nan_passes_through():
    """Within the block, :class:`TopK` returns a row holding NaN unchanged instead of raising.

    The drivers (:func:`proxfed.run`, :func:`proxfed.run_rounds`) step inside
    it: a diverging run's NaN then reaches its iterates, where the driver's
    divergence handling stops or freezes that run.
    """
    token = _TOPK_NAN.set("propagate")
    try:
        yield
    finally:
        _TOPK_NAN.reset(token)


def nan_passing_through(fn):
    """Decorator: ``fn`` runs within :func:`nan_passes_through`."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with nan_passes_through():
            return fn(*args, **kwargs)
    return wrapper


def _nan_rows(x):
    """Rows of a NumPy ``x`` holding a NaN (bool, shape ``x.shape[:-1]``), or None when there are none.

    Raises ValueError unless within :func:`nan_passes_through`. Arrays of other libraries are not
    checked: the check would read a device array back to the host (a synchronization) on every
    call; the drivers' finite checks catch a NaN there.
    """
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        return None
    if not np.isnan(np.sum(x)):  # one reduction; NaN (or inf - inf) only then the exact check
        return None
    rows = np.isnan(x).any(axis=-1)
    if not rows.any():
        return None
    if _TOPK_NAN.get() == "raise":
        where = np.argwhere(np.isnan(x))[0].tolist()
        raise ValueError(f"TopK: x contains NaN (first at index {tuple(where)}); the k largest magnitudes "
                         "are undefined")
    return rows


def _with(op, **params):
    """A shallow copy of ``op`` with some attributes replaced (keeps subclasses intact)."""
    out = copy.copy(op)
    vars(out).update(params)
    return out


def check_step(step) -> None:
    """A positive finite step; an array on another library's device is not read back (that would
    synchronize every call) -- the rules pass ``gamma / p`` of hyperparameters validated on the host."""
    if not isinstance(step, (numbers.Real, np.ndarray, np.generic)):
        return
    a = B.to_numpy(step)
    if a.size == 0 or not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"step must be positive and finite, got {step!r}")


class ProxOperator:
    """Base class: a proper closed function with a computable prox."""

    def prox(self, x, step):  # pragma: no cover - abstract
        """Return ``argmin_z value(z) + ||z - x||^2 / (2 step)``."""
        raise NotImplementedError

    def value(self, x):  # pragma: no cover - abstract
        """Return the function value at ``x`` (``inf`` outside the domain)."""
        raise NotImplementedError

    def take_runs(self, runs) -> "ProxOperator | None":
        """The same operator restricted to the batched runs ``runs`` (integer indices).

        None (this default) means it cannot be restricted, and rules then
        compute for all runs. Operators without per-run parameters return
        themselves; those with per-run parameters restrict them.
        """
        return None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Zero(ProxOperator):
    """The zero function; its prox is the identity."""

    def prox(self, x, step):
        """Return ``x`` unchanged (after validating ``step``)."""
        check_step(step)
        return x

    def take_runs(self, runs) -> "Zero":
        """``self`` (no per-run parameters)."""
        return self

    def value(self, x):
        """Return 0."""
        xp = B.namespace(x)
        return xp.zeros((), dtype=x.dtype, device=B.device_of(x))


class L1(ProxOperator):
    """``lam * ||x||_1``; its prox is soft-thresholding at ``step * lam``.

    Parameters
    ----------
    lam : float >= 0 or array of shape (R,)
        Regularization weight (per run for batched iterates).
    """

    def __init__(self, lam):
        from ._validation import check_real

        self.lam = check_real(lam, "lam", low=0.0, per_run=True)

    def prox(self, x, step):
        """``sign(x) * max(|x| - step * lam, 0)`` elementwise."""
        check_step(step)
        return B.soft_threshold(x, per_run(step, x) * per_run(self.lam, x))

    def take_runs(self, runs) -> "L1":
        """``L1(lam[runs])`` for a per-run ``lam`` (``self`` for a scalar one)."""
        return self if isinstance(self.lam, float) else _with(self, lam=self.lam[np.asarray(runs)])

    def value(self, x):
        """``lam * sum |x|`` (summed over all rows; per run when lam is an array)."""
        xp = B.namespace(x)
        if isinstance(self.lam, float):
            return self.lam * xp.sum(xp.abs(x))
        lam = B.from_numpy(self.lam, like=x)
        return lam * xp.sum(xp.reshape(xp.abs(x), (x.shape[0], -1)), axis=1)


class TopK(ProxOperator):
    """Indicator of ``{x : ||x||_0 <= k}`` (per row); its prox is TopK by magnitude.

    The prox keeps the ``k`` entries of largest ``|x_j|`` in every row, ties
    broken towards the lowest index, so a row with at least ``k`` non-zeros
    has exactly ``k`` after the prox, and one with fewer keeps all of them
    (``min(k, nnz)`` in general). It is a Euclidean projection, so ``step``
    only has to be positive.

    Parameters
    ----------
    k : int >= 1 or integer array of shape (R,)
        Number of kept entries (per run for batched iterates).
    d : int, optional
        Dimension, to validate ``k <= d`` at construction.
    """

    def __init__(self, k, d: int | None = None):
        a = B.to_numpy(k)
        if a.ndim > 1 or a.size == 0 or a.dtype.kind not in "iu" and not (
            a.dtype.kind == "f" and np.all(a == np.round(a))
        ):
            raise TypeError(f"k must be an integer (or an (R,) integer array), got {k!r}")
        a = a.astype(np.int64)
        if np.any(a < 1) or (d is not None and np.any(a > d)):
            hi = d if d is not None else "d"
            raise ValueError(f"k must be in [1, {hi}], got {k!r}")
        self.k = int(a) if a.ndim == 0 else a
        self.d = d

    def _k_for(self, x):
        if np.any(np.asarray(self.k) > x.shape[-1]):
            raise ValueError(f"k must be in [1, {x.shape[-1]}], got {self.k}")
        if isinstance(self.k, int):
            return self.k
        if x.ndim < 2 or x.shape[0] != self.k.shape[0]:
            raise ValueError(f"per-run k of shape {self.k.shape} needs x of shape (R, ..., d), got {tuple(x.shape)}")
        return self.k.reshape(self.k.shape + (1,) * (x.ndim - 2))

    def take_runs(self, runs) -> "TopK":
        """``TopK(k[runs])`` for a per-run ``k`` (``self`` for a scalar one)."""
        return self if isinstance(self.k, int) else _with(self, k=self.k[np.asarray(runs)])

    def prox(self, x, step=1.0):
        """Keep the ``k`` largest-magnitude entries of each row of ``x``.

        Raises
        ------
        ValueError
            If a NumPy ``x`` holds NaN (its magnitude has no rank). Arrays of
            other libraries are not checked, to keep the call free of a host
            synchronization; :func:`proxfed.run` checks its iterates itself.
        """
        check_step(step)
        k = self._k_for(x)
        nan = _nan_rows(x)
        if nan is None:
            return B.topk(x, k)
        return np.where(nan[..., None], x, B.topk(np.where(np.isnan(x), 0.0, x), k))

    def mask(self, x):
        """Boolean mask of the entries :meth:`prox` keeps (a NumPy ``x`` with NaN: as :meth:`prox`)."""
        k = self._k_for(x)
        nan = _nan_rows(x)
        if nan is None:
            return B.topk_mask(x, k)
        return np.where(nan[..., None], True, B.topk_mask(np.where(np.isnan(x), 0.0, x), k))

    def value(self, x):
        """0 if every row has at most ``k`` non-zeros, else ``inf``."""
        xp = B.namespace(x)
        counts = B.to_numpy(B.nnz(x))
        ok = np.all(counts <= (self.k if isinstance(self.k, int) else self.k.reshape(
            self.k.shape + (1,) * (counts.ndim - 1))))
        return xp.asarray(0.0 if ok else float("inf"), dtype=x.dtype, device=B.device_of(x))


class Consensus(ProxOperator):
    """Indicator of the consensus set over the client axis (all client rows equal).

    Its prox (for any step) is the orthogonal projection: every client row
    is replaced by the mean over clients, ``w_bar = (1/N) sum_i x_i``. In a
    federated algorithm one call is one communication round.

    Parameters
    ----------
    axis : int
        The client axis (``-2`` for iterates of shape ``(..., N, d)``).
    """

    def __init__(self, axis: int = -2):
        self.axis = int(axis)

    def take_runs(self, runs) -> "Consensus":
        """``self`` (no per-run parameters)."""
        return self

    def mean(self, x):
        """The mean over the client axis, keeping the axis (shape ``(..., 1, d)``)."""
        xp = B.namespace(x)
        return xp.mean(x, axis=self.axis, keepdims=True)

    def prox(self, x, step=1.0):
        """Replace every client row by the mean over clients."""
        check_step(step)
        xp = B.namespace(x)
        return xp.broadcast_to(self.mean(x), x.shape)

    def value(self, x):
        """0 if all client rows are equal, else ``inf``."""
        xp = B.namespace(x)
        first = xp.take(x, xp.asarray([0], device=B.device_of(x)), axis=self.axis)
        equal = xp.all(x == first)
        return xp.asarray(0.0 if bool(equal) else float("inf"), dtype=x.dtype, device=B.device_of(x))
