"""proxfed.run_rounds: every run jumps to its own next communication; the same trajectories as proxfed.run."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import proxfed
from proxfed import algorithms as A
from proxfed.data import make_sparse_regression
from proxfed.problems import Ridge
from proxfed.round_runner import communication_times


@pytest.fixture(scope="module")
def ridge():
    return Ridge(make_sparse_regression(n_clients=12, n_features=20, seed=2), alpha=5.0)


def _gamma(problem):
    return 1.0 / float(np.max(problem.smoothness()))


MAKERS = {
    "proxskip": lambda g, p: A.proxskip(g, p),
    "final_topk": lambda g, p: A.final_topk(g, p, 5),
    "sparse_proxskip": lambda g, p: A.sparse_proxskip(g, p, 5),
    "accelerated_server_pruning": lambda g, p: A.accelerated_server_pruning(g, p, 5),
    "sps_modified": lambda g, p: A.sps_modified(g, p, 5),
    "sps_bidirectional": lambda g, p: A.sps_bidirectional(g, p, 5),
    "fedht": lambda g, p: A.fedht(g, np.maximum(1, np.rint(1 / np.asarray(p))).astype(np.int64), 5),
    "scaffold": lambda g, p: A.scaffold(g, np.maximum(1, np.rint(1 / np.asarray(p))).astype(np.int64)),
}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_a_single_run_is_the_run_of_proxfed_run(ridge, name):
    g, C = _gamma(ridge), 25
    alg = MAKERS[name](g, 0.2)
    rounds = proxfed.run_rounds(alg, ridge, C, seed=3, every=5)
    T = int(communication_times(alg, C, seed=3)[0, -1]) + 1
    plain = proxfed.run(alg, ridge, T, seed=3, every=T)
    assert int(rounds.state.communications) == int(plain.state.communications) == C
    np.testing.assert_allclose(rounds.state.w, plain.state.w, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(rounds.state.h, plain.state.h, rtol=1e-9, atol=1e-9 * np.abs(plain.state.h).max())
    np.testing.assert_array_equal(rounds.state.bits_up, plain.state.bits_up)
    assert rounds.history["iteration"][-1] == T and rounds.state.t == T
    assert len(rounds.history["loss"]) == C // 5 + 1


def test_batched_runs_with_different_p_end_at_their_own_iterations(ridge):
    g, C = _gamma(ridge), 20
    ps = np.array([0.1, 0.3, 0.7])
    alg = A.sparse_proxskip(np.full(3, g), ps, 5)
    rounds = proxfed.run_rounds(alg, ridge, C, seed=[1, 2, 3], every=4)
    times = communication_times(alg, C, seed=[1, 2, 3], runs=3)
    np.testing.assert_array_equal(rounds.history["iteration"][-1], times[:, -1] + 1)
    np.testing.assert_array_equal(rounds.state.communications, [C] * 3)
    for r, p in enumerate(ps):
        single = A.sparse_proxskip(g, float(p), 5)
        plain = proxfed.run(single, ridge, int(times[r, -1]) + 1, seed=[r + 1], every=1000)
        np.testing.assert_allclose(rounds.w[r], plain.w[0] if plain.w.ndim == 2 else plain.w, rtol=1e-10,
                                   atol=1e-12)


def test_rules_without_a_closed_form_are_refused(ridge):
    with pytest.raises(ValueError, match="proxfed.run"):
        proxfed.run_rounds(A.sparse_proxskip_local(_gamma(ridge), 0.2, 5), ridge, 5)
    with pytest.raises(ValueError):
        proxfed.run_rounds(A.proxskip(_gamma(ridge), 0.2), ridge, 0)


def test_a_diverging_run_is_frozen_and_the_others_go_on(ridge):
    g = _gamma(ridge)
    alg = A.proxskip(np.array([g, 50 * g]), np.array([0.3, 0.3]))
    res = proxfed.run_rounds(alg, ridge, 40, seed=[0, 1], every=2)
    assert res.status == "diverged" and res.diverged.tolist() == [False, True]
    assert np.all(np.isfinite(res.history["loss"])) and np.all(np.isfinite(res.state.w))
    assert res.state.communications[0] == 40 and res.state.communications[1] < 40
    single = proxfed.run_rounds(A.proxskip(50 * g, 0.3), ridge, 40, seed=1)
    assert single.status == "diverged" and np.all(np.isfinite(single.state.w))


# -- proxfed.run(..., communications=C): every run stops at its own C-th communication -------------

def test_exact_communications_equal_each_run_alone(ridge):
    g, C = _gamma(ridge), 15
    ps = np.array([0.15, 0.4, 0.8])
    seeds = [4, 5, 6]
    alg = A.sparse_proxskip_local(np.full(3, g), ps, 5)  # no closed form: explicit local steps
    times = communication_times(alg, C, seed=seeds, runs=3)
    cap = int(times[:, -1].max()) + 1
    res = proxfed.run(alg, ridge, cap + 50, seed=seeds, every=7, communications=C)
    assert res.status == "completed" and f"completed {C} communications" in res.message
    np.testing.assert_array_equal(res.state.communications, [C] * 3)
    np.testing.assert_array_equal(res.history["communications"][-1], [C] * 3)
    assert res.history["iteration"][-1] == cap and res.config["communications"] == C
    for r, p in enumerate(ps):
        alone = proxfed.run(A.sparse_proxskip_local(g, float(p), 5), ridge, int(times[r, -1]) + 1,
                            seed=[seeds[r]], every=1000)
        np.testing.assert_allclose(res.w[r], alone.w[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(res.state.bits_up[r], alone.state.bits_up[0])
        # recorded at its own last step, and constant after it
        it = res.history["iteration"]
        at = np.flatnonzero(it >= times[r, -1] + 1)
        assert it[at[0]] == times[r, -1] + 1
        assert np.all(res.history["loss"][at, r] == res.history["loss"][at[0], r])


def test_exact_communications_with_jumps_are_the_rounds_of_run_rounds(ridge):
    g, C = _gamma(ridge), 12
    alg = A.sparse_proxskip(np.full(2, g), np.array([0.2, 0.5]), 5)
    rounds = proxfed.run_rounds(alg, ridge, C, seed=[7, 8], every=C)
    plain = proxfed.run(alg, ridge, 10_000, seed=[7, 8], communications=C)
    np.testing.assert_allclose(plain.w, rounds.w, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(plain.state.communications, rounds.state.communications)


def test_exact_communications_cap_and_validation(ridge):
    g = _gamma(ridge)
    alg = A.sparse_proxskip_local(np.full(2, g), np.array([0.05, 1.0]), 5)
    res = proxfed.run(alg, ridge, 20, seed=[0, 1], communications=10)
    assert res.state.communications[1] == 10 and res.state.communications[0] < 10
    assert "runs [0] made fewer" in res.message and res.state.t == 20
    single = proxfed.run(A.sparse_proxskip_local(g, 0.5, 5), ridge, 500, seed=3, communications=4)
    assert int(single.state.communications) == 4 and single.status == "completed"
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="communications must be a positive integer"):
            proxfed.run(alg, ridge, 5, seed=[0, 1], communications=bad)


def test_exact_communications_a_diverging_run_is_frozen_the_others_finish(ridge):
    g = _gamma(ridge)
    alg = A.sparse_proxskip_local(np.array([g, 80 * g]), np.array([0.3, 0.3]), 5)
    res = proxfed.run(alg, ridge, 2000, seed=[0, 1], every=3, communications=30)
    assert res.status == "diverged" and res.diverged.tolist() == [False, True]
    assert res.state.communications[0] == 30 and res.state.communications[1] < 30
    assert np.all(np.isfinite(res.history["loss"])) and np.all(np.isfinite(res.state.w))


@settings(max_examples=25, deadline=None)
@given(ps=st.lists(st.floats(0.05, 1.0), min_size=1, max_size=4), C=st.integers(1, 12),
       seed=st.integers(0, 10_000), method=st.sampled_from(["sparse_proxskip_local", "randprox_l1", "proxskip"]))
def test_exact_communications_property_every_run_makes_exactly_C(ps, C, seed, method):
    problem = Ridge(make_sparse_regression(n_clients=6, n_features=8, seed=1), alpha=5.0)
    g, R = _gamma(problem), len(ps)
    make = {"sparse_proxskip_local": lambda: A.sparse_proxskip_local(np.full(R, g), np.array(ps), 3),
            "randprox_l1": lambda: A.randprox_l1(np.full(R, g), np.array(ps), 0.01),
            "proxskip": lambda: A.proxskip(np.full(R, g), np.array(ps))}
    alg = make[method]()
    seeds = [seed + r for r in range(R)]
    times = communication_times(alg, C, seed=seeds, runs=R)
    res = proxfed.run(alg, problem, int(times[:, -1].max()) + 1, seed=seeds, every=5, communications=C)
    assert res.status == "completed"
    np.testing.assert_array_equal(res.state.communications, [C] * R)
    # each run's record at its own last step already shows all C communications
    it = res.history["iteration"]
    for r in range(R):
        row = np.flatnonzero(it == times[r, -1] + 1)[0]
        assert res.history["communications"][row, r] == C
        if row > 0:
            assert res.history["communications"][row - 1, r] < C
