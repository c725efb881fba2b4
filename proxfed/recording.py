"""What a driver records: history rows (:class:`Recorder`) and the outcome of a run (:class:`RunResult`)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import _backend as B
from ._stored import jsonable
from .algorithms.base import TALLIES, Algorithm, State
from .run_files import save_state, staged_directory

__all__ = ["RunResult", "Recorder"]


@dataclass
class RunResult:
    """Outcome of :func:`proxfed.run` (and :func:`proxfed.run_rounds`).

    Attributes
    ----------
    w : array, shape (d,) or (R, d)
        The final model: the algorithm's final prox (e.g. TopK) of the client average.
    state : State
        The last state (the last finite one if the run diverged); pass it
        back to :func:`proxfed.run` to continue.
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
        with staged_directory(path) as tmp:
            (tmp / "config.json").write_text(json.dumps(self.config, indent=2, default=_jsonable))
            np.savez_compressed(tmp / "history.npz", **self.history)
            (tmp / "summary.json").write_text(json.dumps(self.summary(), indent=2, default=_jsonable))
            save_state(self.state, tmp / "state.npz")
        return path


#: ``json.dumps`` default hook: arrays and NumPy scalars as JSON values, anything else as its repr.
_jsonable = functools.partial(jsonable, other=repr)


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


class Recorder:
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
            "output_norm": host(xp.linalg.vector_norm(w_out, axis=-1)),
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

