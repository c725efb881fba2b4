"""What both drivers do around their loop: starting models, run counts, checks, merging frozen runs, config."""

from __future__ import annotations

import numpy as np

from . import _backend as B
from ._validation import check_seed
from .algorithms.base import TALLIES, State, seeds_and_keys, select_runs
from .problems.capabilities import has_cheap_solution

__all__ = ["initial_models", "default_models", "count_runs", "check_problem", "resume_seed", "contiguous",
           "split_and_reference", "merge_runs", "problem_config"]


def initial_models(problem, seed=0, runs: int | None = None, like=None):
    """The problem's default starting models of :func:`proxfed.run` (shape (d,), or (R, d) with ``runs``).

    Run ``r`` starts at ``problem.initial_point(seed, r)`` for one integer
    seed, or at ``initial_point(seed[r], 0)`` for one seed per run (see
    :meth:`~proxfed.algorithms.Algorithm.coins`). With ``like``, the models
    are moved to its array library, device and dtype.
    """
    w0 = default_models(problem, seed, runs)
    return w0 if like is None else B.from_numpy(B.to_numpy(w0), like=like)


def default_models(problem, seed, runs):
    """The default starting models on the problem's own array library (:func:`initial_models` without ``like``)."""
    if runs is None:
        return problem.initial_point(seed=seeds_and_keys(seed, None)[0][0], run=0)
    seeds, keys = seeds_and_keys(seed, runs)
    points = [problem.initial_point(seed=s, run=r) for s, r in zip(seeds, keys)]
    return B.namespace(*points).stack(points)  # stays in the problem's array library


def count_runs(algorithm, seed, w0):
    """The number of batched runs (None: a single run) from the rule's ``n_runs``, a stacked ``w0`` or a seed list."""
    runs = algorithm.n_runs
    if runs is None and w0 is not None and np.ndim(B.to_numpy(w0)) == 2:
        runs = int(np.shape(w0)[0])
    if runs is None and not isinstance(seed, int):
        runs = len(seed)
    return runs


def check_problem(problem) -> None:
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


def resume_seed(seed, stored):
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


def contiguous(state: State) -> State:
    """``state`` with its NumPy iterates, control variates and extras in C order (copied only where not).

    The runner steps on such states only, and :func:`proxfed.load_state` returns them, so arithmetic whose
    rounding depends on the memory layout sees the same layout in a run and in its resumption.
    """
    def c(a):
        return np.ascontiguousarray(a) if isinstance(a, np.ndarray) and not a.flags.c_contiguous else a

    w, h = c(state.w), c(state.h)
    extras = {k: c(v) for k, v in state.extras.items()}
    if w is state.w and h is state.h and all(extras[k] is v for k, v in state.extras.items()):
        return state
    return state.replace(w=w, h=h, extras=extras)


def split_and_reference(problem, split, reference):
    """Resolve ``split="auto"`` and ``reference="auto"`` (and validate both) for a driver."""
    if split == "auto":
        split = "test" if problem.has_split("test") else None
    elif split is not None and not problem.has_split(split):
        raise ValueError(f"split {split!r} is not available in the dataset")
    if isinstance(reference, str):
        if reference != "auto":
            raise ValueError("reference must be 'auto', an array or None")
        reference = problem.solution() if has_cheap_solution(problem) else None
    return split, reference


def merge_runs(keep_new: np.ndarray, new: State, old: State) -> State:
    """Per run: ``new`` where ``keep_new``, else ``old`` (iterates, extras and accounting)."""
    acc = {"communications": np.where(keep_new, new.communications, old.communications)}
    device = [getattr(s, n) for s in (new, old) for n in TALLIES if not isinstance(getattr(s, n), np.ndarray)]
    if device:  # one on the device: both there
        new, old = new.with_device_tallies(device[0]), old.with_device_tallies(device[0])
    for name in TALLIES:
        a, b = getattr(new, name), getattr(old, name)
        m = keep_new.reshape(keep_new.shape + (1,) * (a.ndim - keep_new.ndim))
        acc[name] = np.where(m, a, b) if isinstance(a, np.ndarray) else \
            B.namespace(a).where(B.device_constant(m, like=a), a, b)
    extras = {k: select_runs(keep_new, v, old.extras[k]) for k, v in new.extras.items()}
    return new.replace(w=select_runs(keep_new, new.w, old.w), h=select_runs(keep_new, new.h, old.h),
                       extras=extras, **acc)


def problem_config(problem) -> dict:
    """The problem's description in a run's config (class, clients, dimension, dataset, alpha or classes)."""
    out = {"class": type(problem).__name__, "n_clients": problem.n_clients, "dim": problem.dim}
    for attr in ("alpha", "n_classes"):
        if hasattr(problem, attr):
            out[attr] = getattr(problem, attr)
    out["dataset"] = getattr(problem.dataset, "name", "dataset")
    return out
