"""The driver loop: coins, evaluation, accounting, history, stopping and saving.

The module is named ``runner`` so that ``proxfed.run`` can be the function.
"""

from __future__ import annotations

import contextlib
import json
import numbers
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import _backend as B
from .algorithms.base import TALLIES, Algorithm, State, _seeds_and_keys, select_runs

__all__ = ["run", "RunResult", "initial_models", "save_state", "load_state", "HISTORY_KEYS", "MIN_RECORD_SPACING"]

#: Quantities recorded in :attr:`RunResult.history` (``metric`` only when an evaluation exists).
HISTORY_KEYS = (
    "iteration", "communications", "local_steps", "bits_up", "bits_down", "bits_up_total",
    "bits_down_total", "upload_nnz", "loss", "loss_dense", "sum_h_norm", "mean_h_norm", "w_norm",
    "consensus_gap", "dist_opt", "metric", "time",
)


@dataclass
class RunResult:
    """Outcome of :func:`run`.

    Attributes
    ----------
    w : array, shape (d,) or (R, d)
        The final model: the algorithm's final prox (e.g. TopK) of the client average.
    state : State
        The last state (the last finite one if the run diverged); pass it
        back to :func:`run` to continue.
    history : dict of str to ndarray
        Curves recorded at the chosen cadence, shape (records,) or (records, R).
    status : {"completed", "diverged", "stopped"}
    message : str
    diverged : ndarray of bool, shape () or (R,)
        Which runs diverged (and were stopped or frozen at their last finite record).
    diverged_at : dict of int to int
        Batched runs: for each frozen run, the iteration (``state.t``) at
        which its divergence was detected; its records before then are its own.
    config : dict
        Everything needed to re-run (algorithm, problem, iterations, seed, cadence).
    """

    w: Any
    state: State
    history: dict
    status: str
    message: str
    config: dict = field(default_factory=dict)
    diverged: np.ndarray = field(default_factory=lambda: np.zeros((), bool))
    diverged_at: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """Final values of every recorded quantity and the status (JSON-serializable)."""
        out = {"status": self.status, "message": self.message}
        for key, values in self.history.items():
            last = values[-1] if len(values) else np.nan
            out[key] = last.tolist() if isinstance(last, np.ndarray) else float(last)
        return out

    def save(self, directory) -> Path:
        """Write ``config.json``, ``history.npz``, ``summary.json`` and ``state.npz`` to ``directory``, atomically.

        The files are written into a temporary sibling directory, which
        replaces ``directory`` only once all of them are in place: a run
        directory is complete or absent, never a ``summary.json`` beside a
        truncated ``state.npz``. A run saved there before is kept until the
        new one is complete (and kept, unchanged, if the save fails).

        Parameters
        ----------
        directory : str or path-like
            The run directory: absent, empty, or holding an earlier run's
            four files and nothing else.

        Returns
        -------
        pathlib.Path
            ``directory``.

        Raises
        ------
        FileExistsError
            If ``directory`` is a file, or holds files other than a run's
            (they are left alone).
        """
        path = Path(directory)
        with _staged_directory(path) as tmp:
            (tmp / "config.json").write_text(json.dumps(self.config, indent=2, default=_jsonable))
            np.savez_compressed(tmp / "history.npz", **self.history)
            (tmp / "summary.json").write_text(json.dumps(self.summary(), indent=2, default=_jsonable))
            save_state(self.state, tmp / "state.npz")
        return path


# The files of a run directory written by RunResult.save.
_RUN_FILES = ("config.json", "history.npz", "summary.json", "state.npz")


def _check_run_directory(path: Path) -> None:
    """Refuse to replace a file, or a directory holding anything but a run's files."""
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"cannot save a run to {path}: it exists and is not a directory")
    if path.is_dir():
        other = sorted(p.name for p in path.iterdir() if p.name not in _RUN_FILES)
        if other:
            raise FileExistsError(f"cannot save a run to {path}: it holds files other than a saved run's "
                                  f"({', '.join(other[:5])}{', ...' if len(other) > 5 else ''}); choose a new "
                                  "directory")


def _sibling(path: Path, suffix: str) -> Path:
    """A fresh hidden name beside ``path`` (``.<name>.<random>.<suffix>``)."""
    return path.with_name(f".{path.name}.{os.urandom(4).hex()}.{suffix}")


@contextlib.contextmanager
def _staged_directory(path: Path):
    """Yield an empty temporary directory beside ``path``; on success it replaces ``path``.

    On any exception (or interruption) the temporary directory is removed
    and ``path`` is left as it was.
    """
    path = Path(os.path.abspath(Path(path).expanduser()))
    _check_run_directory(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    try:
        tmp.mkdir()  # (the umask's permissions, as a plain mkdir)
        yield tmp
        _check_run_directory(path)  # (again: something may have appeared meanwhile)
        _swap_in(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # (gone already after a successful swap)


def _swap_in(new: Path, path: Path) -> None:
    """Rename ``new`` to ``path``; an existing ``path`` is moved aside first and removed after.

    If the final rename fails, the earlier ``path`` is moved back.
    """
    if not path.exists():
        os.replace(new, path)
        return
    old = _sibling(path, "old")
    os.replace(path, old)
    try:
        os.replace(new, path)
    except BaseException:
        os.replace(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _jsonable(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return repr(obj)


def save_state(state: State, path) -> None:
    """Save a state's arrays to an ``.npz`` file (host copies)."""
    arrays = {"w": B.to_numpy(state.w), "h": B.to_numpy(state.h), "t": np.asarray(state.t)}
    state = state.with_host_tallies()
    for name in ("communications", *TALLIES):
        arrays[name] = np.asarray(getattr(state, name))
    for key, value in state.extras.items():
        arrays[f"extra_{key}"] = B.to_numpy(value)
    np.savez_compressed(path, **arrays)


def load_state(path, like=None) -> State:
    """Load a state written by :meth:`RunResult.save`, onto ``like``'s library and device."""
    with np.load(path) as data:
        put = (lambda a: a) if like is None else (lambda a: B.from_numpy(a, like=like))
        extras = {k[len("extra_"):]: put(data[k]) for k in data.files if k.startswith("extra_")}
        return State(
            w=put(data["w"]), h=put(data["h"]), t=int(data["t"]),
            communications=data["communications"], bits_up=data["bits_up"], bits_down=data["bits_down"],
            values_up=data["values_up"], upload_nnz=data["upload_nnz"], extras=extras,
        )


#: Fewest iterations between two records of :func:`run` by default (a record costs about one local step).
MIN_RECORD_SPACING = 10


def _check_coins(coins, iterations: int, batch_shape: tuple) -> np.ndarray:
    c = B.to_numpy(coins)
    if c.dtype.kind not in "bui" or (c.dtype.kind != "b" and not np.all((c == 0) | (c == 1))):
        raise ValueError("coins must be booleans or 0/1 integers")
    c = c.astype(bool)
    want = batch_shape + (iterations,)
    if c.ndim == 1 and batch_shape:
        c = np.broadcast_to(c, batch_shape + c.shape)
    if c.shape[:-1] != batch_shape or c.shape[-1] < iterations:
        raise ValueError(f"coins must have shape {want} (or a longer last axis), got {c.shape}")
    return c[..., :iterations]


def initial_models(problem, seed=0, runs: int | None = None, like=None):
    """The problem's default starting models of :func:`run` (shape (d,), or (R, d) with ``runs``).

    Run ``r`` starts at ``problem.initial_point(seed, r)`` for one integer
    seed, or at ``initial_point(seed[r], 0)`` for one seed per run (see
    :meth:`~proxfed.algorithms.Algorithm.coins`). With ``like``, the models
    are moved to its array library, device and dtype.
    """
    w0 = _initial_models(problem, seed, runs)
    return w0 if like is None else B.from_numpy(B.to_numpy(w0), like=like)


def _initial_models(problem, seed, runs):
    if runs is None:
        return problem.initial_point(seed=_seeds_and_keys(seed, None)[0][0], run=0)
    seeds, keys = _seeds_and_keys(seed, runs)
    points = [problem.initial_point(seed=s, run=r) for s, r in zip(seeds, keys)]
    return B.namespace(*points).stack(points)  # stays in the problem's array library


class _Recorder:
    """Computes one history row from a state."""

    def __init__(self, algorithm, problem, evaluate, split, reference):
        self.algorithm, self.problem = algorithm, problem
        self.evaluate, self.split = evaluate, split
        self.reference = reference
        self.rows: list[dict] = []
        self._ref_device = None

    def append(self, row: dict) -> None:
        self.rows.append(row)

    def compute(self, state: State, elapsed: float) -> dict:
        """One history row (not yet appended)."""
        xp = B.namespace(state.w)
        host = lambda a: np.asarray(B.to_numpy(a), dtype=np.float64)  # noqa: E731
        w_avg = self.algorithm.consensus.mean(state.w)[..., 0, :]
        # the output and the average in one pass over the data (once when the output is the average)
        same = self.algorithm.final is None and type(self.algorithm).output is Algorithm.output
        w_out = w_avg if same else self.algorithm.output(state)
        host_state = state.with_host_tallies()
        tallies = {n: getattr(host_state, n) for n in TALLIES}
        if same:
            losses = [host(self.problem.objective(w_avg))]
        else:  # stacked on the run axis (problems take (d,) or (R, d)), then split again
            both = xp.stack([w_out, w_avg]) if w_avg.ndim == 1 else xp.concat([w_out, w_avg], axis=0)
            values = host(self.problem.objective(both))
            losses = [values[: values.shape[0] // 2], values[values.shape[0] // 2:]]
            if w_avg.ndim == 1:
                losses = [values[0], values[1]]
        row = {
            "iteration": float(state.t),
            "communications": state.communications.astype(np.float64),
            "local_steps": float(state.t),
            "bits_up": tallies["bits_up"].mean(axis=-1),
            "bits_down": tallies["bits_down"].mean(axis=-1),
            "bits_up_total": tallies["bits_up"].sum(axis=-1).astype(np.float64),
            "bits_down_total": tallies["bits_down"].sum(axis=-1).astype(np.float64),
            "upload_nnz": tallies["upload_nnz"].mean(axis=-1),
            "loss": losses[0],
            "loss_dense": losses[-1],
            "sum_h_norm": host(xp.linalg.vector_norm(xp.sum(state.h, axis=-2), axis=-1)),
            "mean_h_norm": host(xp.mean(xp.linalg.vector_norm(state.h, axis=-1), axis=-1)),
            "w_norm": host(xp.linalg.vector_norm(w_avg, axis=-1)),
            "consensus_gap": host(xp.sqrt(xp.mean(xp.sum((state.w - w_avg[..., None, :]) ** 2, axis=-1), axis=-1))),
        }
        if self.reference is not None:
            if self._ref_device is None:
                self._ref_device = B.from_numpy(self.reference, like=state.w)
            row["dist_opt"] = host(xp.linalg.vector_norm(w_avg - self._ref_device, axis=-1))
        if self.evaluate is not None:
            row["metric"] = np.asarray(self.evaluate(w_out), dtype=np.float64)
        elif self.split is not None:
            row["metric"] = np.asarray(self.problem.score(w_out, self.split), dtype=np.float64)
        row["time"] = float(elapsed)
        return row

    def history(self) -> dict:
        if not self.rows:
            return {}
        return {k: np.array([r[k] for r in self.rows]) for k in self.rows[0]}


def run(
    algorithm: Algorithm,
    problem,
    iterations: int,
    *,
    seed=0,
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
) -> RunResult:
    """Run ``algorithm`` on ``problem`` for ``iterations`` local steps.

    Parameters
    ----------
    algorithm : Algorithm
        An update rule from :mod:`proxfed.algorithms`.
    problem : FederatedProblem
    iterations : int
        Number of iterations (local steps of every client) to run.
    seed : int or sequence of int
        Seeds the coin flips and the default starting model (see
        :meth:`Algorithm.coins`); one per run for batched runs.
    coins : array of bool, shape (iterations,) or (R, iterations), optional
        The communication coins ``theta_t`` to use instead of the algorithm's
        schedule.
    evaluate : callable, optional
        ``evaluate(w) -> float`` (or (R,) for batched ``w``) applied to the
        output model at every record; overrides ``split``.
    split : {"auto", "test", "validation", "train", None}
        Where ``problem.score`` evaluates the metric; ``"auto"`` uses the
        test split when the dataset has one, else no metric.
    every : int, optional
        Record the history every ``every`` iterations (default
        ``max(MIN_RECORD_SPACING, iterations // 200)``: at most about 200
        records, and at least 10 iterations apart, so that recording (an
        objective and a metric pass over the data) costs a small fraction of
        the run; ``benchmarks/bench_records.py`` measures it); the first and last iterations are
        always recorded.
    record_at : sequence of int, optional
        Further iterations (counted from the start of this call, in
        ``[1, iterations]``) at which to record, e.g. each batched run's own
        horizon.
    w0 : array, shape (d,) or (R, d), optional
        Starting model (default ``problem.initial_point(seed)``).
    state : State, optional
        Continue from this state (e.g. ``result.state``): coins continue at
        ``state.t`` so the trajectory is the same as one uninterrupted run.
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
        Stretches never cross a history record.
    communications : int, optional
        Stop each run at its own ``communications``-th communication of this
        call (``iterations`` is then a cap): the run is recorded there and
        kept at that state, accounting included, while the others go on
        (the way a diverged run is frozen), and the call ends when every
        run has stopped. Batched runs with random coins then all make
        exactly ``communications`` communications instead of a number that
        varies between runs. A run without that many coins in
        ``iterations`` steps runs to the cap; the message names it.

    Returns
    -------
    RunResult
        A run whose iterates or recorded loss become NaN or infinite has
        status ``"diverged"``: it returns to its state at the last finite
        history record (a single run stops there; in a batch that run is
        frozen there, accounting included, and the others go on), and the
        history holds only finite records.
    """
    from tqdm.auto import tqdm

    if not isinstance(algorithm, Algorithm):
        raise TypeError(f"algorithm must be a proxfed Algorithm, got {type(algorithm).__name__}")
    if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral) or iterations < 0:
        raise ValueError(f"iterations must be a non-negative integer, got {iterations!r}")
    iterations = int(iterations)
    if every is None:
        every = max(MIN_RECORD_SPACING, iterations // 200)
    if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1:
        raise ValueError(f"every must be a positive integer, got {every!r}")
    split, reference = _split_and_reference(problem, split, reference)
    extra = np.unique(np.asarray([] if record_at is None else record_at, dtype=np.int64))
    if extra.size and (extra[0] < 1 or extra[-1] > iterations):
        raise ValueError(f"record_at must lie in [1, {iterations}], got {extra[0]}..{extra[-1]}")
    if communications is not None and (isinstance(communications, bool)
                                       or not isinstance(communications, numbers.Integral) or communications < 1):
        raise ValueError(f"communications must be a positive integer or None, got {communications!r}")

    if state is None:
        runs = algorithm.n_runs
        if runs is None and w0 is not None and np.ndim(B.to_numpy(w0)) == 2:
            runs = int(np.shape(w0)[0])
        if runs is None and not isinstance(seed, numbers.Integral):
            runs = len(np.asarray(seed).ravel())
        if w0 is None:
            w0 = _initial_models(problem, seed, runs)
        state = algorithm.init(problem, w0)
    elif not isinstance(state, State):
        raise TypeError("state must be a proxfed State")
    batch = state.batch_shape
    runs = batch[0] if batch else None
    if coins is None:
        coins = algorithm.coins(iterations, seed=seed, runs=runs, start=state.t)
    coins = _check_coins(coins, iterations, batch)
    asked = extra
    # finish[r] = the iteration count (of this call) of run r's last step: its C-th communication, or the cap
    finish, short = None, np.zeros(0, bool)
    if communications is not None:
        counts = np.cumsum(coins.reshape(-1, iterations), axis=1, dtype=np.int64)
        short = (counts[:, -1] if iterations else np.zeros(counts.shape[0], np.int64)) < communications
        finish = np.where(short, iterations, np.argmax(counts >= communications, axis=1) + 1).reshape(batch)
        extra = np.union1d(extra, np.ravel(finish))
    # next_record[j] = the first recorded iteration count > j (every multiple of `every`, the end, record_at)
    grid = np.union1d(np.arange(every, iterations + 1, every), np.append(extra, iterations))
    next_record = grid[np.searchsorted(grid, np.arange(iterations), side="right")] if iterations else grid
    recorded = np.zeros(iterations + 1, bool)
    recorded[grid] = True

    xp = B.namespace(state.w)
    recorder = _Recorder(algorithm, problem, evaluate, split, reference)
    config = {
        "algorithm": algorithm.config(),
        "problem": _problem_config(problem),
        "iterations": iterations,
        "start_iteration": state.t,
        "seed": seed if isinstance(seed, numbers.Integral) else np.asarray(seed).tolist(),
        "every": every,
        **({"record_at": asked.tolist()} if asked.size else {}),
        **({"communications": int(communications)} if communications is not None else {}),
        "split": split,
        "array_namespace": xp.__name__,
        "dtype": str(state.w.dtype),
    }
    t0 = time.perf_counter()
    status, message = "completed", f"completed {iterations} iterations"

    # A run diverges when its iterates or its recorded loss become non-finite. It then returns to
    # its state at the last finite record ("good"): a single run stops there; in a batch the run is
    # frozen there (iterates, control variates and accounting) while the others go on.
    frozen = np.zeros(batch, bool)
    finished = np.zeros(batch, bool)  # reached `communications`: kept at its state there
    diverged_at: dict[int, int] = {}

    def nonfinite_iterates(st) -> np.ndarray:
        flat = xp.reshape(st.w, batch + (-1,))
        return ~B.to_numpy(xp.all(xp.isfinite(flat), axis=-1))

    # NumPy iterates are checked after every step; on another library the check stays on the device
    # (the first non-finite iteration of each run) and is read at record points, so a step never waits
    watch = None if isinstance(state.w, np.ndarray) else _FiniteWatch(state.w, batch)
    first_bad = np.full(batch, -1, np.int64)

    def freeze(st, hold, good_st):
        """Runs in ``hold`` back to ``good_st``; the new ones among them (not finished) diverged now
        (at the first iteration their iterates were non-finite, where the device watch saw it)."""
        for r in np.flatnonzero(np.atleast_1d(hold & ~frozen & ~finished)):
            seen = int(np.ravel(first_bad)[r])
            diverged_at[int(r)] = seen if seen >= 0 else st.t
        return _merge_runs(~hold, st, good_st)

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        row = recorder.compute(state, 0.0)
        if not np.all(np.isfinite(row["loss"])):
            raise ValueError("the loss at the starting point is not finite; check w0 and the data")
        recorder.append(row)
        good = state
        stop = any(bool(cb(row, state)) for cb in callbacks)
        first_t = state.t
        any_coin = coins.reshape(-1, iterations).any(axis=0)
        next_coin = _next_true(any_coin)
        jump = jumps and algorithm.can_jump(problem, state)
        j = 0
        with tqdm(total=iterations, disable=not progress, desc=algorithm.name, leave=False) as bar:
            while j < iterations:
                if stop:
                    break
                # a stretch without any communication (and no record inside) in closed form
                k = min(next_coin[j], next_record[j]) - j if jump else 0
                if k >= 2:
                    new = algorithm.local_phase(state, problem, k)
                else:
                    k = 1
                    coin = coins[..., j]
                    new = algorithm.step(state, problem, coin if batch else bool(coin))
                j += k
                if watch is None:
                    bad = nonfinite_iterates(new) & ~finished
                else:
                    watch.see(new)
                    first_bad = watch.pop() if recorded[new.t - first_t] else np.full(batch, -1, np.int64)
                    bad = (first_bad >= 0) & ~finished
                if not batch and bad:
                    status = "diverged"
                    at = int(first_bad) if watch is not None else new.t
                    message = (f"iterates became non-finite at iteration {at}; "
                               f"kept the state of iteration {good.t} (the last finite record)")
                    state = good
                    break
                if batch and (bad | frozen | finished).any():  # `good` holds finished runs at their last step
                    new = freeze(new, bad | frozen | finished, good)
                    frozen = frozen | bad
                state = new
                bar.update(k)
                done = state.t - first_t
                if recorded[done]:
                    row = recorder.compute(state, time.perf_counter() - t0)
                    bad_loss = ~np.isfinite(np.asarray(row["loss"]))
                    if not batch and bad_loss:
                        status = "diverged"
                        message = (f"the loss became non-finite at iteration {state.t}; "
                                   f"kept the state of iteration {good.t} (the last finite record)")
                        state = good
                        break
                    bad_loss = bad_loss & ~finished
                    if batch and (bad_loss & ~frozen).any():
                        state = freeze(state, bad_loss | frozen, good)
                        frozen = frozen | bad_loss
                        row = recorder.compute(state, time.perf_counter() - t0)
                    recorder.append(row)
                    good = state
                    stop = any(bool(cb(row, state)) for cb in callbacks)
                    if finish is not None:
                        finished = finished | (finish == done)
                if np.all(frozen | finished):
                    break
    if status == "completed" and frozen.any():
        status = "diverged"
        where = ", ".join(f"run {r} at iteration {t}" for r, t in sorted(diverged_at.items()))
        message = (f"runs {np.flatnonzero(frozen).tolist()} diverged ({where}) and were frozen at their last "
                   f"finite record; the others ran {state.t - first_t} iterations")
    elif status == "completed" and finish is not None and np.all(finished):
        message = f"completed {communications} communications per run (up to iteration {state.t})"
        if short.any():
            message += (f"; runs {np.flatnonzero(short).tolist()} made fewer in the cap of {iterations} "
                        "iterations" if batch else f"; fewer in the cap of {iterations} iterations")
    elif status == "completed" and state.t - first_t < iterations:
        status, message = "stopped", f"stopped by a callback at iteration {state.t}"
    diverged = frozen.copy() if batch else np.asarray(status == "diverged")
    state = state.with_host_tallies()
    return RunResult(
        w=algorithm.output(state), state=state, history=recorder.history(),
        status=status, message=message, config=config, diverged=diverged,
        diverged_at=dict(diverged_at) if batch else {},
    )


class _FiniteWatch:
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


def _split_and_reference(problem, split, reference):
    """Resolve ``split="auto"`` and ``reference="auto"`` (and validate both) for a driver."""
    if split == "auto":
        split = "test" if problem.has_split("test") else None
    elif split is not None and not problem.has_split(split):
        raise ValueError(f"split {split!r} is not available in the dataset")
    if isinstance(reference, str):
        if reference != "auto":
            raise ValueError("reference must be 'auto', an array or None")
        reference = problem.solution() if getattr(problem, "cheap_solution", False) else None
    return split, reference


def _next_true(flags: np.ndarray) -> np.ndarray:
    """``out[j]`` = the first index ``>= j`` where ``flags`` is true (``len(flags)`` if none)."""
    n = flags.shape[0]
    idx = np.where(flags, np.arange(n), n)
    return np.minimum.accumulate(idx[::-1])[::-1] if n else idx


def _merge_runs(keep_new: np.ndarray, new: State, old: State) -> State:
    """Per run: ``new`` where ``keep_new``, else ``old`` (iterates, extras and accounting)."""
    acc = {"communications": np.where(keep_new, new.communications, old.communications)}
    for name in TALLIES:
        a, b = getattr(new, name), getattr(old, name)
        if isinstance(a, np.ndarray) and not isinstance(b, np.ndarray):  # one on the device: both there
            a = B.from_numpy(a, like=b)
        elif isinstance(b, np.ndarray) and not isinstance(a, np.ndarray):
            b = B.from_numpy(b, like=a)
        m = keep_new.reshape(keep_new.shape + (1,) * (a.ndim - keep_new.ndim))
        acc[name] = np.where(m, a, b) if isinstance(a, np.ndarray) else \
            B.namespace(a).where(B.device_constant(m, like=a), a, b)
    extras = {k: select_runs(keep_new, v, old.extras[k]) for k, v in new.extras.items()}
    return new.replace(w=select_runs(keep_new, new.w, old.w), h=select_runs(keep_new, new.h, old.h),
                       extras=extras, **acc)


def _problem_config(problem) -> dict:
    out = {"class": type(problem).__name__, "n_clients": problem.n_clients, "dim": problem.dim}
    for attr in ("alpha", "n_classes"):
        if hasattr(problem, attr):
            out[attr] = getattr(problem, attr)
    out["dataset"] = getattr(problem.dataset, "name", "dataset")
    return out
