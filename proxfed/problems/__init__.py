"""Smooth federated objectives with closed-form batched gradients.

Every problem takes stacked client iterates ``W`` of shape ``(..., N, d)``
and returns per-client values ``(..., N)`` and gradients ``(..., N, d)``.
"""

from .base import FederatedProblem
from .ridge import Ridge
from .softmax import SoftmaxRegression

__all__ = ["FederatedProblem", "Ridge", "SoftmaxRegression"]
