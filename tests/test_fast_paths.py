"""Fast paths against plain references: the ridge closed-form local phase and the runner's jumps."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

import proxfed
from proxfed import algorithms as A
from proxfed.data import make_sparse_regression
from proxfed.problems import Ridge

from . import reference as ref


@pytest.fixture(scope="module")
def problem():
    # clients both above and below d rows, so both eigenbasis forms are used
    return Ridge(make_sparse_regression(n_clients=8, n_features=12, n_informative=3, mean_client_size=15.0,
                                        seed=2), alpha=2.0)


def explicit_steps(problem, W, H, gamma, k):
    """k plain local steps, client by client, with the reference gradient."""
    rp = ref.RidgeReference(list(problem.dataset.clients()), problem.alpha)
    W = np.array(W, dtype=np.float64)
    for _ in range(k):
        W = W - gamma * (np.array([rp.grad(i, W[i]) for i in range(W.shape[0])]) - H)
    return W


@given(k=st.integers(0, 60), scale=st.floats(0.05, 1.9), seed=st.integers(0, 2**16))
def test_local_steps_equal_explicit_steps(problem, k, scale, seed):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((problem.n_clients, problem.dim))
    H = rng.standard_normal(W.shape)
    H -= H.mean(axis=0)
    gamma = scale / problem.smoothness().max()
    expected = explicit_steps(problem, W, H, gamma, k)
    got = problem.local_steps(W, H, gamma, k)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12 * max(1.0, np.abs(expected).max()))


def test_local_steps_per_run_gamma_and_k(problem):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((3, problem.n_clients, problem.dim))
    H = rng.standard_normal(W.shape)
    L = problem.smoothness().max()
    gammas, ks = np.array([1 / L, 0.3 / L, 1.5 / L]), np.array([5, 0, 17])
    got = problem.local_steps(W, H, gammas, ks)
    for r in range(3):
        np.testing.assert_allclose(got[r], explicit_steps(problem, W[r], H[r], gammas[r], ks[r]), rtol=1e-12, atol=1e-12)


def test_local_steps_batched_reuses_and_refreshes_cached_logs():
    """R >= 4 (one GEMM per block), many row buckets, and the k-free logs cached per stepsize vector:
    a second call with other k reuses them, a call with other stepsizes must not."""
    prob = Ridge(make_sparse_regression(n_clients=30, n_features=16, n_informative=4, mean_client_size=14.0,
                                        seed=5), alpha=0.5)
    rng = np.random.default_rng(3)
    L = prob.smoothness().max()
    W = rng.standard_normal((5, prob.n_clients, prob.dim))
    H = rng.standard_normal(W.shape)
    for gammas, ks in [(np.array([1.0, 0.2, 1.8, 0.7, 1.2]) / L, np.array([3, 0, 11, 1, 25])),
                       (np.array([1.0, 0.2, 1.8, 0.7, 1.2]) / L, np.array([8, 2, 0, 30, 4])),
                       (np.array([0.4, 1.9, 0.05, 1.0, 0.6]) / L, np.array([8, 2, 0, 30, 4]))]:
        got = prob.local_steps(W, H, gammas, ks)
        for r in range(5):
            np.testing.assert_allclose(got[r], explicit_steps(prob, W[r], H[r], gammas[r], ks[r]),
                                       rtol=1e-11, atol=1e-11 * max(1.0, np.abs(got[r]).max()))


def test_local_steps_float32_and_alpha_zero(problem):
    rng = np.random.default_rng(1)
    W = rng.standard_normal((problem.n_clients, problem.dim))
    H = np.zeros_like(W)
    gamma = 1 / problem.smoothness().max()
    got32 = problem.local_steps(W.astype(np.float32), H.astype(np.float32), gamma, 9)
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, explicit_steps(problem, W, H, gamma, 9), rtol=2e-4, atol=2e-4)
    flat = Ridge(problem.dataset, alpha=0.0)  # eigenvalue 0 directions: Psi_k = k gamma
    gamma0 = 1 / flat.smoothness().max()
    np.testing.assert_allclose(flat.local_steps(W, H, gamma0, 6), explicit_steps(flat, W, H, gamma0, 6),
                               rtol=1e-12, atol=1e-12)


def test_local_steps_rejects_bad_k(problem):
    W = np.zeros((problem.n_clients, problem.dim))
    with pytest.raises(ValueError, match="k must be"):
        problem.local_steps(W, W, 0.1, -1)
    with pytest.raises(ValueError, match="k must be"):
        problem.local_steps(W, W, 0.1, 1.5)


@pytest.mark.parametrize("factory", ["proxskip", "final_topk", "sparse_proxskip", "accelerated_server_pruning",
                                     "asp_modified", "sps_modified", "fedavg", "fedht", "scaffold"])
def test_runner_jumps_equal_explicit_steps(problem, factory):
    L = problem.smoothness().max()
    k = 4
    alg = {
        "fedavg": lambda: A.fedavg(1 / L, 7), "fedht": lambda: A.fedht(1 / L, 7, k),
        "scaffold": lambda: A.scaffold(1 / L, 7), "proxskip": lambda: A.proxskip(1 / L, 0.15),
    }.get(factory, lambda: getattr(A, factory)(1 / L, 0.15, k))()
    assert alg.can_jump(problem, alg.init(problem))
    fast = proxfed.run(alg, problem, 300, seed=5, every=37)
    slow = proxfed.run(alg, problem, 300, seed=5, every=37, jumps=False)
    scale = np.abs(slow.state.w).max()
    np.testing.assert_allclose(fast.state.w, slow.state.w, rtol=1e-11, atol=1e-11 * scale)
    np.testing.assert_allclose(fast.state.h, slow.state.h, rtol=1e-9, atol=1e-9 * max(1, np.abs(slow.state.h).max()))
    np.testing.assert_array_equal(fast.history["iteration"], slow.history["iteration"])
    np.testing.assert_array_equal(fast.history["bits_up"], slow.history["bits_up"])
    np.testing.assert_allclose(fast.history["loss"], slow.history["loss"], rtol=1e-11)


def test_no_jump_where_local_prox_or_pruned_gradient(problem):
    st0 = A.sparse_proxskip_local(0.01, 0.2, 3).init(problem)
    assert not A.sparse_proxskip_local(0.01, 0.2, 3).can_jump(problem, st0)
    assert not A.randprox_l1(0.01, 0.2, 0.1).can_jump(problem, st0)
    assert not A.fediht(0.01, 5, 3).can_jump(problem, st0)
    assert not A.sparse_proxskip(0.01, 0.2, 3, grad_at="pruned").can_jump(problem, st0)
    with pytest.raises(ValueError, match="cannot jump"):
        A.fediht(0.01, 5, 3).local_phase(st0, problem, 3)


def test_batched_jumps_equal_explicit_steps(problem):
    L = problem.smoothness().max()
    alg = A.sparse_proxskip(np.array([1 / L, 0.5 / L]), np.array([0.05, 0.1]), np.array([3, 5]))
    fast = proxfed.run(alg, problem, 400, seed=[1, 2], every=50)
    slow = proxfed.run(alg, problem, 400, seed=[1, 2], every=50, jumps=False)
    np.testing.assert_allclose(fast.state.w, slow.state.w, rtol=1e-11, atol=1e-11)
    np.testing.assert_array_equal(fast.history["communications"], slow.history["communications"])


def test_record_at_adds_records_that_jumps_do_not_cross(problem):
    """``record_at`` records at the given iterations too; closed-form stretches stop there, so the
    records equal those of explicit steps, and the trajectory is unchanged."""
    L = problem.smoothness().max()
    alg = A.sparse_proxskip(1 / L, 0.1, 4)
    extra = [3, 41, 42, 77, 300]
    fast = proxfed.run(alg, problem, 300, seed=2, every=50, record_at=extra)
    slow = proxfed.run(alg, problem, 300, seed=2, every=1, jumps=False)
    plain = proxfed.run(alg, problem, 300, seed=2, every=50)
    it = list(fast.history["iteration"])
    assert it == sorted({0, 3, 41, 42, 77} | set(range(50, 301, 50)))
    rows = np.searchsorted(slow.history["iteration"], it)
    np.testing.assert_allclose(fast.history["loss"], slow.history["loss"][rows], rtol=1e-10)
    np.testing.assert_allclose(fast.state.w, plain.state.w, rtol=1e-11, atol=1e-13)
    assert fast.config["record_at"] == extra
    for bad in ([0], [301]):
        with pytest.raises(ValueError, match="record_at"):
            proxfed.run(alg, problem, 300, record_at=bad)


@pytest.mark.parametrize("lead", [(), (3,)])
@pytest.mark.parametrize("with_h", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_softmax_gradient_step_is_the_unfused_expression_bit_for_bit(lead, with_h, dtype):
    """SoftmaxRegression.gradient_step fuses the step per client on NumPy; it must not change a bit."""
    from proxfed import FederatedDataset
    from proxfed.problems import SoftmaxRegression

    g = np.random.default_rng(4)
    clients = [(g.normal(size=(n, 6)), g.integers(0, 3, n)) for n in (2, 9, 5, 1)]
    prob = SoftmaxRegression(FederatedDataset.from_clients(clients), alpha=0.3)
    W = g.normal(size=lead + (4, prob.dim)).astype(dtype)
    H = g.normal(size=W.shape).astype(dtype) if with_h else None
    gamma = np.array([0.1, 0.02, 0.5]).reshape(3, 1, 1).astype(dtype) if lead else dtype(0.07)
    G = prob.grad(W)
    want = W - gamma * (G if H is None else G - H)
    got = prob.gradient_step(W, gamma, H)
    assert got.dtype == W.dtype
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="H must have the shape"):
        prob.gradient_step(W, gamma, np.zeros((4, prob.dim + 1), dtype))
