"""The capability protocols and predicates of proxfed.problems.capabilities on duck-typed problems."""

import numpy as np
import pytest

from proxfed import FederatedDataset
from proxfed.algorithms.base import Algorithm, gradient, gradient_step
from proxfed.problems import Ridge, SoftmaxRegression
from proxfed.problems.capabilities import (
    ClosedFormLocalSteps,
    FusedGradientStep,
    GradientOracle,
    StochasticOracle,
    has_cheap_solution,
    has_closed_form_steps,
    has_fused_gradient_step,
    is_stochastic,
    returns_fresh_gradients,
)


class Oracle:
    """Only value and grad: the minimal problem."""

    n_clients, dim = 2, 3

    def value(self, W):
        return np.sum(W * W, axis=-1) / 2

    def grad(self, W):
        return W.copy()


class Noisy(Oracle):
    stochastic = True
    grad_is_fresh = True

    def grad(self, W, step=None):
        self.seen = step
        return W + step


class NotNoisy(Oracle):
    stochastic = False


class Jumps(Oracle):
    cheap_solution = True

    def local_steps(self, W, H, gamma, k):
        return W * (1 - gamma) ** k

    def supports_local_steps(self, W):
        return True


class Fused(Oracle):
    def gradient_step(self, W, gamma, H=None):
        return W * (1 - gamma) + 0.0


class NoisyJumps(Noisy, Jumps):
    pass


class Empty:
    pass


def test_gradient_oracle():
    assert isinstance(Oracle(), GradientOracle)
    assert not isinstance(Empty(), GradientOracle)


def test_stochastic():
    assert is_stochastic(Noisy()) and isinstance(Noisy(), StochasticOracle)
    assert not is_stochastic(Oracle()) and not isinstance(Oracle(), StochasticOracle)
    # the attribute's value counts, as the engine always read it
    assert not is_stochastic(NotNoisy()) and isinstance(NotNoisy(), StochasticOracle)


def test_closed_form_steps():
    assert has_closed_form_steps(Jumps()) and isinstance(Jumps(), ClosedFormLocalSteps)
    assert not has_closed_form_steps(Oracle()) and not isinstance(Oracle(), ClosedFormLocalSteps)


def test_fused_gradient_step():
    assert has_fused_gradient_step(Fused()) and isinstance(Fused(), FusedGradientStep)
    assert not has_fused_gradient_step(Oracle()) and not isinstance(Oracle(), FusedGradientStep)


def test_flags():
    assert returns_fresh_gradients(Noisy()) and not returns_fresh_gradients(Oracle())
    assert has_cheap_solution(Jumps()) and not has_cheap_solution(Oracle())


def test_the_library_problems():
    ds = FederatedDataset.from_clients([(np.eye(2), np.array([0, 1])), (np.ones((1, 2)), np.array([1]))])
    ridge, softmax = Ridge(ds, alpha=1.0), SoftmaxRegression(ds, n_classes=2)
    for p in (ridge, softmax):
        assert isinstance(p, GradientOracle) and isinstance(p, FusedGradientStep) and not is_stochastic(p)
    assert has_closed_form_steps(ridge) and has_cheap_solution(ridge)
    assert not has_closed_form_steps(softmax) and not has_cheap_solution(softmax)


@pytest.mark.parametrize("problem, expected", [(Oracle(), 0.5), (Fused(), 0.5), (Noisy(), 0.5 - 0.5 * 7)])
def test_the_engine_follows_the_predicates(problem, expected):
    W = np.ones((2, 3))
    state = type("S", (), {"t": 7})()
    assert np.allclose(gradient_step(problem, W, 0.5, state), expected)
    if is_stochastic(problem):
        gradient(problem, W, state)
        assert problem.seen == 7


def test_jumps_only_when_not_stochastic():
    state = type("S", (), {"w": np.zeros((2, 3))})()
    assert Algorithm._problem_can_jump(Jumps(), state)
    assert not Algorithm._problem_can_jump(NoisyJumps(), state)
    assert not Algorithm._problem_can_jump(Oracle(), state)
