"""Stepsizes and communication probabilities from the problem's constants.

For ProxSkip on an ``L``-smooth, ``mu``-strongly convex federated problem
(``L = max_i L_i``, ``mu = min_i mu_i``, ``kappa = L / mu``), any
``gamma <= 1/L`` gives ``E[Psi_T] <= (1 - min(gamma mu, p^2))^T Psi_0`` with
``Psi = ||w - w*||^2 + (gamma/p)^2 ||h - h*||^2``; ``gamma = 1/L`` and
``p = 1/sqrt(kappa)`` balance the two rates, so ``O(sqrt(kappa) log 1/eps)``
communications suffice in expectation, against ``O(kappa log 1/eps)`` for
gradient descent (``p = 1``).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["constants", "condition_number", "proxskip_parameters", "contraction_rate", "expected_communications"]


def constants(problem) -> tuple[float, float]:
    """``(L, mu) = (max_i L_i, min_i mu_i)`` of a federated problem."""
    L = float(np.max(problem.smoothness()))
    mu = float(np.min(problem.strong_convexity()))
    if not (math.isfinite(L) and L > 0):
        raise ValueError(f"the problem's smoothness constant must be positive and finite, got {L}")
    return L, mu


def condition_number(problem) -> float:
    """``kappa = max_i L_i / min_i mu_i`` (inf when ``mu = 0``)."""
    L, mu = constants(problem)
    return math.inf if mu <= 0 else L / mu


def proxskip_parameters(problem) -> dict:
    """The theory defaults ``gamma = 1/L`` and ``p = min(1, 1/sqrt(kappa))``.

    Returns
    -------
    dict with keys ``gamma``, ``p``, ``L``, ``mu``, ``kappa``.

    Examples
    --------
    >>> import numpy as np
    >>> from proxfed import FederatedDataset
    >>> from proxfed.problems import Ridge
    >>> ds = FederatedDataset.from_clients([(np.eye(2), np.ones(2))])
    >>> params = proxskip_parameters(Ridge(ds, alpha=0.02))
    >>> round(params["kappa"], 6), round(params["p"], 6)
    (1.0, 1.0)
    """
    L, mu = constants(problem)
    if mu <= 0:
        raise ValueError("proxskip_parameters needs a strongly convex problem (mu > 0)")
    kappa = L / mu
    return {"gamma": 1.0 / L, "p": min(1.0, 1.0 / math.sqrt(kappa)), "L": L, "mu": mu, "kappa": kappa}


def contraction_rate(gamma: float, p: float, mu: float) -> float:
    """The per-iteration rate ``1 - min(gamma mu, p^2)`` of ProxSkip's Lyapunov function."""
    if not (gamma > 0 and 0 < p <= 1 and mu >= 0):
        raise ValueError("need gamma > 0, p in (0, 1], mu >= 0")
    return 1.0 - min(gamma * mu, p * p)


def expected_communications(problem, eps: float, gamma: float | None = None, p: float | None = None) -> float:
    """Expected communications ``p * T`` for the bound to reach ``eps * Psi_0``.

    ``T = log(1/eps) / min(gamma mu, p^2)`` iterations (theory defaults when
    ``gamma`` or ``p`` is omitted).
    """
    if not 0 < eps < 1:
        raise ValueError(f"eps must be in (0, 1), got {eps}")
    params = proxskip_parameters(problem)
    gamma = params["gamma"] if gamma is None else gamma
    p = params["p"] if p is None else p
    rate = 1.0 - contraction_rate(gamma, p, params["mu"])
    return p * math.log(1.0 / eps) / rate
