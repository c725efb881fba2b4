"""The entry point of every run: :func:`run`, over the drivers of :mod:`proxfed.drivers`.

The module is named ``runner`` so that ``proxfed.run`` can be the function.
:func:`run` checks its input, asks :func:`~proxfed.drivers.choose_driver`
which driver runs the call, sets up the starting state and hands over to
that driver's strategy (:class:`~proxfed.iteration_driver.IterationDriver`
or :class:`~proxfed.round_runner.RoundDriver`) of the one loop skeleton
(:class:`~proxfed.drivers.Driver`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from . import _backend as B
from ._validation import check_int, check_positive_int, check_seed
from .algorithms.base import Algorithm, State
from .drivers import choose_driver, exact_horizon
from .iteration_driver import IterationDriver
from .recording import RunResult
from .round_runner import RoundDriver
from .run_files import load_state, save_state
from .run_setup import (check_problem, contiguous, count_runs, default_models, initial_models, resume_seed,
                        split_and_reference)

__all__ = ["run", "RunResult", "initial_models", "save_state", "load_state", "HISTORY_KEYS", "MIN_RECORD_SPACING"]

#: Quantities recorded in :attr:`RunResult.history` (``metric`` only when an evaluation exists).
HISTORY_KEYS = (
    "iteration", "communications", "local_steps", "bits_up", "bits_down", "bits_up_total",
    "bits_down_total", "upload_nnz", "loss", "loss_dense", "sum_h_norm", "mean_h_norm", "w_norm",
    "output_norm", "consensus_gap", "dist_opt", "metric", "time",
)

#: Fewest iterations between two records of :func:`run` by default (a record costs 0.3-1.5 local steps).
MIN_RECORD_SPACING = 16


def run(
    algorithm: Algorithm,
    problem,
    iterations: int | None = None,
    *,
    seed=None,
    coins=None,
    evaluate: Callable | None = None,
    split: str | None = "auto",
    every: int | None = None,
    record_at: Sequence[int] | None = None,
    w0=None,
    state: State | None = None,
    reference="auto",
    callbacks: Sequence[Callable] = (),
    progress: bool = False,
    jumps: bool = True,
    communications: int | None = None,
    driver: str = "auto",
) -> RunResult:
    """Run ``algorithm`` on ``problem`` for ``iterations`` local steps, or ``communications`` per run.

    Parameters
    ----------
    algorithm : Algorithm
        An update rule from :mod:`proxfed.algorithms`.
    problem : FederatedProblem
    iterations : int >= 1, optional
        Number of iterations (local steps of every client) to run; with
        ``communications``, a cap. Not with the ``"rounds"`` driver.
    communications : int >= 1, optional
        Communications per run. With ``iterations`` (the ``"exact"``
        driver): stop each run at its own ``communications``-th
        communication of this call (``iterations`` is then a cap): the run
        is recorded there and kept at that state, accounting included,
        while the others go on (the way a diverged run is frozen), and the
        call ends when every run has stopped. Batched runs with random
        coins then all make exactly ``communications`` communications
        instead of a number that varies between runs. A run without that
        many coins in ``iterations`` steps runs to the cap; the message
        names it. Without ``iterations``: the ``"rounds"`` driver, or the
        ``"exact"`` one up to the last run's ``communications``-th coin
        (not for a resumed run: give ``iterations``).
    driver : {"auto", "iterations", "rounds", "exact"}
        How the runs advance (decided by :func:`proxfed.drivers.choose_driver`):

        * ``"iterations"``: every run takes the same ``iterations`` local
          steps (what ``"auto"`` picks when only ``iterations`` is given);
        * ``"exact"``: the same loop, each run kept at its own
          ``communications``-th communication (what ``"auto"`` picks with
          both, or with ``communications`` only where ``"rounds"`` does not
          apply);
        * ``"rounds"`` (:func:`run_rounds`): one communication round of
          every run per step, its local phase in closed form; exactly
          ``communications`` per run, recorded every ``every`` rounds
          (default 1), ``history["iteration"]`` per run. Only ``seed``,
          ``split``, ``every``, ``w0``, ``reference`` and ``progress``
          apply. ``"auto"`` picks it, with ``communications`` only, where
          the rule has a closed-form local phase on the problem
          (:func:`proxfed.round_runner.supports_rounds`); asked for
          otherwise, it raises :class:`~proxfed.round_runner.NoClosedForm`.
    seed : int or sequence of int, optional
        Seeds the coin flips and the default starting model (see
        :meth:`Algorithm.coins`); one per run for batched runs. Python or
        NumPy integers only (no floats, strings or booleans). Default 0, or
        for a resumed run the seed its ``state`` was run with (``state.seed``);
        resuming with another seed is an error.
    coins : array of bool, shape (iterations,) or (R, iterations), optional
        The communication coins ``theta_t`` to use instead of the algorithm's
        schedule.
    evaluate : callable, optional
        ``evaluate(w) -> float`` (or (R,) for batched ``w``) applied to the
        output model at every record; overrides ``split``. A batched run
        needs one value per run: a scalar is refused rather than broadcast,
        since it would record the same metric for every run.
    split : {"auto", "test", "validation", "train", None}
        Where ``problem.score`` evaluates the metric; ``"auto"`` uses the
        test split when the dataset has one, else no metric.
    every : int, optional
        Record the history at the iterations ``state.t`` that are multiples
        of ``every`` (default ``max(MIN_RECORD_SPACING, iterations // 200)``:
        at most about 200 records, and at least 16 iterations apart, so that
        recording, an objective and a metric pass over the data, costs a small
        fraction of the run; ``benchmarks/bench_records.py`` measures it),
        counted from the run's start, so a resumed run records where the
        uninterrupted one does; the first and last iterations of the call are
        always recorded. The ``"rounds"`` driver records every ``every``
        rounds instead (default 1).
    record_at : sequence of int, optional
        Further iterations (counted from the start of this call, in
        ``[1, iterations]``) at which to record, e.g. each batched run's own
        horizon.
    w0 : array, shape (d,) or (R, d), optional
        Starting model (default ``problem.initial_point(seed)``); not with ``state``.
    state : State, optional
        Continue from this state (e.g. ``result.state`` or
        :func:`load_state`): coins continue at ``state.t``, and the
        trajectory is the one of an uninterrupted run, bit for bit (with the
        same ``jumps``). Checked before any work as :meth:`Algorithm.init`
        checks its input (shapes, finite ``w`` and ``h``, ``sum_i h_i = 0``
        for rules that keep it).
    reference : "auto", array or None
        Model to which ``dist_opt`` is measured; ``"auto"`` uses
        ``problem.solution()`` when it is cheap (ridge).
    callbacks : sequence of callables
        ``callback(row, state) -> bool`` called at every record; returning
        True stops the run (status ``"stopped"``).
    progress : bool
        Show a progress bar.
    jumps : bool
        Replace stretches of iterations in which no run communicates by the
        problem's closed-form local phase where the algorithm allows it
        (ridge with dense local steps); equal to explicit steps up to rounding.
        Every iterate of a stretch is computed from the stretch's start (a
        record inside it too), so the trajectory depends only on the coins:
        not on ``every``, ``record_at``, or where a run was interrupted and
        resumed (the state carries its stretch's start, :attr:`State.stretch`).

    Returns
    -------
    RunResult
        A run whose iterates or recorded loss become NaN or infinite has
        status ``"diverged"``: it returns to its state at the last finite
        history record (a single run stops there; in a batch that run is
        frozen there, accounting included, and the others go on), and the
        history holds only finite records.
    """
    if not isinstance(algorithm, Algorithm):
        raise TypeError(f"algorithm must be a proxfed Algorithm, got {type(algorithm).__name__}")
    check_problem(problem)
    if iterations is not None:
        check_positive_int(iterations, "iterations")
        iterations = int(iterations)
    seed = None if seed is None else check_seed(seed)
    if every is not None:
        check_positive_int(every, "every")
    split, reference = split_and_reference(problem, split, reference)
    if record_at is not None and len(record_at):
        record_at = check_int(list(record_at) if not hasattr(record_at, "dtype") else record_at, "record_at",
                              per_run=True)  # integers only (2.5 is not truncated to 2)
    record_at = np.unique(np.asarray([] if record_at is None else record_at, dtype=np.int64))
    if communications is not None:
        check_positive_int(communications, "communications", hint=" or None")
    if state is not None and iterations is None and communications is not None and driver != "rounds":
        raise ValueError("a resumed run with communications needs iterations (a cap)")
    chosen = choose_driver(algorithm, problem, driver, iterations=iterations, communications=communications,
                           w0=w0, seed=0 if seed is None else seed)
    if chosen == "rounds":
        unused = {"coins": coins is not None, "evaluate": evaluate is not None, "record_at": record_at.size > 0,
                  "state": state is not None, "callbacks": len(callbacks) > 0}
        if any(unused.values()):
            raise ValueError(f"driver 'rounds' takes no {', '.join(k for k, v in unused.items() if v)}")
        return _run_rounds(algorithm, problem, communications, seed=0 if seed is None else seed, split=split,
                           every=every, w0=w0, reference=reference, progress=progress)
    if iterations is None:  # the exact driver, up to the last run's communications-th coin
        s = 0 if seed is None else seed
        iterations = exact_horizon(algorithm, communications, seed=s, runs=count_runs(algorithm, s, w0))
    if every is None:
        every = max(MIN_RECORD_SPACING, iterations // 200)
    if record_at.size and (record_at[0] < 1 or record_at[-1] > iterations):
        raise ValueError(f"record_at must lie in [1, {iterations}], got {record_at[0]}..{record_at[-1]}")
    state, seed = _starting_state(algorithm, problem, seed, w0, state)
    strategy = IterationDriver(algorithm, problem, state, iterations=iterations, seed=seed, coins=coins,
                               evaluate=evaluate, split=split, reference=reference, every=every,
                               record_at=record_at, jumps=jumps, communications=communications)
    return strategy.result(*strategy.loop(state, callbacks, progress))


def _starting_state(algorithm, problem, seed, w0, state):
    """The checked starting state (``w0``'s, the default start's, or ``state`` resumed) and the run's seed."""
    if state is None:
        seed = 0 if seed is None else seed
        runs = count_runs(algorithm, seed, w0)
        if w0 is None:
            w0 = default_models(problem, seed, runs)
        state = algorithm.init(problem, w0)
    else:
        if w0 is not None:
            raise ValueError("give w0 or state, not both (a resumed run starts from state.w)")
        algorithm.check_state(problem, state)
        seed = resume_seed(seed, state.seed)
        state = contiguous(state)
    batch = state.batch_shape
    if seed is not None and not isinstance(seed, int) and len(seed) != (batch[0] if batch else 1):
        raise ValueError(f"seed has {len(seed)} entries for {batch[0] if batch else 1} runs")
    return state, seed


def _run_rounds(algorithm, problem, communications, *, seed, split, every, w0, reference, progress) -> RunResult:
    """The ``rounds`` driver: from ``w0`` (or the default start), ``communications`` rounds of every run."""
    every = 1 if every is None else every
    runs = count_runs(algorithm, seed, w0)
    state = algorithm.init(problem, default_models(problem, seed, runs) if w0 is None else w0)
    strategy = RoundDriver(algorithm, problem, state, communications=communications, seed=seed, split=split,
                           reference=reference, every=every, runs=runs)
    return strategy.result(*strategy.loop(state, progress=progress))
