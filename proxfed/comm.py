"""Communication accounting: bits of a message from its number of non-zeros.

The paper-compatible default counts 32 bits per transmitted non-zero value
and nothing for indices, per client (not summed over clients), and is
applied to uplink and downlink messages alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._validation import check_positive_int

__all__ = ["CommModel", "INDEX_MODELS"]

INDEX_MODELS = ("none", "log2d", "bitmap", "min")


@dataclass(frozen=True)
class CommModel:
    """Bits of a message with ``nnz`` non-zero values out of ``d`` coordinates.

    ``bits = value_bits * nnz + index_bits``, with ``index_bits``:

    * ``"none"``: 0 (the paper's accounting);
    * ``"log2d"``: ``nnz * ceil(log2 d)`` (an explicit index per value);
    * ``"bitmap"``: ``d`` (a presence bitmap, sent with every message);
    * ``"min"``: the smaller of the two.

    Examples
    --------
    >>> CommModel().bits(10, 1000)
    320
    >>> CommModel(index="min").bits(10, 1000)
    420
    """

    value_bits: int = 32
    index: str = "none"

    def __post_init__(self):
        check_positive_int(self.value_bits, "value_bits", python_only=True)
        if self.index not in INDEX_MODELS:
            raise ValueError(f"index must be one of {INDEX_MODELS}, got {self.index!r}")

    def bits(self, nnz, d: int):
        """Bits of messages with ``nnz`` non-zeros (int or integer array) in dimension ``d``.

        An integer array of another library (torch, CuPy) gives one of that
        library, computed on its device without reading it back (its range is
        not checked: counts from :func:`proxfed._backend.nnz` are in range).
        """
        if not isinstance(nnz, (int, np.integer, np.ndarray, list, tuple)):
            return self._bits_on_device(nnz, d)
        nnz_arr = np.asarray(nnz, dtype=np.int64)
        if np.any(nnz_arr < 0) or np.any(nnz_arr > d):
            raise ValueError(f"nnz must be in [0, {d}]")
        per_index = math.ceil(math.log2(d)) if d > 1 else 1
        if self.index == "none":
            idx = 0
        elif self.index == "log2d":
            idx = nnz_arr * per_index
        elif self.index == "bitmap":
            idx = d
        else:
            idx = np.minimum(nnz_arr * per_index, d)
        out = self.value_bits * nnz_arr + idx
        return int(out) if np.ndim(out) == 0 else out

    def _bits_on_device(self, nnz, d: int):
        per_index = math.ceil(math.log2(d)) if d > 1 else 1
        if self.index == "none":
            return self.value_bits * nnz
        if self.index == "log2d":
            return (self.value_bits + per_index) * nnz
        if self.index == "bitmap":
            return self.value_bits * nnz + d
        return self.value_bits * nnz + _minimum(nnz * per_index, d)


def _minimum(x, bound: int):
    """``min(x, bound)`` elementwise for an integer array of any array-API library."""
    return x - (x - bound) * (x > bound)
