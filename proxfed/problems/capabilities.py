"""What a problem can do beyond ``value`` and ``grad``: protocols and the predicates the rules ask.

The update rules and drivers work with any object that has the
:class:`GradientOracle` members; a problem opts into more by having more.
The predicates below are the one place where the rules ask which
capabilities a problem has. They read attributes as the engine always did
(a problem without one behaves as before), so duck-typed problems need no
base class; the protocols name and document what each capability requires
(``isinstance`` works with them, checking that the members exist).

Examples
--------
>>> from proxfed.problems.capabilities import is_stochastic, has_closed_form_steps
>>> class Oracle:
...     n_clients, dim = 2, 3
...     def value(self, W): ...
...     def grad(self, W): ...
>>> isinstance(Oracle(), GradientOracle), is_stochastic(Oracle()), has_closed_form_steps(Oracle())
(True, False, False)
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = [
    "GradientOracle",
    "StochasticOracle",
    "ClosedFormLocalSteps",
    "FusedGradientStep",
    "is_stochastic",
    "has_closed_form_steps",
    "has_fused_gradient_step",
    "returns_fresh_gradients",
    "has_cheap_solution",
]


@runtime_checkable
class GradientOracle(Protocol):
    """A federated objective: per-client values and gradients of stacked iterates.

    Attributes
    ----------
    n_clients : int
        Number of clients N.
    dim : int
        Model dimension d.

    Notes
    -----
    ``value(W)`` returns ``(..., N)`` and ``grad(W)`` ``(..., N, d)`` for
    ``W`` of shape ``(..., N, d)``, as :class:`~proxfed.problems.FederatedProblem` does.
    """

    n_clients: int
    dim: int

    def value(self, W):
        """Per-client values, shape ``(..., N)``."""

    def grad(self, W):
        """Per-client gradients, shape ``(..., N, d)``."""


@runtime_checkable
class StochasticOracle(Protocol):
    """A problem whose gradients are stochastic: ``stochastic = True`` and ``grad(W, step=t)``.

    The engine passes the iteration ``t`` so that minibatches come from
    streams keyed by it (a resumed run sees the same ones), and never jumps
    over local steps in closed form. Having a ``stochastic`` attribute is
    what ``isinstance`` checks; :func:`is_stochastic` also reads its value.
    """

    stochastic: bool

    def grad(self, W, step: int):
        """Per-client stochastic gradients at iteration ``step``, shape ``(..., N, d)``."""


@runtime_checkable
class ClosedFormLocalSteps(Protocol):
    """A problem that takes ``k`` dense local steps at once (e.g. :class:`~proxfed.problems.Ridge`)."""

    def local_steps(self, W, H, gamma, k):
        """``k`` steps ``w_i <- w_i - gamma (grad f_i(w_i) - h_i)`` in closed form, shape of ``W``."""

    def supports_local_steps(self, W) -> bool:
        """Whether :meth:`local_steps` accepts iterates like ``W`` (library, device, dtype)."""


@runtime_checkable
class FusedGradientStep(Protocol):
    """A problem with its own (possibly fused) gradient step ``W - gamma (grad f_i(W) - H)``."""

    def gradient_step(self, W, gamma, H=None):
        """``W - gamma (grad f_i(W) - H)`` (``W - gamma grad f_i(W)`` without ``H``)."""


def is_stochastic(problem) -> bool:
    """Whether ``problem`` has stochastic gradients (its ``stochastic`` attribute, False without one).

    Parameters
    ----------
    problem : GradientOracle

    Returns
    -------
    bool
    """
    return bool(getattr(problem, "stochastic", False))


def has_closed_form_steps(problem) -> bool:
    """Whether ``problem`` has ``local_steps`` (:class:`ClosedFormLocalSteps`).

    Parameters
    ----------
    problem : GradientOracle

    Returns
    -------
    bool
        The rules also ask :func:`is_stochastic` and ``supports_local_steps`` before jumping.
    """
    return hasattr(problem, "local_steps")


def has_fused_gradient_step(problem) -> bool:
    """Whether ``problem`` has its own ``gradient_step`` (:class:`FusedGradientStep`).

    Parameters
    ----------
    problem : GradientOracle

    Returns
    -------
    bool
    """
    return hasattr(problem, "gradient_step")


def returns_fresh_gradients(problem) -> bool:
    """Whether ``problem.grad`` returns a new array each call (``grad_is_fresh``, False without it).

    The engine may then update the gradient in place.

    Parameters
    ----------
    problem : GradientOracle

    Returns
    -------
    bool
    """
    return bool(getattr(problem, "grad_is_fresh", False))


def has_cheap_solution(problem) -> bool:
    """Whether ``problem.solution()`` is cheap enough to compute by default (``cheap_solution``, False without it).

    Parameters
    ----------
    problem : GradientOracle

    Returns
    -------
    bool
    """
    return bool(getattr(problem, "cheap_solution", False))
