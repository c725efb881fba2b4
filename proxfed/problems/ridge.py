"""Federated ridge regression (the paper's BlogFeedback objective)."""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg

from .. import _backend as B
from ..metrics import r2_score
from ._layout import DeviceCache, row_buckets, unpermute
from .base import FederatedProblem

__all__ = ["Ridge"]


class Ridge(FederatedProblem):
    r"""Federated ridge regression with unnormalized client sums.

    Client ``i`` holds ``A_i`` (its feature rows, including any bias column
    the data provides) and targets ``b_i``:

    .. math::

        f_i(w) = \tfrac12 \|A_i w - b_i\|^2 + \tfrac{\alpha}{4}\|w\|^2, \qquad
        F(w) = \frac1N \sum_{i=1}^N f_i(w),

    so ``grad f_i(w) = A_i^T (A_i w - b_i) + (alpha/2) w``,
    ``L_i = sigma_max(A_i)^2 + alpha/2`` and ``mu_i = sigma_min(A_i)^2 + alpha/2``
    (``= alpha/2`` when ``A_i`` has fewer rows than columns). The minimizer of
    ``F`` solves ``(A^T A + (N alpha / 2) I) w = A^T b``.

    Clients with more rows than features are stored as Gram matrices, the
    others as zero-padded row buckets; the result does not depend on the
    layout.

    Parameters
    ----------
    dataset : FederatedDataset
        Real-valued targets.
    alpha : float >= 0
        Regularization (the paper uses ``1e3`` on BlogFeedback).

    Examples
    --------
    >>> import numpy as np
    >>> from proxfed import FederatedDataset
    >>> from proxfed.problems import Ridge
    >>> ds = FederatedDataset.from_clients([(np.eye(2), np.ones(2)), (np.ones((1, 2)), 2 * np.ones(1))])
    >>> problem = Ridge(ds, alpha=2.0)
    >>> problem.grad(np.zeros((2, 2)))  # A_i^T (0 - b_i)
    array([[-1., -1.],
           [-2., -2.]])
    """

    metric_name = "r2"
    #: ``solution()`` is one linear solve, cheap enough to compute by default.
    cheap_solution = True

    def __init__(self, dataset, alpha: float = 1.0):
        super().__init__(dataset)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)):
            raise TypeError(f"alpha must be a real number, got {alpha!r}")
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be finite and >= 0, got {alpha}")
        if dataset.y.dtype.kind not in "fiu":
            raise TypeError("Ridge needs real-valued targets")
        self.alpha = float(alpha)
        self.l2 = self.alpha / 2
        d = dataset.n_features
        sizes = dataset.client_sizes
        self._gram_clients = np.flatnonzero(sizes > d)
        self._row_clients = np.flatnonzero(sizes <= d)
        G, c, half_bb = [], [], []
        for i in self._gram_clients:
            A, b = dataset.client(int(i))
            G.append(A.T @ A)
            c.append(A.T @ b)
            half_bb.append(0.5 * float(b @ b))
        self._G = np.array(G).reshape(-1, d, d)
        self._c = np.array(c).reshape(-1, d)
        self._half_bb = np.array(half_bb)
        self._buckets = row_buckets(dataset, self._row_clients)
        order = np.concatenate([self._gram_clients] + [bk.clients for bk in self._buckets])
        self._inverse = np.argsort(order)
        self._device = DeviceCache(self._to_device)

    @property
    def dim(self) -> int:
        """Model dimension ``d`` (the number of feature columns)."""
        return self.dataset.n_features

    def _to_device(self, like):
        put = lambda a: B.from_numpy(a, like=like)  # noqa: E731
        return {
            "G": put(self._G),
            "c": put(self._c),
            "half_bb": put(self._half_bb),
            "gram_idx": put(self._gram_clients),
            "buckets": [(put(bk.clients), put(bk.X), put(bk.y.astype(np.float64))) for bk in self._buckets],
            "inverse": put(self._inverse),
        }

    def _data_terms(self, W, want_value: bool, want_grad: bool):
        xp = B.namespace(W)
        dev = self._device.get(W)
        values, grads = [], []
        if self._gram_clients.size:
            Wg = xp.take(W, dev["gram_idx"], axis=-2)
            Gw = (dev["G"] @ Wg[..., None])[..., 0]
            if want_grad:
                grads.append(Gw - dev["c"])
            if want_value:
                values.append(0.5 * xp.sum(Wg * Gw, axis=-1) - xp.sum(Wg * dev["c"], axis=-1) + dev["half_bb"])
        for idx, X, y in dev["buckets"]:
            Wb = xp.take(W, idx, axis=-2)
            r = (X @ Wb[..., None])[..., 0] - y
            if want_grad:
                grads.append((xp.matrix_transpose(X) @ r[..., None])[..., 0])
            if want_value:
                values.append(0.5 * xp.sum(r * r, axis=-1))
        return unpermute(values, grads, dev["inverse"])

    def _singular_extremes(self):
        d = self.dim
        smax = np.empty(self.n_clients)
        smin = np.zeros(self.n_clients)
        for i, (A, _) in enumerate(self.dataset.clients()):
            s = np.linalg.svd(A, compute_uv=False)
            smax[i] = s[0]
            smin[i] = s[-1] if A.shape[0] >= d else 0.0
        return smax, smin

    def smoothness(self) -> np.ndarray:
        """``L_i = sigma_max(A_i)^2 + alpha/2``, shape (N,)."""
        if not hasattr(self, "_L"):
            smax, smin = self._singular_extremes()
            self._L, self._mu = smax**2 + self.alpha / 2, smin**2 + self.alpha / 2
        return self._L.copy()

    def strong_convexity(self) -> np.ndarray:
        """``mu_i = sigma_min(A_i)^2 + alpha/2`` (``alpha/2`` when ``n_i < d``), shape (N,)."""
        self.smoothness()
        return self._mu.copy()

    def solution(self) -> np.ndarray:
        """Solve ``(A^T A + (N alpha/2) I) w = A^T b`` (dense, float64)."""
        if self._solution is None:
            A, b = self.dataset.X, self.dataset.y.astype(np.float64)
            H = A.T @ A + (self.n_clients * self.alpha / 2) * np.eye(self.dim)
            try:
                self._solution = scipy.linalg.solve(H, A.T @ b, assume_a="pos")
            except np.linalg.LinAlgError as err:
                raise ValueError("the ridge system is singular; use alpha > 0") from err
        return self._solution.copy()

    def predict(self, w, X):
        """``X @ w``."""
        return np.asarray(X) @ np.asarray(w)

    def _metric(self, y, y_pred):
        return r2_score(y, y_pred)
