"""The driver loop: coins, evaluation, accounting, history, stopping and saving.

The module is named ``runner`` so that ``proxfed.run`` can be the function.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import _backend as B
from ._stored import jsonable
from ._validation import check_int, check_positive_int, check_seed, is_int
from .algorithms.base import TALLIES, Algorithm, State, seeds_and_keys, select_runs
from .prox import nan_passes_through

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


#: ``json.dumps`` default hook: arrays and NumPy scalars as JSON values, anything else as its repr.
_jsonable = functools.partial(jsonable, other=repr)


#: Arrays every state file holds (:func:`save_state`); ``seed``, ``stretch_t``/``stretch_w`` and
#: ``extra_<name>`` are optional.
_STATE_ARRAYS = ("w", "h", "t", "communications", "bits_up", "bits_down", "values_up", "upload_nnz")


def save_state(state: State, path) -> None:
    """Save a state's arrays to an ``.npz`` file (host copies).

    Besides the iterates, control variates, iteration and accounting, the file
    keeps the state's ``seed`` and ``stretch`` (see :class:`State`) and its
    ``extras``, so that :func:`load_state` gives back a state from which
    :func:`run` continues the same trajectory.
    """
    arrays = {"w": B.to_numpy(state.w), "h": B.to_numpy(state.h), "t": np.asarray(state.t)}
    state = state.with_host_tallies()
    for name in ("communications", *TALLIES):
        arrays[name] = np.asarray(getattr(state, name))
    if state.seed is not None:
        arrays["seed"] = np.asarray(state.seed, dtype=np.int64)
    if state.stretch is not None:
        arrays["stretch_t"] = np.asarray(state.stretch[0], dtype=np.int64)
        arrays["stretch_w"] = B.to_numpy(state.stretch[1])
    for key, value in state.extras.items():
        arrays[f"extra_{key}"] = B.to_numpy(value)
    np.savez_compressed(path, **arrays)


def load_state(path, like=None) -> State:
    """Load a state written by :func:`save_state` (or :meth:`RunResult.save`), onto ``like``'s library and device.

    Parameters
    ----------
    path : str or path-like
        A ``state.npz`` file.
    like : array, optional
        The arrays are moved to its library, device and floating dtype
        (default: NumPy arrays as saved).

    Returns
    -------
    State
        Its arrays C-contiguous, whatever their layout when saved, so that a
        run resumed from it computes exactly what the uninterrupted run did.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    proxfed.data.DataFormatError
        (a ``ValueError``) If the file is truncated or corrupt, is not an
        ``.npz`` archive, lacks arrays or holds arrays of the wrong type or
        shape; the message names the file and what is wrong.
    """
    import zipfile
    import zlib

    from .data._io import DataFormatError

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"state file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise DataFormatError(f"{path}: not a state file (a single .npy array, not an .npz archive)")
        with data:
            arrays = {k: data[k] for k in data.files}  # reads (and CRC-checks) every member now
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        if isinstance(exc, DataFormatError):
            raise
        raise DataFormatError(f"{path}: not a readable state file: truncated or corrupt ({type(exc).__name__}: "
                              f"{exc})") from None
    missing = [k for k in _STATE_ARRAYS if k not in arrays]
    if missing:
        raise DataFormatError(f"{path}: not a state file: missing arrays {missing}")

    def fail(what):
        raise DataFormatError(f"{path}: {what}")

    w, h, t = arrays["w"], arrays["h"], arrays["t"]
    if w.dtype.kind != "f" or w.ndim < 2:
        fail(f"w must be a floating array of shape (..., N, d), got {w.dtype} of shape {w.shape}")
    if h.shape != w.shape or h.dtype != w.dtype:
        fail(f"h must have the shape and dtype of w {w.shape} {w.dtype}, got {h.shape} {h.dtype}")
    if t.shape != () or t.dtype.kind not in "iu" or t < 0:
        fail(f"t must be a non-negative integer, got {t!r}")
    batch, N = w.shape[:-2], w.shape[-2]
    for name in _STATE_ARRAYS[3:]:
        want = batch if name == "communications" else batch + (N,)
        a = arrays[name]
        if a.dtype.kind not in "iu" or a.shape != want:
            fail(f"{name} must be an integer array of shape {want}, got {a.dtype} of shape {a.shape}")
    seed = None
    if "seed" in arrays:
        a = arrays["seed"]
        if a.dtype.kind not in "iu" or a.ndim > 1 or np.any(a < 0):
            fail(f"seed must be a non-negative integer or a 1-d array of them, got {a!r}")
        seed = int(a) if a.ndim == 0 else tuple(int(v) for v in a)
    stretch = None
    if "stretch_t" in arrays or "stretch_w" in arrays:
        st, sw = arrays.get("stretch_t"), arrays.get("stretch_w")
        if st is None or sw is None or st.shape != () or st.dtype.kind not in "iu" or sw.shape != w.shape:
            fail("stretch_t and stretch_w must be an integer and an array of the shape of w")
        stretch = (int(st), np.ascontiguousarray(sw))
    put = np.ascontiguousarray if like is None else (lambda a: B.from_numpy(np.ascontiguousarray(a), like=like))
    extras = {k[len("extra_"):]: put(v) for k, v in arrays.items() if k.startswith("extra_")}
    if like is not None and stretch is not None:  # (jumps run on NumPy arrays only)
        moved = put(stretch[1])
        stretch = (stretch[0], moved) if isinstance(moved, np.ndarray) else None
    return State(
        w=put(w), h=put(h), t=int(t),
        communications=arrays["communications"], bits_up=arrays["bits_up"], bits_down=arrays["bits_down"],
        values_up=arrays["values_up"], upload_nnz=arrays["upload_nnz"], extras=extras, seed=seed, stretch=stretch,
    )


#: Fewest iterations between two records of :func:`run` by default (a record costs 0.3-1.5 local steps).
MIN_RECORD_SPACING = 16


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
    return c


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
        return problem.initial_point(seed=seeds_and_keys(seed, None)[0][0], run=0)
    seeds, keys = seeds_and_keys(seed, runs)
    points = [problem.initial_point(seed=s, run=r) for s, r in zip(seeds, keys)]
    return B.namespace(*points).stack(points)  # stays in the problem's array library


def _metric_values(value, batch: tuple) -> np.ndarray:
    """``evaluate``'s result as float64 of the batch shape: real numbers, one per run.

    A scalar for a batch is refused rather than broadcast: it would record one
    number for every run, which hides an ``evaluate`` that looks at one run only.
    """
    from ._validation import is_real

    if is_real(value):
        a = np.asarray(value, dtype=np.float64)
    elif hasattr(value, "dtype") and hasattr(value, "shape"):
        a = np.asarray(B.to_numpy(value))
        if a.dtype.kind not in "iuf":
            raise TypeError(f"evaluate must return real numbers, got an array of dtype {a.dtype}")
        a = a.astype(np.float64)
    else:
        raise TypeError(f"evaluate must return a real number (or an array, one per run), got "
                        f"{type(value).__name__} {value!r:.60}")
    if a.shape != batch:
        want = "a scalar" if not batch else f"one value per run, shape {batch}"
        raise ValueError(f"evaluate must return {want}, got shape {a.shape}")
    return a


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
            row["metric"] = _metric_values(self.evaluate(w_out), state.batch_shape)
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
) -> RunResult:
    """Run ``algorithm`` on ``problem`` for ``iterations`` local steps.

    Parameters
    ----------
    algorithm : Algorithm
        An update rule from :mod:`proxfed.algorithms`.
    problem : FederatedProblem
    iterations : int >= 1
        Number of iterations (local steps of every client) to run.
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
        always recorded.
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
    _check_problem(problem)
    check_positive_int(iterations, "iterations")
    iterations = int(iterations)
    seed = None if seed is None else check_seed(seed)
    if every is None:
        every = max(MIN_RECORD_SPACING, iterations // 200)
    check_positive_int(every, "every")
    split, reference = _split_and_reference(problem, split, reference)
    if record_at is not None and len(record_at):
        record_at = check_int(list(record_at) if not hasattr(record_at, "dtype") else record_at, "record_at",
                              per_run=True)  # integers only (2.5 is not truncated to 2)
    extra = np.unique(np.asarray([] if record_at is None else record_at, dtype=np.int64))
    if extra.size and (extra[0] < 1 or extra[-1] > iterations):
        raise ValueError(f"record_at must lie in [1, {iterations}], got {extra[0]}..{extra[-1]}")
    if communications is not None:
        check_positive_int(communications, "communications", hint=" or None")

    if state is None:
        seed = 0 if seed is None else seed
        runs = algorithm.n_runs
        if runs is None and w0 is not None and np.ndim(B.to_numpy(w0)) == 2:
            runs = int(np.shape(w0)[0])
        if runs is None and not isinstance(seed, int):
            runs = len(seed)
        if w0 is None:
            w0 = _initial_models(problem, seed, runs)
        state = algorithm.init(problem, w0)
    else:
        if w0 is not None:
            raise ValueError("give w0 or state, not both (a resumed run starts from state.w)")
        algorithm.check_state(problem, state)
        seed = _resume_seed(seed, state.seed)
        state = _contiguous(state)
    batch = state.batch_shape
    if seed is not None and not isinstance(seed, int) and len(seed) != (batch[0] if batch else 1):
        raise ValueError(f"seed has {len(seed)} entries for {batch[0] if batch else 1} runs")
    runs = batch[0] if batch else None
    if coins is None:  # (one coin more than needed: whether a communication follows the last iteration)
        coins = algorithm.coins(iterations + 1, seed=seed, runs=runs, start=state.t)
    coins = _check_coins(coins, iterations, batch)
    coin_after = bool(coins[..., iterations].any()) if coins.shape[-1] > iterations else False
    coins = coins[..., :iterations]
    asked = extra
    # finish[r] = the iteration count (of this call) of run r's last step: its C-th communication, or the cap
    finish, short = None, np.zeros(0, bool)
    if communications is not None:
        counts = np.cumsum(coins.reshape(-1, iterations), axis=1, dtype=np.int64)
        short = (counts[:, -1] if iterations else np.zeros(counts.shape[0], np.int64)) < communications
        finish = np.where(short, iterations, np.argmax(counts >= communications, axis=1) + 1).reshape(batch)
        extra = np.union1d(extra, np.ravel(finish))
    # next_record[j] = the first recorded iteration count > j (this call's counts j with state.t + j a
    # multiple of `every`, the end, record_at)
    on_grid = np.arange(every - state.t % every, iterations + 1, every)
    grid = np.union1d(on_grid, np.append(extra, iterations))
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
        "seed": seed if isinstance(seed, int) else list(seed),
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

    # (a diverging run's NaN passes through TopK to its iterates, where it is caught below)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"), nan_passes_through():
        row = recorder.compute(state, 0.0)
        if not np.all(np.isfinite(row["loss"])):
            raise ValueError("the loss at the starting point is not finite; check w0 and the data")
        recorder.append(row)
        good = state
        stop = any(bool(cb(row, state)) for cb in callbacks)
        first_t = state.t
        any_coin = coins.reshape(-1, iterations).any(axis=0)
        next_coin = _next_true(any_coin)
        coin_next = np.append(any_coin[1:], coin_after)  # a communication at the following iteration
        jump = jumps and algorithm.can_jump(problem, state)
        # with jumps, `start` is the state where the current coin-free stretch began: every iterate of the
        # stretch is computed from it in closed form (up to the next coin or record), so the trajectory
        # does not depend on where records fall or where a run was interrupted
        start = _stretch_start(algorithm, problem, state) if jump else None
        j = 0
        with tqdm(total=iterations, disable=not progress, desc=algorithm.name, leave=False) as bar:
            while j < iterations:
                if stop:
                    break
                # explicit: a communication, or a stretch of a single step (between two communications);
                # otherwise the closed form from the stretch's start up to the next coin or record
                explicit = not jump or any_coin[j] or (start.t == state.t and coin_next[j])
                if explicit:
                    k = 1
                    coin = coins[..., j]
                    new = algorithm.step(state, problem, coin if batch else bool(coin))
                    if new.stretch is not None:
                        new = new.replace(stretch=None)
                else:
                    k = min(next_coin[j], next_record[j]) - j
                    new = algorithm.local_phase(start, problem, first_t + j + k - start.t)
                    new = new.replace(stretch=(start.t, start.w))
                new = _contiguous(new)
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
                if jump and explicit:
                    start = state  # a stretch begins after a communication (or a single-step stretch)
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
    state = state.with_host_tallies().replace(seed=seed)  # the seed a resumed run must use
    return RunResult(
        w=algorithm.output(state), state=state, history=recorder.history(),
        status=status, message=message, config=config, diverged=diverged,
        diverged_at=dict(diverged_at) if batch else {},
    )


def _check_problem(problem) -> None:
    """A TypeError, before any work, for something that is not a federated problem (e.g. a dataset)."""
    from .data.dataset import FederatedDataset

    if isinstance(problem, FederatedDataset):
        raise TypeError("problem must be a federated problem, got a FederatedDataset: wrap it in one, e.g. "
                        "proxfed.problems.Ridge(dataset) or proxfed.problems.SoftmaxRegression(dataset)")
    missing = [a for a in ("n_clients", "dim", "grad", "objective", "has_split", "initial_point")
               if not hasattr(problem, a)]
    if missing:
        raise TypeError(f"problem must be a federated problem (e.g. proxfed.problems.Ridge), got "
                        f"{type(problem).__name__} without {', '.join(missing)}")


def _resume_seed(seed, stored):
    """The seed of a resumed run: ``seed`` if given (it must be the state's), else the state's (else 0)."""
    if stored is None:
        return 0 if seed is None else seed
    stored = check_seed(stored, "state.seed")
    if seed is None:
        return stored
    if seed != stored:
        raise ValueError(f"seed={seed!r} differs from the seed the state was run with ({stored!r}); a resumed "
                         "run draws the same coins: leave seed out, or pass the same one")
    return seed


def _contiguous(state: State) -> State:
    """``state`` with its NumPy iterates, control variates and extras in C order (copied only where not).

    The runner steps on such states only, and :func:`load_state` returns them, so arithmetic whose
    rounding depends on the memory layout sees the same layout in a run and in its resumption.
    """
    def c(a):
        return np.ascontiguousarray(a) if isinstance(a, np.ndarray) and not a.flags.c_contiguous else a

    w, h = c(state.w), c(state.h)
    extras = {k: c(v) for k, v in state.extras.items()}
    if w is state.w and h is state.h and all(extras[k] is v for k, v in state.extras.items()):
        return state
    return state.replace(w=w, h=h, extras=extras)


def _stretch_start(algorithm, problem, state: State) -> State:
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
