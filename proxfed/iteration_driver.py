"""The per-iteration driver of :func:`proxfed.run` (``"iterations"`` and ``"exact"``): coins, jumps, records.

Every run takes the same local steps; a communication happens where a
run's coin says so. Stretches in which no run communicates are replaced by
the closed-form local phase where the rule allows it (``jumps``). With
``communications``, each run is kept at its own ``communications``-th
communication while the others go on (the ``exact`` driver).
"""

from __future__ import annotations

import numpy as np

from . import _backend as B
from ._validation import is_int
from .algorithms.base import State
from .drivers import Driver
from .recording import Recorder, RunResult
from .run_setup import contiguous, merge_runs, problem_config

__all__ = ["IterationDriver", "check_coins"]


class IterationDriver(Driver):
    """The per-iteration strategy of :class:`~proxfed.drivers.Driver`'s loop (see :func:`proxfed.run`).

    Parameters
    ----------
    algorithm, problem, state :
        The rule, the problem and the (checked, C-contiguous) starting state.
    iterations : int
        Iterations of this call (a cap with ``communications``).
    seed : int or tuple of int
    coins : array or None
        The coins, or None for the rule's own (drawn from ``state.t`` on).
    evaluate, split, reference :
        As :func:`proxfed.run` (``split`` and ``reference`` resolved).
    every : int
    record_at : ndarray of int
        Sorted further record points (this call's counts).
    jumps : bool
    communications : int or None
        Keep each run at its own ``communications``-th communication.
    """

    def __init__(self, algorithm, problem, state: State, *, iterations: int, seed, coins, evaluate, split, reference,
                 every: int, record_at: np.ndarray, jumps: bool, communications):
        self.algorithm, self.problem, self.seed = algorithm, problem, seed
        self.iterations, self.communications, self.jumps = iterations, communications, jumps
        self.batch = batch = state.batch_shape
        self.total, self.desc = iterations, algorithm.name
        if coins is None:  # (one coin more than needed: whether a communication follows the last iteration)
            coins = algorithm.coins(iterations + 1, seed=seed, runs=batch[0] if batch else None, start=state.t)
        coins = check_coins(coins, iterations, batch)
        coin_after = bool(coins[..., iterations].any()) if coins.shape[-1] > iterations else False
        self.coins = coins = coins[..., :iterations]
        self._plan_records(state, every, record_at)
        any_coin = coins.reshape(-1, iterations).any(axis=0)
        self.any_coin, self.next_coin = any_coin, next_true(any_coin)
        self.coin_next = np.append(any_coin[1:], coin_after)  # a communication at the following iteration
        self.recorder = Recorder(algorithm, problem, evaluate, split, reference)
        self.config = {
            "algorithm": algorithm.config(),
            "problem": problem_config(problem),
            "iterations": iterations,
            "start_iteration": state.t,
            "seed": seed if isinstance(seed, int) else list(seed),
            "every": every,
            **({"record_at": record_at.tolist()} if record_at.size else {}),
            **({"communications": int(communications)} if communications is not None else {}),
            "split": split,
            "array_namespace": B.namespace(state.w).__name__,
            "dtype": str(state.w.dtype),
        }
        self.held = np.zeros(batch, bool)  # reached `communications`: kept at its state there
        self.diverged_at: dict[int, int] = {}
        # NumPy iterates are checked after every step; on another library the check stays on the device
        # (the first non-finite iteration of each run) and is read at record points, so a step never waits
        self.watch = None if isinstance(state.w, np.ndarray) else FiniteWatch(state.w, batch)
        self.first_bad = np.full(batch, -1, np.int64)
        self.first_t, self.j = state.t, 0
        self.jump, self.start, self.explicit = False, None, True

    def _plan_records(self, state: State, every: int, record_at: np.ndarray) -> None:
        """Where each run finishes (``finish``, ``short``) and which iteration counts are recorded."""
        iterations, extra = self.iterations, record_at
        # finish[r] = the iteration count (of this call) of run r's last step: its C-th communication, or the cap
        self.finish, self.short = None, np.zeros(0, bool)
        if self.communications is not None:
            counts = np.cumsum(self.coins.reshape(-1, iterations), axis=1, dtype=np.int64)
            self.short = (counts[:, -1] if iterations else np.zeros(counts.shape[0], np.int64)) < self.communications
            self.finish = np.where(self.short, iterations,
                                   np.argmax(counts >= self.communications, axis=1) + 1).reshape(self.batch)
            extra = np.union1d(extra, np.ravel(self.finish))
        # next_record[j] = the first recorded iteration count > j (this call's counts j with state.t + j a
        # multiple of `every`, the end, record_at)
        on_grid = np.arange(every - state.t % every, iterations + 1, every)
        grid = np.union1d(on_grid, np.append(extra, iterations))
        self.next_record = grid[np.searchsorted(grid, np.arange(iterations), side="right")] if iterations else grid
        self.recorded_at = np.zeros(iterations + 1, bool)
        self.recorded_at[grid] = True

    def first_row(self, state: State) -> dict:
        """The starting record, at time 0.0 (what :func:`proxfed.run` has always recorded)."""
        return self.recorder.compute(state, 0.0)

    def started(self, row: dict, state: State) -> None:
        if not np.all(np.isfinite(row["loss"])):
            raise ValueError("the loss at the starting point is not finite; check w0 and the data")
        self.jump = self.jumps and self.algorithm.can_jump(self.problem, state)
        # with jumps, `start` is the state where the current coin-free stretch began: every iterate of the
        # stretch is computed from it in closed form (up to the next coin or record), so the trajectory
        # does not depend on where records fall or where a run was interrupted
        self.start = stretch_start(self.algorithm, self.problem, state) if self.jump else None

    def done(self) -> bool:
        return self.j >= self.iterations

    def advance(self, state: State) -> tuple:
        j, start = self.j, self.start
        # explicit: a communication, or a stretch of a single step (between two communications);
        # otherwise the closed form from the stretch's start up to the next coin or record
        self.explicit = not self.jump or self.any_coin[j] or (start.t == state.t and self.coin_next[j])
        if self.explicit:
            k = 1
            coin = self.coins[..., j]
            new = self.algorithm.step(state, self.problem, coin if self.batch else bool(coin))
            if new.stretch is not None:
                new = new.replace(stretch=None)
        else:
            k = min(self.next_coin[j], self.next_record[j]) - j
            new = self.algorithm.local_phase(start, self.problem, self.first_t + j + k - start.t)
            new = new.replace(stretch=(start.t, start.w))
        self.j = j + k
        return contiguous(new), k

    def nonfinite(self, new: State) -> np.ndarray:
        if self.watch is None:
            xp = B.namespace(new.w)
            return ~B.to_numpy(xp.all(xp.isfinite(xp.reshape(new.w, self.batch + (-1,))), axis=-1))
        self.watch.see(new)
        recorded = self.recorded_at[new.t - self.first_t]
        self.first_bad = self.watch.pop() if recorded else np.full(self.batch, -1, np.int64)
        return self.first_bad >= 0

    def record_due(self, state: State, bad: np.ndarray) -> bool:
        return bool(self.recorded_at[state.t - self.first_t])

    def freeze(self, new: State, good: State, hold: np.ndarray, newly: np.ndarray) -> State:
        # the newly diverged runs diverged at the first iteration their iterates were non-finite, where the
        # device watch saw it, else now
        for r in np.flatnonzero(np.atleast_1d(newly)):
            seen = int(np.ravel(self.first_bad)[r])
            self.diverged_at[int(r)] = seen if seen >= 0 else new.t
        return merge_runs(~hold, new, good)

    def recorded(self, state: State) -> None:
        if self.finish is not None:
            self.held = self.held | (self.finish == state.t - self.first_t)

    def stepped(self, state: State) -> None:
        if self.jump and self.explicit:
            self.start = state  # a stretch begins after a communication (or a single-step stretch)

    def diverged_message(self, cause: str, state: State, good: State) -> str:
        if cause == "iterates":
            at = int(self.first_bad) if self.watch is not None else state.t
            return (f"iterates became non-finite at iteration {at}; "
                    f"kept the state of iteration {good.t} (the last finite record)")
        return (f"the loss became non-finite at iteration {state.t}; "
                f"kept the state of iteration {good.t} (the last finite record)")

    def result(self, state: State, status: str, message: str) -> RunResult:
        """The :class:`~proxfed.RunResult` of the loop's outcome."""
        batch, frozen, iterations, first_t = self.batch, self.frozen, self.iterations, self.first_t
        if status == "completed":
            message = f"completed {iterations} iterations"
        if status == "completed" and frozen.any():
            status = "diverged"
            where = ", ".join(f"run {r} at iteration {t}" for r, t in sorted(self.diverged_at.items()))
            message = (f"runs {np.flatnonzero(frozen).tolist()} diverged ({where}) and were frozen at their last "
                       f"finite record; the others ran {state.t - first_t} iterations")
        elif status == "completed" and self.finish is not None and np.all(self.held):
            message = f"completed {self.communications} communications per run (up to iteration {state.t})"
            if self.short.any():
                message += (f"; runs {np.flatnonzero(self.short).tolist()} made fewer in the cap of {iterations} "
                            "iterations" if batch else f"; fewer in the cap of {iterations} iterations")
        elif status == "completed" and state.t - first_t < iterations:
            status, message = "stopped", f"stopped by a callback at iteration {state.t}"
        diverged = frozen.copy() if batch else np.asarray(status == "diverged")
        state = state.with_host_tallies().replace(seed=self.seed)  # the seed a resumed run must use
        return RunResult(
            w=self.algorithm.output(state), state=state, history=self.recorder.history(),
            status=status, message=message, config=self.config, diverged=diverged,
            diverged_at=dict(self.diverged_at) if batch else {},
        )


def check_coins(coins, iterations: int, batch_shape: tuple) -> np.ndarray:
    """Coins as booleans of shape ``batch_shape + (>= iterations,)`` (one row broadcast to every run)."""
    c = B.to_numpy(coins)
    if c.dtype.kind not in "bui" or (c.dtype.kind != "b" and not np.all((c == 0) | (c == 1))):
        raise ValueError("coins must be booleans or 0/1 integers")
    c = c.astype(bool)
    want = batch_shape + (iterations,)
    if c.ndim == 1 and batch_shape:
        c = np.broadcast_to(c, batch_shape + c.shape)
    if c.shape[:-1] != batch_shape or c.shape[-1] < iterations:
        raise ValueError(f"coins must have shape {want} (or a longer last axis), got {c.shape}")
    return c


def stretch_start(algorithm, problem, state: State) -> State:
    """Where the coin-free stretch of ``state`` began (``state.stretch``), or ``state`` itself.

    The recorded start is used only if the closed form from it gives ``state.w`` again bit for
    bit; a state changed since (or from a run without jumps) starts a stretch of its own.
    """
    if state.stretch is None:
        return state
    fresh = state.replace(stretch=None)
    try:
        t0, w0 = state.stretch
    except (TypeError, ValueError):
        return fresh
    if (not is_int(t0) or not 0 <= t0 < state.t
            or not isinstance(w0, np.ndarray) or w0.shape != tuple(state.w.shape) or w0.dtype != state.w.dtype):
        return fresh
    start = fresh.replace(w=np.ascontiguousarray(w0), t=int(t0))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        again = algorithm.local_phase(start, problem, state.t - int(t0))
    return start if np.array_equal(again.w, state.w) else fresh


class FiniteWatch:
    """The first iteration at which each run's iterates were non-finite, kept on their device.

    :meth:`see` after every step costs a few kernels and no transfer; :meth:`pop` reads it
    back (at record points) and starts over, -1 meaning finite throughout.
    """

    def __init__(self, like, batch: tuple):
        self.xp, self.batch = B.namespace(like), batch
        self.device = B.device_of(like)
        self._reset()

    def _reset(self):
        self.first = self.xp.full(self.batch, -1, dtype=self.xp.int64, device=self.device)

    def see(self, st: State) -> None:
        xp = self.xp
        finite = xp.all(xp.isfinite(xp.reshape(st.w, self.batch + (-1,))), axis=-1)
        self.first = xp.where(~finite & (self.first < 0), st.t, self.first)

    def pop(self) -> np.ndarray:
        first = np.asarray(B.to_numpy(self.first), dtype=np.int64).reshape(self.batch)
        self._reset()
        return first


def next_true(flags: np.ndarray) -> np.ndarray:
    """``out[j]`` = the first index ``>= j`` where ``flags`` is true (``len(flags)`` if none)."""
    n = flags.shape[0]
    idx = np.where(flags, np.arange(n), n)
    return np.minimum.accumulate(idx[::-1])[::-1] if n else idx
