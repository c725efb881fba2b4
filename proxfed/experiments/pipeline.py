"""The reproduction pipeline: tuning and final runs of every method and sparsity, stored and read back.

:class:`Pipeline` holds one reproduction's state (budget, methods,
sparsities, tuned hyperparameters, results, timings); :func:`tune_all` and
:func:`final_runs` are the two phases of :func:`~proxfed.experiments.paper.reproduce`,
in forked workers when ``jobs > 1``. :func:`choose_drive` picks the run driver
of a final run (``run_rounds``, ``run`` for the expected local steps, or
``run`` stopped at each seed's own last communication).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .. import _backend as B
from .._stored import jsonable, read_back_json, read_back_npz
from .._stored import write_json_atomic as write_json
from ..algorithms.registry import get_method
from ..drivers import last_communications, policy_driver
from ..metrics import BLOWUP_FACTOR, peak_rise
from ..problems.capabilities import is_stochastic
from ..round_runner import run_rounds
from ..runner import initial_models, run
from ..search import best_trial
from ..tune import horizon, make_algorithm, method_space, tune_method
from ._common import pct, run_steps, skey
from ._workers import run_forked
from .segments import remaining_iterations, run_in_segments
from .demo import sparsity_to_k
from .published import METHOD_LABELS, PUBLISHED
from .specs import SPECS

__all__ = ["Drive", "Pipeline", "choose_drive", "final_runs", "identical_runs", "repeat_run", "run_drive",
           "theory_fallback", "tune_all"]


def theory_fallback(method: str, problem, p_range) -> dict:
    """The theory hyperparameters of ``method`` (when every tuned configuration failed)."""
    return get_method(method).theory(problem, p_range)


def run_seconds(hist, default: float | None = None) -> dict:
    """``{"run_seconds": s}``: the run's own clock at its last record (``hist["time"]``), which adds up
    the segments of every sitting, where ``seconds`` covers only the last one; else ``default``."""
    if "time" in hist and len(hist["time"]):
        return {"run_seconds": float(np.asarray(hist["time"])[-1])}
    return {} if default is None else {"run_seconds": float(default)}


class Drive(NamedTuple):
    """How a final run is driven: ``driver`` (its name in the stored key) and its horizon."""

    driver: str  # "run_rounds", "run_exact" or "run"
    rounds: bool
    exact: bool
    own: object  # each seed's last communication (``run_exact``), else None
    T: int | None  # local steps (None: ``run_rounds``)
    every: int


#: Final runs by expected local steps at least this long run in stored segments (:mod:`.segments`).
MIN_SEGMENTED_ITERATIONS = 20_000


def choose_drive(alg, problem, budget, params, communications, seeds, w0) -> Drive:
    """The budget's driver for one final run, and its horizon (decided on the host ``w0``).

    ``run_rounds`` for closed-form local phases (exactly ``communications``
    per seed) unless the budget's driver is ``"run"``; otherwise ``run``, for
    each seed's own last communication (driver ``"exact"``) or the expected
    number of local steps, capped by the budget's ``max_iterations``.
    """
    b = budget
    driver = policy_driver(b.driver, alg, problem, communications=communications, w0=w0)
    rounds, exact = driver == "run_rounds", driver == "run_exact"
    own = None
    if rounds:  # exactly `communications` per seed
        T, every = None, max(1, communications // max(1, b.records))
    else:  # each seed's own last communication, or the expected number of local steps
        if exact:
            own = last_communications(alg, communications, seed=seeds, runs=len(seeds), cap=b.max_iterations)
            T = int(own.max())
        else:
            T = expected_steps(params, communications, b)
        every = max(1, T // max(1, b.records))
    return Drive(driver, rounds, exact, own, T, every)


def expected_steps(params, communications, budget) -> int:
    """The expected local steps of ``communications`` under ``params``, capped by the budget's ``max_iterations``."""
    T = horizon(params, communications)
    return T if budget.max_iterations is None else min(T, budget.max_iterations)


def stored_match(params, communications) -> dict:
    """The entries of a final run's stored key that order the ``--jobs`` hand-out (:func:`remaining_iterations`)."""
    return {"params": json.loads(json.dumps(jsonable(params))), "communications": communications}


def run_drive(drive: Drive, alg, problem, communications, *, seeds, split, w0, progress):
    """Run ``alg`` as ``drive`` says (:func:`proxfed.run_rounds` or :func:`proxfed.run`)."""
    if drive.rounds:
        return run_rounds(alg, problem, communications, seed=seeds, split=split, every=drive.every, w0=w0,
                          progress=progress)
    return run(alg, problem, drive.T, seed=seeds, split=split, every=drive.every, w0=w0, progress=progress,
               communications=communications if drive.exact else None)


def identical_runs(alg, problem, w0) -> bool:
    """Whether the batched runs of ``alg`` from ``w0`` (R, d) are one run repeated.

    They are for a deterministic rule (:attr:`Algorithm.deterministic
    <proxfed.algorithms.base.Algorithm.deterministic>`: FedHT and FedIHT, the
    fixed schedule) with exact gradients from one start (BlogFeedback's w = 0),
    given equal hyperparameters, which the final runs have by construction.
    """
    w = np.asarray(B.to_numpy(w0))
    return bool(alg.deterministic and not is_stochastic(problem) and w.shape[0] > 1 and np.all(w == w[:1]))


def repeat_run(res, runs: int, config: dict):
    """The result ``res`` of one batched run as ``runs`` identical ones (history columns, models, status)."""
    hist = {n: np.repeat(np.asarray(v), runs, axis=1) if np.ndim(v) == 2 else np.asarray(v)
            for n, v in res.history.items()}
    return dataclasses.replace(res, history=hist, w=np.repeat(np.asarray(B.to_numpy(res.w)), runs, axis=0),
                               diverged=np.repeat(np.asarray(res.diverged).reshape(-1), runs), config=config)


def train_loss_sum(problem, objective, squared_norm):
    """Table 5's train loss (the decision of issue 20): the data term of the output model, summed over clients.

    ``N (F(w) - (alpha/2) ||w||^2)``, from the objective ``F`` and the squared
    norm of the same model: ``sum_i 1/2 ||A_i w - b_i||^2`` for ridge, ``N``
    times the mean cross-entropy over the training samples for softmax regression.
    """
    return problem.n_clients * (np.asarray(objective, dtype=np.float64) - 0.5 * problem.l2 * squared_norm)


def with_train_loss(hist: dict, problem) -> dict:
    """``hist`` with ``train_loss_sum`` per record (:func:`train_loss_sum` of ``loss`` and ``output_norm``).

    Runs stored before the history had ``output_norm`` are returned as they are.
    """
    if "train_loss_sum" in hist or "output_norm" not in hist:
        return hist
    norm = np.asarray(hist["output_norm"], dtype=np.float64)
    return {**hist, "train_loss_sum": train_loss_sum(problem, hist["loss"], norm * norm)}


def stability(hist: dict, seeds) -> dict:
    """``peak_rise`` (:func:`proxfed.metrics.peak_rise` of ``loss``, per seed) and ``unstable_seeds``.

    A run that grew far beyond its start and stayed finite has status "completed";
    these two fields say so. Empty for a history without ``loss`` or whose first
    record is not positive (nothing to compare with). An infinite rise is stored
    as the largest float (JSON has no infinity).
    """
    loss = hist.get("loss")
    if loss is None or not np.all(np.asarray(loss)[:1] > 0):
        return {}
    rise = np.broadcast_to(peak_rise(loss), (len(seeds),))
    return {"peak_rise": np.minimum(rise, np.finfo(np.float64).max).tolist(),
            "unstable_seeds": [sd for sd, r in zip(seeds, rise) if r > BLOWUP_FACTOR]}


class Pipeline:
    """One reproduction's state: its budget, methods, sparsities, tuned hyperparameters and results."""

    def __init__(self, dataset, out, budget, methods, seed, progress, echo):
        self.dataset, self.out, self.budget = dataset, out, budget
        self.methods, self.seed, self.progress = tuple(methods), int(seed), progress
        self.echo = echo
        self.sparsities = tuple(PUBLISHED[dataset]["sparsities"])
        self.timings: dict = {}
        self.tuned: dict = {}
        self.results: dict = {}
        self.run_steps = {"tuning": 0, "final": 0, "appendix_d": 0}
        self.like = None  # an array template: where the runs compute (None: NumPy float64)
        self.data_key: dict = {}  # dataset, alpha, budget, pixels: part of every stored run's key
        self.worker = ""  # set in forked workers
        self.spaces: dict = {}  # search spaces by method, computed in this process (see space)
        self.communications = budget.communications  # the final runs' horizon

    def _dtype_key(self) -> dict:
        """Only a non-default dtype enters the stored keys (results of float64 runs stay valid)."""
        if self.like is None or str(self.like.dtype).endswith("float64"):
            return {}
        return {"dtype": str(self.like.dtype).rsplit(".", 1)[-1]}

    def say(self, msg):
        tag = f"{self.dataset}/{self.budget.name}" + (f", {self.worker}" if self.worker else "")
        self.echo(f"[{tag}] {msg}")

    def counting(self, phase: str, fn, *args) -> int:
        """``fn(*args)`` for a forked worker: the run-steps it adds to ``run_steps[phase]`` (picklable)."""
        before = self.run_steps[phase]
        out = fn(*args)
        if phase == "final" and not out[1].get("read_back"):
            self.run_steps[phase] += run_steps(out[1])
        return self.run_steps[phase] - before

    def in_worker(self, jobs: int = 1) -> None:
        """In one of ``jobs`` forked workers (:func:`run_forked`): no progress bars, messages tagged
        with the process, and each BLAS pool cut to its share of the parent's threads (at least 1)."""
        from threadpoolctl import threadpool_info, threadpool_limits

        self.progress = False
        self.worker = f"worker {os.getpid()}"
        threads = max([lib["num_threads"] for lib in threadpool_info()] or [1])
        if threads // jobs < threads:
            threadpool_limits(max(1, threads // jobs))  # for the rest of this process's life

    # -- tuning ----------------------------------------------------------------------------------
    def space(self, method, problem):
        """``method``'s search space, computed once; forked workers inherit it.

        Its bounds come from ``L`` and ``||grad F(0)||``, whose last bits depend
        on the BLAS thread count, which a worker cuts: a worker's own space would
        not match the stored search's key, and the main process would redo it.
        """
        if method not in self.spaces:
            b = self.budget
            self.spaces[method] = method_space(method, problem, gamma_range=b.gamma_range, p_range=b.p_range,
                                               lam_range=b.lam_range)
        return self.spaces[method]

    def tune(self, method, problem, key):
        b = self.budget
        if method == "proxskip":
            tune_s = [None]
        else:
            tune_s = list(self.sparsities if b.tune_sparsities is None else b.tune_sparsities)
        ks = [None if s is None else sparsity_to_k(problem.dim, s) for s in tune_s]
        self.say(f"tuning {METHOD_LABELS.get(method, method)} at "
                 f"{', '.join('dense' if s is None else pct(s) for s in tune_s)}")
        res = tune_method(
            method, problem, ks, communications=b.tune_communications, n_stage1=b.n_stage1, n_stage2=b.n_stage2,
            narrow=b.narrow, seed=self.seed, split="validation", records=b.tune_records,
            max_iterations=b.max_iterations, driver=b.driver, path=self.out / "tuning" / f"{method}.json",
            key={**key, **self._dtype_key()}, progress=self.progress, echo=self.echo, like=self.like,
            space=self.space(method, problem),
        )
        self.run_steps["tuning"] += sum(r["run_steps"] for r in res.info.get("runs", []))
        chosen = {}
        for s, k in zip(tune_s, ks):
            chosen[s] = self.choose(method, problem, res, "none" if k is None else str(k), s)
        if method == "proxskip":
            return {None: chosen[None]}
        out = {}
        for s in self.sparsities:
            near = min(tune_s, key=lambda t: (abs(t - s), t))
            out[s] = dict(chosen[near])
        return out

    def choose(self, method, problem, res, group, s) -> dict:
        """The configuration of ``group`` the final runs take: the search's best, or under the budget's
        ``gamma_choice_max`` the best with ``gamma <= gamma_choice_max / L`` (the search's best recorded)."""
        entry = {"params": res.best[group], "validation_score": res.best_score[group], "tuned_at": s}
        cap = self.budget.gamma_choice_max
        if cap is None:
            return entry
        gamma = next(p for p in self.space(method, problem).params if p.name == "gamma")
        limit = cap * gamma.high / self.budget.gamma_range[1]  # the space's gamma is gamma_range / L
        params, score = best_trial(res.trials, group, admissible=lambda c: c["gamma"] <= limit)
        if params == entry["params"]:
            return entry
        taken = "none is" if params is None else f"gamma {params['gamma']:.4g} is"
        self.say(f"  {METHOD_LABELS.get(method, method)} at {pct(s) if s else 'dense'}: the search's best "
                 f"gamma {res.best[group]['gamma']:.4g} is above {cap:g}/L = {limit:.4g}; {taken} the best below")
        return {"params": params, "validation_score": score, "tuned_at": s, "gamma_choice_max": cap,
                "search_best": {"params": res.best[group], "validation_score": res.best_score[group]}}

    def params_for(self, method, s, problem):
        entry = self.tuned[method][s]
        if entry["params"] is None:
            entry["params"] = theory_fallback(method, problem, self.budget.p_range)
            entry["fallback"] = ("every configuration failed; theory parameters gamma = 1/L, "
                                 "p = 1/sqrt(kappa) clipped to the budget's p range")
            self.say(f"  {method} at {pct(s) if s else 'dense'}: every configuration failed, using theory values")
        return entry["params"]

    # -- final runs ------------------------------------------------------------------------------
    def run_dir(self, method, s) -> Path:
        """The folder of ``method``'s final run at sparsity ``s`` (``None``: dense)."""
        return self.out / "runs" / method / skey(s)

    def final_run(self, method, s, params, problem, where, communications, split="test"):
        """``method`` at sparsity ``s``: ``seeds`` seeds batched, stored in ``where`` (read back when its key matches)."""
        b = self.budget
        k = None if s is None else sparsity_to_k(problem.dim, s)
        seeds = [self.seed + 1 + j for j in range(b.seeds)]
        def build(runs):  # the rule with every hyperparameter repeated over `runs` batched runs
            return make_algorithm(method, {n: np.full(runs, v) for n, v in params.items()}, k)

        alg = build(len(seeds))
        w0 = initial_models(problem, seeds, len(seeds))
        drive = choose_drive(alg, problem, b, params, communications, seeds, w0)
        once = identical_runs(alg, problem, w0)  # compute one and repeat it for every seed
        if self.like is not None:  # the rounds too: closed-form local phases run on the device
            w0 = B.from_numpy(w0, like=self.like)
        key = {"method": method, "sparsity": s, "k": k, "iterations": drive.T, "seeds": seeds,
               "every": drive.every, "split": split, "budget": b.name,
               **({"driver": drive.driver} if drive.driver != "run" else {}), **self._dtype_key(),
               "data": self.data_key}
        key = {**json.loads(json.dumps(jsonable(key))), **stored_match(params, communications)}
        stored = self.read_back(method, s, where, key)
        if stored is not None:  # runs stored before the stability check get it here
            return with_train_loss(stored[0], problem), {**stability(stored[0], seeds), **run_seconds(stored[0]),
                                                          **stored[1]}
        t0 = time.perf_counter()

        def drive_it(rule, runs):  # long runs by expected local steps in stored segments (resumable)
            if drive.driver == "run" and drive.T >= MIN_SEGMENTED_ITERATIONS:
                return run_in_segments(rule, problem, drive.T, seeds=seeds[:runs], split=split, every=drive.every,
                                       w0=w0[:runs], where=where, key=key, progress=self.progress, like=self.like,
                                       say=self.say)
            return run_drive(drive, rule, problem, communications, seeds=seeds[:runs], split=split, w0=w0[:runs],
                             progress=self.progress)

        if once:
            res = drive_it(build(1), 1)
            res = repeat_run(res, len(seeds), {**res.config, "algorithm": alg.config(), "seed": seeds,
                                               "runs_computed": 1})
        else:
            res = drive_it(alg, len(seeds))
        seconds = time.perf_counter() - t0
        w = np.asarray(B.to_numpy(res.w), dtype=np.float64)
        hist = with_train_loss({n: np.asarray(v) for n, v in res.history.items()}, problem)
        loss_full = np.asarray(problem.objective(w), dtype=np.float64)
        data_sum = train_loss_sum(problem, loss_full, np.sum(w * w, axis=-1))
        summary = {
            "key": key, "status": res.status, "message": res.message, "seconds": seconds,
            "records": int(len(hist["iteration"])), "seeds": seeds, "k": k,
            "driver": drive.driver,
            "iterations": (drive.own if drive.exact
                           else np.broadcast_to(hist["iteration"][-1], (len(seeds),))).astype(int).tolist(),
            "params": params, "algorithm": alg.config(), "runs_computed": 1 if once else len(seeds),
            "metric": hist["metric"][-1].tolist(), "objective": loss_full.tolist(),
            "train_loss_sum": data_sum.tolist(), "communications": hist["communications"][-1].tolist(),
            "bits_up": hist["bits_up"][-1].tolist(), **stability(hist, seeds), **run_seconds(hist, seconds),
            **({"resumed_at": res.config["resumed_at"]} if res.config.get("resumed_at") else {}),
        }
        where.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(where / "history.npz", **hist)
        np.savez_compressed(where / "final_w.npz", w=w)
        write_json(where / "config.json", res.config)
        write_json(where / "summary.json", summary)
        unstable = summary.get("unstable_seeds") or []
        self.say(f"  {METHOD_LABELS.get(method, method)} {pct(s) if s else 'dense'}: {len(seeds)} seeds x "
                 f"{max(summary['iterations'])} iterations ({summary['driver']}) in {seconds:.1f} s, "
                 f"{SPECS[self.dataset].metric_label} "
                 f"{np.mean(summary['metric']):.4f} ({res.status})"
                 + (f"; UNSTABLE seeds {unstable}: the training objective rose to "
                    f"{max(summary['peak_rise']):.3g} times its start" if unstable else ""))
        return hist, summary

    def read_back(self, method, s, where, key):
        """``(history, summary)`` stored in ``where`` under ``key``, or None (damaged: None, with a warning)."""
        d = where
        if (d / "summary.json").is_file() and (d / "history.npz").is_file():
            old = read_back_json(d / "summary.json")  # (damaged: None, with a warning, and recomputed)
            if old is not None and old.get("key") == key:
                hist = read_back_npz(d / "history.npz", required=("iteration", "communications", "bits_up", "metric"),
                                     length=old.get("records"))
                if hist is not None:
                    self.say(f"  {method} {pct(s) if s else 'dense'}: read back from {d}")
                    return hist, dict(old, read_back=True)
        return None


def tune_all(pipe: Pipeline, tune_problem, key, given: dict, tuned, jobs: int) -> None:
    """Tune every method of ``pipe`` not in ``given`` (hyperparameters read from the file ``tuned``)."""
    t0 = time.perf_counter()
    to_tune = [m for m in pipe.methods if m not in given]
    if jobs > 1 and len(to_tune) > 1:  # workers store the searches; the loop below reads them back
        pipe.say(f"tuning {len(to_tune)} methods in {min(jobs, len(to_tune))} worker processes")
        for m in to_tune:
            pipe.space(m, tune_problem)
        done = run_forked([lambda m=m: pipe.counting("tuning", pipe.tune, m, tune_problem, key) for m in to_tune],
                          [1.0 if m == "proxskip" else float(len(pipe.budget.tune_sparsities or pipe.sparsities))
                           for m in to_tune], jobs, init=lambda: pipe.in_worker(jobs), echo=pipe.say)
        pipe.run_steps["tuning"] += sum(done.values())
    for i, m in enumerate(pipe.methods, 1):
        if m in given:
            pipe.say(f"[{i}/{len(pipe.methods)}] {METHOD_LABELS[m]}: hyperparameters from {tuned}")
            pipe.tuned[m] = given[m]
            continue
        pipe.say(f"[{i}/{len(pipe.methods)}] tuning")
        pipe.tuned[m] = pipe.tune(m, tune_problem, key)
    pipe.timings["tuning"] = time.perf_counter() - t0


def final_runs(pipe: Pipeline, final_problem, jobs: int) -> None:
    """Every method at every sparsity with its tuned hyperparameters, into ``pipe.results``; writes ``tuned.json``."""
    t0 = time.perf_counter()
    final_c = pipe.communications
    cells = [(m, s) for m in pipe.methods for s in ([None] if m == "proxskip" else pipe.sparsities)]
    if jobs > 1 and len(cells) > 1:  # workers store the runs; the loop below reads them back
        pipe.say(f"final runs: {len(cells)} cells in {min(jobs, len(cells))} worker processes")
        params = {c: pipe.params_for(*c, final_problem) for c in cells}
        done = run_forked(
            [lambda c=c, params=params: pipe.counting("final", pipe.final_run, c[0], c[1], params[c], final_problem,
                                       pipe.run_dir(*c), final_c) for c in cells],
            [remaining_iterations(pipe.run_dir(*c), expected_steps(params[c], final_c, pipe.budget),
                                  stored_match(params[c], final_c)) for c in cells],
            jobs, init=lambda: pipe.in_worker(jobs), echo=pipe.say)
        pipe.run_steps["final"] += sum(done.values())
    for i, m in enumerate(pipe.methods, 1):
        pipe.say(f"[{i}/{len(pipe.methods)}] final runs of {METHOD_LABELS[m]}")
        pipe.results[m] = {}
        for s in ([None] if m == "proxskip" else pipe.sparsities):
            params = pipe.params_for(m, s, final_problem)
            hist, summ = pipe.final_run(m, s, params, final_problem, pipe.run_dir(m, s), final_c)
            if not summ.get("read_back"):
                pipe.run_steps["final"] += run_steps(summ)
            pipe.results[m][s] = {"history": hist, "summary": summ}
    pipe.timings["final_runs"] = time.perf_counter() - t0
    write_json(pipe.out / "tuned.json", {m: {str(s): e for s, e in v.items()} for m, v in pipe.tuned.items()})
