"""The drivers of :func:`proxfed.run`: which one runs a call (:func:`choose_driver`), and their one loop skeleton.

A driver is a strategy plugged into :class:`Driver`'s loop: how to advance
the state (one iteration, a coin-free stretch in closed form, or one
communication round per run), when to record, and what the outcome says.
The loop itself, with recording, divergence handling (a single run stops at
its last finite record, a batched run is frozen there while the others go
on), callbacks and the progress bar, is written once, here.

* ``"iterations"``: :class:`proxfed.iteration_driver.IterationDriver`, the
  same local steps for every run;
* ``"exact"``: the same loop, each run kept at its own
  ``communications``-th communication;
* ``"rounds"``: :class:`proxfed.round_runner.RoundDriver`, one
  communication round of every run per step, its local phase in closed form.
"""

from __future__ import annotations

import time

import numpy as np

from .algorithms.base import Algorithm, State
from .prox import nan_passes_through
from .run_setup import default_models, merge_runs

__all__ = ["DRIVERS", "choose_driver", "policy_driver", "POLICY_LABELS", "Driver", "NoClosedForm", "supports_rounds", "communication_times",
           "last_communications", "exact_horizon"]

#: The drivers :func:`proxfed.run` can use (``driver="auto"`` picks one, :func:`choose_driver`).
DRIVERS = ("iterations", "rounds", "exact")


class NoClosedForm(ValueError):
    """The algorithm has no closed-form local phase on this problem (the ``rounds`` driver refuses it)."""


def choose_driver(algorithm: Algorithm, problem, driver: str = "auto", *, iterations=None, communications=None,
                  w0=None, seed=0) -> str:
    """The driver that runs a call of :func:`proxfed.run` (the one place this choice is made).

    Parameters
    ----------
    algorithm : Algorithm
    problem : FederatedProblem
    driver : {"auto", "iterations", "rounds", "exact"}
        ``"auto"`` picks: ``"iterations"`` when only ``iterations`` is given;
        ``"exact"`` when both are given (``iterations`` is then a cap);
        with ``communications`` only, ``"rounds"`` where the rule has a
        closed-form local phase on the problem (:func:`supports_rounds`,
        checked on the starting state of ``w0``, or of ``seed``'s default
        start), else ``"exact"``. Any other value is checked against the
        horizon and returned.
    iterations, communications : int, optional
        The call's horizon (at least one).
    w0 : array, optional
        The starting model(s), for the ``"rounds"`` check.
    seed : int or sequence of int

    Returns
    -------
    {"iterations", "rounds", "exact"}

    Raises
    ------
    ValueError
        For an unknown driver, or one that does not fit the horizon
        (``"iterations"`` with ``communications``, ``"rounds"`` with
        ``iterations``, ``"rounds"`` or ``"exact"`` without ``communications``).
    TypeError
        If neither ``iterations`` nor ``communications`` is given.
    """
    if driver not in ("auto",) + DRIVERS:
        raise ValueError(f"driver must be 'auto', 'iterations', 'rounds' or 'exact', got {driver!r}")
    if iterations is None and communications is None:
        raise TypeError("give iterations or communications (or both: communications per run, iterations a cap)")
    if driver == "auto":
        if communications is None:
            return "iterations"
        if iterations is not None:
            return "exact"
        return "rounds" if supports_rounds(algorithm, problem, w0=w0, seed=seed) else "exact"
    if driver == "iterations" and communications is not None:
        raise ValueError("driver='iterations' runs `iterations` steps; with communications use 'exact' or 'rounds'")
    if driver in ("rounds", "exact") and communications is None:
        raise ValueError(f"driver={driver!r} needs communications")
    if driver == "rounds" and iterations is not None:
        raise ValueError("driver='rounds' runs exactly `communications` rounds per run: leave iterations out")
    return driver


#: The labels of :func:`policy_driver`, as stored in tuning searches and reproductions' runs.
POLICY_LABELS = {"rounds": "run_rounds", "exact": "run_exact", "iterations": "run"}


def policy_driver(policy: str, algorithm: Algorithm, problem, *, communications: int, w0=None) -> str:
    """The driver a tuning or reproduction policy gives a run of ``communications``, as its stored label.

    ``"run"`` always drives by expected local steps (label ``"run"``); ``"run_rounds"``
    always by rounds. ``"auto"`` and ``"exact"`` take :func:`choose_driver`'s rounds where the
    rule has a closed form, and otherwise ``"exact"`` stops each run at its own last
    communication (``"run_exact"``) while ``"auto"`` runs the expected number of local steps
    (``"run"``).
    """
    if policy in ("run", "run_rounds"):
        return policy
    if choose_driver(algorithm, problem, communications=communications, w0=w0) == "rounds":
        return POLICY_LABELS["rounds"]
    return POLICY_LABELS["exact"] if policy == "exact" else POLICY_LABELS["iterations"]


def supports_rounds(algorithm: Algorithm, problem, w0=None, seed=0) -> bool:
    """Whether :func:`~proxfed.run_rounds` can run ``algorithm`` on ``problem`` (a closed-form local phase).

    Checked on the state :func:`~proxfed.run_rounds` would start from (``w0``, or the
    problem's default start for ``seed``): the rule's local steps must be
    dense gradient steps with fixed control variates and the problem must
    have :meth:`local_steps` for those iterates (ridge; float arrays of NumPy, torch or CuPy).
    """
    if not isinstance(algorithm, Algorithm):
        raise TypeError(f"algorithm must be a proxfed Algorithm, got {type(algorithm).__name__}")
    runs = algorithm.n_runs
    state = algorithm.init(problem, default_models(problem, seed, runs) if w0 is None else w0)
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


def exact_horizon(algorithm: Algorithm, communications: int, seed=0, runs: int | None = None) -> int:
    """The iterations the ``exact`` driver runs without a cap: the last run's ``communications``-th coin."""
    return int(last_communications(algorithm, communications, seed=seed, runs=runs).max())


class Driver:
    """The loop skeleton; a subclass is a strategy (how to advance, when to record, what the outcome says).

    A subclass sets ``batch`` (the runs' shape, ``()`` for one run),
    ``total`` and ``desc`` (the progress bar), ``recorder``
    (:class:`~proxfed.recording.Recorder`) and ``held`` (runs kept at their
    state without having diverged, bool of shape ``batch``) and implements
    the hooks below; :meth:`loop` runs it. ``frozen`` (the runs frozen after
    diverging) is the loop's.
    """

    batch: tuple = ()
    total: int = 0
    desc: str = ""

    def done(self) -> bool:
        """Whether the horizon is reached."""
        raise NotImplementedError

    def advance(self, state: State) -> tuple:
        """The next state and the progress it makes (for the bar)."""
        raise NotImplementedError

    def nonfinite(self, new: State) -> np.ndarray:
        """Which runs' iterates are not finite (as far as known now), bool of shape ``batch``."""
        raise NotImplementedError

    def record_due(self, state: State, bad: np.ndarray) -> bool:
        """Whether to record ``state`` (``bad``: the runs frozen by this step)."""
        raise NotImplementedError

    def row(self, state: State) -> dict:
        """A history row of ``state``."""
        return self.recorder.compute(state, time.perf_counter() - self.t0)

    def first_row(self, state: State) -> dict:
        """The starting record (its ``time`` is the elapsed time, as every record's)."""
        return self.row(state)

    def started(self, row: dict, state: State) -> None:
        """Called with the first record, before it is kept."""

    def check_loss(self, bad: np.ndarray) -> bool:
        """Whether to freeze runs whose recorded loss is not finite (``bad``: frozen by this step)."""
        return True

    def freeze(self, new: State, good: State, hold: np.ndarray, newly: np.ndarray) -> State:
        """``new`` with the runs in ``hold`` back at ``good`` (``newly``: those that diverged just now)."""
        return merge_runs(~hold, new, good)

    def recorded(self, state: State) -> None:
        """Called after ``state`` was recorded (it is the last finite record now)."""

    def stepped(self, state: State) -> None:
        """Called after every step (and its record)."""

    def diverged_message(self, cause: str, state: State, good: State) -> str:
        """The message of a single run that diverged (``cause``: ``"iterates"`` or ``"loss"``)."""
        raise NotImplementedError

    def loop(self, state: State, callbacks=(), progress: bool = False) -> tuple:
        """Run the strategy from ``state``: returns ``(state, status, message)``.

        ``status`` is ``"diverged"`` (with the message) for a single run that
        diverged, ``state`` then being its last finite record; otherwise
        ``"completed"`` and an empty message, for the strategy to complete
        (``frozen`` says which batched runs diverged).
        """
        from tqdm.auto import tqdm

        batch = self.batch
        self.frozen = np.zeros(batch, bool)
        self.t0 = time.perf_counter()
        # (a diverging run's NaN passes through TopK to its iterates, where it is caught below)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"), nan_passes_through():
            row = self.first_row(state)
            self.started(row, state)
            self.recorder.append(row)
            good = state
            stop = any(bool(cb(row, state)) for cb in callbacks)
            self.recorded(state)
            with tqdm(total=self.total, disable=not progress, desc=self.desc, leave=False) as bar:
                while not stop and not self.done():
                    new, k = self.advance(state)
                    bad = self.nonfinite(new) & ~self.held & ~self.frozen
                    if not batch and bad.any():
                        return good, "diverged", self.diverged_message("iterates", new, good)
                    if batch and (bad | self.frozen | self.held).any():  # held and frozen runs stay at `good`
                        new = self.freeze(new, good, bad | self.frozen | self.held, bad)
                        self.frozen = self.frozen | bad
                    state = new
                    bar.update(k)
                    if self.record_due(state, bad):
                        row = self.row(state)
                        bad_loss = ~np.isfinite(np.asarray(row["loss"]))
                        if not batch and bad_loss.any():
                            return good, "diverged", self.diverged_message("loss", state, good)
                        bad_loss = bad_loss & ~self.held & ~self.frozen
                        if batch and self.check_loss(bad) and bad_loss.any():
                            state = self.freeze(state, good, bad_loss | self.frozen, bad_loss)
                            self.frozen = self.frozen | bad_loss
                            row = self.row(state)
                        self.recorder.append(row)
                        good = state
                        stop = any(bool(cb(row, state)) for cb in callbacks)
                        self.recorded(state)
                    self.stepped(state)
                    if np.all(self.frozen | self.held):
                        break
        return state, "completed", ""
