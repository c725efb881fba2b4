"""Federated partitioners: split the rows of a centralized dataset among clients.

Every partitioner is a pure function of its arguments: it returns a list of
index arrays, one per client (``int64``, sorted ascending), that are disjoint
and together cover ``range(n)``. Randomness comes from
``proxfed._backend.rng(seed, ...)``, so the same seed always gives the same
partition. :func:`federate` turns the index lists into a
:class:`~proxfed.data.FederatedDataset`.
"""

from __future__ import annotations

import numbers

import numpy as np

from .. import _backend as B
from .federation import PartitionError, check_partition, federate, integer_at_least

__all__ = [
    "PartitionError",
    "partition_iid",
    "partition_dirichlet",
    "partition_unbalanced_dirichlet",
    "partition_shards",
    "partition_by_key",
    "check_partition",
    "federate",
]

# Key of the random streams of each partitioner: rng(seed, _STREAM, ...).
_IID, _DIR, _UNBAL_SIZES, _UNBAL_PRIORS, _UNBAL_DRAW, _SHARDS = range(6)


def _positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _labels(labels) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-d, got shape {y.shape}")
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise ValueError(f"labels must be integer class labels, got dtype {y.dtype}")
    if y.size and y.min() < 0:
        raise ValueError(f"labels must be >= 0, got {int(y.min())}")
    return y.astype(np.int64)


def _finish(parts) -> list[np.ndarray]:
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def _check_min_size(sizes: np.ndarray, min_size: int, what: str) -> None:
    if sizes.min() < min_size:
        small = np.flatnonzero(sizes < min_size)
        raise PartitionError(
            f"{what}: {small.size} client(s) have fewer than min_size={min_size} rows "
            f"(smallest has {int(sizes.min())}; clients {small[:10].tolist()})"
        )


def partition_iid(n_samples: int, n_clients: int, seed: int = 0, *, min_size: int = 1) -> list[np.ndarray]:
    """Uniformly random, balanced partition of ``n_samples`` rows.

    The rows are shuffled with ``rng(seed, 0)`` and cut into ``n_clients``
    consecutive blocks whose sizes differ by at most one (the first
    ``n_samples % n_clients`` clients get the extra row).

    Parameters
    ----------
    n_samples, n_clients : int
    seed : int
    min_size : int
        Every client must receive at least this many rows.

    Returns
    -------
    list of numpy.ndarray
        ``n_clients`` sorted ``int64`` index arrays.

    Raises
    ------
    PartitionError
        If ``n_samples // n_clients < min_size``.

    Examples
    --------
    >>> from proxfed.data import partition_iid
    >>> [p.size for p in partition_iid(10, 3, seed=0)]
    [4, 3, 3]
    """
    n_samples = integer_at_least(n_samples, "n_samples", 0)
    n_clients = integer_at_least(n_clients, "n_clients", 1)
    min_size = integer_at_least(min_size, "min_size", 0)
    if n_samples // n_clients < min_size:
        raise PartitionError(
            f"iid: {n_samples} rows cannot give each of {n_clients} clients min_size={min_size} rows"
        )
    perm = B.rng(seed, _IID).permutation(n_samples)
    return _finish(np.array_split(perm, n_clients))


def partition_dirichlet(
    labels, n_clients: int, alpha: float, seed: int = 0, *, min_size: int = 1, max_retries: int = 100
) -> list[np.ndarray]:
    """Dirichlet label skew (Hsu, Qi and Brown, 2019; Yurochkin et al., 2019).

    For every class ``c`` the proportions ``q_c ~ Dir(alpha * 1_N)`` are drawn
    and the rows of class ``c`` (in a random order) are cut among the clients
    in those proportions (cut points ``floor(cumsum(q_c) * n_c)``). Small
    ``alpha`` gives clients dominated by few classes; large ``alpha`` tends
    to the class-balanced split. Client sizes are random.

    If some client ends with fewer than ``min_size`` rows the whole draw is
    repeated with the next random stream, at most ``max_retries`` times.

    Parameters
    ----------
    labels : array of int, shape (n,)
        Class of every row (non-negative integers).
    n_clients : int
    alpha : float > 0
        Dirichlet concentration.
    seed : int
    min_size : int
        Minimum rows per client (default 1: no empty client).
    max_retries : int
        Number of draws tried before giving up.

    Returns
    -------
    list of numpy.ndarray
        ``n_clients`` sorted ``int64`` index arrays.

    Raises
    ------
    PartitionError
        If no draw within ``max_retries`` satisfies ``min_size`` (typical for
        tiny ``alpha`` with many clients), or ``n < n_clients * min_size``.

    Examples
    --------
    >>> import numpy as np
    >>> from proxfed.data import partition_dirichlet
    >>> y = np.repeat(np.arange(4), 25)
    >>> parts = partition_dirichlet(y, 5, alpha=0.5, seed=0)
    >>> sum(p.size for p in parts)
    100
    """
    y = _labels(labels)
    n_clients = integer_at_least(n_clients, "n_clients", 1)
    alpha = _positive(alpha, "alpha")
    min_size = integer_at_least(min_size, "min_size", 0)
    max_retries = integer_at_least(max_retries, "max_retries", 1)
    if y.size < n_clients * min_size:
        raise PartitionError(f"dirichlet: {y.size} rows cannot give each of {n_clients} clients "
                             f"min_size={min_size} rows")
    classes = np.unique(y)
    best = -1
    for attempt in range(max_retries):
        gen = B.rng(seed, _DIR, attempt)
        owner = np.empty(y.size, dtype=np.int64)
        for c in classes:
            idx = gen.permutation(np.flatnonzero(y == c))
            q = gen.dirichlet(np.full(n_clients, alpha))
            cuts = np.floor(np.cumsum(q)[:-1] * idx.size).astype(np.int64)
            for client, chunk in enumerate(np.split(idx, np.clip(cuts, 0, idx.size))):
                owner[chunk] = client
        sizes = np.bincount(owner, minlength=n_clients)
        if sizes.min() >= min_size:
            return _finish(np.flatnonzero(owner == i) for i in range(n_clients))
        best = max(best, int(sizes.min()))
    raise PartitionError(
        f"dirichlet: no partition with min_size={min_size} found in {max_retries} draws "
        f"(alpha={alpha}, n_clients={n_clients}, n={y.size}; the best draw's smallest client had {best} rows). "
        "Increase alpha or max_retries, or lower min_size or n_clients."
    )


def _lognormal_sizes(n: int, n_clients: int, sigma: float, gen: np.random.Generator) -> np.ndarray:
    if sigma == 0:
        raw = np.full(n_clients, n / n_clients)
    else:
        raw = gen.lognormal(np.log(n / n_clients), sigma, n_clients)
        raw = raw / raw.sum() * n
    sizes = np.floor(raw).astype(np.int64)
    # largest-remainder rounding: the rows lost to floor() go to the largest fractional parts
    short = n - int(sizes.sum())
    if short:
        order = np.argsort(-(raw - sizes), kind="stable")
        sizes[order[:short]] += 1
    return sizes


def partition_unbalanced_dirichlet(
    labels,
    n_clients: int,
    alpha: float,
    sigma: float,
    seed: int = 0,
    *,
    min_size: int = 1,
    max_retries: int = 100,
) -> list[np.ndarray]:
    """FedLab-style unbalanced Dirichlet partition (log-normal sizes, Dirichlet class priors).

    The split of FedLab's ``CIFAR10Partitioner(balance=False, partition="dirichlet",
    unbalance_sgm=sigma, dir_alpha=alpha)``, used for the paper's CIFAR-10
    experiments with ``n_clients=10, alpha=0.3, sigma=0.3``:

    1. client sizes ``s_i ~ LogNormal(log(n / N), sigma)``, rescaled to sum to
       ``n`` and rounded down, the remaining rows going one each to the
       clients with the largest fractional parts (``sigma = 0``: balanced);
    2. class priors ``pi_i ~ Dir(alpha * 1_C)`` per client;
    3. rows are dealt one at a time: a client is chosen uniformly among those
       not yet full, a class is drawn from its prior restricted to the classes
       that still have rows, and one row of that class (in a random order) is
       given to the client.

    Step 3 draws from the same distribution as FedLab's rejection loop, but
    renormalizing the prior over the remaining classes means it never spins
    when a client's prior mass sits on exhausted classes. A draw where a
    client's prior gives (numerically) zero mass to every remaining class, or
    a client smaller than ``min_size``, is discarded and retried with the
    next stream, at most ``max_retries`` times.

    Parameters
    ----------
    labels : array of int, shape (n,)
    n_clients : int
    alpha : float > 0
        Concentration of the per-client class priors.
    sigma : float >= 0
        Log-scale spread of the client sizes.
    seed : int
    min_size : int
    max_retries : int

    Returns
    -------
    list of numpy.ndarray
        ``n_clients`` sorted ``int64`` index arrays.

    Raises
    ------
    PartitionError
        If no draw within ``max_retries`` works.

    Examples
    --------
    >>> import numpy as np
    >>> from proxfed.data import partition_unbalanced_dirichlet
    >>> y = np.repeat(np.arange(10), 30)
    >>> parts = partition_unbalanced_dirichlet(y, 10, alpha=0.3, sigma=0.3, seed=0)
    >>> len(parts), sum(p.size for p in parts)
    (10, 300)
    """
    y = _labels(labels)
    n_clients = integer_at_least(n_clients, "n_clients", 1)
    alpha = _positive(alpha, "alpha")
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    min_size = integer_at_least(min_size, "min_size", 0)
    max_retries = integer_at_least(max_retries, "max_retries", 1)
    n = y.size
    if n < n_clients * max(min_size, 1):
        raise PartitionError(f"unbalanced dirichlet: {n} rows cannot give each of {n_clients} clients "
                             f"min_size={max(min_size, 1)} rows")
    classes, y_idx = np.unique(y, return_inverse=True)
    n_classes = classes.size
    reason = ""
    for attempt in range(max_retries):
        sizes = _lognormal_sizes(n, n_clients, float(sigma), B.rng(seed, _UNBAL_SIZES, attempt))
        if sizes.min() < max(min_size, 1):
            reason = f"a client drew {int(sizes.min())} rows < min_size={max(min_size, 1)}"
            continue
        gen = B.rng(seed, _UNBAL_PRIORS, attempt)
        priors = gen.dirichlet(np.full(n_classes, alpha), n_clients)
        pools = [gen.permutation(np.flatnonzero(y_idx == c)).tolist() for c in range(n_classes)]
        result = _deal(sizes, priors, pools, B.rng(seed, _UNBAL_DRAW, attempt))
        if result is None:
            reason = "a client's class prior had no mass left on the remaining classes"
            continue
        return _finish(result)
    raise PartitionError(
        f"unbalanced dirichlet: no partition found in {max_retries} draws (alpha={alpha}, sigma={sigma}, "
        f"n_clients={n_clients}, min_size={min_size}; last failure: {reason}). "
        "Increase alpha or max_retries, or lower sigma, min_size or n_clients."
    )


def _deal(sizes, priors, pools, gen):
    """Step 3 of :func:`partition_unbalanced_dirichlet`; None when a prior has no mass left."""
    n_clients, n_classes = priors.shape
    left = [int(s) for s in sizes]
    remaining = [len(p) for p in pools]
    prior = priors.tolist()
    open_clients = list(range(n_clients))
    parts = [[] for _ in range(n_clients)]
    total = sum(left)
    u_client = gen.random(total).tolist()
    u_class = gen.random(total).tolist()
    for t in range(total):
        k = int(u_client[t] * len(open_clients))
        cid = open_clients[k]
        w = [pc if r else 0.0 for pc, r in zip(prior[cid], remaining)]
        mass = sum(w)
        if not mass > 0:
            return None
        target = u_class[t] * mass
        acc = 0.0
        c = -1
        for j in range(n_classes):
            if w[j] > 0:
                c = j  # the last class with mass also absorbs round-off at the top end
                acc += w[j]
                if target < acc:
                    break
        remaining[c] -= 1
        parts[cid].append(pools[c].pop())
        left[cid] -= 1
        if left[cid] == 0:
            open_clients.pop(k)
    return parts


def partition_shards(
    labels, n_clients: int, shards_per_client: int = 2, seed: int = 0, *, min_size: int = 1
) -> list[np.ndarray]:
    """Pathological non-IID shards (McMahan et al., 2017): about ``k`` classes per client.

    The rows are sorted by label (ties in a random order), cut into
    ``n_clients * shards_per_client`` contiguous shards of (almost) equal
    size, and every client receives ``shards_per_client`` shards chosen at
    random without replacement. A client therefore sees at most
    ``shards_per_client`` classes when shards do not straddle a class
    boundary, and a few more otherwise.

    Parameters
    ----------
    labels : array of int, shape (n,)
    n_clients : int
    shards_per_client : int
        ``k``: shards (hence, roughly, classes) per client.
    seed : int
    min_size : int

    Returns
    -------
    list of numpy.ndarray

    Raises
    ------
    PartitionError
        If there are fewer rows than shards or a client would get fewer than
        ``min_size`` rows.

    Examples
    --------
    >>> import numpy as np
    >>> from proxfed.data import partition_shards
    >>> y = np.repeat(np.arange(5), 20)
    >>> parts = partition_shards(y, 5, shards_per_client=2, seed=0)
    >>> [len(np.unique(y[p])) <= 2 for p in parts]
    [True, True, True, True, True]
    """
    y = _labels(labels)
    n_clients = integer_at_least(n_clients, "n_clients", 1)
    k = integer_at_least(shards_per_client, "shards_per_client", 1)
    min_size = integer_at_least(min_size, "min_size", 0)
    n_shards = n_clients * k
    if y.size < n_shards:
        raise PartitionError(f"shards: {y.size} rows cannot be cut into {n_shards} non-empty shards")
    gen = B.rng(seed, _SHARDS)
    tie = gen.permutation(y.size)
    order = tie[np.argsort(y[tie], kind="stable")]
    shards = np.array_split(order, n_shards)
    assign = gen.permutation(n_shards).reshape(n_clients, k)
    parts = [np.concatenate([shards[s] for s in row]) for row in assign]
    _check_min_size(np.array([p.size for p in parts]), max(min_size, 1), "shards")
    return _finish(parts)


def partition_by_key(keys, *, min_size: int = 1, return_keys: bool = False):
    """Natural partition: one client per distinct key (writer, user, blog...).

    Clients are ordered by their key (``numpy.unique`` order: ascending, and
    lexicographic for key rows); each client's rows keep their original
    order. No randomness.

    Parameters
    ----------
    keys : array, shape (n,) or (n, k)
        The key of every row: a scalar or a row of ``k`` values (for example
        the first 50 columns of BlogFeedback).
    min_size : int
        Every key must own at least this many rows.
    return_keys : bool
        Also return the distinct keys, in client order.

    Returns
    -------
    parts : list of numpy.ndarray
    unique_keys : numpy.ndarray
        Only with ``return_keys=True``.

    Raises
    ------
    PartitionError
        If some key owns fewer than ``min_size`` rows.

    Examples
    --------
    >>> from proxfed.data import partition_by_key
    >>> [p.tolist() for p in partition_by_key(["b", "a", "b", "c"])]
    [[1], [0, 2], [3]]
    """
    keys = np.asarray(keys)
    if keys.ndim not in (1, 2) or keys.shape[0] == 0:
        raise ValueError(f"keys must be a non-empty array of shape (n,) or (n, k), got {keys.shape}")
    min_size = integer_at_least(min_size, "min_size", 0)
    if keys.ndim == 2:
        uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    else:
        uniq, inverse = np.unique(keys, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse, minlength=uniq.shape[0])
    parts = np.split(order.astype(np.int64), np.cumsum(counts)[:-1])
    if counts.min() < min_size:
        small = np.flatnonzero(counts < min_size)
        raise PartitionError(
            f"by key: {small.size} key(s) own fewer than min_size={min_size} rows "
            f"(first: {uniq[small[0]].tolist()!r} with {int(counts[small[0]])} rows)"
        )
    return (parts, uniq) if return_keys else parts
