"""Evaluation metrics on host NumPy arrays."""

from __future__ import annotations

import numpy as np

__all__ = ["r2_score", "accuracy", "peak_rise", "unstable_runs", "BLOWUP_FACTOR"]


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


#: A run whose recorded training objective rises above this multiple of its first record is unstable.
BLOWUP_FACTOR = 10.0


def peak_rise(loss) -> np.ndarray:
    """The largest recorded training objective of each run over its first record.

    A run that stays finite is not "diverged" (:attr:`proxfed.RunResult.status`),
    yet it may have grown by many orders of magnitude and partly recovered; this
    measures how far it rose: ``max_t loss[t] / loss[0]``. Records that are NaN
    are ignored; an infinite record gives ``inf``.

    Parameters
    ----------
    loss : array_like, shape (records,) or (records, R)
        The history's ``"loss"`` (one column per batched run), with a positive
        first record.

    Returns
    -------
    ndarray, shape () or (R,)

    Examples
    --------
    >>> peak_rise([[4.0, 4.0], [2.0, 4e6], [1.0, 3.0]]).tolist()
    [1.0, 1000000.0]
    """
    loss = np.asarray(loss, dtype=np.float64)
    if loss.ndim not in (1, 2) or loss.shape[0] == 0:
        raise ValueError(f"loss must have shape (records,) or (records, R) with records >= 1, got {loss.shape}")
    first = loss[0]
    if not np.all(first > 0):
        raise ValueError(f"the first record of the loss must be positive, got {first}")
    return np.nanmax(loss, axis=0) / first


def unstable_runs(loss, factor: float = BLOWUP_FACTOR) -> np.ndarray:
    """Which runs' training objective rose above ``factor`` times their first record (:func:`peak_rise`).

    Over every stored final run of the BlogFeedback reproductions the peak
    rise from w = 0 is 1 (the objective never exceeds its start), while the
    Final-TopK runs with a stepsize above 2/L rose by 5·10⁴ to 10³⁰; the
    default ``factor = 10`` separates the two by orders of magnitude.

    >>> unstable_runs([[4.0, 4.0], [2.0, 4e6], [1.0, 3.0]]).tolist()
    [False, True]
    """
    if not factor > 1:
        raise ValueError(f"factor must be > 1, got {factor}")
    return peak_rise(loss) > factor
