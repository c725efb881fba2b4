"""The demo: every Algorithm-1 variant and FedHT/FedIHT on the embedded synthetic default."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .._validation import check_positive_int
from ..algorithms.registry import METHODS, RANDPROX_LAMBDA_FRACTION, theory_values
from ..data import make_sparse_regression
from ..problems import Ridge
from ..prox import sparsity_to_k
from ..runner import run
from ..theory import proxskip_parameters
from .plots import have_matplotlib, plot_metric_vs_bits

__all__ = ["DEMO_METHODS", "SPARSE_TRAINING_DEMO_METHODS", "demo_methods", "sparse_training_methods", "run_demo",
           "sparsity_to_k", "format_table"]

#: The demo's methods: every Algorithm-1 variant and FedHT/FedIHT (``demo="main"`` in the registry).
DEMO_METHODS = tuple(n for n, spec in METHODS.items() if spec.demo == "main")

#: Round-based sparse-training systems the demo also runs when asked (``--methods``): FedSparsify and FLASH
#: with FedHT's local steps, the demo's horizon in rounds and density ``1 - sparsity``.
SPARSE_TRAINING_DEMO_METHODS = tuple(n for n, spec in METHODS.items() if spec.demo == "sparse_training")


def demo_methods(problem, k: int) -> dict:
    """The demo's algorithms with theory parameters ``gamma = 1/L``, ``p = 1/sqrt(kappa)``.

    FedHT/FedIHT use the same stepsize and ``round(1/p)`` local steps;
    RandProx-l1 uses ``lam = 0.03 * ||grad F(0)||_inf``
    (:data:`~proxfed.algorithms.registry.RANDPROX_LAMBDA_FRACTION`;
    :func:`proxfed.algorithms.registry.theory_values`).
    """
    values = theory_values(problem)
    return {name: METHODS[name].build(METHODS[name].theory(values=values), k) for name in DEMO_METHODS}


def sparse_training_methods(problem, k: int, iterations: int) -> dict:
    """FedSparsify and FLASH (:data:`SPARSE_TRAINING_DEMO_METHODS`) for the demo.

    FedHT's stepsize ``1/L`` and local steps ``round(1/p)``,
    ``iterations // local_steps`` rounds (at least 2), final sparsity
    ``1 - k/d`` (FedSparsify) and density ``k/d`` (FLASH).
    """
    values = theory_values(problem)
    rounds = max(2, iterations // values["local_steps"])
    d = problem.dim
    s, density = 1 - k / d, k / d
    return {name: METHODS[name].build(METHODS[name].theory(values=values), sparsity=s, density=density,
                                      rounds=rounds) for name in SPARSE_TRAINING_DEMO_METHODS}


def format_table(rows: list[dict], metric: str) -> str:
    """A Markdown table of the demo's summary rows."""
    head = f"| method | test {metric} | uplink bits / client | communications | ‖Σh‖ | status |"
    lines = [head, "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['metric']:.4f} | {r['bits_up']:,.0f} | {r['communications']:.0f} "
            f"| {r['sum_h_norm']:.2e} | {r['status']} |"
        )
    return "\n".join(lines)


def run_demo(
    out_dir="proxfed-results/demo",
    sparsity: float = 0.9,
    iterations: int = 5000,
    seed: int = 0,
    alpha: float = 10.0,
    methods=DEMO_METHODS,
    progress: bool = True,
    echo=print,
) -> dict:
    """Run the demo and write its results directory.

    Problem: :class:`~proxfed.problems.Ridge` (``alpha``) on
    :func:`~proxfed.data.make_sparse_regression` (``seed``). Every method runs
    ``iterations`` local steps from ``w = 0`` with coins from ``seed``; the
    metric is the test R² of the output (TopK for sparse methods).

    Writes ``config.json``, ``summary.json``, ``table.md``, one run
    directory per method (``config.json``, ``history.npz``,
    ``summary.json``, ``state.npz``) and ``metric_vs_bits.png`` (without
    matplotlib, a core dependency, it says that there is no plot).

    Returns
    -------
    dict with ``rows`` (one summary per method), ``table`` (Markdown), ``out_dir`` and ``plot``
    (the figure's path, or None).
    """
    unknown = set(methods) - set(DEMO_METHODS + SPARSE_TRAINING_DEMO_METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {DEMO_METHODS + SPARSE_TRAINING_DEMO_METHODS}")
    check_positive_int(iterations, "iterations", python_only=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset = make_sparse_regression(seed=seed)
    problem = Ridge(dataset, alpha=alpha)
    k = sparsity_to_k(problem.dim, sparsity)
    algs = demo_methods(problem, k)
    if set(methods) & set(SPARSE_TRAINING_DEMO_METHODS):
        algs.update(sparse_training_methods(problem, k, iterations))
    th = proxskip_parameters(problem)
    echo(f"proxfed demo: {dataset!r}, ridge alpha={alpha}, d={problem.dim}, sparsity={sparsity} (K={k}), "
         f"kappa={th['kappa']:.0f}, gamma=1/L={th['gamma']:.3g}, p=1/sqrt(kappa)={th['p']:.3g}, T={iterations}")
    rows, histories = [], {}
    t_start = time.perf_counter()
    for name in methods:
        res = run(algs[name], problem, iterations, seed=seed, every=max(1, iterations // 100), progress=progress)
        res.save(out / name)
        h = res.history
        histories[name] = h
        rows.append({
            "method": name, "metric": float(h["metric"][-1]), "bits_up": float(h["bits_up"][-1]),
            "communications": float(h["communications"][-1]), "sum_h_norm": float(h["sum_h_norm"][-1]),
            "loss": float(h["loss"][-1]), "status": res.status, "algorithm": algs[name].config(),
        })
    elapsed = time.perf_counter() - t_start
    table = format_table(rows, problem.metric_name)
    config = {
        "dataset": dataset.name, "n_clients": dataset.n_clients, "dim": problem.dim, "alpha": alpha,
        "sparsity": sparsity, "k": k, "iterations": iterations, "seed": seed, "methods": list(methods),
        "theory": th, "randprox_lambda_fraction": RANDPROX_LAMBDA_FRACTION,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "summary.json").write_text(json.dumps({"rows": rows, "seconds": elapsed}, indent=2))
    (out / "table.md").write_text(table + "\n")
    plot = None
    if have_matplotlib():
        plot = plot_metric_vs_bits(histories, out / "metric_vs_bits.png", metric_label="test R²",
                                   title=f"demo: synthetic ridge, sparsity {sparsity:.0%} (K={k})")
    echo(table)
    if plot is None:
        echo("no plot: metric_vs_bits.png needs matplotlib, which is not installed (pip install matplotlib)")
    echo(f"results written to {out} ({elapsed:.1f} s)")
    return {"rows": rows, "table": table, "out_dir": out, "plot": plot}
