"""Forked worker processes for a reproduction's independent cells (tuning searches, final runs).

Every cell stores its result on disk (the tuning JSON, a run directory), and
the parent process then walks the cells as usual and reads them back. So a
worker that fails or is killed costs only time: the parent computes whatever
is missing itself. Each worker reports through its own pipe, so a killed
worker cannot block the others.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from multiprocessing.connection import wait
from typing import Callable, Sequence

from .._validation import check_positive_int


def balance(costs: Sequence[float], jobs: int) -> list:
    """Split task indices into at most ``jobs`` lists of similar total cost.

    Longest-processing-time first: the costliest remaining task goes to the
    least-loaded list. Empty lists are dropped; each list keeps the tasks'
    original order.

    >>> balance([5, 1, 4, 2], 2)
    [[0, 1], [2, 3]]
    """
    check_positive_int(jobs, "jobs", python_only=True)
    loads = [0.0] * min(jobs, max(1, len(costs)))
    lists: list = [[] for _ in loads]
    for i in sorted(range(len(costs)), key=lambda i: (-float(costs[i]), i)):
        j = min(range(len(loads)), key=lambda j: (loads[j], j))
        lists[j].append(i)
        loads[j] += float(costs[i])
    return [sorted(lst) for lst in lists if lst]


def _work(tasks, indices, conn, init) -> None:
    if init is not None:
        init()
    for i in indices:
        try:
            conn.send(("ok", i, tasks[i]()))
        except BaseException as exc:  # reported to the parent, which computes the cell itself
            conn.send(("error", i, traceback.format_exc(limit=3)))
            if not isinstance(exc, Exception):  # SystemExit, KeyboardInterrupt: stop this worker
                break
    conn.close()


def run_forked(tasks: Sequence[Callable], costs: Sequence[float], jobs: int, *,
               init: Callable | None = None, echo: Callable = print) -> dict:
    """Run the callables ``tasks`` in ``jobs`` forked processes; return ``{index: result}``.

    Each task must store its own result; what it returns must be picklable
    and reaches the parent. Needs the ``fork`` start method (Linux): the
    workers share the parent's data without pickling it, so use it only with
    host (NumPy) arrays, never after a GPU context exists, and with a BLAS
    that survives ``fork`` (OpenBLAS does).

    Parameters
    ----------
    tasks : sequence of callable
        ``task()`` computes and stores one cell.
    costs : sequence of float
        One per task; they balance the processes (:func:`balance`).
    jobs : int
        Worker processes (at most one per task).
    init : callable, optional
        Runs once in each worker first (e.g. to hide progress bars).
    echo : callable
        Receives a message for each task that raised (with its traceback) and
        for each worker that exited abnormally or left tasks unrun.

    Returns
    -------
    dict
        The results of the tasks that completed in a worker; the caller
        computes the others itself.
    """
    if len(costs) != len(tasks):
        raise ValueError(f"{len(tasks)} tasks but {len(costs)} costs")
    groups = balance(costs, jobs)
    if not tasks:
        return {}
    ctx = mp.get_context("fork")
    workers = []  # (process, read end of its own pipe, its task indices)
    results: dict = {}
    reported: set = set()
    try:
        for g in groups:
            reader, writer = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_work, args=(tasks, g, writer, init), daemon=True)
            proc.start()
            writer.close()  # the worker holds the only write end: its exit means EOF here
            workers.append((proc, reader, g))
        pending = {reader for _, reader, _ in workers}
        while pending:
            for reader in wait(list(pending)):
                try:
                    status, i, payload = reader.recv()
                except (EOFError, OSError):  # the worker exited; everything it sent was read before
                    pending.discard(reader)
                    continue
                reported.add(i)
                if status == "ok":
                    results[i] = payload
                else:
                    echo(f"worker task {i} failed; the main process will compute it:\n{payload}")
        for proc, _, g in workers:
            proc.join()
            unrun = [i for i in g if i not in reported]
            if proc.exitcode != 0 or unrun:
                echo(f"worker {proc.pid} exited with code {proc.exitcode}; the main process will compute "
                     f"its unrun tasks {unrun}")
    finally:
        for proc, reader, _ in workers:
            if proc.is_alive():
                proc.terminate()
            proc.join()
            reader.close()
    return results
