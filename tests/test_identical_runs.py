"""Deterministic rules: ``Algorithm.deterministic`` is honest, and the final runs compute such a rule once.

FedHT and FedIHT (the fixed schedule) from BlogFeedback's w = 0 give the same run for every seed;
the reproduction computes one and repeats it. Checked against the batch computed in full.
"""

import dataclasses

import numpy as np
import pytest

import proxfed
from proxfed.algorithms import registry as R
from proxfed.algorithms.rounds import RoundBased
from proxfed.data import make_sparse_regression
from proxfed.experiments import BUDGETS
from proxfed.experiments._common import run_steps
from proxfed.experiments.pipeline import Pipeline, choose_drive, identical_runs, run_drive
from proxfed.problems import Ridge
from proxfed.prox import sparsity_to_k
from proxfed.runner import initial_models
from proxfed.tune import TUNABLE_METHODS, make_algorithm


@pytest.fixture(scope="module")
def problem():
    ds = make_sparse_regression(n_clients=8, n_features=24, n_informative=4, n_test=300, n_validation=200, seed=5)
    return Ridge(ds, alpha=10.0)


def _params(method, problem, runs):
    gamma = 0.5 / float(np.max(problem.smoothness()))
    values = {"gamma": gamma, "p": 0.3, "local_steps": 3, "lam": 1e-3}
    return {n: np.full(runs, values[n]) for n in TUNABLE_METHODS[method]}


@pytest.mark.parametrize("method", sorted(TUNABLE_METHODS))
def test_deterministic_says_whether_seeds_change_the_run(problem, method):
    """Three seeds from w = 0: identical columns exactly when the rule says it is deterministic."""
    k = None if method == "proxskip" else sparsity_to_k(problem.dim, 0.75)
    alg = make_algorithm(method, _params(method, problem, 3), k)
    res = proxfed.run(alg, problem, 60, seed=[11, 12, 13], w0=np.zeros((3, problem.dim)), split="test", every=6)
    loss, comms = res.history["loss"], res.history["communications"]
    same = np.allclose(loss, loss[:, :1], rtol=1e-12, atol=0) and np.array_equal(comms, comms[:, :1].repeat(3, 1))
    assert alg.deterministic == same, (method, alg.deterministic)
    assert alg.deterministic == (method in ("fedht", "fediht"))


def test_round_based_rules_are_not_called_deterministic():
    """FedSparsify and FLASH draw from their own seed per run position: never repeated."""
    assert RoundBased.deterministic.fget(object.__new__(RoundBased)) is False


def test_identical_runs_needs_one_start_and_exact_gradients(problem):
    alg = make_algorithm("fediht", _params("fediht", problem, 3), 5)
    zeros = np.zeros((3, problem.dim))
    assert identical_runs(alg, problem, zeros)
    apart = zeros.copy()
    apart[1, 0] = 1e-3
    assert not identical_runs(alg, problem, apart)
    assert not identical_runs(alg, problem, zeros[:1])  # one run: nothing to repeat
    random = make_algorithm("sparse_proxskip", _params("sparse_proxskip", problem, 3), 5)
    assert not identical_runs(random, problem, zeros)

    class Noisy(Ridge):
        stochastic = True

    noisy = Noisy(problem.dataset, alpha=10.0)
    assert not identical_runs(alg, noisy, zeros)


@pytest.mark.parametrize("method", ["fedht", "fediht", "sparse_proxskip"])
def test_final_runs_of_a_deterministic_rule_equal_the_full_batch(problem, tmp_path, method):
    """The repeated single run equals the batch of every seed computed in full, to rounding."""
    budget = dataclasses.replace(BUDGETS["blogfeedback"]["smoke"], seeds=3, records=5)
    pipe = Pipeline("blogfeedback", tmp_path, budget, (), 0, False, lambda *_: None)
    pipe.data_key = {"dataset": "synthetic"}
    s = 0.75
    params = {n: float(v[0]) for n, v in _params(method, problem, 1).items()}
    if "local_steps" in params:
        params["local_steps"] = int(params["local_steps"])
    hist, summ = pipe.final_run(method, s, params, problem, tmp_path / "cell", 9)

    seeds = summ["seeds"]
    k = sparsity_to_k(problem.dim, s)
    alg = make_algorithm(method, {n: np.full(len(seeds), v) for n, v in params.items()}, k)
    w0 = initial_models(problem, seeds, len(seeds))
    drive = choose_drive(alg, problem, budget, params, 9, seeds, w0)
    full = run_drive(drive, alg, problem, 9, seeds=seeds, split="test", w0=w0, progress=False)

    once = method != "sparse_proxskip"
    assert summ["runs_computed"] == (1 if once else len(seeds))
    assert set(full.history) <= set(hist)
    for name, v in full.history.items():
        if name == "time":
            continue
        assert np.shape(hist[name]) == np.shape(v), name
        np.testing.assert_allclose(hist[name], v, rtol=1e-10, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(np.load(tmp_path / "cell" / "final_w.npz")["w"], full.w, rtol=1e-10, atol=1e-12)
    assert summ["metric"] == pytest.approx(full.history["metric"][-1].tolist(), rel=1e-10)
    steps_one = (summ["iterations"][0] if isinstance(summ["iterations"], list) else summ["iterations"])
    assert run_steps(summ) == (steps_one if once else sum(summ["iterations"]))
    # a run resumed in this sitting computed only the steps after its stored segments
    resumed = {**summ, "resumed_at": 4}
    assert run_steps(resumed) == (steps_one - 4 if once else sum(i - 4 for i in summ["iterations"]))
    config = (tmp_path / "cell" / "config.json").read_text()
    assert ('"runs_computed": 1' in config) == once
    # stored under the same key as the full batch: read back, not recomputed
    _, again = pipe.final_run(method, s, params, problem, tmp_path / "cell", 9)
    assert again.get("read_back")


def test_registry_methods_agree_on_determinism():
    """Every registry entry builds a rule whose flag matches its schedule (the fixed one draws nothing)."""
    for name, spec in R.METHODS.items():
        if not spec.tunable:
            continue
        alg = make_algorithm(name, {n: (3 if n == "local_steps" else 0.1) for n in spec.hyperparameter_names},
                             None if name == "proxskip" else 2)
        assert alg.deterministic == (alg.schedule == "fixed"), name
