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
stored stages instead of recomputing them. Within a stage, each batched run's
scores are kept as it finishes (:class:`~proxfed.search.BatchStore`, a
``.batches.json`` file beside the search's, removed when the search is
complete), so an interrupted stage resumes batch by batch, bit for bit.
"""

from __future__ import annotations

import math
import time
import weakref
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import _backend as B
from .algorithms import registry as R
from .drivers import last_communications
from .data.dataset import FederatedDataset, Split
from .search import SEARCH_FORMAT, SEARCH_VERSION, BatchStore, SearchResult, best_trial, random_search  # noqa: F401  (re-exported)
from .search_space import Param, SearchSpace

__all__ = [
    "Param",
    "SearchSpace",
    "SearchResult",
    "best_trial",
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

#: How ``tune_method`` scores a run, part of every search's key, so that a search stored under an
#: earlier rule is not reused: the record at the run's own horizon (``run`` driver), the end
#: (``run_rounds``).
SCORED_AT = "horizon"
_HOLDOUT_STREAM = 6  # RNG stream of holdout_split (distinct from coins = 0 and init = 1)

#: Methods :func:`make_algorithm` builds, with their hyperparameters: the tunable methods of the
#: registry (:data:`proxfed.algorithms.registry.METHODS`).
TUNABLE_METHODS = {n: s.hyperparameter_names for n, s in R.METHODS.items() if s.tunable}


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
    if split == "test":
        raise ValueError("tuning on the test split is not allowed; use a validation split (see holdout_split)")
    if driver not in ("auto", "run_rounds", "run", "exact"):
        raise ValueError(f"driver must be 'auto', 'run_rounds', 'run' or 'exact', got {driver!r}")
    if not problem.has_split(split):
        raise ValueError(f"the problem's dataset has no {split!r} split; see proxfed.tune.holdout_split")
    if space is None:
        space = method_space(method, problem, **space_kwargs)
    search_key = {"method": method, "communications": int(communications), "split": split,
                  "max_iterations": max_iterations, "records": int(records), "driver": driver,
                  "scored_at": SCORED_AT, **(key or {})}
    store = BatchStore(None if path is None else Path(path).with_suffix(".batches.json"),
                       {**search_key, "seed": int(seed), "ks": [None if k is None else int(k) for k in ks]})
    batches = _Batches(method, problem, list(ks), space, communications=int(communications), seed=int(seed),
                       split=split, records=int(records), max_iterations=max_iterations, driver=driver,
                       progress=progress, like=like, say=echo or (lambda *_: None), store=store)
    result = random_search(
        batches.evaluate, space, n_stage1=n_stage1, n_stage2=n_stage2, narrow=narrow, groups=list(batches.by_group),
        seed=seed, maximize=True, path=path, echo=batches.say, key=search_key,
    )
    store.remove()  # the search is stored complete
    result.info = batches.info
    return result


class _Batches:
    """The evaluation of :func:`tune_method`'s stages: batched runs, one driver per stage, scored per run."""

    def __init__(self, method, problem, ks, space, *, communications, seed, split, records, max_iterations, driver,
                 progress, like, say, store):
        self.method, self.problem, self.ks, self.space, self.store = method, problem, ks, space, store
        self.communications, self.seed, self.split, self.records = communications, seed, split, records
        self.max_iterations, self.driver, self.progress, self.like, self.say = (max_iterations, driver, progress,
                                                                                like, say)
        self.by_group = {("none" if k is None else str(int(k))): k for k in ks}
        self.info: dict = {"runs": []}

    def evaluate(self, batch) -> list:
        """One stage: ``(group, params)`` pairs -> scores (``(None, "diverged")`` for a diverged run)."""
        configs = [c for _, c in batch]
        k = None if self.ks == [None] else np.array([self.by_group[g] for g, _ in batch], dtype=np.int64)
        scores = [None] * len(configs)
        used = self.stage_driver(configs)
        for idx in horizon_groups(configs, self.communications, self.max_iterations, round_based=used == "run_rounds"):
            out = self.run_batch([configs[i] for i in idx], None if k is None else k[idx], used)
            for i, v in zip(idx, out):
                scores[i] = v
        return scores

    def stage_driver(self, configs) -> str:
        """The driver of a stage (its label), decided once on the host: the rule and problem fix it, not the values.

        ``"exact"`` is ``"auto"`` with exact counts where ``"auto"`` runs expected ones.
        """
        from .drivers import policy_driver
        from .runner import initial_models

        if self.driver in ("run", "run_rounds"):
            return self.driver
        params = {name: np.array([c[name] for c in configs[:1]]) for name in self.space.names}
        k = None if self.ks == [None] else np.array([next(iter(self.by_group.values()))], dtype=np.int64)
        w0 = initial_models(self.problem, [self.seed], 1)
        alg = make_algorithm(self.method, params, k)
        return policy_driver(self.driver, alg, self.problem, communications=self.communications, w0=w0)

    def run_batch(self, configs, k, used) -> list:
        """Run ``configs`` (with TopK sizes ``k``) as one batch by driver ``used``; their scores."""
        from . import runner

        R, seeds = len(configs), [self.seed] * len(configs)
        described = {"configs": configs, "k": None if k is None else np.asarray(k).tolist(), "driver": used}
        stored = self.store.get(described, R)
        if stored is not None:  # finished in an earlier, interrupted sitting
            self.info["runs"].append({**stored[1], "read_back": True})
            self.say(f"    {R} runs, up to {stored[1].get('iterations')} iterations ({used}) read back")
            return stored[0]
        params = {name: np.array([c[name] for c in configs]) for name in self.space.names}
        alg = make_algorithm(self.method, params, k)
        w0 = runner.initial_models(self.problem, seeds, R)
        if self.like is not None:  # both drivers run there (closed-form rounds too)
            w0 = B.from_numpy(w0, like=self.like)
        t0 = time.perf_counter()
        kw = dict(seed=seeds, split=self.split, w0=w0, progress=self.progress)
        if used == "run_rounds":
            res = runner.run(alg, self.problem, communications=self.communications, driver="rounds",
                             every=self.communications, **kw)
            steps = np.asarray(res.history["iteration"])[-1].reshape(R)
            metric = np.asarray(res.history["metric"])[-1].reshape(R)
            T, run_steps = int(steps.max()), int(steps.sum())
        else:
            if used == "run_exact":  # each run's own last step: its C-th coin
                hz = last_communications(alg, self.communications, seed=seeds, runs=R, cap=self.max_iterations)
            else:
                hz = np.array([horizon(c, self.communications) for c in configs])
                if self.max_iterations is not None:
                    hz = np.minimum(hz, int(self.max_iterations))
            T = int(hz.max())
            res = runner.run(alg, self.problem, T, every=max(1, T // max(1, self.records)), record_at=hz,
                             communications=self.communications if used == "run_exact" else None, **kw)
            it = np.asarray(res.history["iteration"])
            rows = np.maximum(np.searchsorted(it, hz, side="right") - 1, 0)  # the record at the horizon
            metric = np.asarray(res.history["metric"]).reshape(len(it), R)[rows, np.arange(R)]
            run_steps = int(T) * R
        seconds = time.perf_counter() - t0
        self.info["runs"].append({"driver": used, "runs": R, "iterations": T, "run_steps": run_steps,
                                  "seconds": seconds, "status": res.status})
        self.say(f"    {R} runs, up to {T} iterations ({used}) in {seconds:.1f} s ({res.status})")
        bad = diverged_runs(res, R)
        if used != "run_rounds":  # diverged after its horizon: its score at the horizon stands
            bad &= np.array([res.diverged_at.get(r, 0) <= hz[r] for r in range(R)])
        outcomes = [(None, "diverged") if bad[r] else float(metric[r]) for r in range(R)]
        self.store.put(described, outcomes, self.info["runs"][-1])
        return outcomes


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
