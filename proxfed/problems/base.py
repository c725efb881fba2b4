"""The interface every federated problem implements."""

from __future__ import annotations

import numpy as np

from .. import _backend as B
from ..data.dataset import FederatedDataset
from ._layout import check_iterates

__all__ = ["FederatedProblem"]


class FederatedProblem:
    """A smooth federated objective ``F(w) = (1/N) sum_i f_i(w)``.

    Subclasses implement :meth:`value` and :meth:`grad` for stacked client
    iterates ``W`` of shape ``(..., N, d)`` (clients on axis ``-2``, any
    leading run axes), the constants :meth:`smoothness` and
    :meth:`strong_convexity` (per client), and optionally :meth:`solution`,
    :meth:`predict` and :meth:`score`.
    """

    #: Name of the evaluation metric returned by :meth:`score`.
    metric_name: str = "metric"
    #: ``f_i`` = data term + ``(l2 / 2) ||w||^2``; subclasses set ``self.l2``.
    l2: float = 0.0

    def __init__(self, dataset: FederatedDataset):
        if not isinstance(dataset, FederatedDataset):
            raise TypeError(f"dataset must be a FederatedDataset, got {type(dataset).__name__}")
        self.dataset = dataset
        self._solution: np.ndarray | None = None

    @property
    def n_clients(self) -> int:
        """Number of clients N."""
        return self.dataset.n_clients

    @property
    def dim(self) -> int:  # pragma: no cover - abstract
        """Model dimension d."""
        raise NotImplementedError

    def _data_terms(self, W, want_value: bool, want_grad: bool):  # pragma: no cover - abstract
        """Data terms of ``f_i`` (values (..., N), gradients (..., N, d)); None where not wanted."""
        raise NotImplementedError

    def value(self, W):
        """Per-client values ``f_i(W[..., i, :])``, shape ``(..., N)``."""
        xp = check_iterates(W, self.n_clients, self.dim)
        v, _ = self._data_terms(W, True, False)
        return v + (self.l2 / 2) * xp.sum(W * W, axis=-1)

    def grad(self, W):
        """Per-client gradients ``grad f_i(W[..., i, :])``, shape ``(..., N, d)``."""
        check_iterates(W, self.n_clients, self.dim)
        _, g = self._data_terms(W, False, True)
        return g + self.l2 * W

    def gradient_step(self, W, gamma, H=None):
        """One local gradient step of every client: ``W - gamma (grad f_i(W) - H)``.

        With ``H`` None, ``W - gamma grad f_i(W)``. ``gamma`` is a scalar or
        broadcasts against ``W`` (per run: shape ``(R, 1, 1)``). Problems may fuse
        it per client (:class:`SoftmaxRegression` on NumPy); the result is the
        unfused expression's, rounding included.
        """
        G = self.grad(W)
        return W - gamma * (G if H is None else G - H)

    def value_and_grad(self, W):
        """Both :meth:`value` and :meth:`grad` from one pass over the data."""
        xp = check_iterates(W, self.n_clients, self.dim)
        v, g = self._data_terms(W, True, True)
        return v + (self.l2 / 2) * xp.sum(W * W, axis=-1), g + self.l2 * W

    def smoothness(self) -> np.ndarray:  # pragma: no cover - abstract
        """Per-client smoothness constants ``L_i``, shape (N,)."""
        raise NotImplementedError

    def strong_convexity(self) -> np.ndarray:  # pragma: no cover - abstract
        """Per-client strong-convexity constants ``mu_i``, shape (N,)."""
        raise NotImplementedError

    def solution(self) -> np.ndarray:  # pragma: no cover - abstract
        """The minimizer of ``F`` (host NumPy array, shape (d,))."""
        raise NotImplementedError

    def initial_point(self, seed: int = 0, run: int = 0) -> np.ndarray:
        """The default starting model ``w_0`` (zeros unless a subclass says otherwise)."""
        return np.zeros(self.dim)

    def objective(self, w):
        """``F(w) = (1/N) sum_i f_i(w)`` for one model ``(d,)`` or a batch ``(..., d)``."""
        xp = B.namespace(w)
        if w.shape[-1] != self.dim:
            raise ValueError(f"w must have last dimension {self.dim}, got shape {tuple(w.shape)}")
        W = xp.broadcast_to(w[..., None, :], w.shape[:-1] + (self.n_clients, self.dim))
        return xp.mean(self.value(W), axis=-1)

    def full_grad(self, w):
        """``grad F(w) = (1/N) sum_i grad f_i(w)`` for ``w`` of shape ``(..., d)``."""
        xp = B.namespace(w)
        W = xp.broadcast_to(w[..., None, :], w.shape[:-1] + (self.n_clients, self.dim))
        return xp.mean(self.grad(W), axis=-2)

    def predict(self, w, X):  # pragma: no cover - abstract
        """Predictions of model ``w`` on feature rows ``X``."""
        raise NotImplementedError

    def score(self, w, split: str = "test"):
        """The evaluation metric of model ``w`` (shape (d,) or (R, d)) on a split.

        Parameters
        ----------
        w : array, shape (d,) or (R, d)
        split : {"test", "validation", "train"}

        Returns
        -------
        float, or NumPy array of shape (R,)
        """
        data = self._split(split)
        w_np = B.to_numpy(w)
        if w_np.shape[-1] != self.dim or w_np.ndim > 2:
            raise ValueError(f"w must have shape (d,) or (R, d) with d = {self.dim}, got {w_np.shape}")
        if w_np.ndim == 1:
            return float(self._metric(data[1], self.predict(w_np, data[0])))
        return np.array([self._metric(data[1], self.predict(row, data[0])) for row in w_np])

    def _split(self, split: str):
        if split == "train":
            return self.dataset.X, self.dataset.y
        if split not in ("test", "validation"):
            raise ValueError(f"split must be 'test', 'validation' or 'train', got {split!r}")
        part = getattr(self.dataset, split)
        if part is None:
            raise ValueError(f"the dataset has no {split} split")
        return part.X, part.y

    def has_split(self, split: str) -> bool:
        """Whether :meth:`score` can evaluate on ``split``."""
        return split == "train" or getattr(self.dataset, split, None) is not None

    def _metric(self, y, y_pred):  # pragma: no cover - abstract
        raise NotImplementedError
