"""Forked worker processes for a reproduction's independent cells (tuning searches, final runs).

Every cell stores its result on disk (the tuning JSON, a run directory), and
the parent process then walks the cells as usual and reads them back. So a
worker that fails or is killed costs only time: the parent computes whatever
is missing itself. Each worker talks through its own pipe, so a killed
worker cannot block the others.

Tasks are handed out one at a time, costliest first, to whichever worker is
free: a cost estimate that is wrong (a cell read back from disk costs nothing)
leaves no worker idle while another still has a queue.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from multiprocessing.connection import wait
from typing import Callable, Sequence

from .._validation import check_positive_int


def dispatch_order(costs: Sequence[float]) -> list:
    """Task indices in the order they are handed out: costliest first, ties by index.

    Longest-processing-time first, with each task going to the first free
    worker, keeps the finishing times within one task of each other.

    >>> dispatch_order([5, 1, 4, 5])
    [0, 3, 2, 1]
    """
    return sorted(range(len(costs)), key=lambda i: (-float(costs[i]), i))


def _work(tasks, conn, init, inherited) -> None:
    for other in inherited:  # the parent's ends of the pipes forked before: a dead parent must mean EOF here
        other.close()
    if init is not None:
        init()
    while True:
        try:
            i = conn.recv()
        except EOFError:  # the parent has gone
            break
        if i is None:
            break
        try:
            conn.send(("ok", i, tasks[i](), False))
        except BaseException as exc:  # reported to the parent, which computes the cell itself
            stop = not isinstance(exc, Exception)  # SystemExit, KeyboardInterrupt: stop this worker
            conn.send(("error", i, traceback.format_exc(limit=3), stop))
            if stop:
                break
    conn.close()


def run_forked(tasks: Sequence[Callable], costs: Sequence[float], jobs: int, *,
               init: Callable | None = None, echo: Callable = print) -> dict:
    """Run the callables ``tasks`` in ``jobs`` forked processes; return ``{index: result}``.

    Each task must store its own result; what it returns must be picklable
    and reaches the parent. Tasks go out one at a time in
    :func:`dispatch_order` to whichever worker is free. Needs the ``fork``
    start method (Linux): the workers share the parent's data without
    pickling it, so use it only with host (NumPy) arrays, never after a GPU
    context exists, and with a BLAS that survives ``fork`` (OpenBLAS does).

    Parameters
    ----------
    tasks : sequence of callable
        ``task()`` computes and stores one cell.
    costs : sequence of float
        One per task: the estimated cost, which orders the hand-out.
    jobs : int
        Worker processes (at most one per task).
    init : callable, optional
        Runs once in each worker first (e.g. to hide progress bars).
    echo : callable
        Receives a message for each task that raised (with its traceback),
        for each worker that exited abnormally, and for the tasks no worker
        ran.

    Returns
    -------
    dict
        The results of the tasks that completed in a worker; the caller
        computes the others itself.
    """
    check_positive_int(jobs, "jobs", python_only=True)
    if len(costs) != len(tasks):
        raise ValueError(f"{len(tasks)} tasks but {len(costs)} costs")
    if not tasks:
        return {}
    queue = dispatch_order(costs)
    ctx = mp.get_context("fork")
    workers = {}  # parent's end of the pipe -> [process, index in flight or None]
    results: dict = {}
    try:
        for _ in range(min(jobs, len(tasks))):
            mine, theirs = ctx.Pipe(duplex=True)
            proc = ctx.Process(target=_work, args=(tasks, theirs, init, [*workers, mine]), daemon=True)
            proc.start()
            theirs.close()  # the worker holds the only other end: its exit means EOF here
            workers[mine] = [proc, None]

        def hand_out(conn) -> None:
            nxt = queue.pop(0) if queue else None
            workers[conn][1] = nxt
            try:
                conn.send(nxt)
            except OSError:  # the worker is gone; the EOF below reports it
                pass

        for conn in workers:
            hand_out(conn)
        pending = set(workers)
        while pending:
            for conn in wait(list(pending)):
                try:
                    status, i, payload, stopped = conn.recv()
                except (EOFError, OSError):  # the worker exited; everything it sent was read before
                    pending.discard(conn)
                    proc, lost = workers[conn]
                    proc.join()
                    if proc.exitcode != 0 or lost is not None:
                        echo(f"worker {proc.pid} exited with code {proc.exitcode}; the main process will "
                             f"compute {'task [' + str(lost) + ']' if lost is not None else 'nothing it held'}")
                    workers[conn][1] = None
                    continue
                workers[conn][1] = None
                if status == "ok":
                    results[i] = payload
                else:
                    echo(f"worker task {i} failed; the main process will compute it:\n{payload}")
                if not stopped:
                    hand_out(conn)
        if queue:
            echo(f"no worker was left for tasks {sorted(queue)}; the main process will compute them")
    finally:
        for conn, (proc, _) in workers.items():
            if proc.is_alive():
                proc.terminate()
            proc.join()
            conn.close()
    return results
