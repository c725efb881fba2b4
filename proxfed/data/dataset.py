"""The federated dataset type: stacked rows with client offsets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

__all__ = ["FederatedDataset", "Split"]


def _as_matrix(X, name: str) -> np.ndarray:
    X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-d (rows, features), got shape {X.shape}")
    X = X.astype(np.float64, copy=False)
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name} contains NaN or inf")
    return X


def _as_targets(y, n: int, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {y.dtype}")
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) to match the rows, got {y.shape}")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise ValueError(f"{name} contains NaN or inf")
    return y


@dataclass(frozen=True)
class Split:
    """A pooled evaluation split (test or validation): features ``X`` and targets ``y``."""

    X: np.ndarray
    y: np.ndarray

    def __post_init__(self):
        X = _as_matrix(self.X, "X")
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "y", _as_targets(self.y, X.shape[0], "y"))

    @property
    def n_samples(self) -> int:
        """Number of rows."""
        return int(self.X.shape[0])


@dataclass(frozen=True)
class FederatedDataset:
    """Rows of all clients stacked, with client boundaries.

    Client ``i`` owns rows ``offsets[i]:offsets[i+1]`` of ``X`` and ``y``.
    Every client has at least one row. Features are stored as float64;
    targets keep their numeric type (integers for class labels).

    Parameters
    ----------
    X : array, shape (n, p)
        Stacked features of all clients.
    y : array, shape (n,)
        Stacked targets (real values or integer class labels).
    offsets : array of int, shape (N + 1,)
        Client boundaries, ``offsets[0] = 0``, ``offsets[-1] = n``, strictly increasing.
    test, validation : Split, optional
        Pooled evaluation data, not split by client.
    name : str
        A label used in results and plots.

    Examples
    --------
    >>> import numpy as np
    >>> from proxfed import FederatedDataset
    >>> ds = FederatedDataset.from_clients([(np.ones((3, 2)), np.zeros(3)),
    ...                                     (np.ones((1, 2)), np.ones(1))])
    >>> ds.n_clients, ds.n_samples, ds.n_features, ds.client_sizes.tolist()
    (2, 4, 2, [3, 1])
    """

    X: np.ndarray
    y: np.ndarray
    offsets: np.ndarray
    test: Split | None = None
    validation: Split | None = None
    name: str = "dataset"
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        X = _as_matrix(self.X, "X")
        y = _as_targets(self.y, X.shape[0], "y")
        off = np.asarray(self.offsets)
        if off.dtype.kind not in "iu" or off.ndim != 1 or off.shape[0] < 2:
            raise ValueError(f"offsets must be a 1-d integer array of length N + 1 >= 2, got {off!r}")
        off = off.astype(np.int64)
        if off[0] != 0 or off[-1] != X.shape[0]:
            raise ValueError(f"offsets must start at 0 and end at n = {X.shape[0]}, got {off[0]}..{off[-1]}")
        sizes = np.diff(off)
        if np.any(sizes <= 0):
            empty = np.flatnonzero(sizes <= 0)[:5].tolist()
            raise ValueError(f"every client needs at least one row; empty or negative clients: {empty}")
        for nm in ("test", "validation"):
            part = getattr(self, nm)
            if part is not None:
                if isinstance(part, tuple):
                    part = Split(*part)
                    object.__setattr__(self, nm, part)
                if not isinstance(part, Split):
                    raise TypeError(f"{nm} must be a Split or an (X, y) tuple")
                if part.X.shape[1] != X.shape[1]:
                    raise ValueError(f"{nm}.X has {part.X.shape[1]} features, the training data {X.shape[1]}")
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "offsets", off)

    @classmethod
    def from_clients(
        cls,
        clients: Sequence[tuple],
        test: Split | tuple | None = None,
        validation: Split | tuple | None = None,
        name: str = "dataset",
    ) -> "FederatedDataset":
        """Build from a sequence of per-client ``(X_i, y_i)`` pairs."""
        clients = list(clients)
        if not clients:
            raise ValueError("clients must contain at least one (X_i, y_i) pair")
        Xs, ys = [], []
        for i, pair in enumerate(clients):
            if len(pair) != 2:
                raise ValueError(f"client {i}: expected an (X_i, y_i) pair")
            Xi = _as_matrix(pair[0], f"X of client {i}")
            Xs.append(Xi)
            ys.append(_as_targets(pair[1], Xi.shape[0], f"y of client {i}"))
        widths = {Xi.shape[1] for Xi in Xs}
        if len(widths) != 1:
            raise ValueError(f"all clients must have the same number of features, got {sorted(widths)}")
        offsets = np.concatenate([[0], np.cumsum([Xi.shape[0] for Xi in Xs])])
        return cls(np.concatenate(Xs), np.concatenate(ys), offsets, test=test, validation=validation, name=name)

    @property
    def n_clients(self) -> int:
        """Number of clients N."""
        return int(self.offsets.shape[0] - 1)

    @property
    def n_samples(self) -> int:
        """Total number of training rows n."""
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        """Number of feature columns."""
        return int(self.X.shape[1])

    @property
    def client_sizes(self) -> np.ndarray:
        """Rows per client, shape (N,)."""
        return np.diff(self.offsets)

    @property
    def client_ids(self) -> np.ndarray:
        """The client index of every row, shape (n,)."""
        return np.repeat(np.arange(self.n_clients), self.client_sizes)

    def client(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``(X_i, y_i)`` of client ``i`` (views, not copies)."""
        if not -self.n_clients <= i < self.n_clients:
            raise IndexError(f"client index {i} out of range for {self.n_clients} clients")
        i %= self.n_clients
        lo, hi = self.offsets[i], self.offsets[i + 1]
        return self.X[lo:hi], self.y[lo:hi]

    def clients(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Iterate over the clients' ``(X_i, y_i)``."""
        for i in range(self.n_clients):
            yield self.client(i)

    def __repr__(self) -> str:
        parts = [f"name={self.name!r}", f"N={self.n_clients}", f"n={self.n_samples}", f"p={self.n_features}"]
        if self.test is not None:
            parts.append(f"test={self.test.n_samples}")
        if self.validation is not None:
            parts.append(f"validation={self.validation.n_samples}")
        return f"FederatedDataset({', '.join(parts)})"
