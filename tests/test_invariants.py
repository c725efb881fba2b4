"""Invariants, fixed points, exact sparsity, accounting, convergence and the runner.

ALGORITHMS.md sections 1-3 and 8; DESIGN.md "Testing".

(a) the zero-sum invariant ``sum_i h_i = 0`` per variant, kept or violated by the stated amount;
(b) fixed points of the convex variants for any coin sequence;
(c) exactly K non-zeros per upload and the bit accounting;
(d) convergence to the ridge closed form and the ProxSkip communication speed-up;
(e) the runner: history, final model, divergence, callbacks, coins, resume, save/load;
(f) bad input is rejected with an error naming the argument.
"""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import proxfed
from proxfed import CommModel, FederatedDataset, State, theory
from proxfed.algorithms import (
    accelerated_server_pruning,
    asp_modified,
    final_topk,
    proxskip,
    randprox_l1,
    sparse_proxskip,
    sps_bidirectional,
    sparse_proxskip_local,
    sps_modified,
)
from proxfed.data import make_sparse_regression
from proxfed.problems import Ridge, SoftmaxRegression
from proxfed.runner import HISTORY_KEYS

# ---------------------------------------------------------------------------------------------
# small problems (cached: hypothesis calls the tests many times)
# ---------------------------------------------------------------------------------------------

K = 3


@functools.lru_cache(maxsize=None)
def ridge(seed: int = 0, alpha: float = 1.0, n_clients: int = 6, n_features: int = 9) -> Ridge:
    """d = n_features + 1; heavy-tailed client sizes around d, so both the Gram and the row layout occur."""
    ds = make_sparse_regression(
        n_clients=n_clients, n_features=n_features, n_informative=3, mean_client_size=12.0,
        n_test=30, n_validation=30, seed=seed,
    )
    return Ridge(ds, alpha=alpha)


@functools.lru_cache(maxsize=None)
def softmax_problem(seed: int = 0) -> SoftmaxRegression:
    rng = np.random.default_rng(seed)
    clients = []
    for n in (5, 9, 14, 7):
        X = rng.normal(size=(n, 3)) + rng.normal(size=3)
        clients.append((X, rng.integers(0, 3, n)))
    return SoftmaxRegression(FederatedDataset.from_clients(clients), alpha=0.05, n_classes=3, init="zeros")


def L_of(problem) -> float:
    return float(np.max(problem.smoothness()))


def zero_sum(rng, N, d, scale):
    H = rng.normal(size=(N, d)) * scale
    return H - H.mean(axis=0, keepdims=True)


def numpy_topk(x, k):
    """Reference TopK on the last axis (stable sort by -|x|: ties to the lowest index)."""
    x = np.asarray(x)
    order = np.argsort(-np.abs(x), axis=-1, kind="stable")[..., :k]
    mask = np.zeros(x.shape, bool)
    np.put_along_axis(mask, order, True, axis=-1)
    return np.where(mask, x, 0.0)


def start_state(alg, problem, seed):
    """Random w0 and random zero-sum control variates of the size of the gradients."""
    rng = np.random.default_rng(seed)
    w0 = rng.normal(size=problem.dim)
    g = problem.grad(np.tile(w0, (problem.n_clients, 1)))
    h0 = zero_sum(rng, problem.n_clients, problem.dim, float(np.mean(np.abs(g))))
    return alg.init(problem, w0, h0=h0)


def sum_h_ratio(state):
    """||sum_i h_i|| relative to N * mean_i ||h_i||."""
    H = np.asarray(state.h)
    N = H.shape[-2]
    scale = N * float(np.mean(np.linalg.norm(H, axis=-1)))
    return float(np.linalg.norm(H.sum(axis=-2))) / scale


COINS = st.lists(st.booleans(), min_size=1, max_size=25)

KEEPS_ZERO_SUM = {
    "proxskip": lambda g, p: proxskip(g, p),
    "final_topk": lambda g, p: final_topk(g, p, K),
    "sparse_proxskip": lambda g, p: sparse_proxskip(g, p, K),
    "sparse_proxskip_local": lambda g, p: sparse_proxskip_local(g, p, K),
    "randprox_l1": lambda g, p: randprox_l1(g, p, lam=0.3),
    "asp_modified": lambda g, p: asp_modified(g, p, K),
    "sps_bidirectional": lambda g, p: sps_bidirectional(g, p, K),
}

# ---------------------------------------------------------------------------------------------
# (a) zero-sum invariant
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(KEEPS_ZERO_SUM))
@given(coins=COINS, seed=st.integers(0, 2), init_seed=st.integers(0, 2**16), p=st.sampled_from([0.1, 0.5, 1.0]),
       gamma_scale=st.sampled_from([0.5, 1.0]))
def test_zero_sum_is_kept_for_any_coins(name, coins, seed, init_seed, p, gamma_scale):
    problem = ridge(seed)
    alg = KEEPS_ZERO_SUM[name](gamma_scale / L_of(problem), p)
    state = start_state(alg, problem, init_seed)
    assert sum_h_ratio(state) < 1e-13
    for coin in coins:
        state = alg.step(state, problem, coin)
        assert np.all(np.isfinite(state.h))
        assert sum_h_ratio(state) < 1e-10, (name, state.t)
    assert int(state.communications) == sum(coins)


def _check_drift(name, coins, seed, init_seed, p):
    """Step ASP / SPS-mod and compare sum_i h_i with the ALGORITHMS.md section 3 formulas."""
    problem = ridge(seed)
    gamma = 1.0 / L_of(problem)
    alg = (accelerated_server_pruning if name == "asp" else sps_modified)(gamma, p, K)
    state = start_state(alg, problem, init_seed)
    N = problem.n_clients
    H = np.asarray(state.h).sum(axis=0)
    first_comm = True
    for coin in coins:
        W, Hc = np.asarray(state.w), np.asarray(state.h)
        V = W - gamma * (problem.grad(W) - Hc)
        if coin:
            if name == "asp":
                w_bar = V.mean(axis=0)
                removed = w_bar - numpy_topk(w_bar, K)
                increment = -(p * N / gamma) * removed
            else:
                removed = (numpy_topk(V, K) - V).sum(axis=0)
                increment = (p / gamma) * removed
        else:
            removed = np.zeros(problem.dim)
            increment = np.zeros(problem.dim)
        state = alg.step(state, problem, coin)
        H_new = np.asarray(state.h).sum(axis=0)
        expected = H + increment
        scale = N * float(np.mean(np.linalg.norm(np.asarray(state.h), axis=-1))) + np.linalg.norm(increment)
        np.testing.assert_allclose(H_new, expected, rtol=0, atol=1e-10 * scale)
        if coin and first_comm and np.linalg.norm(removed) > 0:
            # from sum h = 0, the first pruning communication makes it non-zero, by exactly the formula
            assert np.linalg.norm(H_new) > 1e-6 * N * float(np.mean(np.linalg.norm(np.asarray(state.h), axis=-1)))
            assert np.linalg.norm(H_new) == pytest.approx(np.linalg.norm(increment), rel=1e-8)
        if coin:
            first_comm = False
        H = H_new
    return state


@pytest.mark.parametrize("name", ["asp", "sps_modified"])
@given(coins=COINS, seed=st.integers(0, 2), init_seed=st.integers(0, 2**16), p=st.sampled_from([0.2, 1.0]))
def test_zero_sum_drifts_by_the_stated_amount(name, coins, seed, init_seed, p):
    _check_drift(name, coins, seed, init_seed, p)


@pytest.mark.parametrize("name", ["asp", "sps_modified"])
def test_zero_sum_violation_is_visible(name):
    coins = [False, True, False, False, True, True]
    state = _check_drift(name, coins, 0, 1, 0.5)
    assert sum_h_ratio(state) > 1e-3
    # and the runner reports it
    problem = ridge(0)
    alg = (accelerated_server_pruning if name == "asp" else sps_modified)(1 / L_of(problem), 0.5, K)
    res = proxfed.run(alg, problem, 6, coins=np.array(coins), every=1)
    assert res.history["sum_h_norm"][0] == 0.0
    assert res.history["sum_h_norm"][-1] > 1e-3 * problem.n_clients * res.history["mean_h_norm"][-1]


# ---------------------------------------------------------------------------------------------
# (b) fixed points
# ---------------------------------------------------------------------------------------------


def _assert_fixed(alg, problem, state, coins, w_star, h_star, rtol=1e-9):
    w_scale = max(1.0, float(np.linalg.norm(w_star)))
    h_scale = max(1.0, float(np.max(np.linalg.norm(h_star, axis=-1))))
    for coin in coins:
        state = alg.step(state, problem, coin)
        W, H = np.asarray(state.w), np.asarray(state.h)
        assert np.max(np.linalg.norm(W - w_star, axis=-1)) <= rtol * w_scale, state.t
        assert np.max(np.linalg.norm(H - h_star, axis=-1)) <= rtol * h_scale, state.t
    return state


@given(coins=COINS, seed=st.integers(0, 2), p=st.sampled_from([0.05, 0.3, 1.0]), gamma_scale=st.sampled_from([0.3, 1.0]))
def test_proxskip_fixed_point_ridge(coins, seed, p, gamma_scale):
    problem = ridge(seed)
    alg = proxskip(gamma_scale / L_of(problem), p)
    w_star = problem.solution()
    h_star = problem.grad(np.tile(w_star, (problem.n_clients, 1)))
    assert np.linalg.norm(h_star.sum(axis=0)) <= 1e-10 * problem.n_clients * np.max(np.abs(h_star))
    state = alg.init(problem, w_star, h0=h_star)
    _assert_fixed(alg, problem, state, coins, w_star, h_star)


@given(coins=COINS, p=st.sampled_from([0.1, 0.5, 1.0]), gamma_scale=st.sampled_from([0.5, 1.0]))
def test_proxskip_fixed_point_softmax(coins, p, gamma_scale):
    problem = softmax_problem(0)
    alg = proxskip(gamma_scale / L_of(problem), p)
    w_star = problem.solution()
    h_star = problem.grad(np.tile(w_star, (problem.n_clients, 1)))
    assert np.linalg.norm(h_star.sum(axis=0)) <= 1e-8 * np.max(np.abs(h_star))
    # the state built directly, as the State dataclass
    N, d = problem.n_clients, problem.dim
    state = State(w=np.tile(w_star, (N, 1)), h=h_star.copy(), communications=np.zeros((), np.int64),
                  bits_up=np.zeros(N, np.int64), bits_down=np.zeros(N, np.int64),
                  values_up=np.zeros(N, np.int64), upload_nnz=np.zeros(N, np.int64))
    assert state.batch_shape == () and state.w.shape == (N, d)
    _assert_fixed(alg, problem, state, coins, w_star, h_star)


def test_non_optimal_control_variates_are_rejected():
    """h_i = grad f_i(w) at a non-optimal w does not sum to zero; init refuses it."""
    problem = ridge(0)
    w = problem.solution() + 1.0
    h = problem.grad(np.tile(w, (problem.n_clients, 1)))
    with pytest.raises(ValueError, match="h0"):
        proxskip(1 / L_of(problem), 0.5).init(problem, w, h0=h)


def lasso_reference(problem: Ridge, lam: float):
    """Minimizer of (1/N) sum_i f_i(w) + lam ||w||_1 from the raw data, to machine precision.

    FISTA on the full quadratic finds the support and signs; a linear solve on the support
    polishes; the KKT conditions are then checked with a strict margin off the support.
    """
    A, b = problem.dataset.X, problem.dataset.y
    N, d = problem.n_clients, problem.dim
    Q = A.T @ A / N + (problem.alpha / 2) * np.eye(d)
    c = A.T @ b / N
    step = 1.0 / np.linalg.eigvalsh(Q)[-1]
    w = np.zeros(d)
    y, t = w.copy(), 1.0
    for _ in range(20000):
        w_new = np.sign(y - step * (Q @ y - c)) * np.maximum(np.abs(y - step * (Q @ y - c)) - step * lam, 0.0)
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        y = w_new + (t - 1) / t_new * (w_new - w)
        w, t = w_new, t_new
    S = np.flatnonzero(w)
    s = np.sign(w[S])
    w_star = np.zeros(d)
    w_star[S] = np.linalg.solve(Q[np.ix_(S, S)], c[S] - lam * s)
    g = Q @ w_star - c
    assert np.all(np.sign(w_star[S]) == s)
    np.testing.assert_allclose(g[S], -lam * s, rtol=0, atol=1e-12 * max(1.0, lam))
    off = np.setdiff1d(np.arange(d), S)
    assert off.size > 0 and S.size > 0
    assert np.all(np.abs(g[off]) <= lam * (1 - 1e-6)), "degenerate lasso instance"
    return w_star, S


@pytest.mark.parametrize("seed", [0, 1])
@given(coins=COINS, p=st.sampled_from([0.05, 0.3, 1.0]), gamma_scale=st.sampled_from([0.3, 1.0]))
def test_randprox_l1_fixed_point(seed, coins, p, gamma_scale):
    problem = ridge(seed)
    lam = _lasso_lambda(seed)
    w_star, support = _lasso(seed)
    N = problem.n_clients
    # gradients from the raw client data (not the problem's layout)
    grads = np.stack([A.T @ (A @ w_star - b) + (problem.alpha / 2) * w_star for A, b in problem.dataset.clients()])
    h_star = grads - grads.mean(axis=0, keepdims=True)
    alg = randprox_l1(gamma_scale / L_of(problem), p, lam=lam)
    state = alg.init(problem, w_star, h0=h_star)
    state = _assert_fixed(alg, problem, state, coins, np.tile(w_star, (N, 1)), h_star)
    # coordinates off the support stay exactly zero
    off = np.setdiff1d(np.arange(problem.dim), support)
    assert np.all(np.asarray(state.w)[:, off] == 0.0)


@functools.lru_cache(maxsize=None)
def _lasso_lambda(seed):
    problem = ridge(seed)
    c = problem.dataset.X.T @ problem.dataset.y / problem.n_clients
    return 0.2 * float(np.max(np.abs(c)))


@functools.lru_cache(maxsize=None)
def _lasso(seed):
    return lasso_reference(ridge(seed), _lasso_lambda(seed))


def test_randprox_l1_converges_to_its_reference():
    """A cross-check of the reference optimum: RandProx-l1 from zero reaches it."""
    problem = ridge(0)
    lam = _lasso_lambda(0)
    w_star, _ = _lasso(0)
    params = theory.proxskip_parameters(problem)
    res = proxfed.run(randprox_l1(params["gamma"], 0.5, lam=lam), problem, 6000, seed=0, every=6000, split=None)
    assert res.status == "completed"
    assert np.linalg.norm(res.w - w_star) <= 1e-8 * np.linalg.norm(w_star)


# ---------------------------------------------------------------------------------------------
# (c) exactly K non-zeros per upload; bit accounting
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("factory", [sparse_proxskip, sparse_proxskip_local], ids=lambda f: f.__name__)
@given(coins=COINS, seed=st.integers(0, 2), init_seed=st.integers(0, 2**16), k=st.integers(1, 9),
       p=st.sampled_from([0.2, 1.0]))
def test_uplink_has_exactly_k_nonzeros(factory, coins, seed, init_seed, k, p):
    problem = ridge(seed)
    d, N = problem.dim, problem.n_clients
    alg = factory(1 / L_of(problem), p, k)
    state = start_state(alg, problem, init_seed)
    assert np.all(state.bits_up == 0) and np.all(state.upload_nnz == 0) and state.uplink is None
    for coin in coins:
        prev = state
        state = alg.step(state, problem, coin)
        if factory is sparse_proxskip_local and not coin:
            # after a local step every client iterate is K-sparse (after a communication it is the average)
            assert np.all(np.count_nonzero(np.asarray(state.w), axis=-1) <= k)
        if coin:
            up = np.asarray(state.uplink)
            assert up.shape == (N, d)
            nnz = np.count_nonzero(up, axis=-1)
            assert np.all(nnz == k), nnz
            np.testing.assert_array_equal(state.upload_nnz, nnz)
            np.testing.assert_array_equal(state.bits_up - prev.bits_up, 32 * nnz)
            np.testing.assert_array_equal(state.values_up - prev.values_up, nnz)
            # every client received the average; the downlink is counted the same way
            w = np.asarray(state.w)
            assert np.all(w == w[0])
            np.testing.assert_array_equal(state.bits_down - prev.bits_down, 32 * np.count_nonzero(w[0]))
            assert int(state.communications) == int(prev.communications) + 1
        else:
            np.testing.assert_array_equal(state.bits_up, prev.bits_up)
            np.testing.assert_array_equal(state.bits_down, prev.bits_down)
            np.testing.assert_array_equal(state.upload_nnz, prev.upload_nnz)
            assert int(state.communications) == int(prev.communications)


def test_dense_uplink_counts_real_nonzeros():
    """Dense ProxSkip sends d values per client; RandProx-l1 sends its real (varying) nnz."""
    problem = ridge(0)
    d = problem.dim
    state = proxskip(1 / L_of(problem), 0.5).init(problem, np.ones(d))
    state = proxskip(1 / L_of(problem), 0.5).step(state, problem, True)
    np.testing.assert_array_equal(state.bits_up, 32 * d)
    lam = _lasso_lambda(0)
    alg = randprox_l1(1 / L_of(problem), 0.5, lam=lam)
    state = alg.init(problem, np.zeros(d))
    for coin in (False, True, True):
        prev = state
        state = alg.step(state, problem, coin)
    nnz = np.count_nonzero(np.asarray(state.uplink), axis=-1)
    assert nnz.min() < d
    np.testing.assert_array_equal(state.bits_up - prev.bits_up, 32 * nnz)


@pytest.mark.parametrize(
    "index, value_bits, nnz, d, expected",
    [
        ("none", 32, 10, 1000, 320),
        ("log2d", 32, 10, 1000, 320 + 10 * 10),     # ceil(log2 1000) = 10
        ("bitmap", 32, 10, 1000, 320 + 1000),
        ("min", 32, 10, 1000, 320 + 100),
        ("none", 32, 200, 1000, 6400),
        ("log2d", 32, 200, 1000, 6400 + 2000),
        ("bitmap", 32, 200, 1000, 6400 + 1000),
        ("min", 32, 200, 1000, 6400 + 1000),
        ("log2d", 32, 5, 1024, 160 + 50),           # log2 1024 = 10 exactly
        ("log2d", 32, 5, 1025, 160 + 55),           # ceil(log2 1025) = 11
        ("log2d", 16, 3, 10, 48 + 12),              # ceil(log2 10) = 4
        ("bitmap", 16, 3, 10, 48 + 10),
        ("min", 16, 3, 10, 48 + 10),
        ("min", 16, 2, 10, 32 + 8),
        ("none", 32, 0, 10, 0),
        ("log2d", 32, 0, 10, 0),
        ("min", 32, 0, 10, 0),
    ],
)
def test_comm_model_index_costs(index, value_bits, nnz, d, expected):
    assert CommModel(value_bits=value_bits, index=index).bits(nnz, d) == expected


def test_comm_model_arrays_and_errors():
    np.testing.assert_array_equal(CommModel(index="min").bits(np.array([1, 5, 10]), 16), [36, 176, 336])
    with pytest.raises(ValueError, match="index"):
        CommModel(index="gzip")
    with pytest.raises(ValueError, match="value_bits"):
        CommModel(value_bits=0)
    with pytest.raises(ValueError, match="nnz"):
        CommModel().bits(11, 10)


@pytest.mark.parametrize("index, per_client", [("none", K * 32), ("log2d", K * (32 + 4)), ("bitmap", K * 32 + 10),
                                                ("min", K * 32 + min(4 * K, 10))])
def test_comm_model_in_the_algorithm_state(index, per_client):
    problem = ridge(0)  # d = 10
    assert problem.dim == 10
    alg = sparse_proxskip(1 / L_of(problem), 0.5, K, comm=CommModel(index=index))
    coins = [True, False, True, True]
    res = proxfed.run(alg, problem, len(coins), coins=np.array(coins), every=1)
    np.testing.assert_array_equal(res.state.bits_up, 3 * per_client)
    np.testing.assert_array_equal(res.history["bits_up"], [0, per_client, per_client, 2 * per_client, 3 * per_client])
    np.testing.assert_array_equal(res.history["bits_up_total"][-1], 3 * per_client * problem.n_clients)
    np.testing.assert_array_equal(res.state.values_up, 3 * K)


# ---------------------------------------------------------------------------------------------
# (d) convergence
# ---------------------------------------------------------------------------------------------


def test_proxskip_reaches_the_ridge_closed_form():
    problem = ridge(0, alpha=20.0)
    params = theory.proxskip_parameters(problem)
    assert params["kappa"] < 100
    w_star = problem.solution()
    # the closed form from the raw data: (A^T A + (N alpha/2) I) w = A^T b
    A, b = problem.dataset.X, problem.dataset.y
    np.testing.assert_allclose(
        (A.T @ A + problem.n_clients * problem.alpha / 2 * np.eye(problem.dim)) @ w_star, A.T @ b, rtol=1e-10, atol=1e-10
    )
    res = proxfed.run(proxskip(params["gamma"], params["p"]), problem, 3000, seed=0, every=100, split=None)
    assert res.status == "completed"
    rel = np.linalg.norm(res.w - w_star) / np.linalg.norm(w_star)
    assert rel <= 1e-8
    assert res.history["dist_opt"][-1] == pytest.approx(np.linalg.norm(res.w - w_star), rel=1e-6, abs=1e-14)
    assert res.history["dist_opt"][-1] < 1e-6 * res.history["dist_opt"][0]
    assert res.history["sum_h_norm"].max() <= 1e-9 * problem.n_clients * res.history["mean_h_norm"].max()


def ill_conditioned_ridge(log10_scale: float = 1.8, seed: int = 0) -> Ridge:
    """Every client has n_i > d rows with the same column scaling: kappa of F is close to max L_i / min mu_i."""
    rng = np.random.default_rng(seed)
    d, N, n = 6, 5, 30
    scales = np.logspace(0, log10_scale, d)
    w_true = rng.normal(size=d)
    clients = []
    for _ in range(N):
        X = rng.normal(size=(n, d)) * scales
        clients.append((X, X @ w_true + 0.1 * rng.normal(size=n)))
    return Ridge(FederatedDataset.from_clients(clients), alpha=1e-3)


def communications_to_reach(alg, problem, eps, max_iterations, coins=None, max_communications=None):
    """Communications until the consensus model is within eps (relative) of the optimum, or None."""
    w_star = problem.solution()
    target = eps * np.linalg.norm(w_star)
    state = alg.init(problem)
    if coins is None:
        coins = alg.coins(max_iterations, seed=0)
    for t in range(max_iterations):
        state = alg.step(state, problem, bool(coins[t]))
        if coins[t]:
            if np.linalg.norm(np.asarray(state.w)[0] - w_star) <= target:
                return int(state.communications), state
            if max_communications is not None and int(state.communications) >= max_communications:
                return None, state
    return None, state


def test_proxskip_needs_fewer_communications_than_gradient_descent():
    problem = ill_conditioned_ridge()
    params = theory.proxskip_parameters(problem)
    kappa = params["kappa"]
    assert kappa >= 1e4
    eps = 1e-6
    n_proxskip, _ = communications_to_reach(
        proxskip(params["gamma"], params["p"]), problem, eps, max_iterations=int(30 * kappa)
    )
    assert n_proxskip is not None, "ProxSkip did not reach eps"
    # gradient descent = ProxSkip with p = 1, gamma = 1/L: one communication per step. Its distance to
    # w* decreases monotonically (a quadratic, gamma <= 1/L), so it is enough to show that it is still
    # above eps after 3x as many communications.
    gd = proxskip(1.0 / params["L"], 1.0)
    budget = 3 * n_proxskip
    n_gd, gd_state = communications_to_reach(gd, problem, eps, max_iterations=budget,
                                             coins=np.ones(budget, bool))
    assert n_gd is None, f"GD reached eps after {n_gd} communications, ProxSkip needed {n_proxskip}"
    assert int(gd_state.communications) == budget


# ---------------------------------------------------------------------------------------------
# (e) the runner
# ---------------------------------------------------------------------------------------------

SPARSE = {
    "final_topk": lambda g, p, k: final_topk(g, p, k),
    "sparse_proxskip": lambda g, p, k: sparse_proxskip(g, p, k),
    "sparse_proxskip_local": lambda g, p, k: sparse_proxskip_local(g, p, k),
    "accelerated_server_pruning": lambda g, p, k: accelerated_server_pruning(g, p, k),
    "asp_modified": lambda g, p, k: asp_modified(g, p, k),
    "sps_modified": lambda g, p, k: sps_modified(g, p, k),
    "randprox_l1": lambda g, p, k: randprox_l1(g, p, lam=0.05, k=k),
}


def test_history_keys_and_shapes():
    problem = ridge(0)
    alg = sparse_proxskip(1 / L_of(problem), 0.3, K)
    res = proxfed.run(alg, problem, 40, seed=1, every=5)
    assert res.status == "completed"
    h = res.history
    assert set(h) == set(HISTORY_KEYS)  # test split present (metric) and a cheap ridge solution (dist_opt)
    for key in ("communications", "bits_up", "bits_down", "loss", "sum_h_norm", "mean_h_norm", "w_norm",
                "consensus_gap", "dist_opt", "upload_nnz", "metric", "iteration"):
        assert h[key].shape == (9,), key
        assert np.all(np.isfinite(h[key])), key
    np.testing.assert_array_equal(h["iteration"], np.arange(0, 41, 5))
    assert h["communications"][-1] == res.state.communications
    assert h["bits_up"][-1] == res.state.bits_up.mean()
    assert h["bits_up_total"][-1] == res.state.bits_up.sum()
    assert np.all(np.diff(h["communications"]) >= 0) and np.all(np.diff(h["bits_up"]) >= 0)
    assert np.all(h["sum_h_norm"] <= 1e-9 * max(1.0, problem.n_clients * h["mean_h_norm"].max()))
    assert h["loss"][-1] == pytest.approx(float(problem.objective(res.w)), rel=1e-12)
    assert h["metric"][-1] == pytest.approx(problem.score(res.w, "test"), rel=1e-12)
    assert res.state.t == 40
    summary = res.summary()
    assert summary["status"] == "completed" and summary["loss"] == pytest.approx(h["loss"][-1])


@pytest.mark.parametrize("name", list(SPARSE))
def test_final_model_is_topk_of_the_average(name):
    problem = ridge(0)
    alg = SPARSE[name](1 / L_of(problem), 0.3, K)
    res = proxfed.run(alg, problem, 30, seed=2, every=10)
    assert res.status == "completed"
    w = np.asarray(res.w)
    avg = np.asarray(res.state.w).mean(axis=0)
    assert np.count_nonzero(avg) >= K
    np.testing.assert_array_equal(w, numpy_topk(avg, K))
    assert np.count_nonzero(w) == K


def test_dense_final_model_is_the_average():
    problem = ridge(0)
    res = proxfed.run(proxskip(1 / L_of(problem), 0.3), problem, 20, seed=0)
    np.testing.assert_allclose(res.w, np.asarray(res.state.w).mean(axis=0), rtol=1e-15, atol=0)


@pytest.mark.parametrize("gamma_times_L", [100.0, 1e6])
def test_diverging_run_keeps_a_finite_history(gamma_times_L):
    problem = ridge(0)
    alg = proxskip(gamma_times_L / L_of(problem), 0.5)
    res = proxfed.run(alg, problem, 500, seed=0, every=1)
    assert res.status == "diverged"
    assert "non-finite" in res.message or "diverg" in res.message
    assert res.state.t < 500
    assert len(res.history["loss"]) >= 2
    assert res.history["iteration"][-1] == res.state.t
    assert np.all(np.isfinite(np.asarray(res.state.w))) and np.all(np.isfinite(np.asarray(res.state.h)))
    for key, values in res.history.items():
        assert np.all(np.isfinite(values)), f"history[{key!r}] has non-finite entries: {values[-3:]}"
    with np.errstate(all="ignore"):
        assert np.isfinite(float(problem.objective(res.w)))


def test_batched_run_freezes_only_the_diverged_run():
    problem = ridge(0)
    L = L_of(problem)
    res = proxfed.run(proxskip(np.array([1 / L, 100 / L]), 0.5), problem, 150, seed=0, every=1)
    assert res.status == "diverged"
    assert "[1]" in res.message
    assert list(res.diverged_at) == [1] and 0 < res.diverged_at[1] < 150
    # run 0 is unaffected: the same as the single run with the same seed (stream (seed, run 0))
    single = proxfed.run(proxskip(1 / L, 0.5), problem, 150, seed=0, every=1)
    # equal to rounding: the single run jumps over its coin-free stretches in closed form
    np.testing.assert_allclose(np.asarray(res.state.w)[0], np.asarray(single.state.w), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res.history["loss"][:, 0], single.history["loss"], rtol=1e-12)
    assert np.all(np.isfinite(np.asarray(res.state.w)))
    for key, values in res.history.items():
        assert np.all(np.isfinite(values)), f"history[{key!r}] has non-finite entries"


def test_frozen_run_stops_counting_communications():
    """A batched run frozen at its last finite state neither moves nor communicates any more.

    Run 1 of the batch is compared with the single run that uses its coins (stream (seed, 1)).
    """
    problem = ridge(0)
    L = L_of(problem)
    batched_alg = proxskip(np.array([1 / L, 100 / L]), 0.5)
    res = proxfed.run(batched_alg, problem, 150, seed=0, every=1)
    assert res.status == "diverged"
    coins_1 = batched_alg.coins(150, seed=0, runs=2)[1]
    single = proxfed.run(proxskip(100 / L, 0.5), problem, 150, coins=coins_1, every=1)
    assert single.status == "diverged" and single.state.t < 100
    np.testing.assert_allclose(np.asarray(res.state.w)[1], np.asarray(single.state.w), rtol=1e-12)
    assert int(res.state.communications[1]) == int(single.state.communications), (
        int(res.state.communications[1]), int(single.state.communications), int(coins_1.sum()))
    np.testing.assert_array_equal(res.state.bits_up[1], single.state.bits_up)


def test_callback_stops_the_run():
    problem = ridge(0)
    seen = []

    def stop_at_ten(row, state):
        seen.append(row["iteration"])
        return row["iteration"] >= 10

    res = proxfed.run(proxskip(1 / L_of(problem), 0.5), problem, 100, seed=0, every=2, callbacks=[stop_at_ten])
    assert res.status == "stopped"
    assert res.state.t == 10
    assert res.history["iteration"][-1] == 10
    assert seen == [0, 2, 4, 6, 8, 10]
    # a callback stopping at once
    res0 = proxfed.run(proxskip(1 / L_of(problem), 0.5), problem, 100, seed=0, callbacks=[lambda row, st: True])
    assert res0.status == "stopped" and res0.state.t == 0


def test_explicit_coins_are_used():
    problem = ridge(0)
    alg = sparse_proxskip(1 / L_of(problem), 0.3, K)
    coins = np.array([0, 1, 1, 0, 0, 0, 1, 0, 1, 1], dtype=bool)
    # explicit steps (jumps would compute the coin-free stretch 3..5 in closed form: equal up to rounding)
    res = proxfed.run(alg, problem, len(coins), seed=0, coins=coins, every=1, jumps=False)
    np.testing.assert_array_equal(res.history["communications"], np.concatenate([[0], np.cumsum(coins)]))
    # the same as a manual loop with those coins
    state = alg.init(problem, problem.initial_point())
    for c in coins:
        state = alg.step(state, problem, bool(c))
    np.testing.assert_array_equal(np.asarray(res.state.w), np.asarray(state.w))
    np.testing.assert_array_equal(np.asarray(res.state.h), np.asarray(state.h))
    # a longer coin sequence is cut; 0/1 integers work; no coins -> no communication
    res_long = proxfed.run(alg, problem, 5, coins=np.concatenate([coins, coins]).astype(int))
    assert int(res_long.state.communications) == int(coins[:5].sum())
    res_none = proxfed.run(alg, problem, 8, coins=np.zeros(8, bool))
    assert int(res_none.state.communications) == 0 and np.all(res_none.state.bits_up == 0)
    # and differs from the seeded coins of the algorithm
    seeded = alg.coins(10, seed=0)
    res_seeded = proxfed.run(alg, problem, 10, seed=0)
    assert int(res_seeded.state.communications) == int(seeded.sum())


@pytest.mark.parametrize("name", ["proxskip", "sparse_proxskip", "randprox_l1"])
def test_resume_gives_the_same_trajectory(name):
    problem = ridge(1)
    g = 1 / L_of(problem)
    alg = {"proxskip": proxskip(g, 0.3), "sparse_proxskip": sparse_proxskip(g, 0.3, K),
           "randprox_l1": randprox_l1(g, 0.3, lam=0.05)}[name]
    full = proxfed.run(alg, problem, 60, seed=7, every=1)
    first = proxfed.run(alg, problem, 25, seed=7, every=1)
    second = proxfed.run(alg, problem, 35, seed=7, every=1, state=first.state)
    assert second.state.t == 60
    np.testing.assert_array_equal(np.asarray(second.state.w), np.asarray(full.state.w))
    np.testing.assert_array_equal(np.asarray(second.state.h), np.asarray(full.state.h))
    np.testing.assert_array_equal(second.state.communications, full.state.communications)
    np.testing.assert_array_equal(second.state.bits_up, full.state.bits_up)
    np.testing.assert_array_equal(np.asarray(second.w), np.asarray(full.w))
    for key in ("communications", "bits_up", "loss", "sum_h_norm", "w_norm"):
        joined = np.concatenate([first.history[key], second.history[key][1:]])
        np.testing.assert_array_equal(joined, full.history[key], err_msg=key)
    assert int(full.state.communications) > 0


def test_save_and_load_state(tmp_path):
    problem = ridge(0)
    alg = sparse_proxskip(1 / L_of(problem), 0.3, K)
    res = proxfed.run(alg, problem, 30, seed=3, every=3)
    out = res.save(tmp_path / "run")
    for name in ("config.json", "history.npz", "summary.json", "state.npz"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["iterations"] == 30 and config["seed"] == 3
    assert config["algorithm"]["name"] == "sparse_proxskip"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed"
    with np.load(out / "history.npz") as hist:
        assert set(hist.files) == set(res.history)
        for key in res.history:
            np.testing.assert_array_equal(hist[key], res.history[key])
    state = proxfed.load_state(out / "state.npz")
    np.testing.assert_array_equal(state.w, np.asarray(res.state.w))
    np.testing.assert_array_equal(state.h, np.asarray(res.state.h))
    assert state.t == res.state.t == 30
    for name in ("communications", "bits_up", "bits_down", "values_up", "upload_nnz"):
        np.testing.assert_array_equal(getattr(state, name), getattr(res.state, name))
    # the loaded state continues the same trajectory
    full = proxfed.run(alg, problem, 50, seed=3, every=3)
    cont = proxfed.run(alg, problem, 20, seed=3, every=3, state=state)
    np.testing.assert_array_equal(np.asarray(cont.state.w), np.asarray(full.state.w))
    np.testing.assert_array_equal(cont.state.bits_up, full.state.bits_up)


# ---------------------------------------------------------------------------------------------
# (f) bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.0, -1.0, np.nan, np.inf, np.array([0.1, -0.1])])
@pytest.mark.parametrize("factory", [
    lambda g: proxskip(g, 0.5), lambda g: sparse_proxskip(g, 0.5, 2), lambda g: randprox_l1(g, 0.5, lam=0.1),
    lambda g: accelerated_server_pruning(g, 0.5, 2), lambda g: sparse_proxskip_local(g, 0.5, 2),
], ids=["proxskip", "sps", "randprox", "asp", "spsl"])
def test_bad_gamma(factory, gamma):
    with pytest.raises(ValueError, match="gamma"):
        factory(gamma)


@pytest.mark.parametrize("p", [0.0, -0.1, 1.0001, 2.0, np.nan, np.array([0.5, 1.5])])
def test_bad_p(p):
    with pytest.raises(ValueError, match="p"):
        proxskip(0.1, p)
    with pytest.raises(ValueError, match="p"):
        sparse_proxskip(0.1, p, 2)


@pytest.mark.parametrize("factory", [sparse_proxskip, sparse_proxskip_local, final_topk, accelerated_server_pruning,
                                     asp_modified, sps_modified], ids=lambda f: f.__name__)
def test_bad_k_in_algorithms(factory):
    problem = ridge(0)
    d = problem.dim
    with pytest.raises(ValueError, match="k"):
        factory(0.1, 0.5, 0)
    with pytest.raises(TypeError, match="k"):
        factory(0.1, 0.5, 1.5)
    with pytest.raises(ValueError, match="k"):
        proxfed.run(factory(0.1, 0.5, d + 1), problem, 5)


def test_bad_lam_in_randprox():
    with pytest.raises(ValueError, match="lam"):
        randprox_l1(0.1, 0.5, lam=-1.0)
    with pytest.raises(ValueError, match="lam"):
        randprox_l1(0.1, 0.5, lam=np.nan)


def test_bad_iterates_into_the_problem():
    problem = ridge(0)
    N, d = problem.n_clients, problem.dim
    for shape in [(d,), (N, d + 1), (N + 1, d), (2, N - 1, d)]:
        with pytest.raises(ValueError, match="W"):
            problem.grad(np.zeros(shape))
        with pytest.raises(ValueError, match="W"):
            problem.value(np.zeros(shape))
    with pytest.raises(TypeError, match="W"):
        problem.grad(np.zeros((N, d), dtype=np.int64))
    sm = softmax_problem(0)
    with pytest.raises(ValueError, match="W"):
        sm.grad(np.zeros((sm.n_clients, sm.dim - 1)))


def test_bad_datasets():
    good = (np.ones((3, 2)), np.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        FederatedDataset.from_clients([good, (np.array([[1.0, np.nan]]), np.ones(1))])
    with pytest.raises(ValueError, match="NaN"):
        FederatedDataset.from_clients([good, (np.ones((1, 2)), np.array([np.inf]))])
    with pytest.raises(ValueError, match="at least one row"):
        FederatedDataset.from_clients([good, (np.ones((0, 2)), np.ones(0))])
    with pytest.raises(ValueError, match="features"):
        FederatedDataset.from_clients([good, (np.ones((2, 3)), np.ones(2))])
    with pytest.raises(ValueError, match="offsets"):
        FederatedDataset(np.ones((3, 2)), np.ones(3), np.array([0, 1, 4]))


def test_bad_run_arguments():
    problem = ridge(0)
    alg = proxskip(1 / L_of(problem), 0.5)
    for it in (-1, 2.5, True):
        with pytest.raises(ValueError, match="iterations"):
            proxfed.run(alg, problem, it)
    for coins in (np.ones(3, bool), np.ones((2, 10), bool), np.ones((10, 1), bool)):
        with pytest.raises(ValueError, match="coins"):
            proxfed.run(alg, problem, 10, coins=coins)
    with pytest.raises(ValueError, match="coins"):
        proxfed.run(alg, problem, 3, coins=np.array([0, 2, 1]))
    with pytest.raises(ValueError, match="every"):
        proxfed.run(alg, problem, 10, every=0)
    with pytest.raises(TypeError, match="algorithm"):
        proxfed.run("proxskip", problem, 10)
    with pytest.raises(ValueError, match="w0"):
        proxfed.run(alg, problem, 10, w0=np.zeros(problem.dim + 1))
    with pytest.raises(ValueError, match="w0"):
        proxfed.run(alg, problem, 10, w0=np.full(problem.dim, np.nan))
    with pytest.raises(ValueError, match="h0"):
        alg.init(problem, np.zeros(problem.dim), h0=np.zeros((problem.n_clients, problem.dim + 1)))
    with pytest.raises(ValueError, match="coin"):
        alg.step(alg.init(problem), problem, np.array([True, False]))


def test_result_reports_which_runs_diverged():
    problem = ridge(0)
    L = L_of(problem)
    res = proxfed.run(proxskip(np.array([1 / L, 100 / L, 0.5 / L]), 0.5), problem, 150, seed=0, every=1)
    assert res.diverged.tolist() == [False, True, False]
    single = proxfed.run(proxskip(100 / L, 0.5), problem, 150, seed=0, every=1)
    assert bool(single.diverged) and single.status == "diverged"
    ok = proxfed.run(proxskip(1 / L, 0.5), problem, 20, seed=0)
    assert not bool(ok.diverged)
