"""Smooth federated objectives with closed-form batched gradients.

Every problem takes stacked client iterates ``W`` of shape ``(..., N, d)``
and returns per-client values ``(..., N)`` and gradients ``(..., N, d)``.
What a problem can do beyond that (stochastic gradients, closed-form local
steps, a fused gradient step) is stated by the protocols of
:mod:`proxfed.problems.capabilities`.
"""

from .base import FederatedProblem
from .capabilities import ClosedFormLocalSteps, FusedGradientStep, GradientOracle, StochasticOracle
from .ridge import Ridge
from .softmax import SoftmaxRegression

__all__ = [
    "FederatedProblem",
    "Ridge",
    "SoftmaxRegression",
    "GradientOracle",
    "StochasticOracle",
    "ClosedFormLocalSteps",
    "FusedGradientStep",
]
