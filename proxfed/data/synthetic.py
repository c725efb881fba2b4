"""Deterministic synthetic federated datasets (the embedded defaults)."""

from __future__ import annotations

import numpy as np

from .. import _backend as B
from .._validation import check_real, check_seed
from .dataset import FederatedDataset, Split

__all__ = ["make_sparse_regression", "make_fedprox_synthetic"]


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
    check_real(mean_client_size, "mean_client_size", low=1.0)
    check_real(size_sigma, "size_sigma", low=0.0)
    check_real(correlation, "correlation", low=0.0, high=1.0, high_open=True)
    check_real(heterogeneity, "heterogeneity", low=0.0)
    check_real(noise, "noise", low=0.0)

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


def make_fedprox_synthetic(
    alpha: float = 1.0,
    beta: float = 1.0,
    n_clients: int = 30,
    n_features: int = 60,
    n_classes: int = 10,
    size_log_mean: float = 4.0,
    size_log_sigma: float = 2.0,
    size_offset: int = 50,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> FederatedDataset:
    """FedProx's Synthetic(alpha, beta) federated softmax-regression data (Li et al., 2020).

    The generator of the FedProx paper (after Shamir et al., 2014), for
    client ``k``, with every draw from the client's own stream ``rng(seed, 10, k)``:

    * ``u_k ~ N(0, alpha^2)`` and ``B_k ~ N(0, beta^2)`` (``alpha`` controls how
      much the local models differ, ``beta`` how much the local features differ;
      as in the FedProx code, ``alpha`` and ``beta`` are standard deviations);
    * model ``W_k`` (``n_features x n_classes``) and ``b_k`` (``n_classes``) with
      entries ``~ N(u_k, 1)``;
    * feature mean ``v_k`` with entries ``~ N(B_k, 1)``; rows
      ``x ~ N(v_k, Sigma)`` with ``Sigma = diag(j^-1.2)``, ``j = 1 .. n_features``;
    * label ``y = argmax(softmax(x W_k + b_k)) = argmax(x W_k + b_k)``;
    * ``m_k = floor(LogNormal(size_log_mean, size_log_sigma)) + size_offset`` rows,
      of which the first ``floor((1 - test_fraction) * m_k)`` are the client's
      training rows and the rest go to the pooled test split.

    No bias column is added (:class:`~proxfed.problems.SoftmaxRegression`
    fits its own intercept). Because every client has its own random stream,
    client ``k`` is the same whatever ``n_clients``.

    Parameters
    ----------
    alpha, beta : float >= 0
        Model and feature heterogeneity. ``Synthetic(0, 0)``, ``(0.5, 0.5)``
        and ``(1, 1)`` are the settings of the FedProx paper.
    n_clients, n_features, n_classes : int
        30, 60 and 10 in the paper.
    size_log_mean, size_log_sigma, size_offset : float, float, int
        Client-size distribution (power-law-like, as in the FedProx code).
    test_fraction : float in [0, 1)
        Share of each client's rows held out for the pooled test split.
    seed : int

    Returns
    -------
    FederatedDataset
        Integer labels; ``test`` split; ``meta``: ``n_classes``,
        ``test_offsets`` (each client's slice of the test split), ``W`` (N x
        p x C) and ``b`` (N x C), the true local models.

    Examples
    --------
    >>> from proxfed.data import make_fedprox_synthetic
    >>> ds = make_fedprox_synthetic(0.5, 0.5, n_clients=4, seed=0)
    >>> ds.n_clients, ds.n_features, ds.y.dtype.kind
    (4, 60, 'i')
    """
    for value, name in ((alpha, "alpha"), (beta, "beta"), (size_log_sigma, "size_log_sigma")):
        check_real(value, name, low=0.0)
    n_clients = _check_int(n_clients, "n_clients", 1)
    n_features = _check_int(n_features, "n_features", 1)
    n_classes = _check_int(n_classes, "n_classes", 2)
    size_offset = _check_int(size_offset, "size_offset", 1)
    check_real(size_log_mean, "size_log_mean")
    check_real(test_fraction, "test_fraction", low=0.0, high=1.0, high_open=True)
    check_seed(seed, sequence=False)

    sd = np.power(np.arange(1, n_features + 1, dtype=np.float64), -1.2) ** 0.5
    Xs, ys, Xt, yt, Ws, bs = [], [], [], [], [], []
    for k in range(n_clients):
        g = B.rng(seed, 10, k)
        u_k = g.normal(0.0, alpha)
        B_k = g.normal(0.0, beta)
        W = g.normal(u_k, 1.0, (n_features, n_classes))
        b = g.normal(u_k, 1.0, n_classes)
        v = g.normal(B_k, 1.0, n_features)
        m = int(np.floor(g.lognormal(size_log_mean, size_log_sigma))) + size_offset
        x = v + sd * g.standard_normal((m, n_features))
        y = np.argmax(x @ W + b, axis=1).astype(np.int64)
        n_train = max(1, int(np.floor((1 - test_fraction) * m)))
        Xs.append(x[:n_train])
        ys.append(y[:n_train])
        Xt.append(x[n_train:])
        yt.append(y[n_train:])
        Ws.append(W)
        bs.append(b)
    test_sizes = [a.shape[0] for a in Xt]
    X_test = np.concatenate(Xt)
    return FederatedDataset(
        np.concatenate(Xs),
        np.concatenate(ys),
        np.concatenate([[0], np.cumsum([a.shape[0] for a in Xs])]).astype(np.int64),
        test=Split(X_test, np.concatenate(yt)) if X_test.shape[0] else None,
        name=f"fedprox-synthetic({alpha:g},{beta:g},seed={seed})",
        meta={
            "n_classes": n_classes,
            "test_offsets": np.concatenate([[0], np.cumsum(test_sizes)]).astype(np.int64),
            "W": np.stack(Ws),
            "b": np.stack(bs),
            "alpha": float(alpha),
            "beta": float(beta),
            "seed": int(seed),
        },
    )
