"""Partitioners: disjoint, complete, seeded (hypothesis properties), constraints, reports and plots."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxfed.data import (
    PartitionError,
    PartitionReport,
    check_partition,
    federate,
    partition_by_key,
    partition_dirichlet,
    partition_iid,
    partition_report,
    partition_shards,
    partition_unbalanced_dirichlet,
    plot_partition,
)


def is_partition(parts, n):
    check_partition(parts, n)  # raises unless disjoint, in range and complete
    return all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts)


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


@st.composite
def labelled(draw, min_n=1, max_n=300, max_classes=8):
    n = draw(st.integers(min_n, max_n))
    n_classes = draw(st.integers(1, max_classes))
    seed = draw(st.integers(0, 2**32 - 1))
    labels = np.random.default_rng(seed).integers(0, n_classes, n)
    return labels


seeds = st.integers(0, 2**31 - 1)


# --------------------------------------------------------------------------- properties

@given(n=st.integers(0, 500), n_clients=st.integers(1, 40), seed=seeds)
def test_iid_is_a_balanced_seeded_partition(n, n_clients, seed):
    if n < n_clients:
        with pytest.raises(PartitionError, match="min_size=1"):
            partition_iid(n, n_clients, seed)
        return
    parts = partition_iid(n, n_clients, seed)
    assert len(parts) == n_clients and is_partition(parts, n)
    sizes = [p.size for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert same(parts, partition_iid(n, n_clients, seed))


@given(labels=labelled(min_n=20), n_clients=st.integers(1, 10), alpha=st.floats(0.05, 100.0), seed=seeds,
       min_size=st.integers(0, 2))
def test_dirichlet_is_a_seeded_partition(labels, n_clients, alpha, seed, min_size):
    try:
        parts = partition_dirichlet(labels, n_clients, alpha, seed, min_size=min_size, max_retries=20)
    except PartitionError as err:
        assert "min_size" in str(err)
        return
    assert len(parts) == n_clients and is_partition(parts, labels.size)
    assert min(p.size for p in parts) >= min_size
    assert same(parts, partition_dirichlet(labels, n_clients, alpha, seed, min_size=min_size, max_retries=20))


@given(labels=labelled(min_n=10), n_clients=st.integers(1, 10), alpha=st.floats(0.05, 50.0),
       sigma=st.floats(0.0, 1.5), seed=seeds, min_size=st.integers(1, 3))
def test_unbalanced_dirichlet_is_a_seeded_partition(labels, n_clients, alpha, sigma, seed, min_size):
    try:
        parts = partition_unbalanced_dirichlet(labels, n_clients, alpha, sigma, seed, min_size=min_size,
                                               max_retries=10)
    except PartitionError as err:
        assert "unbalanced dirichlet" in str(err)
        return
    assert len(parts) == n_clients and is_partition(parts, labels.size)
    assert min(p.size for p in parts) >= min_size
    assert same(parts, partition_unbalanced_dirichlet(labels, n_clients, alpha, sigma, seed, min_size=min_size,
                                                      max_retries=10))


@given(labels=labelled(min_n=1), n_clients=st.integers(1, 12), k=st.integers(1, 4), seed=seeds)
def test_shards_is_a_seeded_partition(labels, n_clients, k, seed):
    if labels.size < n_clients * k:
        with pytest.raises(PartitionError, match="shards"):
            partition_shards(labels, n_clients, k, seed)
        return
    parts = partition_shards(labels, n_clients, k, seed)
    assert len(parts) == n_clients and is_partition(parts, labels.size)
    assert same(parts, partition_shards(labels, n_clients, k, seed))


@given(keys=st.lists(st.integers(0, 6), min_size=1, max_size=80))
def test_by_key_groups_equal_keys(keys):
    keys = np.array(keys)
    parts, uniq = partition_by_key(keys, return_keys=True)
    assert is_partition(parts, keys.size)
    assert uniq.tolist() == sorted(set(keys.tolist()))
    for p, k in zip(parts, uniq):
        assert np.all(keys[p] == k)


# --------------------------------------------------------------------------- specific behaviour

def test_seeds_change_the_partition():
    y = np.repeat(np.arange(5), 40)
    for fn in (lambda s: partition_iid(200, 7, s), lambda s: partition_dirichlet(y, 7, 0.5, s),
               lambda s: partition_unbalanced_dirichlet(y, 7, 0.5, 0.3, s), lambda s: partition_shards(y, 7, 2, s)):
        assert not same(fn(0), fn(1))


def test_dirichlet_alpha_controls_label_skew():
    y = np.repeat(np.arange(10), 200)

    def classes_per_client(alpha):
        parts = partition_dirichlet(y, 20, alpha, seed=0)
        return np.mean([np.count_nonzero(np.bincount(y[p], minlength=10) >= 5) for p in parts])

    assert classes_per_client(0.05) < 4 < 9 < classes_per_client(100.0)


def test_fedlab_cifar10_split():
    """The paper's CIFAR-10 split: N = 10, alpha = 0.3, sigma = 0.3 on 50,000 balanced labels."""
    y = np.repeat(np.arange(10), 5000)
    parts = partition_unbalanced_dirichlet(y, 10, alpha=0.3, sigma=0.3, seed=0)
    assert is_partition(parts, 50_000)
    sizes = np.array([p.size for p in parts])
    assert sizes.sum() == 50_000 and sizes.std() > 0 and sizes.min() > 1000  # unbalanced, log-normal(0.3)
    report = partition_report(y, parts)
    # per-client label distributions are skewed: each client's top class holds a large share
    assert np.median(report.counts.max(axis=1) / report.sizes) > 0.3
    balanced = partition_unbalanced_dirichlet(y, 10, alpha=0.3, sigma=0.0, seed=0)
    assert [p.size for p in balanced] == [5000] * 10


def test_lognormal_sizes_sum_exactly():
    y = np.zeros(1003, dtype=np.int64)
    for seed in range(5):
        parts = partition_unbalanced_dirichlet(y, 7, alpha=1.0, sigma=1.0, seed=seed)
        assert sum(p.size for p in parts) == 1003


def test_shards_give_at_most_k_classes_when_aligned():
    y = np.repeat(np.arange(10), 30)  # 300 rows, 20 shards of 15: no shard straddles a class
    parts = partition_shards(y, 10, 2, seed=3)
    assert all(np.unique(y[p]).size <= 2 for p in parts)
    assert [p.size for p in parts] == [30] * 10


def test_tiny_alpha_fails_fast_with_a_clear_error():
    y = np.repeat(np.arange(10), 10)
    t0 = time.perf_counter()
    with pytest.raises(PartitionError, match=r"no partition with min_size=5 found in 50 draws.*alpha=0.001"):
        partition_dirichlet(y, 20, alpha=1e-3, seed=0, min_size=5, max_retries=50)
    with pytest.raises(PartitionError, match=r"unbalanced dirichlet: no partition found in 30 draws"):
        partition_unbalanced_dirichlet(y, 30, alpha=1e-3, sigma=3.0, seed=0, min_size=3, max_retries=30)
    assert time.perf_counter() - t0 < 10


def test_unbalanced_dirichlet_does_not_spin_on_exhausted_classes():
    """FedLab's rejection loop can spin when a client's prior sits on exhausted classes; here it cannot."""
    y = np.array([0] * 95 + [1] * 5)
    for seed in range(20):
        parts = partition_unbalanced_dirichlet(y, 4, alpha=1e-2, sigma=0.0, seed=seed, max_retries=100)
        assert is_partition(parts, 100)


def test_min_size_errors():
    y = np.repeat(np.arange(3), 4)
    with pytest.raises(PartitionError, match="min_size=5"):
        partition_iid(12, 3, min_size=5)
    with pytest.raises(PartitionError, match="min_size=5"):
        partition_dirichlet(y, 3, 1.0, min_size=5)
    with pytest.raises(PartitionError, match="min_size=5"):
        partition_shards(y, 3, 2, min_size=5)
    with pytest.raises(PartitionError, match="min_size=5"):
        partition_unbalanced_dirichlet(y, 3, 1.0, 0.5, min_size=5)
    with pytest.raises(PartitionError, match=r"by key: 1 key\(s\) own fewer than min_size=3 rows \(first: 'c'"):
        partition_by_key(["a", "a", "a", "b", "b", "b", "c"], min_size=3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="alpha"):
        partition_dirichlet([0, 1], 2, alpha=0.0)
    with pytest.raises(ValueError, match="sigma"):
        partition_unbalanced_dirichlet([0, 1], 2, alpha=1.0, sigma=-1.0)
    with pytest.raises(ValueError, match="integer class labels"):
        partition_dirichlet([0.5, 1.0], 2, alpha=1.0)
    with pytest.raises(ValueError, match="n_clients"):
        partition_iid(10, 0)
    with pytest.raises(ValueError, match="keys"):
        partition_by_key(np.zeros((0,)))


def test_by_key_with_key_rows():
    keys = np.array([[1, 2], [0, 5], [1, 2], [0, 5], [0, 4]])
    parts, uniq = partition_by_key(keys, return_keys=True)
    assert uniq.tolist() == [[0, 4], [0, 5], [1, 2]]
    assert [p.tolist() for p in parts] == [[4], [1, 3], [0, 2]]


def test_check_partition_rejects_overlap_and_gaps():
    with pytest.raises(ValueError, match="more than one client"):
        check_partition([np.array([0, 1]), np.array([1, 2])], 3)
    with pytest.raises(ValueError, match="no client"):
        check_partition([np.array([0])], 2)
    with pytest.raises(ValueError, match="out of range"):
        check_partition([np.array([0, 5])], 2)


def test_federate_builds_the_dataset():
    X = np.arange(20.0).reshape(10, 2)
    y = np.arange(10) % 3
    parts = partition_shards(y, 2, 1, seed=0)
    ds = federate(X, y, parts, test=(X[:2], y[:2]), name="toy")
    assert ds.name == "toy" and ds.test.n_samples == 2
    for i, p in enumerate(parts):
        np.testing.assert_array_equal(ds.client(i)[0], X[p])
    np.testing.assert_array_equal(ds.meta["row_index"], np.concatenate(parts))
    with pytest.raises(ValueError, match="no client"):
        federate(X, y, [np.arange(5)])


def test_partition_report_and_heatmap(tmp_path):
    y = np.repeat(np.arange(4), 25)
    parts = partition_dirichlet(y, 6, alpha=0.5, seed=1)
    rep = partition_report(y, parts)
    assert isinstance(rep, PartitionReport) and rep.counts.shape == (6, 4)
    assert rep.sizes.tolist() == [p.size for p in parts]
    np.testing.assert_array_equal(rep.counts.sum(axis=0), [25] * 4)
    summary = rep.summary()
    assert summary["n_samples"] == 100 and summary["n_clients"] == 6
    table = rep.table()
    assert len(table.splitlines()) == 7 and table.splitlines()[0].split()[:2] == ["client", "size"]
    assert "more clients" in rep.table(max_rows=2)
    ds = federate(np.zeros((100, 1)), y, parts)
    np.testing.assert_array_equal(partition_report(ds).counts, rep.counts)
    with pytest.raises(ValueError, match="parts is required"):
        partition_report(y)
    pytest.importorskip("matplotlib")
    fig = plot_partition(rep, tmp_path / "heatmap.png")
    assert (tmp_path / "heatmap.png").stat().st_size > 1000 and fig.axes
