"""Two-stage random search over algorithm hyperparameters, on a validation split, saved and resumable.

The paper tunes the stepsize ``gamma`` and the mean number of local steps
``1/p`` of every method "by a two-stage random search"; this module does
that, and also tunes RandProx-l1's weight ``lam``:

1. **Stage 1 (wide).** ``n_stage1`` configurations drawn log-uniformly from
   a wide :class:`SearchSpace`.
2. **Stage 2 (narrow).** ``n_stage2`` configurations drawn log-uniformly from
   a box around the best stage-1 configuration, ``narrow`` times as wide (in
   log space) and clipped to the wide box.

The best configuration over both stages wins. Several independent searches
(``groups``, e.g. one per sparsity) run side by side, and **every stage of
every group is evaluated by one call** to the evaluation function, which
:func:`tune_method` implements as batched runs (the hyperparameters as
``(R,)`` arrays): one :func:`proxfed.run_rounds` batch, or :func:`proxfed.run`
sub-batches of similar horizons (:func:`horizon_groups`). Configurations whose run diverges
(frozen in the batch) count as failures (score ``None``), never as errors.

Scores come from the **validation** split only (:func:`tune_method` refuses
``split="test"``); for data without one, :func:`holdout_split` holds out a
seeded part of every client's training rows. Each search is written to a
JSON file after every stage (all configurations with their scores and the
chosen ones); running the same search again with the same file reuses the
stored stages instead of recomputing them.
"""

from __future__ import annotations

import json
import math
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import _backend as B
from ._stored import StoredResultWarning, read_back_json, write_json_atomic
from .algorithms import registry as R
from .data.dataset import FederatedDataset, Split

__all__ = [
    "Param",
    "SearchSpace",
    "SearchResult",
    "random_search",
    "TUNABLE_METHODS",
    "method_space",
    "make_algorithm",
    "horizon",
    "horizon_groups",
    "tune_method",
    "holdout_split",
    "diverged_runs",
]

SEARCH_FORMAT = "proxfed-search"
SEARCH_VERSION = 1
#: How ``tune_method`` scores a run, part of every search's key, so that a search stored under an
#: earlier rule is not reused: the record at the run's own horizon (``run`` driver), the end
#: (``run_rounds``).
SCORED_AT = "horizon"
_HOLDOUT_STREAM = 6  # RNG stream of holdout_split (distinct from coins = 0 and init = 1)

#: Methods :func:`make_algorithm` builds, with their hyperparameters: the tunable methods of the
#: registry (:data:`proxfed.algorithms.registry.METHODS`).
TUNABLE_METHODS = {n: s.hyperparameter_names for n, s in R.METHODS.items() if s.tunable}


# ---------------------------------------------------------------------------------------------
# search spaces
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """One hyperparameter: a range ``[low, high]``, sampled uniformly in log space (or linearly).

    Parameters
    ----------
    name : str
    low, high : float
        Bounds, ``low <= high`` (``low > 0`` when ``log``).
    log : bool
        Sample ``exp(U(log low, log high))`` (default) or ``U(low, high)``.
    integer : bool
        Round to the nearest integer inside the range (e.g. local steps).

    Examples
    --------
    >>> Param("p", 0.01, 1.0).sample(0.5)
    0.1
    >>> Param("local_steps", 1, 100, integer=True).sample(0.5)
    10
    """

    name: str
    low: float
    high: float
    log: bool = True
    integer: bool = False

    def __post_init__(self):
        lo, hi = float(self.low), float(self.high)
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
            raise ValueError(f"{self.name}: need finite low <= high, got [{self.low}, {self.high}]")
        if self.log and lo <= 0:
            raise ValueError(f"{self.name}: a log-uniform range needs low > 0, got {self.low}")
        if self.integer and math.floor(hi) < math.ceil(lo):
            raise ValueError(f"{self.name}: no integer in [{self.low}, {self.high}]")

    def _to_unit(self, value: float) -> float:
        lo, hi = (math.log(self.low), math.log(self.high)) if self.log else (self.low, self.high)
        v = math.log(value) if self.log else value
        return 0.5 if hi == lo else (v - lo) / (hi - lo)

    def sample(self, u: float):
        """The value at quantile ``u`` in [0, 1] of the (log-)uniform range (rounded if integer)."""
        if self.log:
            v = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            v = self.low + u * (self.high - self.low)
        v = min(max(v, self.low), self.high)
        if self.integer:
            return int(min(max(round(v), math.ceil(self.low)), math.floor(self.high)))
        return float(round(v, 12 - int(math.floor(math.log10(abs(v)))) if v else 0))

    def narrowed(self, center: float, factor: float) -> "Param":
        """A range ``factor`` times as wide (in log space when ``log``) around ``center``, clipped to this one."""
        if not 0 < factor <= 1:
            raise ValueError(f"factor must be in (0, 1], got {factor}")
        c = self._to_unit(float(center))
        lo_u, hi_u = max(0.0, c - factor / 2), min(1.0, c + factor / 2)
        lo, hi = self.sample(lo_u), self.sample(hi_u)
        if self.integer and lo == hi:
            return Param(self.name, lo, hi, self.log, True)
        return Param(self.name, lo, hi, self.log, self.integer)

    def to_json(self) -> dict:
        """A JSON-serializable description."""
        return {"name": self.name, "low": self.low, "high": self.high, "log": self.log, "integer": self.integer}


@dataclass(frozen=True)
class SearchSpace:
    """A box of hyperparameters (:class:`Param`), sampled independently per coordinate.

    Examples
    --------
    >>> import numpy as np
    >>> space = SearchSpace((Param("gamma", 1e-3, 1e-1), Param("p", 0.05, 1.0)))
    >>> configs = space.sample(np.random.default_rng(0), 3)
    >>> len(configs), sorted(configs[0])
    (3, ['gamma', 'p'])
    """

    params: tuple

    def __post_init__(self):
        params = tuple(self.params)
        if not params or not all(isinstance(p, Param) for p in params):
            raise TypeError("params must be a non-empty sequence of Param")
        names = [p.name for p in params]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate parameter names: {names}")
        object.__setattr__(self, "params", params)

    @property
    def names(self) -> tuple:
        """The parameter names, in order."""
        return tuple(p.name for p in self.params)

    def sample(self, rng: np.random.Generator, n: int) -> list:
        """``n`` configurations (dicts name -> value) drawn with ``rng``."""
        u = rng.random((int(n), len(self.params)))
        return [{p.name: p.sample(float(u[i, j])) for j, p in enumerate(self.params)} for i in range(int(n))]

    def narrowed(self, center: dict, factor: float) -> "SearchSpace":
        """Every range narrowed by ``factor`` around ``center`` (see :meth:`Param.narrowed`)."""
        return SearchSpace(tuple(p.narrowed(center[p.name], factor) for p in self.params))

    def to_json(self) -> list:
        """A JSON-serializable description."""
        return [p.to_json() for p in self.params]


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


def _best(trials, group, maximize):
    ok = [t for t in trials if t["group"] == group and t["score"] is not None]
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
    stored = []
    path = None if path is None else Path(path)
    if path is not None and path.is_file():
        doc = read_back_json(path) or {}  # (damaged: a warning, and the search starts afresh)
        if doc and all(doc.get(k) == v for k, v in header.items()):
            stored = doc.get("trials", [])
            if not _valid_trials(stored):
                warnings.warn(f"{path}: damaged stored trials; recomputing them", StoredResultWarning, stacklevel=2)
                stored = []
        elif doc:
            say(f"  {path.name}: a different search was stored there; starting afresh")
    trials: list = []
    evaluated = 0

    def save(complete):
        if path is None:
            return
        best = {g: _best(trials, g, maximize) for g in groups}
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
            best, _ = _best(trials, g, maximize)
            if best is not None:
                batch += [(g, c) for c in space.narrowed(best, narrow).sample(B.rng(seed, 2, gi), n_stage2)]
        run_stage(2, batch)
    save(True)
    best = {g: _best(trials, g, maximize) for g in groups}
    return SearchResult(trials=trials, best={g: b for g, (b, _) in best.items()},
                        best_score={g: s for g, (_, s) in best.items()}, evaluated=evaluated, path=path)


def _valid_trials(trials) -> bool:
    """Whether stored trials are a list of ``{"stage", "group", "params", "score", "status"}`` records."""
    keys = {"stage", "group", "params", "score", "status"}
    return isinstance(trials, list) and all(
        isinstance(t, dict) and keys <= t.keys() and isinstance(t["params"], dict)
        and (t["score"] is None or isinstance(t["score"], (int, float))) for t in trials)


# ---------------------------------------------------------------------------------------------
# methods
# ---------------------------------------------------------------------------------------------
def make_algorithm(method: str, params: dict, k=None):
    """Build ``method`` from hyperparameters (scalars, or ``(R,)`` arrays for a batched run).

    Parameters
    ----------
    method : str
        A key of :data:`TUNABLE_METHODS`.
    params : dict
        ``gamma`` and ``p`` (Algorithm-1 methods), plus ``lam`` for
        ``randprox_l1``; ``gamma`` and ``local_steps`` for ``fedht``/``fediht``.
    k : int or (R,) int array, optional
        Kept entries of TopK (output and the method's placements); required
        for every method but ``proxskip``. An array whose entries are all
        equal is passed as one integer (TopK then uses a partial selection).

    Returns
    -------
    Algorithm

    Examples
    --------
    >>> make_algorithm("fediht", {"gamma": [0.1, 0.2], "local_steps": [5, 10]}, k=3).name
    'fediht'
    """
    return _tunable(method).build(params, k)


def _tunable(method: str) -> "R.MethodSpec":
    if method not in TUNABLE_METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(TUNABLE_METHODS)}")
    return R.METHODS[method]


_L_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _smoothness(problem) -> float:
    """``L = max_i L_i``, computed once per problem object."""
    from .theory import constants

    try:
        return _L_CACHE[problem]
    except (KeyError, TypeError):
        pass
    L = constants(problem)[0]
    try:
        _L_CACHE[problem] = L
    except TypeError:  # pragma: no cover - an unhashable problem
        pass
    return L


def method_space(method: str, problem, *, gamma_range=R.GAMMA_RANGE, p_range=R.P_RANGE,
                 lam_range=R.LAM_RANGE) -> SearchSpace:
    """The wide (stage-1) search space of ``method`` on ``problem``, in absolute units.

    The method's hyperparameters come from the registry
    (:attr:`proxfed.algorithms.registry.MethodSpec.hyperparameters`):

    * ``gamma`` log-uniform in ``gamma_range / L`` with ``L = max_i L_i``
      (:func:`proxfed.theory.constants`);
    * ``p`` log-uniform in ``p_range`` (random-coin methods), or
      ``local_steps`` log-uniform over the integers in
      ``[1/p_high, 1/p_low]`` (FedHT, FedIHT: ``p = 1/local_steps``);
    * ``lam`` (RandProx-l1) log-uniform in ``lam_range * lam_max`` with
      ``lam_max = ||grad F(0)||_inf`` (:func:`proxfed.algorithms.registry.lam_max`),
      the smallest weight whose l1 solution is 0.
    """
    spec = _tunable(method)
    L = _smoothness(problem)
    params = []
    for h in spec.hyperparameters:
        if h.name == "gamma":
            params.append(Param("gamma", gamma_range[0] / L, gamma_range[1] / L))
        elif h.name == "local_steps":
            params.append(Param("local_steps", max(1, round(1 / p_range[1])), max(1, round(1 / p_range[0])),
                                integer=True))
        elif h.name == "p":
            params.append(Param("p", p_range[0], p_range[1]))
        elif h.name == "lam":
            scale = R.lam_max(problem)
            params.append(Param("lam", lam_range[0] * scale, lam_range[1] * scale))
        else:  # pragma: no cover - a registry entry with a hyperparameter tune does not know
            raise ValueError(f"{method}: no search range for {h.name!r}")
    return SearchSpace(tuple(params))


def horizon(params: dict, communications: int) -> int:
    """Local steps for ``communications`` communications (expected, for random coins).

    ``ceil(communications / p)`` for random coins, ``communications * local_steps``
    for the fixed schedule of FedHT/FedIHT.

    >>> horizon({"p": 0.1}, 50), horizon({"local_steps": 7}, 50)
    (500, 350)
    """
    if "local_steps" in params:
        return int(communications) * int(params["local_steps"])
    return int(math.ceil(int(communications) / float(params["p"]) - 1e-9))


def horizon_groups(configs, communications: int, max_iterations: int | None = None, *, round_based=False,
                   ratio: float = 2.0) -> list:
    """Split a batch of configurations into sub-batches of similar horizons (lists of indices).

    A batched :func:`proxfed.run` steps every run to the largest horizon, so a
    batch whose horizons range over 10x spends most of its steps past the
    shorter ones. Sorted by horizon, a new group starts where a horizon
    exceeds ``ratio`` times the group's smallest; the steps past a run's
    horizon are then under ``ratio - 1`` times its own. Every run keeps its
    coin stream and is scored at the record at its own horizon, so the
    scores do not depend on the grouping (beyond rounding). Round-based batches (:func:`proxfed.run_rounds`, each run to
    its own end) stay one group.

    >>> horizon_groups([{"p": 1.0}, {"p": 0.1}, {"p": 0.6}, {"p": 0.12}], 10)
    [[0, 2], [3, 1]]
    """
    if round_based or not configs:
        return [list(range(len(configs)))]
    hz = np.array([horizon(c, communications) for c in configs])
    if max_iterations is not None:
        hz = np.minimum(hz, int(max_iterations))
    order = np.argsort(hz, kind="stable")
    groups, start = [], None
    for i in order:
        if start is None or hz[i] > ratio * start:
            groups.append([])
            start = hz[i]
        groups[-1].append(int(i))
    return groups


def diverged_runs(result, n_runs: int | None = None) -> np.ndarray:
    """Boolean mask of the runs of a (batched) :class:`~proxfed.RunResult` that diverged.

    Reads :attr:`proxfed.RunResult.diverged`; ``n_runs`` broadcasts a single
    run's flag.
    """
    mask = np.atleast_1d(np.asarray(result.diverged, bool))
    if n_runs is not None and mask.size != n_runs:
        mask = np.broadcast_to(mask, (n_runs,)).copy()
    return mask


def tune_method(
    method: str,
    problem,
    ks: Sequence = (None,),
    *,
    communications: int,
    space: SearchSpace | None = None,
    n_stage1: int = 16,
    n_stage2: int = 8,
    narrow: float = 0.25,
    seed: int = 0,
    split: str = "validation",
    records: int = 50,
    max_iterations: int | None = None,
    driver: str = "auto",
    path=None,
    key: dict | None = None,
    progress: bool = False,
    echo: Callable | None = None,
    like=None,
    **space_kwargs,
) -> SearchResult:
    """Tune ``method`` on ``problem`` for each K in ``ks``: two-stage random search, batched runs.

    Protocol, exactly: :func:`random_search` over ``space`` (default
    :func:`method_space` with ``space_kwargs``), one search per K (group
    ``str(K)``). Each stage runs all (K, configuration) pairs batched
    (``R`` runs, hyperparameters as ``(R,)`` arrays): every run starts
    from the problem's default initial point for ``seed`` (the same for all
    runs) and uses the coin stream ``(seed, 0)`` (common random numbers).
    The batch is run by one of two drivers (``driver``):

    * :func:`proxfed.run_rounds` (``"run_rounds"``; what ``"auto"`` picks
      when the method has a closed-form local phase on the problem): every
      run makes exactly ``communications`` communications and is scored by
      its ``split`` metric (after the method's TopK) at the end;
    * :func:`proxfed.run` (``"run"``; ``"auto"`` otherwise): run ``r`` is
      scored after ``horizon(params_r, communications)`` local steps (the
      *expected* number for random coins, capped at ``max_iterations``),
      recorded exactly there. A stage's runs are split into sub-batches of
      similar horizons (:func:`horizon_groups`); each runs to its largest
      horizon with about ``records`` records.
    * ``"exact"``: as ``"auto"``, but where that would use ``run``, each
      run stops at its own ``communications``-th communication
      (:func:`proxfed.run` with ``communications``; capped at
      ``max_iterations``) and is scored there: every run makes exactly
      ``communications`` communications, as with ``run_rounds``.

    A run the driver froze because it diverged (with ``run``: at or before
    its horizon) scores ``None`` with status ``"diverged"``.

    Parameters
    ----------
    method : str
        A key of :data:`TUNABLE_METHODS`.
    problem : FederatedProblem
        Its dataset must have the ``split`` (a validation split).
    ks : sequence of int or None
        The TopK sizes to tune for (``(None,)`` for dense ProxSkip).
    communications : int
        The tuning horizon in communications (exact with ``run_rounds`` and
        ``exact``, expected with ``run``).
    space : SearchSpace, optional
    n_stage1, n_stage2, narrow, seed :
        See :func:`random_search`.
    split : {"validation", "train"}
        Where scores are measured; never the test split.
    records : int
        History records per batched run (``run`` driver).
    max_iterations : int, optional
        Cap on the local steps of a batched run (``run`` driver).
    driver : {"auto", "run_rounds", "run", "exact"}
        How the batches are run (above); ``"run_rounds"`` raises
        :class:`~proxfed.round_runner.NoClosedForm` for a method without a
        closed-form local phase. Part of the search's key.
    path : path-like, optional
        JSON file of the search (resumable; see :func:`random_search`).
    key : dict, optional
        Extra facts identifying the search in the file.
    progress : bool
        Progress bars of the runs.
    echo : callable, optional
    like : array, optional
        Run the batches on this array's library, device and dtype (e.g.
        :func:`proxfed._backend.array_template` ``("torch", "cuda")``), from
        the problem's default starting points moved there; ``run_rounds``
        batches too (ridge's closed form runs on torch and CuPy). The driver
        is decided on the host, so it, and with it the protocol, does not
        depend on ``like``.
    **space_kwargs
        ``gamma_range``, ``p_range``, ``lam_range`` for :func:`method_space`.

    Returns
    -------
    SearchResult
        ``best`` maps ``str(K)`` to the winning hyperparameters;
        ``info["runs"]`` lists the batched runs (driver, runs, largest
        iteration count, total local steps ``run_steps``, seconds).
    """
    from . import round_runner, runner

    if split == "test":
        raise ValueError("tuning on the test split is not allowed; use a validation split (see holdout_split)")
    if driver not in ("auto", "run_rounds", "run", "exact"):
        raise ValueError(f"driver must be 'auto', 'run_rounds', 'run' or 'exact', got {driver!r}")
    if not problem.has_split(split):
        raise ValueError(f"the problem's dataset has no {split!r} split; see proxfed.tune.holdout_split")
    if space is None:
        space = method_space(method, problem, **space_kwargs)
    ks = list(ks)
    by_group = {("none" if k is None else str(int(k))): k for k in ks}
    info: dict = {"runs": []}
    say = echo or (lambda *_: None)

    def run_batch(configs, k, rounds):
        import time

        R = len(configs)
        params = {name: np.array([c[name] for c in configs]) for name in space.names}
        alg = make_algorithm(method, params, k)
        w0 = runner.initial_models(problem, [int(seed)] * R, R)
        if like is not None:  # both drivers run there (closed-form rounds too)
            w0 = B.from_numpy(w0, like=like)
        t0 = time.perf_counter()
        if rounds:
            res = round_runner.run_rounds(alg, problem, int(communications), seed=[int(seed)] * R, split=split,
                                          every=int(communications), w0=w0, progress=progress)
            used = "run_rounds"
            steps = np.asarray(res.history["iteration"])[-1].reshape(R)
            metric = np.asarray(res.history["metric"])[-1].reshape(R)
            T, run_steps = int(steps.max()), int(steps.sum())
        else:
            used = "run_exact" if driver == "exact" else "run"
            if used == "run_exact":  # each run's own last step: its C-th coin
                hz = round_runner.last_communications(alg, int(communications), seed=[int(seed)] * R, runs=R,
                                                      cap=max_iterations)
            else:
                hz = np.array([horizon(c, communications) for c in configs])
                if max_iterations is not None:
                    hz = np.minimum(hz, int(max_iterations))
            T = int(hz.max())
            res = runner.run(alg, problem, T, seed=[int(seed)] * R, split=split, w0=w0,
                             every=max(1, T // max(1, int(records))), record_at=hz, progress=progress,
                             communications=int(communications) if used == "run_exact" else None)
            it = np.asarray(res.history["iteration"])
            rows = np.maximum(np.searchsorted(it, hz, side="right") - 1, 0)  # the record at the horizon
            metric = np.asarray(res.history["metric"]).reshape(len(it), R)[rows, np.arange(R)]
            run_steps = int(T) * R
        seconds = time.perf_counter() - t0
        info["runs"].append({"driver": used, "runs": R, "iterations": T, "run_steps": run_steps,
                             "seconds": seconds, "status": res.status})
        say(f"    {R} runs, up to {T} iterations ({used}) in {seconds:.1f} s ({res.status})")
        bad = diverged_runs(res, R)
        if used != "run_rounds":  # diverged after its horizon: its score at the horizon stands
            bad &= np.array([res.diverged_at.get(r, 0) <= hz[r] for r in range(R)])
        return [(None, "diverged") if bad[r] else float(metric[r]) for r in range(R)]

    def evaluate(batch):
        configs = [c for _, c in batch]
        k = None if ks == [None] else np.array([by_group[g] for g, _ in batch], dtype=np.int64)
        scores = [None] * len(configs)
        rounds = _rounds_used(configs)
        for idx in horizon_groups(configs, communications, max_iterations, round_based=rounds):
            out = run_batch([configs[i] for i in idx], None if k is None else k[idx], rounds)
            for i, v in zip(idx, out):
                scores[i] = v
        return scores

    def _rounds_used(configs):
        """The driver of a stage, decided once on the host (the rule and problem fix it, not the values)."""
        if driver == "run":  # ("exact" is "auto" with exact counts where "auto" would run expected ones)
            return False
        if driver == "run_rounds":
            return True
        params = {name: np.array([c[name] for c in configs[:1]]) for name in space.names}
        k = None if ks == [None] else np.array([next(iter(by_group.values()))], dtype=np.int64)
        w0 = runner.initial_models(problem, [int(seed)], 1)
        return round_runner.supports_rounds(make_algorithm(method, params, k), problem, w0=w0)

    result = random_search(
        evaluate, space, n_stage1=n_stage1, n_stage2=n_stage2, narrow=narrow, groups=list(by_group), seed=seed,
        maximize=True, path=path, echo=say,
        key={"method": method, "communications": int(communications), "split": split,
             "max_iterations": max_iterations, "records": int(records), "driver": driver,
             "scored_at": SCORED_AT, **(key or {})},
    )
    result.info = info
    return result


# ---------------------------------------------------------------------------------------------
# validation hold-out
# ---------------------------------------------------------------------------------------------
def holdout_split(dataset: FederatedDataset, fraction: float = 0.1, seed: int = 0) -> FederatedDataset:
    """Hold out a seeded part of every client's training rows as the validation split.

    Protocol, exactly: client ``i`` with ``n_i`` rows gives
    ``min(floor(fraction * n_i), n_i - 1)`` of them (so it keeps at least one
    training row), chosen by a random permutation from ``rng(seed, i, 6)``;
    the held-out rows of all clients, pooled in client order (each client's
    in row order), form ``validation``. The remaining rows keep their order
    and clients; ``test`` and ``name`` are unchanged; ``meta`` is copied and
    gains ``holdout_rows`` (row indices of the validation rows in the
    original dataset), ``holdout_fraction`` and ``holdout_seed``.

    Parameters
    ----------
    dataset : FederatedDataset
    fraction : float in (0, 1)
    seed : int

    Returns
    -------
    FederatedDataset

    Examples
    --------
    >>> import numpy as np
    >>> from proxfed import FederatedDataset
    >>> ds = FederatedDataset.from_clients([(np.ones((10, 2)), np.zeros(10)), (np.ones((3, 2)), np.ones(3))])
    >>> out = holdout_split(ds, 0.2, seed=0)
    >>> out.client_sizes.tolist(), out.validation.n_samples
    ([8, 3], 2)
    """
    if not isinstance(dataset, FederatedDataset):
        raise TypeError(f"dataset must be a FederatedDataset, got {type(dataset).__name__}")
    if isinstance(fraction, bool) or not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
    keep, held = [], []
    for i, (lo, hi) in enumerate(zip(dataset.offsets[:-1], dataset.offsets[1:])):
        n = int(hi - lo)
        m = min(int(math.floor(fraction * n)), n - 1)
        pick = np.sort(B.rng(seed, i, _HOLDOUT_STREAM).permutation(n)[:m]) if m else np.empty(0, np.int64)
        mask = np.ones(n, bool)
        mask[pick] = False
        keep.append(lo + np.flatnonzero(mask))
        held.append(lo + pick)
    keep_rows, held_rows = np.concatenate(keep), np.concatenate(held).astype(np.int64)
    if held_rows.size == 0:
        raise ValueError(f"fraction={fraction} holds out no row (clients are too small)")
    sizes = [k.size for k in keep]
    meta = dict(dataset.meta)
    meta.update(holdout_rows=held_rows, holdout_fraction=float(fraction), holdout_seed=int(seed))
    return FederatedDataset(
        dataset.X[keep_rows], dataset.y[keep_rows], np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        test=dataset.test, validation=Split(dataset.X[held_rows], dataset.y[held_rows]),
        name=dataset.name, meta=meta,
    )
