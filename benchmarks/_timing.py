"""Timing helpers shared by the benchmarks (run as scripts: ``benchmarks/`` is on ``sys.path``)."""

from __future__ import annotations

import time


def best_of(fn, repeat: int = 7, warmup: int = 0) -> float:
    """Minimum wall time (seconds) of ``fn()`` over ``repeat`` calls after ``warmup`` untimed ones.

    The minimum, not the mean: on a shared machine the noise only adds time.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)
