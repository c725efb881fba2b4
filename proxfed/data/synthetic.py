"""Deterministic synthetic federated datasets (the embedded defaults)."""

from __future__ import annotations

import numpy as np

from .. import _backend as B
from .dataset import FederatedDataset, Split

__all__ = ["make_sparse_regression"]


def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def make_sparse_regression(
    n_clients: int = 40,
    n_features: int = 60,
    n_informative: int = 6,
    mean_client_size: float = 80.0,
    size_sigma: float = 1.0,
    min_client_size: int = 2,
    correlation: float = 0.6,
    heterogeneity: float = 0.5,
    noise: float = 1.0,
    n_test: int = 2000,
    n_validation: int = 1000,
    seed: int = 0,
) -> FederatedDataset:
    """Federated sparse linear regression with heavy-tailed, heterogeneous clients.

    Generative model, for client ``i`` with ``n_i`` rows:

    * ``n_i = max(min_client_size, round(LogNormal(log(mean_client_size) - size_sigma^2 / 2, size_sigma)))``
      (heavy-tailed sizes whose mean is about ``mean_client_size``);
    * features ``x = mu_i + z C`` with ``z ~ N(0, I)``, ``C`` the Cholesky factor of the
      Toeplitz correlation ``correlation^|j - k|`` and a client shift ``mu_i ~ N(0, heterogeneity^2 I)``;
    * a sparse ground truth ``w_true`` with ``n_informative`` non-zeros of size 1 to 3 and random
      signs, perturbed per client on its support: ``w_i = w_true + heterogeneity * N(0, I)`` there;
    * ``y = x w_i + b + noise * N(0, 1)`` with intercept ``b = 1``.

    A column of ones is appended to every feature matrix (the bias), so the
    model dimension is ``d = n_features + 1``. Test and validation rows are
    drawn from the mixture of clients weighted by client size.

    Parameters
    ----------
    n_clients, n_features, n_informative : int
        N, number of features before the bias column, non-zeros of ``w_true``.
    mean_client_size, size_sigma, min_client_size : float, float, int
        Client-size distribution (log-normal with log-scale ``size_sigma``).
    correlation : float in [0, 1)
        Correlation between neighbouring features.
    heterogeneity : float >= 0
        Spread of the client feature shifts and model perturbations.
    noise : float >= 0
        Standard deviation of the target noise.
    n_test, n_validation : int
        Rows of the pooled test and validation splits.
    seed : int
        Everything is a deterministic function of ``seed``.

    Returns
    -------
    FederatedDataset
        With ``test`` and ``validation`` splits; ``meta["w_true"]`` holds the
        ground truth (length ``d``, intercept last).

    Examples
    --------
    >>> from proxfed.data import make_sparse_regression
    >>> ds = make_sparse_regression(n_clients=5, n_features=8, n_informative=2, seed=1)
    >>> ds.n_clients, ds.n_features
    (5, 9)
    """
    n_clients = _check_int(n_clients, "n_clients", 1)
    n_features = _check_int(n_features, "n_features", 1)
    n_informative = _check_int(n_informative, "n_informative", 1)
    if n_informative > n_features:
        raise ValueError(f"n_informative ({n_informative}) must be <= n_features ({n_features})")
    min_client_size = _check_int(min_client_size, "min_client_size", 1)
    n_test = _check_int(n_test, "n_test", 1)
    n_validation = _check_int(n_validation, "n_validation", 1)
    if not mean_client_size >= 1:
        raise ValueError(f"mean_client_size must be >= 1, got {mean_client_size}")
    if not size_sigma >= 0:
        raise ValueError(f"size_sigma must be >= 0, got {size_sigma}")
    if not 0 <= correlation < 1:
        raise ValueError(f"correlation must be in [0, 1), got {correlation}")
    if not heterogeneity >= 0 or not noise >= 0:
        raise ValueError("heterogeneity and noise must be >= 0")

    gen = B.rng(seed, 0)
    sizes = gen.lognormal(np.log(mean_client_size) - size_sigma**2 / 2, size_sigma, n_clients)
    sizes = np.maximum(min_client_size, np.round(sizes)).astype(np.int64)

    lags = np.abs(np.subtract.outer(np.arange(n_features), np.arange(n_features)))
    chol = np.linalg.cholesky(correlation**lags).T

    w_true = np.zeros(n_features)
    support = np.sort(gen.choice(n_features, n_informative, replace=False))
    w_true[support] = gen.uniform(1.0, 3.0, n_informative) * gen.choice([-1.0, 1.0], n_informative)
    intercept = 1.0

    shifts = heterogeneity * gen.standard_normal((n_clients, n_features))
    models = np.tile(w_true, (n_clients, 1))
    models[:, support] += heterogeneity * gen.standard_normal((n_clients, n_informative))

    def draw(client_of_row: np.ndarray, g: np.random.Generator):
        z = g.standard_normal((client_of_row.shape[0], n_features)) @ chol
        x = shifts[client_of_row] + z
        y = np.einsum("ij,ij->i", x, models[client_of_row]) + intercept
        y += noise * g.standard_normal(client_of_row.shape[0])
        return np.hstack([x, np.ones((x.shape[0], 1))]), y

    X, y = draw(np.repeat(np.arange(n_clients), sizes), B.rng(seed, 1))
    weights = sizes / sizes.sum()
    Xt, yt = draw(B.rng(seed, 2).choice(n_clients, n_test, p=weights), B.rng(seed, 3))
    Xv, yv = draw(B.rng(seed, 4).choice(n_clients, n_validation, p=weights), B.rng(seed, 5))
    return FederatedDataset(
        X,
        y,
        np.concatenate([[0], np.cumsum(sizes)]),
        test=Split(Xt, yt),
        validation=Split(Xv, yv),
        name=f"synthetic-sparse-regression(seed={seed})",
        meta={"w_true": np.append(w_true, intercept), "support": support, "seed": seed},
    )
