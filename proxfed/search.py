"""The two-stage random search of :mod:`proxfed.tune` (:func:`random_search`), stored after every stage and resumable.

Re-exported by :mod:`proxfed.tune`, which runs it over batched runs (:func:`proxfed.tune.tune_method`).
"""

from __future__ import annotations

import hashlib
import json
import math  # noqa: F401  (random_search's example)
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import _backend as B
from ._stored import StoredResultWarning, read_back_json, write_json_atomic
from .search_space import Param, SearchSpace  # noqa: F401  (Param: random_search's example)

__all__ = ["SearchResult", "random_search", "best_trial", "BatchStore", "SEARCH_FORMAT", "SEARCH_VERSION", "BATCHES_FORMAT"]

SEARCH_FORMAT = "proxfed-search"
SEARCH_VERSION = 1
BATCHES_FORMAT = "proxfed-search-batches"


@dataclass
class SearchResult:
    """Outcome of :func:`random_search` / :func:`tune_method`.

    Attributes
    ----------
    trials : list of dict
        Every evaluated configuration: ``stage`` (1 or 2), ``group``,
        ``params``, ``score`` (``None`` for a failure) and ``status``
        (``"ok"``, ``"diverged"`` or ``"failed"``).
    best : dict
        Group -> the best configuration (``None`` when every one failed).
    best_score : dict
        Group -> its score (``None`` when every one failed).
    evaluated : int
        Configurations evaluated by this call (0 when everything was
        resumed from the file).
    path : pathlib.Path or None
        The JSON file.
    info : dict
        Extra facts recorded by the evaluator (iterations, wall time, ...).
    """

    trials: list
    best: dict
    best_score: dict
    evaluated: int = 0
    path: Path | None = None
    info: dict = field(default_factory=dict)


def _normalize_outcome(value):
    """``(score or None, status)`` from an evaluator's per-configuration result."""
    status = None
    if isinstance(value, tuple):
        value, status = value
    if value is None or not np.isfinite(float(value)):
        return None, status or "failed"
    return float(value), status or "ok"


def best_trial(trials, group, maximize: bool = True, admissible=None):
    """The best successful configuration of ``group`` among ``trials``, and its score.

    Parameters
    ----------
    trials : list of dict
        :attr:`SearchResult.trials`.
    group : str
    maximize : bool
    admissible : callable, optional
        ``admissible(params) -> bool`` restricts the choice (e.g. a cap on the
        stepsize); the search itself is unchanged.

    Returns
    -------
    (dict, float) or (None, None)
        The earliest of the best trials, or ``(None, None)`` when none succeeded
        (or none is admissible).
    """
    ok = [t for t in trials if t["group"] == group and t["score"] is not None
          and (admissible is None or admissible(t["params"]))]
    if not ok:
        return None, None
    pick = max if maximize else min
    t = pick(ok, key=lambda t: t["score"])
    return dict(t["params"]), t["score"]


def _roundtrip(obj):
    return json.loads(json.dumps(obj))


def random_search(
    evaluate: Callable,
    space: SearchSpace,
    *,
    n_stage1: int = 16,
    n_stage2: int = 8,
    narrow: float = 0.25,
    groups: Sequence[str] = ("all",),
    seed: int = 0,
    maximize: bool = True,
    path=None,
    key: dict | None = None,
    echo: Callable | None = None,
) -> SearchResult:
    """Two-stage random search, several groups side by side, one evaluation call per stage.

    Protocol, exactly:

    1. Stage 1 draws ``n_stage1`` configurations from ``space`` with the
       generator ``rng(seed, 1)`` (shared by all groups) and evaluates all
       ``(group, configuration)`` pairs with **one** call of ``evaluate``.
    2. For every group with at least one successful configuration, stage 2
       draws ``n_stage2`` configurations from ``space.narrowed(best, narrow)``
       with ``rng(seed, 2, g)`` (``g`` the group's index) and all groups are
       evaluated with one more call.
    3. A group's winner is its best successful configuration over both
       stages (highest score if ``maximize``); failures (score ``None``,
       NaN or inf) are recorded and never win.

    With ``path``, the search is written to that JSON file after every stage
    and, when the file already holds a stage of the same search (same
    ``key``, space, sizes, seed and groups), that stage is read back instead
    of evaluated. A file of a different search is overwritten.

    Parameters
    ----------
    evaluate : callable
        ``evaluate(batch) -> scores`` with ``batch`` a list of
        ``(group, params)`` pairs; returns one score per pair (a float,
        ``None``/NaN for a failure, or a ``(score, status)`` tuple).
    space : SearchSpace
    n_stage1, n_stage2 : int
        Configurations per stage (``n_stage2 = 0`` skips stage 2).
    narrow : float in (0, 1]
        Width of the stage-2 box relative to the stage-1 box (log space).
    groups : sequence of str
        Independent searches evaluated side by side (e.g. sparsities).
    seed : int
    maximize : bool
    path : path-like, optional
        The JSON file of the search. A stored search with the same header is
        resumed; a damaged file (truncated JSON, malformed trials) is
        recomputed with a :class:`~proxfed._stored.StoredResultWarning`.
    key : dict, optional
        JSON-serializable facts identifying the search (problem, method,
        budget); a file with another key is not reused.
    echo : callable, optional
        Progress messages (e.g. ``print``).

    Returns
    -------
    SearchResult

    Examples
    --------
    >>> space = SearchSpace((Param("x", 1e-3, 1e3),))
    >>> res = random_search(lambda batch: [-abs(math.log10(c["x"])) for _, c in batch], space,
    ...                     n_stage1=8, n_stage2=8, seed=0)
    >>> 0.1 < res.best["all"]["x"] < 10
    True
    """
    if n_stage1 < 1 or n_stage2 < 0:
        raise ValueError(f"need n_stage1 >= 1 and n_stage2 >= 0, got {n_stage1}, {n_stage2}")
    if not 0 < narrow <= 1:
        raise ValueError(f"narrow must be in (0, 1], got {narrow}")
    groups = [str(g) for g in groups]
    if not groups or len(set(groups)) != len(groups):
        raise ValueError(f"groups must be non-empty and distinct, got {groups}")
    say = echo or (lambda *_: None)
    header = _roundtrip({
        "format": SEARCH_FORMAT, "version": SEARCH_VERSION, "key": key or {}, "space": space.to_json(),
        "settings": {"n_stage1": int(n_stage1), "n_stage2": int(n_stage2), "narrow": float(narrow),
                     "seed": int(seed), "maximize": bool(maximize), "groups": groups},
    })
    path = None if path is None else Path(path)
    stored = _stored_trials(path, header, say)
    trials: list = []
    evaluated = 0

    def save(complete):
        if path is None:
            return
        best = {g: best_trial(trials, g, maximize) for g in groups}
        doc = dict(header, trials=trials, best={g: b for g, (b, _) in best.items()},
                   best_score={g: s for g, (_, s) in best.items()}, complete=complete)
        write_json_atomic(path, doc, indent=1, convert=False)

    def run_stage(stage, batch):
        nonlocal evaluated
        batch = [(g, _roundtrip(c)) for g, c in batch]
        old = [t for t in stored if t.get("stage") == stage]
        if len(old) == len(batch) and all(t["group"] == g and t["params"] == c for t, (g, c) in zip(old, batch)):
            say(f"  stage {stage}: {len(batch)} configurations read back from {path.name}")
            trials.extend(old)
            return
        if not batch:
            return
        say(f"  stage {stage}: evaluating {len(batch)} configurations")
        outcomes = list(evaluate(batch))
        if len(outcomes) != len(batch):
            raise ValueError(f"evaluate returned {len(outcomes)} scores for {len(batch)} configurations")
        evaluated += len(batch)
        for (g, c), out in zip(batch, outcomes):
            score, status = _normalize_outcome(out)
            trials.append({"stage": stage, "group": g, "params": c, "score": score, "status": status})
        save(False)

    stage1 = space.sample(B.rng(seed, 1), n_stage1)
    run_stage(1, [(g, c) for g in groups for c in stage1])
    if n_stage2:
        batch = []
        for gi, g in enumerate(groups):
            best, _ = best_trial(trials, g, maximize)
            if best is not None:
                batch += [(g, c) for c in space.narrowed(best, narrow).sample(B.rng(seed, 2, gi), n_stage2)]
        run_stage(2, batch)
    save(True)
    best = {g: best_trial(trials, g, maximize) for g in groups}
    return SearchResult(trials=trials, best={g: b for g, (b, _) in best.items()},
                        best_score={g: s for g, (_, s) in best.items()}, evaluated=evaluated, path=path)


def _stored_trials(path, header: dict, say) -> list:
    """The trials stored in ``path`` by the same search (``header``), else none.

    A damaged file (truncated JSON, malformed trials) gives none, with a
    :class:`~proxfed._stored.StoredResultWarning`; a file of another search, none.
    """
    if path is None or not path.is_file():
        return []
    doc = read_back_json(path) or {}  # (damaged: a warning, and the search starts afresh)
    if doc and all(doc.get(k) == v for k, v in header.items()):
        stored = doc.get("trials", [])
        if not _valid_trials(stored):
            # (stacklevel: the caller of random_search)
            warnings.warn(f"{path}: damaged stored trials; recomputing them", StoredResultWarning, stacklevel=3)
            return []
        return stored
    if doc:
        say(f"  {path.name}: a different search was stored there; starting afresh")
    return []


def _valid_trials(trials) -> bool:
    """Whether stored trials are a list of ``{"stage", "group", "params", "score", "status"}`` records."""
    keys = {"stage", "group", "params", "score", "status"}
    return isinstance(trials, list) and all(
        isinstance(t, dict) and keys <= t.keys() and isinstance(t["params"], dict)
        and (t["score"] is None or isinstance(t["score"], (int, float))) for t in trials)


class BatchStore:
    """Outcomes of a search's batched runs, stored as each finishes: an interrupted stage resumes batch by batch.

    :func:`random_search` stores a stage once all of it is evaluated, and a stage of slow runs can
    outlast a sitting. :func:`proxfed.tune.tune_method` keeps each batched run's outcomes here, in
    ``<search>.batches.json`` beside the search's file, under the search's key and the batch's
    configurations, and reads them back when the same stage is evaluated again. The stage's
    configurations and their grouping into batches are seeded, so the batches are the same and a
    resumed search equals an uninterrupted one bit for bit. :meth:`remove` deletes the file once the
    search is stored complete. A damaged file is reported (:class:`~proxfed._stored.StoredResultWarning`)
    and its batches run again.

    Parameters
    ----------
    path : path-like or None
        The file (None: nothing is stored).
    key : dict
        What identifies the search (a file of another search is ignored).
    """

    def __init__(self, path, key: dict):
        self.path = None if path is None else Path(path)
        self.key = _roundtrip(key)
        self.batches: dict = {}
        if self.path is not None and self.path.is_file():
            doc = read_back_json(self.path) or {}
            if doc.get("format") == BATCHES_FORMAT and doc.get("key") == self.key and isinstance(
                    doc.get("batches"), dict):
                self.batches = doc["batches"]

    @staticmethod
    def _digest(batch) -> str:
        return hashlib.sha256(json.dumps(_roundtrip(batch), sort_keys=True).encode()).hexdigest()[:32]

    def get(self, batch, size: int):
        """The stored ``(outcomes, info)`` of ``batch`` (a JSON-able description), or None.

        Outcomes are scores, with ``(None, "diverged")`` for a diverged run; a stored entry that is
        not ``size`` scores (or None) is ignored.
        """
        entry = self.batches.get(self._digest(batch))
        if not isinstance(entry, dict) or not isinstance(entry.get("outcomes"), list):
            return None
        outcomes = entry["outcomes"]
        if len(outcomes) != size or not all(o is None or isinstance(o, (int, float)) for o in outcomes):
            return None
        return [(None, "diverged") if o is None else float(o) for o in outcomes], dict(entry.get("info") or {})

    def put(self, batch, outcomes, info: dict) -> None:
        """Store ``batch``'s outcomes (scores or ``(None, "diverged")``) and ``info``, atomically."""
        if self.path is None:
            return
        self.batches[self._digest(batch)] = {
            "outcomes": [None if isinstance(o, tuple) else float(o) for o in outcomes], "info": _roundtrip(info)}
        write_json_atomic(self.path, {"format": BATCHES_FORMAT, "key": self.key, "batches": self.batches},
                          indent=1, convert=False)

    def remove(self) -> None:
        """Delete the file (the search it served is stored complete)."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
