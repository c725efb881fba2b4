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

import numpy as np

from . import _backend as B
from ._validation import check_positive_int
from .algorithms.base import Algorithm, State
from .drivers import Driver, NoClosedForm, communication_times, last_communications, supports_rounds
from .recording import Recorder, RunResult
from .run_setup import merge_runs, problem_config

__all__ = ["run_rounds", "communication_times", "last_communications", "supports_rounds", "NoClosedForm"]


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

    Notes
    -----
    The same as ``proxfed.run(algorithm, problem, communications=communications, driver="rounds", ...)``.

    Raises
    ------
    NoClosedForm
        (a ``ValueError``) when the algorithm cannot jump over local steps on
        this problem (use :func:`proxfed.run`).
    """
    from .runner import run  # (runner imports this module's driver)

    if not isinstance(algorithm, Algorithm):
        raise TypeError(f"algorithm must be a proxfed Algorithm, got {type(algorithm).__name__}")
    for name, v in (("communications", communications), ("every", every)):
        check_positive_int(v, name)
    return run(algorithm, problem, communications=communications, driver="rounds", seed=seed, split=split,
               every=every, w0=w0, reference=reference, progress=progress)


class RoundDriver(Driver):
    """The round strategy of :class:`~proxfed.drivers.Driver`'s loop (the ``"rounds"`` driver of :func:`proxfed.run`).

    Every loop step is one communication round of every run that is not
    frozen: its local steps up to its next coin in closed form
    (``problem.local_steps`` with a per-run count), then that
    communication (:meth:`Algorithm.finish_step`).

    Raises
    ------
    NoClosedForm
        When the rule has no closed-form local phase on the problem from ``state``.
    """

    def __init__(self, algorithm, problem, state: State, *, communications: int, seed, split, reference,
                 every: int, runs):
        if not algorithm.can_jump(problem, state):
            raise NoClosedForm(f"{algorithm.name} has no closed-form local phase on this problem; use proxfed.run")
        self.algorithm, self.problem = algorithm, problem
        self.communications, self.every = int(communications), every
        self.batch = batch = state.batch_shape
        self.total, self.desc = communications, algorithm.name
        times = communication_times(algorithm, int(communications), seed=seed, runs=runs)  # (R, C)
        self.runs = times.shape[0]
        self.gaps = np.diff(times, axis=1, prepend=-1)  # iterations per round, >= 1
        self.iters = np.zeros(self.runs, np.int64)
        self.good_iters = self.iters.copy()
        self.recorder = Recorder(algorithm, problem, None, split, reference)
        self.held = np.zeros(batch, bool)
        self.config = {"algorithm": algorithm.config(), "problem": problem_config(problem),
                       "communications": communications, "seed": seed if isinstance(seed, int) else list(seed),
                       "every": every, "split": split, "driver": "run_rounds",
                       "array_namespace": B.namespace(state.w).__name__, "dtype": str(state.w.dtype)}
        self.m = 0  # rounds done

    def _shape(self, a: np.ndarray):
        """A per-run array (R,) in the batch shape (a scalar for a single run)."""
        return a.reshape(self.batch) if self.batch else a[0]

    def done(self) -> bool:
        return self.m >= self.communications

    def advance(self, state: State) -> tuple:
        # the round's gaps[m] local steps at once (its last one included), then its communication
        frozen = np.ravel(self.frozen)
        k = np.where(frozen, 0, self.gaps[:, self.m])
        kk = int(k[0]) if np.all(k == k[0]) else self._shape(k)
        local = self.problem.local_steps(state.w, state.h, self.algorithm.gamma, kk)
        new = self.algorithm.finish_step(state, self.problem, self._shape(~frozen) if self.batch else True, local)
        self.iters = self.iters + k
        self.m += 1
        return new.replace(t=int(self.iters.max())), 1

    def nonfinite(self, new: State) -> np.ndarray:
        return self._shape(~finite_runs(new.w, self.runs))

    def record_due(self, state: State, bad: np.ndarray) -> bool:
        return bool(np.any(bad)) or self.m % self.every == 0 or self.m == self.communications

    def row(self, state: State) -> dict:
        row = super().row(state)
        row["iteration"] = row["local_steps"] = self._shape(self.iters.astype(np.float64))
        return row

    def check_loss(self, bad: np.ndarray) -> bool:
        return not np.any(bad)  # (a round that froze runs records without a loss check)

    def freeze(self, new: State, good: State, hold: np.ndarray, newly: np.ndarray) -> State:
        self.iters = np.where(np.ravel(newly), self.good_iters, self.iters)
        return merge_runs(~hold, new, good)

    def recorded(self, state: State) -> None:
        self.good_iters = self.iters.copy()

    def diverged_message(self, cause: str, state: State, good: State) -> str:
        return f"diverged in round {self.m}; kept the state of the last finite record"

    def result(self, state: State, status: str, message: str) -> RunResult:
        """The :class:`~proxfed.RunResult` of the loop's outcome."""
        frozen = self.frozen
        if status == "completed":
            message = f"completed {self.communications} communications"
        if status == "completed" and frozen.any():
            status = "diverged"
            message = f"runs {np.flatnonzero(frozen).tolist()} diverged and were frozen at their last finite record"
        state = state.with_host_tallies()
        diverged = self._shape(np.ravel(frozen)) if self.batch else np.asarray(status == "diverged")
        return RunResult(w=self.algorithm.output(state), state=state, history=self.recorder.history(), status=status,
                         message=message, config=self.config, diverged=diverged)


def finite_runs(W, runs: int) -> np.ndarray:
    """Whether each run's iterates are all finite, on the host, shape (runs,).

    Reduced where ``W`` lives: a device run reads back ``runs`` booleans, not its iterates.
    """
    if isinstance(W, np.ndarray):
        return np.all(np.isfinite(W.reshape(runs, -1)), axis=1)
    xp = B.namespace(W)
    return np.asarray(B.to_numpy(xp.all(xp.isfinite(xp.reshape(W, (runs, -1))), axis=1)), dtype=bool)
