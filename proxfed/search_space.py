"""Search spaces of :func:`proxfed.tune.random_search`: hyperparameter ranges (:class:`Param`) and boxes of them (:class:`SearchSpace`).

Both are re-exported by :mod:`proxfed.tune`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Param", "SearchSpace"]


@dataclass(frozen=True)
class Param:
    """One hyperparameter: a range ``[low, high]``, sampled uniformly in log space (or linearly).

    Parameters
    ----------
    name : str
    low, high : float
        Bounds, ``low <= high`` (``low > 0`` when ``log``).
    log : bool
        Sample ``exp(U(log low, log high))`` (default) or ``U(low, high)``.
    integer : bool
        Round to the nearest integer inside the range (e.g. local steps).

    Examples
    --------
    >>> Param("p", 0.01, 1.0).sample(0.5)
    0.1
    >>> Param("local_steps", 1, 100, integer=True).sample(0.5)
    10
    """

    name: str
    low: float
    high: float
    log: bool = True
    integer: bool = False

    def __post_init__(self):
        lo, hi = float(self.low), float(self.high)
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
            raise ValueError(f"{self.name}: need finite low <= high, got [{self.low}, {self.high}]")
        if self.log and lo <= 0:
            raise ValueError(f"{self.name}: a log-uniform range needs low > 0, got {self.low}")
        if self.integer and math.floor(hi) < math.ceil(lo):
            raise ValueError(f"{self.name}: no integer in [{self.low}, {self.high}]")

    def _to_unit(self, value: float) -> float:
        lo, hi = (math.log(self.low), math.log(self.high)) if self.log else (self.low, self.high)
        v = math.log(value) if self.log else value
        return 0.5 if hi == lo else (v - lo) / (hi - lo)

    def sample(self, u: float):
        """The value at quantile ``u`` in [0, 1] of the (log-)uniform range (rounded if integer)."""
        if self.log:
            v = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            v = self.low + u * (self.high - self.low)
        v = min(max(v, self.low), self.high)
        if self.integer:
            return int(min(max(round(v), math.ceil(self.low)), math.floor(self.high)))
        return float(round(v, 12 - int(math.floor(math.log10(abs(v)))) if v else 0))

    def narrowed(self, center: float, factor: float) -> "Param":
        """A range ``factor`` times as wide (in log space when ``log``) around ``center``, clipped to this one."""
        if not 0 < factor <= 1:
            raise ValueError(f"factor must be in (0, 1], got {factor}")
        c = self._to_unit(float(center))
        lo_u, hi_u = max(0.0, c - factor / 2), min(1.0, c + factor / 2)
        lo, hi = self.sample(lo_u), self.sample(hi_u)
        if self.integer and lo == hi:
            return Param(self.name, lo, hi, self.log, True)
        return Param(self.name, lo, hi, self.log, self.integer)

    def to_json(self) -> dict:
        """A JSON-serializable description."""
        return {"name": self.name, "low": self.low, "high": self.high, "log": self.log, "integer": self.integer}


@dataclass(frozen=True)
class SearchSpace:
    """A box of hyperparameters (:class:`Param`), sampled independently per coordinate.

    Examples
    --------
    >>> import numpy as np
    >>> space = SearchSpace((Param("gamma", 1e-3, 1e-1), Param("p", 0.05, 1.0)))
    >>> configs = space.sample(np.random.default_rng(0), 3)
    >>> len(configs), sorted(configs[0])
    (3, ['gamma', 'p'])
    """

    params: tuple

    def __post_init__(self):
        params = tuple(self.params)
        if not params or not all(isinstance(p, Param) for p in params):
            raise TypeError("params must be a non-empty sequence of Param")
        names = [p.name for p in params]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate parameter names: {names}")
        object.__setattr__(self, "params", params)

    @property
    def names(self) -> tuple:
        """The parameter names, in order."""
        return tuple(p.name for p in self.params)

    def sample(self, rng: np.random.Generator, n: int) -> list:
        """``n`` configurations (dicts name -> value) drawn with ``rng``."""
        u = rng.random((int(n), len(self.params)))
        return [{p.name: p.sample(float(u[i, j])) for j, p in enumerate(self.params)} for i in range(int(n))]

    def narrowed(self, center: dict, factor: float) -> "SearchSpace":
        """Every range narrowed by ``factor`` around ``center`` (see :meth:`Param.narrowed`)."""
        return SearchSpace(tuple(p.narrowed(center[p.name], factor) for p in self.params))

    def to_json(self) -> list:
        """A JSON-serializable description."""
        return [p.to_json() for p in self.params]
