"""Evaluation metrics on host NumPy arrays."""

from __future__ import annotations

import numpy as np

__all__ = ["r2_score", "accuracy"]


def r2_score(y_true, y_pred) -> float:
    """Coefficient of determination ``1 - sum (y - y_hat)^2 / sum (y - mean(y))^2``.

    scikit-learn's convention: the mean is that of ``y_true`` (the evaluated
    split), and a constant ``y_true`` gives 1.0 for a perfect prediction and
    0.0 otherwise.

    Examples
    --------
    >>> r2_score([1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    0.5
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-d of equal length, got {y_true.shape} and {y_pred.shape}")
    ss_res = float(np.sum((y_true - y_pred) ** 2))
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    if ss_tot == 0.0:
        return 1.0 if ss_res == 0.0 else 0.0
    return 1.0 - ss_res / ss_tot


def accuracy(y_true, y_pred) -> float:
    """Fraction of equal labels.

    Examples
    --------
    >>> accuracy([0, 1, 2, 2], [0, 1, 1, 2])
    0.75
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or y_true.size == 0:
        raise ValueError(f"y_true and y_pred must be 1-d, non-empty, of equal length, got {y_true.shape} and {y_pred.shape}")
    return float(np.mean(y_true == y_pred))
