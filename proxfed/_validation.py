"""Argument checks shared by the package: validation without coercion, errors that name the argument.

Every check accepts exactly the types it documents and converts nothing
else: a string is never read as a number (``"0.01"``), a boolean is never a
number or a seed (``True``), a float is never truncated to an integer
(``2.7``). A wrong type raises :class:`TypeError`, a value of the right type
out of range raises :class:`ValueError`; both messages start with the
argument's name.

Examples
--------
>>> from proxfed._validation import check_real, check_seed
>>> check_seed(3), check_seed([1, 2])
(3, (1, 2))
>>> check_real(0.5, "gamma", low=0, low_open=True)
0.5
>>> check_real("0.5", "gamma")
Traceback (most recent call last):
...
TypeError: gamma must be a real number, got '0.5' (str)
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["check_seed", "check_int", "check_positive_int", "check_real", "check_real_array", "check_flag", "is_int", "is_real"]


def is_int(value) -> bool:
    """Whether ``value`` is a Python or NumPy integer scalar (not a boolean)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value) -> bool:
    """Whether ``value`` is a real Python or NumPy scalar (int or float, not a boolean or a string)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _describe(value) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _host(value) -> np.ndarray:
    """An array-like with a ``dtype`` (NumPy, torch, CuPy...) as a host NumPy array."""
    from . import _backend as B  # (imported here: _backend uses this module)

    return np.asarray(B.to_numpy(value))


def _numeric_array(value, name: str, what: str, kinds: str) -> np.ndarray:
    """``value`` (a scalar, a list/tuple of scalars or an array) as an array whose dtype kind is in ``kinds``."""
    scalar_ok = is_int if kinds == "iu" else is_real
    if scalar_ok(value):
        return np.asarray(value)
    if isinstance(value, (list, tuple)):
        if not value or not all(scalar_ok(v) for v in value):
            raise TypeError(f"{name} must be {what}, got {_describe(value)}")
        return np.asarray(value)
    if hasattr(value, "dtype") and hasattr(value, "shape") and not isinstance(value, (str, bytes)):
        a = _host(value)
        if a.dtype.kind not in kinds:
            raise TypeError(f"{name} must be {what}, got an array of dtype {a.dtype}")
        return a
    raise TypeError(f"{name} must be {what}, got {_describe(value)}")


def check_seed(seed, name: str = "seed", *, sequence: bool = True):
    """A seed: an integer >= 0, or (``sequence=True``) a non-empty 1-d sequence of them.

    Parameters
    ----------
    seed : int, numpy integer, or sequence / 1-d integer array of them
        Booleans, floats (even integral ones), strings and 0-d arrays are refused.
    name : str
        The argument's name, for the error message.
    sequence : bool
        Whether one seed per run (a sequence) is allowed.

    Returns
    -------
    int or tuple of int

    Raises
    ------
    TypeError
        If ``seed`` is not an integer (or a sequence of integers).
    ValueError
        If a seed is negative or the sequence is empty or not 1-d.
    """
    if is_int(seed):
        if seed < 0:
            raise ValueError(f"{name} must be >= 0, got {seed!r}")
        return int(seed)
    what = "a non-negative integer" + (" or a sequence of them (one per run)" if sequence else "")
    if not sequence or isinstance(seed, (str, bytes)) or is_real(seed) or isinstance(seed, (bool, np.bool_)):
        raise TypeError(f"{name} must be {what}, got {_describe(seed)}")
    if isinstance(seed, (list, tuple)):
        if not all(is_int(s) for s in seed):
            raise TypeError(f"{name} must be {what}, got {_describe(seed)}")
        a = np.asarray(seed, dtype=np.int64) if seed else np.zeros(0, np.int64)
    elif hasattr(seed, "dtype") and hasattr(seed, "shape"):
        a = _host(seed)
        if a.dtype.kind not in "iu":
            raise TypeError(f"{name} must be {what}, got an array of dtype {a.dtype}")
    else:
        raise TypeError(f"{name} must be {what}, got {_describe(seed)}")
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be an integer or a non-empty 1-d sequence of integers, got shape {a.shape}")
    if np.any(a < 0):
        raise ValueError(f"{name} must be >= 0, got {a.tolist()}")
    return tuple(int(s) for s in a)


def check_int(value, name: str, *, minimum: int | None = None, maximum: int | None = None, per_run: bool = False):
    """An integer (Python or NumPy, not a boolean) in ``[minimum, maximum]``; with ``per_run`` also a 1-d array.

    Returns
    -------
    int, or int64 ndarray of shape (R,) for a per-run array
    """
    what = "an integer" + (" (or an (R,) integer array)" if per_run else "")
    if per_run and not is_int(value):
        a = _numeric_array(value, name, what, "iu")
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"{name} must be {what}, got shape {a.shape}")
    elif is_int(value):
        a = np.asarray(int(value))
    else:
        raise TypeError(f"{name} must be {what}, got {_describe(value)}")
    lo = f">= {minimum}" if minimum is not None else ""
    hi = f"<= {maximum}" if maximum is not None else ""
    if (minimum is not None and np.any(a < minimum)) or (maximum is not None and np.any(a > maximum)):
        raise ValueError(f"{name} must be {' and '.join(s for s in (lo, hi) if s)}, got {a.tolist()}")
    return int(a) if a.ndim == 0 else a.astype(np.int64)


def check_positive_int(value, name: str, *, python_only: bool = False, hint: str = ""):
    """``value`` if it is an integer >= 1 (not a boolean); otherwise a :class:`ValueError`.

    The message is ``"<name> must be a positive integer<hint>, got <value!r>"`` for a wrong type
    as for a wrong value (unlike :func:`check_int`, whose wrong types are a :class:`TypeError`):
    the error the many ``n >= 1`` options of the package have always raised. ``python_only``
    refuses NumPy integers too; ``hint`` is e.g. ``" or None"`` for an optional argument.

    >>> check_positive_int(3, "rounds")
    3
    >>> check_positive_int(2.0, "rounds")
    Traceback (most recent call last):
    ...
    ValueError: rounds must be a positive integer, got 2.0
    """
    ok = isinstance(value, int) and not isinstance(value, bool) if python_only else is_int(value)
    if not ok or value < 1:
        raise ValueError(f"{name} must be a positive integer{hint}, got {value!r}")
    return value


def check_real(value, name: str, *, low: float | None = None, high: float | None = None, low_open: bool = False,
               high_open: bool = False, per_run: bool = False):
    """A finite real number (not a boolean or a string) in the given interval; with ``per_run`` also a 1-d array.

    Parameters
    ----------
    value : int, float, numpy scalar, or (with ``per_run``) a list or 1-d array of them
    name : str
    low, high : float, optional
        Bounds; ``low_open`` / ``high_open`` exclude them.
    per_run : bool
        Accept one value per run.

    Returns
    -------
    float, or float64 ndarray of shape (R,) for a per-run array
    """
    what = "a real number" + (" (or an (R,) array of them)" if per_run else "")
    if per_run:
        a = _numeric_array(value, name, what, "iuf")
        if a.ndim > 1 or a.size == 0:
            raise ValueError(f"{name} must be {what}, got shape {a.shape}")
    elif is_real(value):
        a = np.asarray(value)
    else:
        raise TypeError(f"{name} must be {what}, got {_describe(value)}")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    bad = (low is not None and np.any(a <= low if low_open else a < low)) or (
        high is not None and np.any(a >= high if high_open else a > high))
    if bad:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
        interval = f"in {lo}, {hi}" if low is not None and high is not None else (
            f"{'>' if low_open else '>='} {low:g}" if low is not None else f"{'<' if high_open else '<='} {high:g}")
        raise ValueError(f"{name} must be {interval}, got {value!r}")
    return float(a) if a.ndim == 0 else a


def check_real_array(value, name: str) -> np.ndarray:
    """A (nested) list or tuple of real numbers as a float64 array; strings and booleans are refused.

    >>> check_real_array([[1, 2.5], [0, 3]], "w0").dtype
    dtype('float64')
    """
    def walk(v):
        if isinstance(v, (list, tuple)):
            for item in v:
                walk(item)
        elif not is_real(v):
            raise TypeError(f"{name} must hold real numbers, got {_describe(v)}")

    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be an array or a list of real numbers, got {_describe(value)}")
    walk(value)
    try:
        return np.asarray(value, dtype=np.float64)
    except ValueError:  # ragged
        raise ValueError(f"{name} must be a rectangular list of numbers") from None


def check_flag(value, name: str) -> bool:
    """A boolean (Python or NumPy); ``"no"`` or ``0`` are refused rather than read as truth values."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {_describe(value)}")
    return bool(value)
