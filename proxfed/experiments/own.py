"""A researcher's own experiments: ``proxfed run`` and ``proxfed tune`` as functions.

:func:`run_experiment` runs any methods of the catalog
(:mod:`proxfed.experiments.catalog`) on a problem, each method **one batched
run** over the Cartesian product of its hyperparameter lists and the seeds,
and writes a results directory::

    experiment.json    the problem, the horizon, every run's hyperparameters and seed, timings
    <method>/          the batched run (RunResult.save): config.json, history.npz (records x runs),
                       summary.json, state.npz
    table.md           one row per method and hyperparameters: mean ± standard error over the seeds
    figure.png         metric vs uplink bits per client; metric and loss vs communications

:func:`tune_experiment` runs the two-stage random search of
:func:`proxfed.tune.tune_method` for several methods and sparsities and
writes ``tuning/<method>.json`` (every configuration, resumable),
``tuned.json`` and ``tuned.md`` (the best hyperparameters, with the
``proxfed run`` command line that uses them).
"""

from __future__ import annotations

import functools
import itertools
import json
import shlex
import time
from pathlib import Path

import numpy as np

from .. import __version__
from .._stored import jsonable
from ..prox import sparsity_to_k
from .catalog import METHODS, build_algorithm, hyperparameters, paper_name, theory_defaults
from .compare import group_labels, split_runs, summary_table
from .tables import markdown_table

__all__ = ["run_experiment", "tune_experiment", "hyperparameter_values", "method_grid", "TORCH_DEFAULTS"]

#: Defaults of the torch problems (CIFAR-10), which have no smoothness constant for theory values.
TORCH_DEFAULTS = {"gamma": 0.05, "p": 1 / 8, "local_steps": 8, "lam": None}


def hyperparameter_values(method: str, defaults: dict, *, gamma=None, p=None, local_steps=None, lam=None) -> dict:
    """The lists of values of ``method``'s hyperparameters (:func:`~proxfed.experiments.catalog.hyperparameters`).

    A list that is not given takes its default (one value). ``p`` and the
    local steps are one knob, ``p = 1 / local_steps``: a random-coin method
    given only local steps uses ``p = 1/E``, and a fixed-schedule method given
    only ``p`` takes ``round(1/p)`` steps (repeated values dropped).

    >>> hyperparameter_values("fedht", {"gamma": 0.1, "local_steps": 4}, p=[0.5, 0.1])
    {'gamma': [0.1], 'local_steps': [2, 10]}
    """
    values = {"gamma": list(gamma) if gamma else [defaults["gamma"]]}
    if "p" in hyperparameters(method):
        values["p"] = list(p) if p else [1.0 / e for e in local_steps] if local_steps else [defaults["p"]]
    else:
        steps = list(local_steps) if local_steps else [max(1, round(1 / q)) for q in p] if p else [
            defaults["local_steps"]]
        values["local_steps"] = list(dict.fromkeys(int(e) for e in steps))
    if "lam" in hyperparameters(method):
        values["lam"] = list(lam) if lam else [defaults["lam"]]
    return values


def method_grid(method: str, values: dict, ks, seeds) -> list:
    """One dict per run: the Cartesian product of the hyperparameter lists, ``K`` and the seeds (innermost).

    Dense methods ignore ``ks``.

    >>> [r["seed"] for r in method_grid("proxskip", {"gamma": [1, 2], "p": [0.5]}, [3, 4], [0, 1])]
    [0, 1, 0, 1]
    """
    names = list(values)
    lists = [values[n] for n in names]
    if METHODS[method].sparse:
        names.append("k")
        lists.append(list(ks))
    return [dict(zip(names + ["seed"], combo)) for combo in itertools.product(*lists, list(seeds))]


def _ks(dim: int, sparsity, k) -> list:
    ks = [int(v) for v in k] if k else [sparsity_to_k(dim, float(s)) for s in (sparsity or (0.9,))]
    bad = [v for v in ks if not 1 <= v <= dim]
    if bad:
        raise ValueError(f"K = {bad[0]} is not in [1, {dim}] (the model dimension)")
    return list(dict.fromkeys(ks))


def _algorithm(method, grid, problem, info, rounds, clients_per_round):
    params = {n: np.array([g[n] for g in grid]) for n in hyperparameters(method)}
    k = np.array([g["k"] for g in grid]) if "k" in grid[0] else None
    seed = int(grid[0]["seed"])
    if info.get("problem") != "TorchProblem":
        return build_algorithm(method, params, k, problem.dim, rounds=rounds, clients_per_round=clients_per_round,
                               seed=seed)
    from proxfed_dl import make_algorithm as torch_algorithm

    if "lam" in params and params["lam"][0] is None:
        raise ValueError("randprox_l1 on a torch problem needs lam (no default)")
    steps = np.unique(params["local_steps"] if "local_steps" in params else np.rint(1 / params["p"]))
    if steps.size != 1 or (k is not None and np.unique(k).size != 1) or ("lam" in params and np.unique(
            params["lam"]).size != 1):
        raise ValueError(f"{info['dataset']}: one p (or local steps), K and lam per method; lists of gamma and "
                         "seeds are batched")
    dim = problem.dim
    sparsity = 0.0 if k is None else (dim - int(k[0])) / dim
    extra = {"rounds": rounds, "seed": seed, "clients_per_round": clients_per_round} if METHODS[method].rounds else {}
    return torch_algorithm(method, problem, params["gamma"], 1.0 / float(steps[0]), sparsity=sparsity,
                           schedule="fixed", lam=None if "lam" not in params else float(params["lam"][0]), **extra)


def _run_batch(alg, problem, grid, *, iterations, communications, records, like, progress, torch_problem):
    """One batched run of ``alg``; returns the result and the driver's name."""
    from ..drivers import choose_driver, exact_horizon
    from ..runner import initial_models, run

    seeds = [int(g["seed"]) for g in grid]
    R = len(grid)
    w0 = problem.initial_points(R, seed=seeds) if torch_problem else initial_models(problem, seeds, R, like=like)
    # closed-form rounds for NumPy ridge runs only; on a device or a torch problem, exact counts per iteration
    on_host = not torch_problem and like is None
    driver = choose_driver(alg, problem, "auto" if on_host or communications is None else "exact",
                           iterations=iterations if communications is None else None,
                           communications=communications, w0=w0, seed=seeds)
    if driver == "iterations":
        return run(alg, problem, int(iterations), seed=seeds, every=max(1, iterations // records), w0=w0,
                   progress=progress), "run"
    if driver == "rounds":
        return run(alg, problem, communications=communications, driver="rounds", seed=seeds,
                   every=max(1, communications // records), w0=w0, progress=progress), "run_rounds"
    T = exact_horizon(alg, communications, seed=seeds, runs=R)
    return run(alg, problem, T, seed=seeds, every=max(1, T // records), w0=w0, communications=communications,
               driver="exact", progress=progress), "run (exact communications)"


def run_experiment(problem, out_dir, methods, *, info: dict | None = None, sparsity=(0.9,), k=None, gamma=None,
                   p=None, local_steps=None, lam=None, clients_per_round: int | None = None,
                   iterations: int | None = None, communications: int | None = None, seeds=(0,), records: int = 100,
                   like=None, plot: bool = True, progress: bool = True, echo=print,
                   options: dict | None = None) -> dict:
    """Run each method as one batched run over its hyperparameter grid and seeds; write the results directory.

    Protocol, exactly: for every method, the runs are the Cartesian product
    of its hyperparameter lists (:func:`hyperparameter_values`; defaults:
    ``gamma = 1/L``, ``p = 1/sqrt(kappa)``, local steps ``round(1/p)``,
    RandProx-l1's ``lam = 0.03 ||grad F(0)||_inf``), the kept entries ``K``
    (sparse methods) and the seeds (:func:`method_grid`). Run ``r`` starts from
    the problem's initial point for its seed and draws its own coins from it
    (runs with the same seed share coins). The horizon is ``iterations``
    local steps, or exactly ``communications`` communications per run
    (:func:`proxfed.run_rounds` where the method has a closed-form local phase,
    else :func:`proxfed.run` stopping each run at its own last communication).
    FedSparsify and FLASH schedule over ``communications`` rounds, or
    ``iterations // max(local steps)``, with ``seeds[0]`` as their own seed.
    Metrics are on the test split, after the method's final prox (TopK).

    Parameters
    ----------
    problem : FederatedProblem
        From :func:`proxfed.experiments.catalog.load_problem` (or your own).
    out_dir : path-like
    methods : sequence of str
        Code names of :data:`~proxfed.experiments.catalog.METHODS`.
    info : dict, optional
        :func:`~proxfed.experiments.catalog.load_problem`'s description,
        written to ``experiment.json``.
    sparsity, k : sequence
        Sparsities (``K = d - round(s d)``) or kept entries ``K`` (``k`` wins).
    gamma, p, local_steps, lam : sequence of float, optional
        Hyperparameter lists.
    clients_per_round : int, optional
        FedSparsify and FLASH participants per round.
    iterations, communications : int
        The horizon (exactly one).
    seeds : sequence of int
    records : int
        History records per run (about).
    like : array, optional
        Run on this array's library, device and dtype
        (:func:`proxfed._backend.array_template`); round-driver runs stay on NumPy.
    plot : bool
        Draw ``figure.png`` (``proxfed compare`` can draw it later).
    progress : bool
    echo : callable
    options : dict, optional
        The command's options, recorded in ``experiment.json`` and written
        as ``run-config.json`` (``proxfed run --config`` repeats the experiment).

    Returns
    -------
    dict
        ``out_dir``, ``results`` (method -> RunResult), ``grids`` (method ->
        list of per-run dicts), ``groups``, ``table``, ``figure`` (path or None).
    """
    from .plots import plot_comparison

    if (iterations is None) == (communications is None):
        raise ValueError("give exactly one horizon: iterations or communications")
    info = dict(info or {"dataset": getattr(problem.dataset, "name", "dataset"), "dim": problem.dim,
                         "problem": type(problem).__name__})
    torch_problem = info.get("problem") == "TorchProblem"
    defaults = TORCH_DEFAULTS if torch_problem else theory_defaults(problem)
    ks = _ks(problem.dim, sparsity, k)
    grids = {}
    for m in methods:
        values = hyperparameter_values(m, defaults, gamma=gamma, p=p, local_steps=local_steps, lam=lam)
        grids[m] = method_grid(m, values, ks, seeds)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    horizon = {"communications": communications} if communications is not None else {"iterations": iterations}
    what = ", ".join(f"{key} {v}" for key, v in horizon.items())
    echo(f"proxfed run: {info.get('name', info['dataset'])}, N={problem.n_clients}, d={problem.dim}, {what}"
         + ("" if torch_problem else
            f"; theory gamma=1/L={defaults['gamma']:.3g}, p=1/sqrt(kappa)={defaults['p']:.3g}"))
    results, methods_doc, groups = {}, {}, []
    for m in methods:
        grid = grids[m]
        steps = [g["local_steps"] for g in grid if "local_steps" in g] or [1]
        rounds = communications if communications is not None else max(1, int(iterations) // max(steps))
        alg = _algorithm(m, grid, problem, info, rounds, clients_per_round)
        t0 = time.perf_counter()
        res, driver = _run_batch(alg, problem, grid, iterations=iterations, communications=communications,
                                 records=max(1, int(records)), like=like, progress=progress,
                                 torch_problem=torch_problem)
        seconds = time.perf_counter() - t0
        res.save(out / m)
        diverged = np.broadcast_to(np.asarray(res.diverged, bool), (len(grid),)).tolist()
        methods_doc[m] = {"label": paper_name(m), "dir": m, "driver": driver, "runs": grid, "status": res.status,
                          "message": res.message, "diverged": diverged, "seconds": seconds,
                          **({"rounds": rounds} if METHODS[m].rounds else {})}
        results[m] = res
        groups += split_runs(res.history, res.config, out / m, diverged=diverged)
        echo(f"  {paper_name(m)}: {len(grid)} runs ({driver}) in {seconds:.1f} s: {res.message}")
    labels = group_labels(groups)
    table = summary_table(groups, labels)
    (out / "table.md").write_text(f"# {info.get('name', info['dataset'])}, {what}\n\n{table}\n")
    doc = {"format": "proxfed-experiment", "version": 1, "proxfed": __version__, "data": info, "horizon": horizon,
           "records": records, "defaults": defaults, "methods": methods_doc, "options": options or {}}
    (out / "experiment.json").write_text(json.dumps(doc, indent=1, default=_jsonable))
    if options:
        (out / "run-config.json").write_text(json.dumps(options, indent=1, default=_jsonable) + "\n")
    figure = None
    if plot:
        figure = plot_comparison({lab: g.history for lab, g in zip(labels, groups)}, out / "figure.png",
                                 metric_label=groups[0].metric, title=f"{info.get('name', info['dataset'])}, {what}")
    echo(table)
    echo(f"results written to {out} (experiment.json, table.md{', figure.png' if plot else ''}, "
         "one directory per method)")
    return {"out_dir": out, "results": results, "grids": grids, "groups": groups, "table": table,
            "figure": figure}


#: ``json.dumps`` default hook: arrays and NumPy scalars as JSON values, anything else as its str.
_jsonable = functools.partial(jsonable, other=str)


def _fmt(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _run_command(info: dict, method: str, params: dict, k, communications: int) -> str:
    """The ``proxfed run`` command line of tuned hyperparameters."""
    parts = ["proxfed run", f"--dataset {info['dataset']}"]
    if info.get("data_dir"):
        parts.append(f"--data-dir {shlex.quote(str(info['data_dir']))}")
    if info.get("options"):
        parts.append("--data-option " + " ".join(shlex.quote(f"{key}={json.dumps(v)}")
                                                 for key, v in info["options"].items()))
    if info.get("alpha") is not None:
        parts.append(f"--alpha {info['alpha']!r}")
    parts.append(f"--method {method}")
    if k is not None:
        parts.append(f"--k {int(k)}")
    parts += [f"--{n.replace('_', '-')} {v!r}" for n, v in params.items()]  # (repr: the exact value)
    parts.append(f"--communications {int(communications)} --seed 1 2 3")
    return " ".join(parts)


def tune_experiment(problem, out_dir, methods, *, info: dict | None = None, sparsity=(0.9,), k=None,
                    communications: int = 50, n_stage1: int = 16, n_stage2: int = 8, narrow: float = 0.25,
                    seed: int = 0, gamma_range=(0.05, 3.0), p_range=(0.02, 1.0), lam_range=(1e-4, 0.3),
                    holdout: float = 0.1, driver: str = "auto", max_iterations: int | None = None,
                    progress: bool = True, echo=print) -> dict:
    """Tune each method by :func:`proxfed.tune.tune_method` at each ``K``; write the results directory.

    Scores are the validation metric (after TopK) at ``communications``
    communications. Data without a validation split are tuned on
    :func:`proxfed.tune.holdout_split` (``holdout`` of every client's rows,
    seeded by ``seed``). Searches already in ``out_dir/tuning`` (same
    settings) are read back.

    Parameters
    ----------
    problem : Ridge or SoftmaxRegression
    out_dir : path-like
    methods : sequence of str
        Keys of :data:`proxfed.tune.TUNABLE_METHODS`.
    info : dict, optional
        :func:`~proxfed.experiments.catalog.load_problem`'s description (for
        ``tuned.json`` and the suggested ``proxfed run`` commands).
    sparsity, k : sequence
        Sparsities or kept entries ``K`` (``k`` wins); dense ProxSkip is tuned once.
    communications, n_stage1, n_stage2, narrow, seed, driver, max_iterations :
        As :func:`proxfed.tune.tune_method`.
    gamma_range, p_range, lam_range : (float, float)
        :func:`proxfed.tune.method_space`'s ranges (``gamma`` in units of ``1/L``).
    holdout : float
    progress : bool
    echo : callable

    Returns
    -------
    dict
        ``out_dir``, ``tuned`` (method -> list of ``{k, sparsity, params,
        validation_score, command}``), ``table``.
    """
    from ..tune import holdout_split, tune_method

    info = dict(info or {"dataset": getattr(problem.dataset, "name", "dataset")})
    ks = _ks(problem.dim, sparsity, k)
    tune_problem = problem
    if not problem.has_split("validation"):
        ds = holdout_split(problem.dataset, holdout, seed=seed)
        tune_problem = type(problem)(ds, alpha=problem.alpha)
        echo(f"proxfed tune: no validation split; tuning on {ds.n_samples} rows, validating on "
             f"{ds.validation.n_samples} held out ({holdout:g} of every client's rows)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tuned, rows = {}, []
    key = {"data": {n: info.get(n) for n in ("dataset", "options", "alpha", "n_train")}, "holdout": holdout}
    for m in methods:
        m_ks = [None] if not METHODS[m].sparse else ks
        echo(f"tuning {paper_name(m)} at {', '.join('dense' if v is None else f'K={v}' for v in m_ks)}")
        res = tune_method(m, tune_problem, m_ks, communications=communications, n_stage1=n_stage1,
                          n_stage2=n_stage2, narrow=narrow, seed=seed, driver=driver, max_iterations=max_iterations,
                          path=out / "tuning" / f"{m}.json", key=json.loads(json.dumps(key, default=_jsonable)),
                          progress=progress, echo=echo, gamma_range=gamma_range, p_range=p_range,
                          lam_range=lam_range)
        tuned[m] = []
        for kk in m_ks:
            g = "none" if kk is None else str(kk)
            best, score = res.best[g], res.best_score[g]
            entry = {"k": kk, "sparsity": None if kk is None else 1 - kk / problem.dim, "params": best,
                     "validation_score": score,
                     "command": None if best is None else _run_command(info, m, best, kk, communications)}
            tuned[m].append(entry)
            shown = ", ".join(f"{n}={_fmt(v)}" for n, v in (best or {}).items()) or "every configuration failed"
            rows.append([paper_name(m), "dense" if kk is None else kk, shown,
                         "n/a" if score is None else f"{score:.4f}"])
    table = markdown_table(["method", "K", "best hyperparameters", "validation score"], rows)
    doc = {"format": "proxfed-tuned", "version": 1, "proxfed": __version__, "data": info,
           "communications": communications, "search": {"n_stage1": n_stage1, "n_stage2": n_stage2,
                                                        "narrow": narrow, "seed": seed, "driver": driver,
                                                        "gamma_range": list(gamma_range), "p_range": list(p_range),
                                                        "lam_range": list(lam_range)},
           "methods": tuned}
    (out / "tuned.json").write_text(json.dumps(doc, indent=1, default=_jsonable))
    commands = [e["command"] for entries in tuned.values() for e in entries if e["command"]]
    (out / "tuned.md").write_text(f"# Tuned at {communications} communications\n\n{table}\n\n"
                                  + "".join(f"    {c}\n" for c in commands))
    echo(table)
    for c in commands:
        echo(f"  {c}")
    echo(f"results written to {out} (tuned.json, tuned.md, tuning/<method>.json)")
    return {"out_dir": out, "tuned": tuned, "table": table}
