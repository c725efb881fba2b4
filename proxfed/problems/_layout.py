"""Per-client data layouts, invisible above the problems.

Clients are grouped into blocks that are processed with one batched
``matmul`` each: a *Gram* block (clients with more rows than features, stored
as ``A_i^T A_i``) and *row buckets* (the remaining clients, zero-padded to a
common row count; sizes within a bucket grow by at most a factor 1.25).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _backend as B

__all__ = ["RowBucket", "row_buckets", "fill_bucket", "DeviceCache", "check_iterates"]

BUCKET_GROWTH = 1.25


@dataclass(frozen=True)
class RowBucket:
    """Clients ``clients`` padded to ``rows`` rows: ``X`` (Nb, rows, p), ``y`` (Nb, rows), ``mask`` (Nb, rows)."""

    clients: np.ndarray
    X: np.ndarray
    y: np.ndarray
    mask: np.ndarray


def row_buckets(dataset, clients: np.ndarray, pad_label=0) -> list[RowBucket]:
    """Group ``clients`` of ``dataset`` into zero-padded row buckets (growth ``BUCKET_GROWTH``)."""
    clients = np.asarray(clients, dtype=np.int64)
    if clients.size == 0:
        return []
    sizes = dataset.client_sizes[clients]
    order = clients[np.argsort(sizes, kind="stable")]
    buckets, start = [], 0
    while start < order.size:
        lo = dataset.client_sizes[order[start]]
        stop = start
        while stop < order.size and dataset.client_sizes[order[stop]] <= max(lo * BUCKET_GROWTH, lo + 1):
            stop += 1
        buckets.append(fill_bucket(dataset, order[start:stop], pad_label))
        start = stop
    return buckets


def fill_bucket(dataset, members: np.ndarray, pad_label=0) -> RowBucket:
    """The clients ``members`` of ``dataset`` zero-padded to the largest one's rows."""
    members = np.asarray(members, dtype=np.int64)
    rows = int(dataset.client_sizes[members].max())
    X = np.zeros((members.size, rows, dataset.n_features))
    y = np.full((members.size, rows), pad_label, dtype=dataset.y.dtype)
    mask = np.zeros((members.size, rows))
    for j, c in enumerate(members):
        Xi, yi = dataset.client(int(c))
        X[j, : Xi.shape[0]] = Xi
        y[j, : Xi.shape[0]] = yi
        mask[j, : Xi.shape[0]] = 1.0
    return RowBucket(members, X, y, mask)


class DeviceCache:
    """Host arrays converted once per (namespace, device, dtype) of the iterates."""

    def __init__(self, build):
        self._build = build
        self._store: dict = {}

    def get(self, like):
        xp = B.namespace(like)
        key = (xp.__name__, str(B.device_of(like)), str(like.dtype))
        if key not in self._store:
            self._store[key] = self._build(like)
        return self._store[key]


def check_iterates(W, n_clients: int, dim: int, name: str = "W"):
    """Validate stacked client iterates of shape (..., N, d) and return their namespace."""
    if not hasattr(W, "shape") or not hasattr(W, "dtype"):
        raise TypeError(f"{name} must be an array, got {type(W).__name__}")
    xp = B.namespace(W)
    if W.ndim < 2 or tuple(W.shape[-2:]) != (n_clients, dim):
        raise ValueError(f"{name} must have shape (..., {n_clients}, {dim}), got {tuple(W.shape)}")
    if not xp.isdtype(W.dtype, "real floating"):
        raise TypeError(f"{name} must have a real floating dtype, got {W.dtype}")
    return xp
