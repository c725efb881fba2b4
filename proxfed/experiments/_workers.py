"""Forked worker processes for a reproduction's independent cells (tuning searches, final runs).

Every cell stores its result on disk (the tuning JSON, a run directory), and
the parent process then walks the cells as usual and reads them back. So a
worker that fails or is killed costs only time: the parent computes whatever
is missing itself.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from typing import Callable, Sequence


def balance(costs: Sequence[float], jobs: int) -> list:
    """Split task indices into at most ``jobs`` lists of similar total cost.

    Longest-processing-time first: the costliest remaining task goes to the
    least-loaded list. Empty lists are dropped; each list keeps the tasks'
    original order.

    >>> balance([5, 1, 4, 2], 2)
    [[0, 1], [2, 3]]
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    loads = [0.0] * min(jobs, max(1, len(costs)))
    lists: list = [[] for _ in loads]
    for i in sorted(range(len(costs)), key=lambda i: (-float(costs[i]), i)):
        j = min(range(len(loads)), key=lambda j: (loads[j], j))
        lists[j].append(i)
        loads[j] += float(costs[i])
    return [sorted(lst) for lst in lists if lst]


def _work(tasks, indices, queue, init) -> None:
    if init is not None:
        init()
    for i in indices:
        try:
            queue.put(("ok", i, tasks[i]()))
        except Exception:  # reported to the parent, which computes the cell itself
            queue.put(("error", i, traceback.format_exc(limit=3)))


def run_forked(tasks: Sequence[Callable], costs: Sequence[float], jobs: int, *,
               init: Callable | None = None, echo: Callable = print) -> dict:
    """Run the callables ``tasks`` in ``jobs`` forked processes; return ``{index: result}``.

    ``costs`` (one per task) balance the processes (:func:`balance`). Each
    task must store its own result; what it returns must be picklable and
    reaches the parent. A task that raises is reported through ``echo`` and
    left out of the result. ``init`` runs once in each worker first (e.g. to
    hide progress bars). Needs the ``fork`` start method (Linux, macOS):
    the workers share the parent's data without pickling it, so use it only
    with host (NumPy) arrays, never after a GPU context exists.
    """
    if len(costs) != len(tasks):
        raise ValueError(f"{len(tasks)} tasks but {len(costs)} costs")
    groups = balance(costs, jobs)
    if not tasks:
        return {}
    ctx = mp.get_context("fork")
    queue = ctx.SimpleQueue()
    procs = [ctx.Process(target=_work, args=(tasks, g, queue, init), daemon=True) for g in groups]
    results: dict = {}
    expected = sum(len(g) for g in groups)
    try:
        for p in procs:
            p.start()
        received = 0
        while received < expected:
            if queue.empty() and not any(p.is_alive() for p in procs):
                break  # a worker died without reporting (killed); the parent computes the rest
            if queue.empty():
                for p in procs:
                    p.join(timeout=0.2)
                continue
            status, i, payload = queue.get()
            received += 1
            if status == "ok":
                results[i] = payload
            else:
                echo(f"worker task {i} failed; the main process will compute it:\n{payload}")
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
    return results
