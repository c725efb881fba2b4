"""How many threads BLAS (and OpenMP) may use, for one block of code.

The engine's NumPy hot loop is a handful of BLAS calls per step, so the BLAS
thread count decides how the machine's cores are used. Whether a second
thread helps depends on the shapes (``benchmarks/bench_engine.py`` measures
it); running independent jobs side by side, one thread each, is often the
better use of a small machine.
"""

from __future__ import annotations

import contextlib
import numbers

__all__ = ["blas_threads", "blas_info"]


@contextlib.contextmanager
def blas_threads(n: int | None):
    """Limit BLAS and OpenMP thread pools to ``n`` threads inside a ``with`` block.

    Built on :func:`threadpoolctl.threadpool_limits`; the previous limits are
    restored on exit. ``None`` changes nothing.

    Parameters
    ----------
    n : int >= 1 or None

    Examples
    --------
    >>> import numpy as np
    >>> with blas_threads(1):
    ...     x = np.ones((64, 64)) @ np.ones((64, 64))
    >>> float(x[0, 0])
    64.0
    """
    if n is None:
        yield
        return
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"threads must be a positive integer or None, got {n!r}")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=int(n)):
        yield


def blas_info() -> list:
    """The loaded BLAS/OpenMP libraries with their current thread counts (``threadpoolctl`` records).

    Each entry is a dict with at least ``internal_api`` (e.g. ``"openblas"``),
    ``num_threads`` and ``version``.
    """
    from threadpoolctl import threadpool_info

    return [{k: lib.get(k) for k in ("user_api", "internal_api", "num_threads", "version", "filepath")}
            for lib in threadpool_info()]
