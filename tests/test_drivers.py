"""proxfed.run(driver=...): each driver is today's explicit call, bit for bit; "auto" picks as documented."""

import numpy as np
import pytest

import proxfed
from proxfed import FederatedDataset
from proxfed import algorithms as A
from proxfed.data import make_sparse_regression
from proxfed.drivers import DRIVERS, choose_driver, policy_driver
from proxfed.problems import Ridge, SoftmaxRegression
from proxfed.round_runner import NoClosedForm, last_communications, run_rounds, supports_rounds
from proxfed.runner import initial_models


@pytest.fixture(scope="module")
def ridge():
    return Ridge(make_sparse_regression(n_clients=6, n_features=12, seed=4), alpha=5.0)


@pytest.fixture(scope="module")
def softmax():  # no closed-form local phase
    gen = np.random.default_rng(0)
    clients = [(gen.random((n, 5)), gen.integers(0, 3, n)) for n in (6, 9, 4)]
    return SoftmaxRegression(FederatedDataset.from_clients(clients), alpha=0.1, n_classes=3)


def _gamma(problem):
    return 1.0 / float(np.max(problem.smoothness()))


def _batched(problem):
    g = _gamma(problem)
    return A.sparse_proxskip(np.array([0.5, 1.0, 2.0]) * g, np.array([0.2, 0.5, 0.3]), 4)


def assert_same(a, b):
    """Bitwise equal outcomes (histories but wall time, final state, status, config)."""
    assert a.status == b.status and a.message == b.message
    assert a.history.keys() == b.history.keys()
    for key in a.history:
        if key != "time":
            np.testing.assert_array_equal(a.history[key], b.history[key], err_msg=key)
    np.testing.assert_array_equal(a.state.w, b.state.w)
    np.testing.assert_array_equal(a.state.h, b.state.h)
    np.testing.assert_array_equal(a.state.communications, b.state.communications)
    np.testing.assert_array_equal(a.diverged, b.diverged)
    assert a.state.t == b.state.t and a.diverged_at == b.diverged_at and a.config == b.config


def test_iterations_driver_is_the_plain_call(ridge):
    alg = _batched(ridge)
    assert_same(proxfed.run(alg, ridge, 90, seed=[1, 2, 3], driver="iterations"),
                proxfed.run(alg, ridge, 90, seed=[1, 2, 3]))


def test_rounds_driver_is_run_rounds(ridge):
    alg = _batched(ridge)
    res = proxfed.run(alg, ridge, communications=8, driver="rounds", seed=[1, 2, 3], every=2)
    assert_same(res, run_rounds(alg, ridge, 8, seed=[1, 2, 3], every=2))
    assert res.config["driver"] == "run_rounds"
    np.testing.assert_array_equal(res.state.communications, [8, 8, 8])


def test_exact_driver_is_run_to_the_last_communication(ridge):
    alg = _batched(ridge)
    T = int(last_communications(alg, 7, seed=[1, 2, 3], runs=3).max())
    today = proxfed.run(alg, ridge, T, seed=[1, 2, 3], communications=7)
    assert_same(proxfed.run(alg, ridge, communications=7, driver="exact", seed=[1, 2, 3]), today)
    assert_same(proxfed.run(alg, ridge, T, communications=7, driver="exact", seed=[1, 2, 3]), today)
    np.testing.assert_array_equal(today.state.communications, [7, 7, 7])


def test_auto_picks_as_documented(ridge, softmax):
    alg = _batched(ridge)
    # iterations only: the per-iteration loop (every existing call)
    assert_same(proxfed.run(alg, ridge, 60, seed=0, driver="auto"), proxfed.run(alg, ridge, 60, seed=0))
    assert choose_driver(alg, ridge, iterations=60) == "iterations"
    # both: exact, iterations a cap (today's run(..., T, communications=C))
    assert choose_driver(alg, ridge, iterations=60, communications=5) == "exact"
    assert_same(proxfed.run(alg, ridge, 60, communications=5, seed=0),
                proxfed.run(alg, ridge, 60, communications=5, seed=0, driver="exact"))
    # communications only: rounds where the closed form exists, else exact
    assert supports_rounds(alg, ridge)
    assert choose_driver(alg, ridge, communications=5) == "rounds"
    assert_same(proxfed.run(alg, ridge, communications=5, seed=0), run_rounds(alg, ridge, 5, seed=0))
    rule = A.proxskip(0.5 * _gamma(softmax), 0.4)
    assert not supports_rounds(rule, softmax)
    assert choose_driver(rule, softmax, communications=4) == "exact"
    T = int(last_communications(rule, 4, seed=2).max())
    assert_same(proxfed.run(rule, softmax, communications=4, seed=2), proxfed.run(rule, softmax, T, seed=2,
                                                                                  communications=4))


def test_explicit_drivers_are_returned(ridge):
    alg = _batched(ridge)
    for driver in DRIVERS:
        kw = {"iterations": 10} if driver == "iterations" else {"communications": 3}
        assert choose_driver(alg, ridge, driver, **kw) == driver


@pytest.mark.parametrize("driver", ["round", "run", "run_rounds", "", None])
def test_a_bad_driver_name_is_refused(ridge, driver):
    with pytest.raises(ValueError, match="driver must be"):
        proxfed.run(A.proxskip(0.01, 0.3), ridge, 10, driver=driver)


@pytest.mark.parametrize("kwargs", [
    {"iterations": 10, "communications": 3, "driver": "rounds"},  # rounds runs exactly `communications`
    {"iterations": 10, "communications": 3, "driver": "iterations"},
    {"iterations": 10, "driver": "exact"},
    {"iterations": 10, "driver": "rounds"},
])
def test_a_driver_that_does_not_fit_the_horizon_is_refused(ridge, kwargs):
    with pytest.raises(ValueError, match="driver"):
        proxfed.run(A.proxskip(0.01, 0.3), ridge, **kwargs)


def test_no_horizon_is_refused(ridge):
    with pytest.raises(TypeError, match="iterations or communications"):
        proxfed.run(A.proxskip(0.01, 0.3), ridge)


def test_rounds_without_a_closed_form_raise_no_closed_form(softmax):
    rule = A.proxskip(0.01, 0.4)
    with pytest.raises(NoClosedForm):
        proxfed.run(rule, softmax, communications=3, driver="rounds")
    with pytest.raises(NoClosedForm):
        run_rounds(rule, softmax, 3)


def test_rounds_refuse_the_options_of_the_iteration_loop(ridge):
    with pytest.raises(ValueError, match="callbacks"):
        proxfed.run(A.proxskip(0.01, 0.3), ridge, communications=3, driver="rounds", callbacks=[lambda r, s: False])


def test_a_resumed_exact_run_needs_a_cap(ridge):
    first = proxfed.run(A.proxskip(0.01, 0.3), ridge, 10, seed=0)
    for driver in ("exact", "auto"):
        with pytest.raises(ValueError, match="cap"):
            proxfed.run(A.proxskip(0.01, 0.3), ridge, communications=3, driver=driver, state=first.state)
    with pytest.raises(ValueError, match="state"):
        proxfed.run(A.proxskip(0.01, 0.3), ridge, communications=3, driver="rounds", state=first.state)
    # with a cap, a resumed exact run goes on as today
    again = proxfed.run(A.proxskip(0.01, 0.3), ridge, 40, communications=3, state=first.state)
    assert int(again.state.communications) - int(first.state.communications) == 3


@pytest.mark.parametrize("policy, closed, expected", [
    ("auto", True, "run_rounds"), ("exact", True, "run_rounds"), ("run", True, "run"),
    ("run_rounds", True, "run_rounds"), ("auto", False, "run"), ("exact", False, "run_exact"),
    ("run", False, "run"),
])
def test_policy_labels_of_tuning_and_reproductions(ridge, softmax, policy, closed, expected):
    """tune_method's and the reproductions' driver policies, as their stored labels."""
    problem = ridge if closed else softmax
    w0 = initial_models(problem, [0], 1)
    assert policy_driver(policy, A.sparse_proxskip(0.01, 0.3, 4), problem, communications=5, w0=w0) == expected


def test_the_first_record_of_run_is_at_time_zero(ridge):
    """proxfed.run's starting record has time 0.0 (run_rounds records the elapsed time from its start)."""
    res = proxfed.run(A.proxskip(0.01, 0.3), ridge, 20, every=10)
    assert res.history["time"][0] == 0.0 and res.history["time"][-1] > 0.0
