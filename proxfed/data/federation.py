"""From a partition to a federated dataset: checking index lists and federating rows.

The partitioners of :mod:`proxfed.data.partition` return index lists;
:func:`check_partition` checks one and :func:`federate` turns it into a
:class:`~proxfed.data.FederatedDataset` (both re-exported there and by
:mod:`proxfed.data`).
"""

from __future__ import annotations

import numbers

import numpy as np

from .dataset import FederatedDataset, Split

__all__ = ["PartitionError", "check_partition", "federate", "integer_at_least"]


class PartitionError(ValueError):
    """A partition cannot satisfy its constraints (``min_size``, too few rows or classes)."""


def integer_at_least(value, name: str, low: int) -> int:
    """``value`` as an int, or ``ValueError`` unless it is an integer (not a bool) ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_partition(parts, n_samples: int) -> None:
    """Raise ``ValueError`` unless ``parts`` is a partition of ``range(n_samples)`` (disjoint, complete).

    Examples
    --------
    >>> import numpy as np
    >>> from proxfed.data import check_partition
    >>> check_partition([np.array([0, 2]), np.array([1])], 3)
    """
    n_samples = integer_at_least(n_samples, "n_samples", 0)
    seen = np.zeros(n_samples, dtype=np.int64)
    for i, p in enumerate(parts):
        p = np.asarray(p)
        if p.ndim != 1 or (p.size and p.dtype.kind not in "iu"):
            raise ValueError(f"client {i}: indices must be a 1-d integer array")
        if p.size and (p.min() < 0 or p.max() >= n_samples):
            raise ValueError(f"client {i}: index out of range [0, {n_samples})")
        np.add.at(seen, p, 1)
    if np.any(seen > 1):
        raise ValueError(f"rows assigned to more than one client: {np.flatnonzero(seen > 1)[:10].tolist()}")
    if np.any(seen == 0):
        raise ValueError(f"rows assigned to no client: {np.flatnonzero(seen == 0)[:10].tolist()}")


def federate(X, y, parts, *, test=None, validation=None, name: str = "dataset", meta: dict | None = None):
    """Build a :class:`~proxfed.data.FederatedDataset` from rows and a partition.

    Client ``i`` gets rows ``X[parts[i]]`` in that order. ``meta["row_index"]``
    records, for every row of the result, its index in ``X``.

    Parameters
    ----------
    X : array, shape (n, p)
    y : array, shape (n,)
    parts : list of integer arrays
        A partition of ``range(n)`` (checked with :func:`check_partition`);
        every part must be non-empty.
    test, validation : Split or (X, y) tuple, optional
    name : str
    meta : dict, optional
        Extra entries for ``meta``.

    Returns
    -------
    FederatedDataset

    Examples
    --------
    >>> import numpy as np
    >>> from proxfed.data import federate, partition_iid
    >>> X, y = np.arange(12.0).reshape(6, 2), np.arange(6)
    >>> federate(X, y, partition_iid(6, 2, seed=0)).client_sizes.tolist()
    [3, 3]
    """
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim < 1 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise ValueError(f"X and y must have the same number of rows, got {X.shape} and {y.shape}")
    check_partition(parts, X.shape[0])
    sizes = np.array([np.asarray(p).size for p in parts], dtype=np.int64)
    if sizes.size == 0 or sizes.min() == 0:
        raise ValueError("every client needs at least one row; the partition has an empty part")
    index = np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])
    if isinstance(test, tuple):
        test = Split(*test)
    if isinstance(validation, tuple):
        validation = Split(*validation)
    return FederatedDataset(
        X[index], y[index], np.concatenate([[0], np.cumsum(sizes)]), test=test, validation=validation,
        name=name, meta={"row_index": index, **(meta or {})},
    )
