"""Theory helpers."""

import math

import numpy as np
import pytest

from proxfed import theory
from proxfed.data import make_sparse_regression
from proxfed.problems import Ridge, SoftmaxRegression
from proxfed import FederatedDataset


def test_proxskip_parameters_from_constants():
    problem = Ridge(make_sparse_regression(n_clients=6, n_features=5, n_informative=2, seed=1), alpha=3.0)
    L, mu = problem.smoothness().max(), problem.strong_convexity().min()
    params = theory.proxskip_parameters(problem)
    assert params["gamma"] == pytest.approx(1 / L)
    assert params["p"] == pytest.approx(math.sqrt(mu / L))
    assert theory.condition_number(problem) == pytest.approx(L / mu)
    # ridge constants are the extreme singular values of each client's matrix
    for i, (A, _) in enumerate(problem.dataset.clients()):
        s = np.linalg.svd(A, compute_uv=False)
        assert problem.smoothness()[i] == pytest.approx(s[0] ** 2 + 1.5)
        expected_mu = (s[-1] ** 2 if A.shape[0] >= A.shape[1] else 0.0) + 1.5
        assert problem.strong_convexity()[i] == pytest.approx(expected_mu)


def test_softmax_smoothness_bounds_the_hessian():
    rng = np.random.default_rng(0)
    clients = [(rng.normal(size=(n, 3)), rng.integers(0, 3, n)) for n in (4, 9)]
    problem = SoftmaxRegression(FederatedDataset.from_clients(clients), alpha=0.1, n_classes=3)
    L = problem.smoothness()
    # the largest Hessian eigenvalue of f_i (by finite differences of the gradient) is <= L_i
    w = rng.normal(size=problem.dim)
    for i in range(problem.n_clients):
        H = np.empty((problem.dim, problem.dim))
        for j in range(problem.dim):
            e = np.zeros(problem.dim)
            e[j] = 1e-6
            Wp = np.tile(w + e, (2, 1))
            Wm = np.tile(w - e, (2, 1))
            H[:, j] = (problem.grad(Wp)[i] - problem.grad(Wm)[i]) / 2e-6
        assert np.linalg.eigvalsh((H + H.T) / 2).max() <= L[i] * (1 + 1e-6)
    assert np.all(problem.strong_convexity() == 0.1)


def test_rates_and_expected_communications():
    assert theory.contraction_rate(0.1, 0.5, 1.0) == pytest.approx(1 - 0.1)
    assert theory.contraction_rate(1.0, 0.1, 1.0) == pytest.approx(1 - 0.01)
    problem = Ridge(make_sparse_regression(n_clients=6, n_features=5, n_informative=2, seed=1), alpha=3.0)
    accelerated = theory.expected_communications(problem, 1e-6)
    gd = theory.expected_communications(problem, 1e-6, p=1.0)
    assert accelerated < gd
    with pytest.raises(ValueError, match="eps"):
        theory.expected_communications(problem, 2.0)
    with pytest.raises(ValueError):
        theory.contraction_rate(0.0, 0.5, 1.0)
