"""The device layout of the closed-form problems: a fixed handful of kernels per step, whatever N.

On an array library other than NumPy (torch on CPU or GPU, CuPy, array-api-strict) a
problem keeps its clients in a few *blocks* -- ridge's Gram block and at most
:data:`DEVICE_BUCKETS` zero-padded row buckets whose sizes minimize the padded rows --
and evaluates every block with one batched ``matmul`` per product. Runs are the column
dimension of each client's product: the iterates ``(R, N, d)`` are gathered once per
block into ``(Nb, R, d)`` (ridge) or ``(Nb, p + 1, R C)`` (softmax), so the data is read
once per step for all runs and never copied per run. Results are written straight into
the ``(R, N, ...)`` output through a transposed view (``index_copy``), so a step costs a
number of kernels that depends on the number of blocks, not on N or R.
"""

from __future__ import annotations

import array_api_compat
import numpy as np

from .. import _backend as B
from ._layout import RowBucket, fill_bucket

__all__ = ["DEVICE_BUCKETS", "padded_groups", "device_buckets", "runs_first", "take_clients", "Assembler"]

#: Row buckets of a device layout (each costs a handful of kernels per step).
DEVICE_BUCKETS = 3


def padded_groups(sizes, n_groups: int) -> list[np.ndarray]:
    """Split clients into at most ``n_groups`` groups of similar size, minimizing the padded rows.

    Clients are sorted by size and cut into contiguous groups; a group is padded to
    its largest client, and the cuts minimize ``sum_g |g| max(sizes[g])`` (dynamic
    programming, exact).

    Parameters
    ----------
    sizes : array of int, shape (n,)
    n_groups : int >= 1

    Returns
    -------
    list of integer arrays
        Positions into ``sizes``, each group in increasing size (stable order), the
        groups in increasing size; empty groups are dropped.

    >>> [g.tolist() for g in padded_groups([5, 1, 1, 6, 2], 2)]
    [[1, 2, 4], [0, 3]]
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if isinstance(n_groups, bool) or int(n_groups) != n_groups or n_groups < 1:
        raise ValueError(f"n_groups must be a positive integer, got {n_groups!r}")
    order = np.argsort(sizes, kind="stable")
    s = sizes[order].astype(np.float64)
    n = s.size
    if n == 0:
        return []
    g = min(int(n_groups), n)
    # cost[i, j] = (j - i) * s[j - 1]: rows of a group holding sorted clients i..j-1
    i, j = np.arange(n + 1)[:, None], np.arange(n + 1)[None, :]
    cost = np.where(j > i, (j - i) * s[np.maximum(j - 1, 0)], np.inf)
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    cuts = np.zeros((g + 1, n + 1), np.int64)
    layers = [best]
    for level in range(1, g + 1):
        total = layers[-1][:, None] + cost          # start i, end j
        cuts[level] = np.argmin(total, axis=0)
        layers.append(total[cuts[level], np.arange(n + 1)])
    level = int(np.argmin([layer[n] for layer in layers[1:]])) + 1
    bounds, end = [], n
    while level > 0:
        start = int(cuts[level, end])
        bounds.append((start, end))
        end, level = start, level - 1
    return [order[a:b] for a, b in reversed(bounds) if b > a]


def device_buckets(dataset, clients: np.ndarray, pad_label=0, n_groups: int = DEVICE_BUCKETS) -> list[RowBucket]:
    """Clients ``clients`` of ``dataset`` in at most ``n_groups`` zero-padded row buckets (:func:`padded_groups`)."""
    clients = np.asarray(clients, dtype=np.int64)
    groups = padded_groups(dataset.client_sizes[clients], n_groups)
    return [fill_bucket(dataset, clients[grp], pad_label) for grp in groups]


def runs_first(W, n_clients: int, trailing: tuple):
    """``W`` (..., N, d) as ``(N, R) + trailing`` (a transposed view where ``W`` is contiguous) and its lead shape."""
    xp = B.namespace(W)
    lead = tuple(W.shape[:-2])
    R = int(np.prod(lead, dtype=np.int64))
    W3 = xp.reshape(W, (R, n_clients) + tuple(trailing))
    axes = (1, 0) + tuple(range(2, W3.ndim))
    return xp.permute_dims(W3, axes), lead, R


def take_clients(Wt, idx):
    """Rows ``idx`` of the client axis (axis 0) of ``Wt``, as a new contiguous array."""
    if array_api_compat.is_torch_array(Wt):
        import torch

        return torch.index_select(Wt, 0, idx)
    return B.namespace(Wt).take(Wt, idx, axis=0)


class Assembler:
    """Collects per-block results ``(Nb, R, ...)`` into one ``(R, N, ...)`` array in client order.

    torch writes each block through a transposed view (``index_copy_``), CuPy and
    NumPy by integer assignment; other libraries concatenate and take the inverse
    permutation of the block order.
    """

    def __init__(self, like, n_clients: int, R: int, trailing: tuple, inverse):
        self.xp = B.namespace(like)
        self.shape = (R, n_clients) + tuple(trailing)
        self.inverse = inverse
        self.direct = (array_api_compat.is_torch_array(like) or array_api_compat.is_cupy_array(like)
                       or array_api_compat.is_numpy_array(like))
        self.parts: list = []
        self.out = None
        if self.direct:
            self.out = self.xp.empty(self.shape, dtype=like.dtype, device=B.device_of(like))
            axes = (1, 0) + tuple(range(2, len(self.shape)))
            self.view = self.xp.permute_dims(self.out, axes)

    def put(self, idx, part) -> None:
        """Block result ``part`` (Nb, R, ...) for the clients ``idx``."""
        if not self.direct:
            self.parts.append(part)
        elif array_api_compat.is_torch_array(part):
            self.view.index_copy_(0, idx, part)
        else:
            self.view[idx] = part

    def result(self):
        """The assembled ``(R, N, ...)`` array."""
        if self.direct:
            return self.out
        xp = self.xp
        full = xp.take(xp.concat(self.parts, axis=0), self.inverse, axis=0)
        return xp.permute_dims(full, (1, 0) + tuple(range(2, full.ndim)))
