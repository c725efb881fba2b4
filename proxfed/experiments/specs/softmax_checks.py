"""Dense centralized softmax fits: FEMNIST's ``alpha`` choice and its diagnostics.

:func:`dense_fit` (L-BFGS from 0) chooses FEMNIST's ``alpha`` on the hold-out;
:func:`softmax_dense_reference` and :func:`softmax_alpha_check` are the
numbers of ``diagnostics/dense_reference.md`` and ``diagnostics/alpha_check.md``.
"""

from __future__ import annotations

import numpy as np

from ... import _backend as B

__all__ = ["FEMNIST_CHECK_ALPHAS", "alpha_rows", "dense_fit", "softmax_alpha_check", "softmax_dense_reference"]

#: The alphas of FEMNIST's ``diagnostics/alpha_check.md`` (beside the runs' alpha).
FEMNIST_CHECK_ALPHAS = (1e-3, 1e-4, 1e-5, 1e-6)


def dense_fit(problem, maxiter: int) -> np.ndarray:
    """Centralized L-BFGS on ``F`` from 0 (at most ``maxiter`` iterations)."""
    import scipy.optimize

    def fg(w):
        return float(problem.objective(w)), np.asarray(problem.full_grad(w), dtype=np.float64)

    res = scipy.optimize.minimize(fg, np.zeros(problem.dim), jac=True, method="L-BFGS-B",
                                  options={"maxiter": int(maxiter)})
    return res.x


def softmax_dense_reference(problem, ks, maxiter: int = 500) -> dict:
    """The dense centralized softmax fit on the full training set, and its TopK, on the test split.

    Minimizes ``F`` (the problem's objective, with its ``alpha``) by L-BFGS
    from 0 for at most ``maxiter`` iterations and reports the test accuracy
    and ``F`` of ``w`` and of ``TopK(w)`` for each ``K`` in ``ks``: the
    counterpart of the paper's dense centralized reference (85.4% on its
    writers), and what a K-sparse model obtained by pruning the optimum gets.

    The training accuracy is reported too: the paper does not say on which
    split its 85.4% is measured (see :func:`softmax_alpha_check`).

    Returns
    -------
    dict
        ``iterations`` (the cap), ``grad_norm`` (of ``F`` at ``w``) and
        ``rows``: ``model`` ("dense" or "TopK of dense"), ``k``, ``test``,
        ``train`` (accuracies), ``objective``.
    """
    from ...prox import TopK

    w = dense_fit(problem, maxiter)
    rows = []
    for k in (None, *ks):
        wk = w if k is None else B.to_numpy(TopK(int(k)).prox(w))
        rows.append({"model": "dense" if k is None else "TopK of dense", "k": None if k is None else int(k),
                     "test": float(problem.score(wk, "test")), "train": float(problem.score(wk, "train")),
                     "objective": float(problem.objective(wk))})
    grad_norm = float(np.linalg.norm(B.to_numpy(problem.full_grad(w))))
    return {"iterations": int(maxiter), "grad_norm": grad_norm, "rows": rows}


def softmax_alpha_check(dataset, alphas, ks, maxiter: int = 500) -> list:
    """The dense centralized softmax fit for several ``alpha``, and its TopK, on the training and test split.

    For each ``alpha`` fits :class:`~proxfed.problems.SoftmaxRegression`
    (``F(w) = (1/n) sum_j -log p_{y_j}(x_j) + (alpha/2)||w||^2``) by L-BFGS from
    0 (at most ``maxiter`` iterations) with :func:`softmax_dense_reference`.
    A diagnostic of where the paper's dense reference (85.4%, split not
    stated) can come from: the training and the test accuracy per ``alpha``.
    Selects nothing.

    Returns
    -------
    list of dict
        Keys ``alpha``, ``k`` (None for dense), ``train``, ``test``
        (accuracies), ``objective``, ``grad_norm`` (of the dense fit).
    """
    from ...problems import SoftmaxRegression

    rows = []
    for alpha in alphas:
        rows += alpha_rows(alpha, softmax_dense_reference(
            SoftmaxRegression(dataset, alpha=float(alpha), init="zeros"), ks, maxiter))
    return rows


def alpha_rows(alpha, ref: dict) -> list:
    """The rows of :func:`softmax_alpha_check` from one :func:`softmax_dense_reference` at ``alpha``."""
    return [{"alpha": float(alpha), "k": r["k"], "train": r["train"], "test": r["test"],
             "objective": r["objective"], "grad_norm": ref["grad_norm"]} for r in ref["rows"]]
