"""Read results directories, group their runs, and compare them in one table and one figure.

A saved run (:meth:`proxfed.RunResult.save`, or a final run of a
reproduction: ``runs/<method>/<sparsity>/``) holds a batch of runs; runs
with the same hyperparameters (``gamma``, ``p`` or local steps, ``lam``,
``K``, sparsity or density) are seeds of one **group**, shown as the seed
mean with a band of one standard error. ``proxfed run`` writes such
directories and a table and figure of its own groups (:func:`summary_table`,
:func:`proxfed.experiments.plots.plot_comparison`); ``proxfed compare DIR...``
(:func:`compare_results`) puts the groups of several directories side by side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .catalog import paper_name
from .tables import format_bits, markdown_table, mean_se

__all__ = ["RunGroup", "find_run_dirs", "read_run_dir", "split_runs", "group_labels", "summary_table",
           "compare_results", "metric_label"]

#: Per-run hyperparameters read from an algorithm's config, with their display names.
PARAM_KEYS = {"gamma": "γ", "p": "p", "local_steps": "E", "lam": "λ", "k": "K", "final_sparsity": "s",
              "density": "δ"}
_CURVE_KEYS = ("bits_up", "metric", "communications", "loss")


@dataclass
class RunGroup:
    """Runs of one method with the same hyperparameters (its seeds), from one results directory.

    Attributes
    ----------
    method : str
        Code name (see :func:`proxfed.experiments.catalog.paper_name`).
    params : dict
        The hyperparameters (keys of :data:`PARAM_KEYS`).
    seeds : list of int
    history : dict of str to ndarray
        The group's curves, shape (records, seeds).
    status : list of str
        Per seed: ``"completed"``, ``"diverged"``, ...
    source : str
        The run directory.
    metric : str
        The metric's label, e.g. ``"test R²"``.
    """

    method: str
    params: dict
    seeds: list
    history: dict
    status: list
    source: str
    metric: str = "test metric"


def metric_label(config: dict) -> str:
    """The label of a saved run's metric: its split and the problem's score (``"test R²"``, ...).

    >>> metric_label({"problem": {"class": "Ridge"}, "split": "test"})
    'test R²'
    """
    cls = config.get("problem", {}).get("class", "")
    name = {"Ridge": "R²", "SoftmaxRegression": "accuracy", "TorchProblem": "accuracy"}.get(cls, "metric")
    return f"{config.get('split') or 'test'} {name}"


def _params(alg: dict, r: int, runs: int) -> dict:
    """Run ``r``'s hyperparameters from an algorithm config (per-run lists or shared scalars)."""
    found = {"gamma": alg.get("gamma"), "lam": alg.get("local_lam"),
             "k": alg.get("final_k", alg.get("k")), "final_sparsity": alg.get("final_sparsity"),
             "density": alg.get("density")}
    found["local_steps" if alg.get("schedule") == "fixed" else "p"] = alg.get(
        "local_steps" if alg.get("schedule") == "fixed" else "p")
    out = {}
    for key in PARAM_KEYS:
        v = found.get(key)
        if isinstance(v, list):
            if len(v) != runs:
                continue
            v = v[r]
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = int(v) if key in ("k", "local_steps") else float(v)
    return out


def split_runs(history: dict, config: dict, source="", diverged=None, status: str = "completed") -> list:
    """The groups of a saved batch: runs with equal hyperparameters, in order of first appearance.

    Parameters
    ----------
    history : dict of str to ndarray
        Curves of shape (records,) or (records, R).
    config : dict
        The run's ``config.json`` (``algorithm``, ``seed``, ``problem``, ``split``).
    source : str
    diverged : sequence of bool, optional
        Per run (default: every run has ``status``).
    status : str
        The batch's status.

    Returns
    -------
    list of RunGroup
    """
    metric = np.asarray(history["metric"])
    runs = 1 if metric.ndim == 1 else metric.shape[1]
    seed = config.get("seed", 0)
    seeds = list(seed) if isinstance(seed, list) else [int(seed)] * runs
    alg = config.get("algorithm", {})
    groups: dict = {}
    for r in range(runs):
        params = _params(alg, r, runs)
        groups.setdefault(json.dumps(params, sort_keys=True), (params, []))[1].append(r)
    out = []
    for params, idx in groups.values():
        hist = {}
        for key in set(_CURVE_KEYS) | {"iteration"}:
            if key in history:
                a = np.asarray(history[key], dtype=np.float64)
                a = a[:, None] if a.ndim == 1 else a
                hist[key] = np.broadcast_to(a, (a.shape[0], runs))[:, idx]
        st = [("diverged" if diverged[r] else "completed") if diverged is not None else status for r in idx]
        out.append(RunGroup(alg.get("name", "?"), params, [seeds[r] for r in idx], hist, st, str(source),
                            metric_label(config)))
    return out


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def find_run_dirs(path) -> list:
    """The saved runs in ``path``: itself, the methods of a ``proxfed run`` directory, or any below it.

    A saved run is a directory with ``config.json`` and ``history.npz``
    (hidden directories, e.g. a save in progress, are skipped).

    Returns
    -------
    list of pathlib.Path
        Empty when there is none.
    """
    path = Path(path)
    if (path / "history.npz").is_file() and (path / "config.json").is_file():
        return [path]
    experiment = path / "experiment.json"
    if experiment.is_file():
        try:
            doc = json.loads(experiment.read_text())
            dirs = [path / m["dir"] for m in doc.get("methods", {}).values()]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            dirs = []
        found = [d for d in dirs if (d / "history.npz").is_file() and (d / "config.json").is_file()]
        if found:
            return found
    return sorted(h.parent for h in path.rglob("history.npz")
                  if (h.parent / "config.json").is_file() and not _hidden(h.parent, path))


def read_run_dir(path) -> list:
    """The groups of one saved run (a ``proxfed run`` method directory, a saved run or a reproduction's run).

    Per-run divergence comes from the parent's ``experiment.json`` when
    ``proxfed run`` wrote it, else every run gets the ``summary.json`` status.

    Returns
    -------
    list of RunGroup
    """
    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    with np.load(path / "history.npz") as h:
        history = {k: h[k] for k in h.files}
    if "metric" not in history:
        raise ValueError(f"{path}: the runs have no metric (run without an evaluation split)")
    status = "completed"
    if (path / "summary.json").is_file():
        status = json.loads((path / "summary.json").read_text()).get("status", status)
    diverged = None
    experiment = path.parent / "experiment.json"
    if experiment.is_file():
        entry = json.loads(experiment.read_text()).get("methods", {}).get(path.name, {})
        diverged = entry.get("diverged")
    return split_runs(history, config, path, diverged=diverged, status=status)


def _fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"


def _param_text(params: dict, keys=None) -> str:
    keys = [k for k in PARAM_KEYS if k in params and (keys is None or k in keys)]
    return ", ".join(f"{PARAM_KEYS[k]}={params[k] if isinstance(params[k], int) else _fmt(params[k])}" for k in keys)


def group_labels(groups: list) -> list:
    """Unique labels: the paper name, plus the hyperparameters that differ between a method's groups.

    Groups that still share a label get their source directory's name appended.
    """
    varying: dict = {}
    for g in groups:
        varying.setdefault(g.method, []).append(g.params)
    vary_keys = {}
    for method, plist in varying.items():
        keys = set().union(*plist)
        vary_keys[method] = {k for k in keys if len({json.dumps(p.get(k)) for p in plist}) > 1}
    labels = []
    for g in groups:
        extra = _param_text(g.params, vary_keys[g.method])
        labels.append(paper_name(g.method) + (f" ({extra})" if extra else ""))
    counts = {lab: labels.count(lab) for lab in labels}
    return [f"{lab} [{Path(g.source).name}]" if counts[lab] > 1 else lab for lab, g in zip(labels, groups)]


def _mean_text(values) -> str:
    with np.errstate(over="ignore", invalid="ignore"):  # (the last finite record of a diverged run may be huge)
        m, se = mean_se(values)
    if not np.isfinite(m):
        return "n/a"
    if not np.isfinite(se) or se <= 1e-9 * max(1.0, abs(m)):  # (seeds that give the same run, to rounding)
        return _fmt(m)
    return f"{_fmt(m)} ± {_fmt(se)}"


def _threshold_bits(hist: dict, threshold: float) -> float:
    """Seed-mean uplink bits at the first record whose seed-mean metric reaches ``threshold`` (NaN: never)."""
    metric = np.nanmean(hist["metric"], axis=1)
    hit = np.flatnonzero(metric >= threshold)
    return float(np.mean(hist["bits_up"][hit[0]])) if hit.size else float("nan")


def summary_table(groups: list, labels=None, thresholds=(), sources: bool = False) -> str:
    """A Markdown table of the groups' final values (mean ± standard error over seeds).

    Columns: method (paper name), hyperparameters, seeds, the final metric,
    training objective, communications and uplink bits per client, the
    uplink bits at which the seed-mean metric first reaches each threshold,
    status, and (``sources``) the run directory.
    """
    labels = group_labels(groups) if labels is None else labels
    metrics = sorted({g.metric for g in groups})
    head = ["method", "hyperparameters", "seeds", metrics[0] if len(metrics) == 1 else "metric",
            "train loss", "communications", "uplink bits / client"]
    head += [f"bits to {t:g}" for t in thresholds] + ["status"] + (["results"] if sources else [])
    rows = []
    for g, lab in zip(groups, labels):
        last = {k: v[-1] for k, v in g.history.items()}
        bad = sum(s != "completed" for s in g.status)
        status = "ok" if not bad else f"{bad}/{len(g.status)} {'diverged' if 'diverged' in g.status else 'stopped'}"
        row = [lab, _param_text(g.params) or "-", len(g.seeds), _mean_text(last["metric"]), _mean_text(last["loss"]),
               _mean_text(last["communications"]), format_bits(float(np.mean(last["bits_up"])))]
        row += [format_bits(_threshold_bits(g.history, t)) for t in thresholds] + [status]
        rows.append(row + ([g.source] if sources else []))
    return markdown_table(head, rows)


def compare_results(dirs, out_dir, *, thresholds=(), title: str = "", echo=print) -> dict:
    """``proxfed compare``: one table and one figure of the runs in several results directories.

    Parameters
    ----------
    dirs : sequence of path-like
        ``proxfed run`` results directories, saved runs, or reproductions
        (every saved run below them; see :func:`find_run_dirs`).
    out_dir : path-like
        Where ``compare.md`` and ``compare.png`` are written.
    thresholds : sequence of float
        Metric values whose first-reaching uplink bits get a column.
    title : str
    echo : callable

    Returns
    -------
    dict
        ``groups``, ``labels``, ``table`` (Markdown), ``figure`` (path) and ``out_dir``.

    Raises
    ------
    FileNotFoundError
        If a directory holds no saved run.
    """
    from .plots import plot_comparison

    run_dirs = []
    for d in dirs:
        found = find_run_dirs(d)
        if not found:
            raise FileNotFoundError(f"{d}: no results in it (no config.json and history.npz of a saved run)")
        run_dirs += [r for r in found if r not in run_dirs]
    groups = [g for r in run_dirs for g in read_run_dir(r)]
    labels = group_labels(groups)
    table = summary_table(groups, labels, thresholds, sources=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(f"# {title or 'Comparison'}\n\n{table}\n")
    metrics = sorted({g.metric for g in groups})
    figure = plot_comparison({lab: g.history for lab, g in zip(labels, groups)}, out / "compare.png",
                             metric_label=metrics[0] if len(metrics) == 1 else "metric", title=title)
    echo(table)
    echo(f"compared {len(groups)} groups of runs from {len(run_dirs)} run directories; wrote {out / 'compare.md'} "
         f"and {figure}")
    return {"groups": groups, "labels": labels, "table": table, "figure": figure, "out_dir": out}
