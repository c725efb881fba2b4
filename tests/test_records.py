"""What a history record costs and holds: the default cadence and the losses from one pass."""

from __future__ import annotations

import numpy as np
import pytest

import proxfed
from proxfed import algorithms as A
from proxfed.data import make_sparse_regression
from proxfed.problems import Ridge, SoftmaxRegression
from proxfed.recording import Recorder as _Recorder
from proxfed.runner import MIN_RECORD_SPACING, initial_models


@pytest.fixture(scope="module")
def ridge():
    return Ridge(make_sparse_regression(n_clients=6, n_features=12, n_informative=3, mean_client_size=15.0,
                                        n_test=30, n_validation=30, seed=3), alpha=0.5)


@pytest.mark.parametrize("iterations, want", [
    (5, [0, 5]),
    (35, [0, 16, 32, 35]),
    (4000, list(range(0, 4001, 20))),
])
def test_default_cadence_is_at_most_200_records_and_at_least_the_minimum_spacing(ridge, iterations, want):
    res = proxfed.run(A.proxskip(0.01, 0.3), ridge, iterations, seed=0)
    assert res.history["iteration"].tolist() == want
    assert MIN_RECORD_SPACING == 16 and res.config["every"] == max(MIN_RECORD_SPACING, iterations // 200)


def softmax():
    gen = np.random.default_rng(0)
    from proxfed import FederatedDataset

    clients = [(gen.random((n, 7)), gen.integers(0, 4, n)) for n in (5, 9, 3)]
    return SoftmaxRegression(FederatedDataset.from_clients(clients), alpha=0.1, n_classes=4)


@pytest.mark.parametrize("make", ["ridge", "softmax"])
@pytest.mark.parametrize("lead", [(), (3,)])
def test_losses_from_one_pass_equal_separate_objectives(ridge, make, lead):
    problem = ridge if make == "ridge" else softmax()
    R = lead[0] if lead else None
    alg = A.sparse_proxskip(0.05, 0.5, k=3)
    state = alg.init(problem, initial_models(problem, seed=0, runs=R) + 0.3)
    for t in range(4):
        state = alg.step(state, problem, np.ones(lead, bool) if t % 2 else np.zeros(lead, bool))
    row = _Recorder(alg, problem, None, None, None).compute(state, 0.0)
    w_avg = alg.consensus.mean(state.w)[..., 0, :]
    np.testing.assert_allclose(row["loss"], problem.objective(alg.output(state)), rtol=1e-13)
    np.testing.assert_allclose(row["loss_dense"], problem.objective(w_avg), rtol=1e-13)
    assert np.shape(row["loss"]) == lead and not np.allclose(row["loss"], row["loss_dense"])


def test_a_dense_output_is_evaluated_once(ridge, monkeypatch):
    calls = []
    original = Ridge.objective
    monkeypatch.setattr(Ridge, "objective", lambda self, w: calls.append(w.shape) or original(self, w))
    state = A.proxskip(0.01, 0.3).init(ridge, np.zeros(ridge.dim))
    row = _Recorder(A.proxskip(0.01, 0.3), ridge, None, None, None).compute(state, 0.0)
    assert calls == [(ridge.dim,)] and row["loss"] == row["loss_dense"]
    calls.clear()
    _Recorder(A.final_topk(0.01, 0.3, k=2), ridge, None, None, None).compute(state, 0.0)
    assert calls == [(2, ridge.dim)]  # output and average stacked, one pass
