"""The device layout of Ridge and SoftmaxRegression (torch on the CPU runs the GPU's code path).

Checks the bucket partition against brute force, the device path against the NumPy path
and the plain reference, and what one Algorithm-1 iteration dispatches: a number of kernels
that does not depend on N (and stays <= 100), bytes written <= 30x the iterates.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxfed import FederatedDataset
from proxfed import algorithms as A
from proxfed.problems import Ridge, SoftmaxRegression
from proxfed.problems._device import DEVICE_BUCKETS, padded_groups

from . import reference as ref

torch = pytest.importorskip("torch", reason="the device layout is exercised through torch on the CPU")
from proxfed import kernels  # noqa: E402


def padded_rows(sizes, groups):
    return sum(len(g) * max(sizes[g]) for g in groups)


@given(st.lists(st.integers(1, 50), min_size=1, max_size=9), st.integers(1, 4))
def test_padded_groups_partition_and_are_optimal(sizes, n_groups):
    sizes = np.array(sizes)
    groups = padded_groups(sizes, n_groups)
    assert 1 <= len(groups) <= n_groups
    assert sorted(np.concatenate(groups).tolist()) == list(range(sizes.size))
    assert all(max(sizes[a]) <= min(sizes[b]) for a, b in zip(groups, groups[1:]))
    s = np.sort(sizes)
    best = min(
        sum((b - a) * s[b - 1] for a, b in zip((0,) + cut, cut + (s.size,)))
        for k in range(min(n_groups, s.size)) for cut in itertools.combinations(range(1, s.size), k)
    )
    assert padded_rows(sizes, groups) == best


def test_padded_groups_validation():
    with pytest.raises(ValueError, match="n_groups"):
        padded_groups([1, 2], 0)
    assert padded_groups([], 3) == []


def client_sizes(n_clients, d, seed):
    """Heavy-tailed client sizes from 1 row to 3 d rows: Gram clients and every row bucket are used."""
    g = np.random.default_rng(seed)
    sizes = np.minimum(3 * d, np.ceil(g.pareto(0.8, n_clients) + 1)).astype(int)
    sizes[:3] = [1, d // 2, 3 * d]
    return sizes


def ridge_problem(n_clients, d=12, seed=0):
    g = np.random.default_rng(seed)
    clients = [(g.normal(size=(n, d)), g.normal(size=n)) for n in client_sizes(n_clients, d, seed)]
    return Ridge(FederatedDataset.from_clients(clients), alpha=0.5)


def softmax_problem(n_clients, p=10, C=4, seed=0):
    g = np.random.default_rng(seed)
    clients = [(g.normal(size=(n, p)), g.integers(0, C, size=n)) for n in client_sizes(n_clients, p, seed)]
    clients[0][1][:] = C - 1
    return SoftmaxRegression(FederatedDataset.from_clients(clients), alpha=0.1, n_classes=C)


@pytest.mark.parametrize("make", [ridge_problem, softmax_problem])
@pytest.mark.parametrize("lead", [(), (1,), (5,), (2, 3)])
def test_device_path_equals_numpy_path(make, lead):
    prob = make(40)
    W = np.random.default_rng(1).normal(size=lead + (prob.n_clients, prob.dim))
    v, g = prob.value_and_grad(W)
    Wt = torch.asarray(W)
    vt, gt = prob.value_and_grad(Wt)
    assert vt.shape == v.shape and gt.shape == g.shape and gt.is_contiguous()
    np.testing.assert_allclose(vt.numpy(), v, rtol=1e-12, atol=1e-12 * np.abs(v).max())
    np.testing.assert_allclose(gt.numpy(), g, rtol=1e-12, atol=1e-12 * np.abs(g).max())
    np.testing.assert_allclose(prob.grad(Wt).numpy(), g, rtol=1e-12, atol=1e-12 * np.abs(g).max())
    np.testing.assert_allclose(prob.value(Wt).numpy(), v, rtol=1e-12, atol=1e-12 * np.abs(v).max())
    # float32 on the device follows the float64 result to single precision
    g32 = prob.grad(torch.asarray(W, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(g32, g, rtol=1e-3, atol=1e-4 * np.abs(g).max())


def test_device_path_equals_the_plain_reference():
    prob = softmax_problem(12)
    rp = ref.SoftmaxReference(list(prob.dataset.clients()), prob.alpha, prob.n_classes)
    W = np.random.default_rng(2).normal(size=(prob.n_clients, prob.dim))
    g = prob.grad(torch.asarray(W)).numpy()
    np.testing.assert_allclose(g, [rp.grad(i, W[i]) for i in range(prob.n_clients)], rtol=1e-10, atol=1e-12)
    ridge = ridge_problem(12)
    W = np.random.default_rng(3).normal(size=(ridge.n_clients, ridge.dim))
    want = [A_i.T @ (A_i @ W[i] - b_i) + ridge.alpha / 2 * W[i] for i, (A_i, b_i) in enumerate(ridge.dataset.clients())]
    np.testing.assert_allclose(ridge.grad(torch.asarray(W)).numpy(), want, rtol=1e-10, atol=1e-10)


def step_counts(prob, name, runs=8, coin=None):
    """What one iteration of ``name`` dispatches on ``prob`` with torch iterates (after a warm-up step)."""
    kw = {} if name == "proxskip" else {"k": np.arange(runs) % 3 + 2}
    alg = getattr(A, name)(np.full(runs, 1e-3), np.full(runs, 0.3), **kw)
    state = alg.init(prob, torch.zeros((runs, prob.dim), dtype=torch.float64))
    for warm_up in (np.zeros(runs, bool), coin):  # the tallies move to the device at the first communication
        state = alg.step(state, prob, warm_up)
    with kernels.count_kernels() as count:
        alg.step(state, prob, coin)
    return count, state.w.numel() * state.w.element_size()


COINS = {"local": np.zeros(8, bool), "all communicate": np.ones(8, bool),
         "some communicate": np.arange(8) % 2 == 0}


@pytest.mark.parametrize("make", [ridge_problem, softmax_problem])
@pytest.mark.parametrize("name", ["proxskip", "sparse_proxskip", "sparse_proxskip_local",
                                  "accelerated_server_pruning", "final_topk"])
@pytest.mark.parametrize("coin", sorted(COINS))
def test_kernels_per_iteration_do_not_depend_on_n(make, name, coin):
    small, large = make(50), make(554)
    assert len(small.device_layout.get(torch.zeros(1, dtype=torch.float64))["blocks"]) == \
        len(large.device_layout.get(torch.zeros(1, dtype=torch.float64))["blocks"])
    (c_small, _), (c_large, iterate_bytes) = (step_counts(p, name, coin=COINS[coin]) for p in (small, large))
    assert c_small.kernels == c_large.kernels <= 100, (c_small.ops, c_large.ops)
    assert c_large.bytes_written <= 30 * iterate_bytes
    assert c_large.host_syncs == 0


def test_real_data_kernels_and_bytes(shared_data, tmp_path):
    """BlogFeedback (N = 554) against its first 50 clients: the same kernels, <= 30x the iterates' bytes."""
    from proxfed.data import load_blogfeedback

    ds = load_blogfeedback(shared_data / "blogfeedback", cache_dir=tmp_path)
    half = FederatedDataset.from_clients([ds.client(i) for i in range(50)])
    full, part = Ridge(ds, alpha=1.0), Ridge(half, alpha=1.0)
    for coin in COINS.values():
        (c_part, _), (c_full, iterate_bytes) = (step_counts(p, "sparse_proxskip", coin=coin) for p in (part, full))
        assert c_part.kernels == c_full.kernels <= 100
        assert c_full.bytes_written <= 30 * iterate_bytes
    assert len(full.device_layout.get(torch.zeros(1, dtype=torch.float64))["blocks"]) == 1 + DEVICE_BUCKETS


@pytest.mark.parametrize("every", [1, 7, 40])
def test_divergence_seen_on_the_device_matches_numpy(every):
    """On torch the runner reads finiteness back only at records; the outcome is NumPy's per-step one."""
    prob = ridge_problem(20)
    L = float(prob.smoothness().max())
    alg = A.proxskip(np.array([1 / L, 100 / L, 0.5 / L]), 0.5)
    want = proxfed_run(alg, prob, np.zeros((3, prob.dim)), every)
    got = proxfed_run(alg, prob, torch.zeros((3, prob.dim), dtype=torch.float64), every)
    assert got.status == want.status == "diverged" and got.message == want.message
    assert got.diverged_at == want.diverged_at and got.diverged.tolist() == [False, True, False]
    np.testing.assert_allclose(got.state.w.numpy(), want.state.w, rtol=1e-12, atol=1e-12)
    for key in ("loss", "communications", "bits_up"):
        np.testing.assert_allclose(got.history[key], want.history[key], rtol=1e-10)
    single = A.proxskip(100 / L, 0.5)
    want = proxfed_run(single, prob, np.zeros(prob.dim), every)
    got = proxfed_run(single, prob, torch.zeros(prob.dim, dtype=torch.float64), every)
    assert got.status == want.status == "diverged" and got.message == want.message
    assert got.state.t == want.state.t


def proxfed_run(alg, prob, w0, every):
    import proxfed

    return proxfed.run(alg, prob, 120, w0=w0, seed=0, every=every, jumps=False, split=None, reference=None)


@pytest.mark.parametrize("coin", sorted(COINS))
@pytest.mark.parametrize("make", [ridge_problem, softmax_problem])
def test_a_step_moves_nothing_between_host_and_device(make, coin):
    """Local steps and communications alike: the bit tallies stay on the device."""
    count, _ = step_counts(make(30), "sparse_proxskip", coin=COINS[coin])
    assert count.to_host == count.from_host == count.host_syncs == 0


@pytest.mark.parametrize("index", ["none", "log2d", "bitmap", "min"])
def test_bits_on_the_device_equal_the_host_count(index):
    from proxfed.comm import CommModel

    comm = CommModel(value_bits=16, index=index)
    nnz = np.array([[0, 1, 5, 60, 281], [3, 140, 200, 2, 17]])
    got = comm.bits(torch.asarray(nnz), 281)
    assert isinstance(got, torch.Tensor)
    np.testing.assert_array_equal(got.numpy(), comm.bits(nnz, 281))


@pytest.mark.parametrize("name", ["sparse_proxskip", "fedavg", "scaffold"])
def test_device_tallies_equal_numpy_and_come_back_to_the_host(name):
    import proxfed

    prob = ridge_problem(12)
    L = float(prob.smoothness().max())
    runs = 5
    if name == "sparse_proxskip":
        alg = A.sparse_proxskip(np.full(runs, 0.5 / L), np.linspace(0.2, 0.8, runs), k=np.arange(runs) % 4 + 3)
    else:
        alg = getattr(A, name)(0.5 / L, local_steps=3)
    out = {}
    for w0 in (np.zeros((runs, prob.dim)), torch.zeros((runs, prob.dim), dtype=torch.float64)):
        res = proxfed.run(alg, prob, 40, w0=w0, seed=list(range(runs)), every=4, jumps=False)
        for n in ("bits_up", "bits_down", "values_up", "upload_nnz"):
            assert isinstance(getattr(res.state, n), np.ndarray) and getattr(res.state, n).dtype == np.int64
        out[type(w0).__name__] = res
    want, got = out["ndarray"], out["Tensor"]
    for n in ("bits_up", "bits_down", "values_up", "upload_nnz"):
        np.testing.assert_array_equal(getattr(got.state, n), getattr(want.state, n))
    for key in ("bits_up", "bits_down", "bits_up_total", "upload_nnz", "communications"):
        np.testing.assert_array_equal(got.history[key], want.history[key])
    assert want.state.bits_up.sum() > 0
