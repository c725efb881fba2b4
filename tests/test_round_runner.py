"""proxfed.run_rounds: every run jumps to its own next communication; the same trajectories as proxfed.run."""

import numpy as np
import pytest

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
