r"""Reproductions of the paper's convex experiments: BlogFeedback and FEMNIST, with tuning.

``proxfed reproduce blogfeedback --data-dir DIR`` (Tables 1, 2, 5; Figure 2) and
``proxfed reproduce femnist --data-dir DIR`` (Tables 3, 4; Figure 3; Appendix D,
Figures 6-8) call :func:`reproduce`. The protocol, exactly:

1. **Data and objective.** BlogFeedback: :func:`~proxfed.data.load_blogfeedback`
   (N = 554 blogs, the 90 % training part, the 10 % validation part, the 60
   test files), min-max features, :class:`~proxfed.problems.Ridge` with the
   ``alpha`` of :func:`choose_ridge_alpha` on the validation part (over the
   three sparsities: ``alpha = 1`` on the UCI files), start at ``w = 0``. The
   paper's text says ``alpha = 1e3`` with min-max features; run at the
   paper's horizon, that objective cannot reach Table 1 and the validation
   choice matches Tables 1 and 2 (``docs/reproducing.rst``, "Which protocol
   did the paper use?"); ``alpha=1e3`` runs the text literally. FEMNIST: :func:`~proxfed.data.load_femnist` (the first 100
   writers in sorted order; pixels inverted to ``1 - x``, background 0, unless
   ``pixels="leaf"``), :class:`~proxfed.problems.SoftmaxRegression`
   with the torch-like uniform start keyed by the run's seed; the
   validation split is :func:`~proxfed.tune.holdout_split` (10 % of every
   writer's training images, seeded) — tuning trains on the remaining 90 %,
   the final runs on all training images. ``alpha`` is chosen on the
   hold-out (dense centralized fit per value of the budget's grid) or fixed
   to ``1/n`` (scikit-learn's ``C = 1``) when the budget has no grid.
2. **Tuning** (:func:`proxfed.tune.tune_method`): per method and tuned
   sparsity, a two-stage random search (``n_stage1`` wide log-uniform
   configurations of ``gamma`` (``gamma_range / L``), ``p`` (``p_range``; local
   steps ``1/p`` for FedHT/FedIHT) and, for RandProx-l1, ``lam``
   (``lam_range * lam_max``); then ``n_stage2`` in a box a quarter as wide
   around the best), each stage batched runs of ``tune_communications``
   communications scored by the **validation** metric after TopK (exactly
   that many with :func:`proxfed.run_rounds` for the methods with a
   closed-form local phase, in expectation with :func:`proxfed.run` for the
   others, or, with the ``exact`` driver, exactly for all: each run stops at
   its own last communication; see the budget's ``driver``).
   Diverged configurations are failures. Sparsities the budget does not tune
   reuse the configuration of the nearest tuned sparsity; if every
   configuration fails the method falls back to ``gamma = 1/L`` and
   ``p = 1/sqrt(kappa)``.
3. **Final runs**: every method at every sparsity with its tuned
   hyperparameters, ``seeds`` seeds batched in one run of ``communications``
   communications (by the same driver as the tuning: exactly, or in
   expectation over ``horizon(params, communications)`` local steps),
   each seed with its own coins,
   evaluated on the **test** split after TopK
   (dense ProxSkip: no TopK, a reference). The tables report the mean and
   standard error over the seeds of the final values.
4. **Communication tables**: on the seed-mean curves at the paper's
   sparsity (90 %), the mean uplink bits per client at the first history
   record whose mean metric reaches each threshold, and the speed-up
   against the paper's reference method (Final-TopK on BlogFeedback, FedIHT
   on FEMNIST). The resolution is one history record.

Results directory::

    run.json              budget, protocol settings, data, timings, machine
    README.md             the tables and figures in one page
    tuning/<method>.json  every configuration and score of each search (resumable)
    tuned.json            the chosen hyperparameters per method and sparsity
    runs/<method>/<s>/    history.npz (records x seeds), config.json, summary.json, final_w.npz
    tables/*.md           one Markdown table per paper table; tables.json (numbers)
    figures/*.png         Figure 2 / 3 style plots per sparsity
    summary.json          final values per method and sparsity
    appendix_d/           FEMNIST: SPS-/ASP-modified runs, appendix_d.md, appendix_d.json, appendix_d.png
                          (SPS and ASP at 90 % are the runs under runs/)
    diagnostics/          BlogFeedback: alpha_check.md (dense ridge optimum per alpha);
                          FEMNIST: dense_reference.md (the dense centralized fit and its TopK,
                          under both pixel conventions) and alpha_check.md (train and test
                          accuracy of the dense fit and its TopK per alpha)

Each dataset is a :class:`~proxfed.experiments.specs.DatasetSpec` in
:data:`~proxfed.experiments.specs.SPECS` (``proxfed/experiments/specs/``):
:func:`reproduce` checks the options (:mod:`~proxfed.experiments.options`),
loads through the spec, tunes and runs (:mod:`~proxfed.experiments.pipeline`),
and writes the tables, figures and README (:mod:`~proxfed.experiments.report`)
and the spec's diagnostics. This module keeps the public names in one place.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from .. import _backend as B
from .._stored import write_json_atomic as write_json
from . import budgets as budget_module
from . import specs as spec_registry
from ._common import machine
from .appendix_d import APPENDIX_D_METHODS  # (re-exported, as the next imports' public names)
from .budgets import Budget
from .options import check_request, command
from .pipeline import Pipeline, final_runs, tune_all
from .report import write_readme, write_results
from .specs import SPECS, DatasetSpec, get_budget, get_spec
from .specs import blogfeedback as blogfeedback_spec
from .specs import femnist as femnist_spec
from .specs.blogfeedback import choose_ridge_alpha, ridge_alpha_check
from .specs.softmax_checks import FEMNIST_CHECK_ALPHAS, softmax_alpha_check, softmax_dense_reference

__all__ = [
    "Budget",
    "BUDGETS",
    "PAPER_METHODS",
    "PIXEL_CONVENTIONS",
    "get_budget",
    "reproduce",
    "reproduce_blogfeedback",
    "reproduce_femnist",
    "reproduce_appendix_d",
    "ridge_alpha_check",
    "softmax_alpha_check",
    "softmax_dense_reference",
    "choose_ridge_alpha",
    "RIDGE_ALPHA_GRID",
]

#: Methods of each reproduction (the paper's tables, plus dense ProxSkip as a reference).
PAPER_METHODS = spec_registry.PAPER_METHODS
#: FEMNIST pixel conventions of :func:`reproduce` (``pixels=``).
PIXEL_CONVENTIONS = femnist_spec.PIXEL_CONVENTIONS
#: The budgets' run drivers (:attr:`Budget.driver`).
DRIVERS = budget_module.DRIVERS
#: Budget fields that change only what is reported, not any run (not part of the stored runs' key).
REPORT_ONLY = budget_module.REPORT_ONLY
#: Budget fields that change which stored configuration is chosen, not any search (not in the searches' key).
CHOICE_ONLY = budget_module.CHOICE_ONLY
#: ``BUDGETS[dataset][name]``. ``paper`` follows the protocol (BlogFeedback: 10^4 communications;
#: FEMNIST: the paper gives no horizon, 10^3 is our decision); ``smoke`` checks the pipeline in
#: minutes and its numbers are not a reproduction; ``quick`` (BlogFeedback: about 25 minutes on 2 cores, p >= 0.1,
#: 3 seeds) and ``small`` (BlogFeedback: 500 communications, 5 seeds, p >= 0.08, about an hour on one core) are
#: middle grounds.
BUDGETS = spec_registry.BUDGETS
#: The grid of :func:`choose_ridge_alpha`.
RIDGE_ALPHA_GRID = blogfeedback_spec.RIDGE_ALPHA_GRID
#: The test metric's name per dataset.
METRIC_LABEL = {name: spec.metric_label for name, spec in SPECS.items()}


def reproduce(
    dataset: str,
    data_dir,
    out_dir=None,
    *,
    budget="smoke",
    methods=None,
    seed: int = 0,
    alpha: float | None = None,
    appendix_d: bool | None = None,
    main: bool = True,
    cache_dir=None,
    progress: bool = True,
    echo=print,
    backend: str = "numpy",
    device=None,
    dtype: str = "float64",
    pixels: str = "inverted",
    jobs: int = 1,
    driver: str | None = None,
    scaling: str = "minmax",
    communications: int | None = None,
    tuned=None,
    sparsities=None,
) -> dict:
    """Reproduce the paper's BlogFeedback or FEMNIST experiment and write a results directory.

    The protocol is described in :mod:`proxfed.experiments.paper`; ``budget``
    sets the horizons, seeds and search sizes (:data:`BUDGETS`). Tuning
    searches and final runs already in ``out_dir`` (same settings) are read
    back, so an interrupted reproduction continues where it stopped.

    Parameters
    ----------
    dataset : {"blogfeedback", "femnist"}
    data_dir : path-like
        The dataset's folder (UCI files / LEAF ``train`` and ``test``), or a
        folder containing ``blogfeedback/`` or ``femnist/``.
    out_dir : path-like, optional
        Results directory (default ``proxfed-results/<dataset>-<budget>``).
    budget : {"smoke", "small", "paper"} or Budget
    methods : sequence of str, optional
        Subset of :data:`PAPER_METHODS` (default all of the dataset's).
    seed : int
        Seed of the tuning (coins, initial point, search) and base of the
        final runs' seeds ``seed + 1, ..., seed + seeds``; FEMNIST's hold-out.
    alpha : float or "validation", optional
        Regularization. BlogFeedback: None (default) and ``"validation"``
        choose it on the validation split with :func:`choose_ridge_alpha` over
        the paper's three sparsities (1 on the UCI files; the decision of
        ``docs/reproducing.rst``: the paper's stated ``1e3`` cannot reach its
        Table 1). FEMNIST default: chosen on the hold-out from the budget's
        grid, or ``1/n``.
    appendix_d : bool, optional
        FEMNIST: also run the Appendix D diagnostics (default True).
    main : bool
        Run the tables' methods (False with ``appendix_d=True``: only Appendix D).
    cache_dir : path-like, optional
        Cache of the parsed dataset (see the loaders).
    progress : bool
        Progress bars for the runs.
    echo : callable
        Progress messages.
    backend, device, dtype :
        Where the runs compute (:func:`proxfed._backend.array_template`):
        e.g. ``backend="torch", device="cuda"`` or ``backend="cupy"``. The
        problems move their data there on first use; histories, tables and
        stored models are host arrays. Runs by :func:`proxfed.run_rounds`
        (closed-form local phases) run there too. Stored runs are reused across backends
        and devices (the same computation up to rounding) but not across
        dtypes.
    jobs : int
        Worker processes for the tuning searches (one per method, balanced
        by the number of tuned sparsities) and the final runs (one per
        method and sparsity, balanced by expected local steps), forked after
        the data are loaded (NumPy backend only). Each worker's BLAS pools
        get this process's thread count divided by ``jobs`` (at least one).
        Each worker stores its cells; this process then reads them back, so
        the results are those of ``jobs=1`` up to rounding (fewer BLAS
        threads sum in another order).
    pixels : {"inverted", "leaf"}
        FEMNIST's pixel convention: ``"inverted"`` (default) trains on
        ``1 - x``, background 0 and ink near 1 as in MNIST; ``"leaf"`` keeps
        LEAF's 1.0 = white background. The model class is the same (the
        intercept absorbs the shift), but the objective's smoothness and what
        TopK removes are not: with LEAF's convention every weight acts on the
        background of every image (see :data:`PIXEL_CONVENTIONS`).
    driver : {"auto", "exact", "run"}, optional
        Overrides the budget's :attr:`Budget.driver` (None: the budget's).
        ``"exact"`` makes every run of every method exactly the horizon's
        communications; the runs are then new ones (the budget, driver
        included, is part of every stored run's key).
    scaling : {"minmax", "standard", "none"}
        BlogFeedback's feature scaling (:func:`~proxfed.data.load_blogfeedback`);
        part of every stored run's key when not ``"minmax"``.
    communications : int, optional
        Horizon of the final runs, overriding the budget's (tuning unchanged):
        e.g. the paper's 10^4 communications with a smaller budget's search.
    tuned : path-like, optional
        A ``tuned.json`` written by an earlier reproduction: its methods take
        their hyperparameters from it instead of being tuned (the file's
        sparsities must cover the ones run; dense ProxSkip under ``"None"``).
        Its path and content are recorded in ``run.json``.
    sparsities : sequence of float, optional
        Subset of the paper's sparsities to tune and run (default all).

    Returns
    -------
    dict
        ``out_dir``, ``tables`` (Markdown by name), ``numbers``, ``summary``,
        ``appendix_d`` (FEMNIST), ``seconds``.
    """
    spec = get_spec(dataset)
    opts = check_request(spec, budget=budget, methods=methods, alpha=alpha, appendix_d=appendix_d, main=main,
                         pixels=pixels, jobs=jobs, backend=backend, driver=driver, scaling=scaling,
                         communications=communications, tuned=tuned, sparsities=sparsities)
    b, final_c = opts.budget, opts.final_communications
    like = B.array_template(backend, device, dtype)  # validates before any work
    out = Path(out_dir if out_dir is not None else f"proxfed-results/{dataset}-{b.name}")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"results directory {out} is a file")
    t_start = time.perf_counter()
    pipe = Pipeline(dataset, out, b, opts.methods if main else (), seed, progress, echo)
    if opts.sparsities is not None:
        pipe.sparsities = opts.sparsities
    pipe.communications = final_c
    pipe.like = None if backend == "numpy" and dtype == "float64" else like
    pipe.say(f"results in {out}; budget {b.name}: {final_c} communications per final run, "
             f"{b.seeds} seeds, search {b.n_stage1}+{b.n_stage2} configurations at {b.tune_communications} "
             f"communications" + ("" if b.name == "paper" else " (NOT a reproduction budget)"))
    t0 = time.perf_counter()
    loaded = spec.load(data_dir, budget=b, alpha=alpha, seed=seed, cache_dir=cache_dir, pixels=pixels,
                       scaling=opts.scaling, say=pipe.say)
    pipe.timings["data"] = time.perf_counter() - t0
    pipe.data_key = _run_key(spec, b, loaded, pixels, opts.scaling)
    run_info = _run_record(spec, pipe, opts, loaded, main=main, alpha=alpha, pixels=pixels, dtype=dtype,
                           backend={"backend": backend, "device": str(B.device_of(like)), "dtype": dtype},
                           communications=communications, tuned=tuned)
    out.mkdir(parents=True, exist_ok=True)  # only once the data have loaded: a failure leaves nothing behind
    write_json(out / "run.json", run_info)
    tune_all(pipe, loaded.tune_problem, pipe.data_key, opts.given, tuned, jobs)
    final_runs(pipe, loaded.final_problem, jobs)
    result: dict = {"out_dir": out}
    if pipe.methods:
        result.update(write_results(pipe))
    result.update(spec.diagnostics(pipe, loaded, data_dir=data_dir, cache_dir=cache_dir, pixels=pixels))
    if opts.appendix_d:
        t0 = time.perf_counter()
        result["appendix_d"] = spec.run_appendix_d(pipe, loaded, pipe.data_key)
        pipe.timings["appendix_d"] = time.perf_counter() - t0
    seconds = time.perf_counter() - t_start
    pipe.timings["total"] = seconds
    cells = {m: {str(s): float(r["summary"].get("run_seconds", r["summary"].get("seconds", 0.0)))
                 for s, r in v.items()} for m, v in pipe.results.items()}
    run_info["final_run_seconds"] = {"total": sum(x for v in cells.values() for x in v.values()), "cells": cells}
    run_info.update(status="completed", timings=pipe.timings, run_steps=pipe.run_steps,
                    tuned={m: {str(s): e for s, e in v.items()} for m, v in pipe.tuned.items()})
    write_json(out / "run.json", run_info)
    write_readme(pipe, result, run_info)
    pipe.say(f"done in {seconds:.0f} s; results in {out}")
    result["seconds"] = seconds
    return result


def _run_key(spec: DatasetSpec, b: Budget, loaded, pixels, scaling) -> dict:
    """The data part of every stored run's key: dataset, alpha, the budget's run fields, sizes, options."""
    runs_budget = {k: v for k, v in asdict(b).items() if k not in REPORT_ONLY + CHOICE_ONLY}
    key = {"dataset": spec.name, "alpha": loaded.alpha_info["alpha"], "budget": runs_budget,
           "n_clients": loaded.dataset.n_clients, "n_train": loaded.tune_problem.dataset.n_samples,
           **spec.key_extras(pixels)}
    if scaling != "minmax":  # (stored runs of the default scaling stay valid)
        key["scaling"] = scaling
    return key


def _run_record(spec: DatasetSpec, pipe, opts, loaded, *, main, alpha, pixels, dtype, backend, communications,
                tuned) -> dict:
    """``run.json`` as the run starts (``alpha``: as asked, for the recorded command)."""
    b, seed = pipe.budget, pipe.seed
    return {
        "dataset": spec.name, "budget": asdict(b), "is_reproduction_budget": b.name == "paper",
        "methods": list(pipe.methods), "sparsities": list(pipe.sparsities), "seed": seed,
        "final_communications": pipe.communications, "scaling": opts.scaling if spec.scaling else None,
        "tuned_from": None if tuned is None else {"path": str(tuned), "tuned": opts.given},
        "final_seeds": [seed + 1 + j for j in range(b.seeds)], "alpha": loaded.alpha_info, "data": loaded.data_info,
        "machine": machine(), "status": "running", "backend": backend,
        "command": command(spec.name, b, methods=None if set(pipe.methods) == set(spec.methods)
                           or not main else pipe.methods, seed=seed, alpha=alpha, appendix_d=opts.appendix_d,
                           main=main, pixels=pixels, dtype=dtype, scaling=opts.scaling,
                           communications=communications, tuned=tuned,
                           sparsities=None if opts.sparsities is None else pipe.sparsities),
    }


def reproduce_blogfeedback(data_dir, out_dir=None, **kwargs) -> dict:
    """:func:`reproduce` on BlogFeedback (Tables 1, 2, 5 and Figure 2)."""
    return reproduce("blogfeedback", data_dir, out_dir, **kwargs)


def reproduce_femnist(data_dir, out_dir=None, **kwargs) -> dict:
    """:func:`reproduce` on FEMNIST (Tables 3, 4, Figure 3 and, by default, Appendix D)."""
    return reproduce("femnist", data_dir, out_dir, **kwargs)


def reproduce_appendix_d(data_dir, out_dir=None, **kwargs) -> dict:
    """Only the Appendix D diagnostics on FEMNIST (SPS and ASP are tuned first unless stored in ``out_dir``)."""
    kwargs.setdefault("appendix_d", True)
    return reproduce("femnist", data_dir, out_dir, main=False, **kwargs)

