"""A driver by communication rounds: every run jumps to its own next communication in closed form.

:func:`proxfed.run` advances all batched runs by the same iterations, so a
closed-form local phase only applies where *no* run communicates; runs
with different ``p`` (a hyperparameter search) or different coins (seeds)
leave almost no such stretches. :func:`run_rounds` instead advances every
run by one communication round per batch step: each run takes the
``k_r`` local steps up to and including its next coin at once
(``problem.local_steps`` with a per-run ``k``) and then that iteration's
communication (:meth:`Algorithm.finish_step`). The trajectory of every run
is the one of :func:`proxfed.run` with the same coins, up to rounding; the
runs end after the same number of communications, at different iterations.
"""

from __future__ import annotations

import numbers
import time

import numpy as np

from . import _backend as B
from ._validation import check_positive_int
from .algorithms.base import Algorithm
from .prox import _nan_passing_through
from .runner import RunResult, _initial_models, _merge_runs, _problem_config, _Recorder, _split_and_reference

__all__ = ["run_rounds", "communication_times", "last_communications", "supports_rounds", "NoClosedForm"]


class NoClosedForm(ValueError):
    """The algorithm has no closed-form local phase on this problem (:func:`run_rounds` refuses it)."""


def supports_rounds(algorithm: Algorithm, problem, w0=None, seed=0) -> bool:
    """Whether :func:`run_rounds` can run ``algorithm`` on ``problem`` (a closed-form local phase).

    Checked on the state :func:`run_rounds` would start from (``w0``, or the
    problem's default start for ``seed``): the rule's local steps must be
    dense gradient steps with fixed control variates and the problem must
    have :meth:`local_steps` for those iterates (ridge; float arrays of NumPy, torch or CuPy).
    """
    if not isinstance(algorithm, Algorithm):
        raise TypeError(f"algorithm must be a proxfed Algorithm, got {type(algorithm).__name__}")
    runs = algorithm.n_runs
    state = algorithm.init(problem, _initial_models(problem, seed, runs) if w0 is None else w0)
    return bool(algorithm.can_jump(problem, state))


def communication_times(algorithm: Algorithm, communications: int, seed=0, runs: int | None = None) -> np.ndarray:
    """The iterations (0-based) of the first ``communications`` coins of every run, shape ``(R, C)``.

    The coins are the algorithm's (:meth:`Algorithm.coins`, the same streams
    as :func:`proxfed.run` draws), extended until every run has
    ``communications`` of them.
    """
    n = 1 if runs is None else int(runs)
    p = float(np.min(np.asarray(algorithm.p, dtype=np.float64)))
    length = max(16, int(np.ceil(1.5 * communications / p)) + 64)
    while True:
        coins = np.asarray(algorithm.coins(length, seed=seed, runs=runs)).reshape(n, length)
        if np.all(coins.sum(axis=1) >= communications):
            return np.stack([np.flatnonzero(c)[:communications] for c in coins])
        length *= 2


def last_communications(algorithm: Algorithm, communications: int, seed=0, runs: int | None = None,
                        cap: int | None = None) -> np.ndarray:
    """Each run's iteration count at its ``communications``-th communication, shape ``(R,)``, at most ``cap``.

    The horizon of :func:`proxfed.run` with ``communications`` (the
    ``exact`` driver of the reproductions and of the tuning).
    """
    own = communication_times(algorithm, communications, seed=seed, runs=runs)[:, -1] + 1
    return own if cap is None else np.minimum(own, int(cap))


@_nan_passing_through  # (a diverging run's NaN reaches its iterates through TopK, where it is caught)
def run_rounds(algorithm: Algorithm, problem, communications: int, *, seed=0, split: str | None = "auto",
               every: int = 1, w0=None, reference="auto", progress: bool = False) -> RunResult:
    """Run ``communications`` rounds of every run; local phases in closed form.

    Parameters
    ----------
    algorithm : Algorithm
        A rule whose local steps have a closed form on ``problem``
        (``algorithm.can_jump``: dense local steps with fixed control
        variates, e.g. ProxSkip, Final-TopK, Sparse-ProxSkip, ASP, FedAvg,
        FedHT, SCAFFOLD on :class:`~proxfed.problems.Ridge`).
    problem : FederatedProblem
    communications : int
        Rounds per run.
    seed : int or sequence of int
        As for :func:`proxfed.run` (coins and the default starting model).
    split : {"auto", "test", "validation", "train", None}
    every : int
        Record the history every ``every`` rounds (and after the last).
    w0 : array, optional
        Starting model; its array library and device are those of the whole
        run (torch or CuPy: the rounds run there, see
        :meth:`~proxfed.problems.Ridge.local_steps`; the histories are host arrays).
    reference : "auto", array or None
    progress : bool

    Returns
    -------
    RunResult
        As :func:`proxfed.run`; ``history["iteration"]`` and
        ``history["local_steps"]`` are per run (shape ``(records, R)`` for a
        batch), and ``state.t`` is the largest iteration count. A run whose
        iterates or loss become non-finite is frozen at its last finite
        record (a single run stops there).

    Raises
    ------
    NoClosedForm
        (a ``ValueError``) when the algorithm cannot jump over local steps on
        this problem (use :func:`proxfed.run`).
    """
    from tqdm.auto import tqdm

    if not isinstance(algorithm, Algorithm):
        raise TypeError(f"algorithm must be a proxfed Algorithm, got {type(algorithm).__name__}")
    for name, v in (("communications", communications), ("every", every)):
        check_positive_int(v, name)
    split, reference = _split_and_reference(problem, split, reference)
    runs = algorithm.n_runs
    if runs is None and w0 is not None and np.ndim(B.to_numpy(w0)) == 2:
        runs = int(np.shape(w0)[0])
    if runs is None and not isinstance(seed, numbers.Integral):
        runs = len(np.asarray(seed).ravel())
    state = algorithm.init(problem, _initial_models(problem, seed, runs) if w0 is None else w0)
    if not algorithm.can_jump(problem, state):
        raise NoClosedForm(f"{algorithm.name} has no closed-form local phase on this problem; use proxfed.run")
    batch = state.batch_shape
    times = communication_times(algorithm, int(communications), seed=seed, runs=runs)  # (R, C)
    gaps = np.diff(times, axis=1, prepend=-1)  # iterations per round, >= 1
    iters = np.zeros(times.shape[0], np.int64)

    recorder = _Recorder(algorithm, problem, None, split, reference)
    frozen = np.zeros(times.shape[0], bool)
    config = {"algorithm": algorithm.config(), "problem": _problem_config(problem), "communications": communications,
              "seed": seed if isinstance(seed, numbers.Integral) else np.asarray(seed).tolist(), "every": every,
              "split": split, "driver": "run_rounds", "array_namespace": B.namespace(state.w).__name__,
              "dtype": str(state.w.dtype)}
    shape_of = (lambda a: a.reshape(batch)) if batch else (lambda a: a[0])
    t0 = time.perf_counter()

    def record(st):
        row = recorder.compute(st, time.perf_counter() - t0)
        row["iteration"] = row["local_steps"] = shape_of(iters.astype(np.float64))
        return row

    status, message = "completed", f"completed {communications} communications"
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        recorder.append(record(state))
        good, good_iters = state, iters.copy()
        with tqdm(total=communications, disable=not progress, desc=algorithm.name, leave=False) as bar:
            for m in range(communications):
                # the round's gaps[m] local steps at once (its last one included), then its communication
                k = np.where(frozen, 0, gaps[:, m])
                kk = int(k[0]) if np.all(k == k[0]) else shape_of(k)
                local = problem.local_steps(state.w, state.h, algorithm.gamma, kk)
                new = algorithm.finish_step(state, problem, shape_of(~frozen) if batch else True, local)
                if frozen.any():  # frozen runs stay at their last finite record
                    new = _merge_runs(shape_of(~frozen), new, good)
                iters = iters + np.where(frozen, 0, gaps[:, m])
                new = new.replace(t=int(iters.max()))
                bad = ~_finite_runs(new.w, times.shape[0]) & ~frozen
                last = m + 1 == communications
                if bad.any() or (m + 1) % every == 0 or last:
                    row = record(new) if not bad.any() else None
                    if row is not None:
                        bad = bad | (~np.isfinite(np.atleast_1d(row["loss"])) & ~frozen)
                    if bad.any():
                        if not batch:
                            status, message = "diverged", (f"diverged in round {m + 1}; kept the state of the "
                                                           "last finite record")
                            state = good
                            break
                        frozen = frozen | bad
                        iters = np.where(bad, good_iters, iters)
                        new = _merge_runs(shape_of(~frozen), new, good)
                        row = record(new)
                    recorder.append(row)
                    good, good_iters = new, iters.copy()
                state = new
                bar.update(1)
                if frozen.all():
                    break
    if status == "completed" and frozen.any():
        status = "diverged"
        message = f"runs {np.flatnonzero(frozen).tolist()} diverged and were frozen at their last finite record"
    state = state.with_host_tallies()
    return RunResult(w=algorithm.output(state), state=state, history=recorder.history(), status=status,
                     message=message, config=config, diverged=shape_of(frozen) if batch else np.asarray(status == "diverged"))


def _finite_runs(W, runs: int) -> np.ndarray:
    """Whether each run's iterates are all finite, on the host, shape (runs,).

    Reduced where ``W`` lives: a device run reads back ``runs`` booleans, not its iterates.
    """
    if isinstance(W, np.ndarray):
        return np.all(np.isfinite(W.reshape(runs, -1)), axis=1)
    xp = B.namespace(W)
    return np.asarray(B.to_numpy(xp.all(xp.isfinite(xp.reshape(W, (runs, -1))), axis=1)), dtype=bool)
