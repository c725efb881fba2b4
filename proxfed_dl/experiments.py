"""The FEMNIST deep-learning comparison: server pruning (ASP) against client pruning (Sparse-ProxSkip) and FedAvg.

Every method is a core update rule (:func:`proxfed_dl.make_algorithm`) run by
:func:`proxfed.run` on the same :class:`~proxfed_dl.TorchProblem` (FEMNIST
writers as clients, a LEAF-style CNN), the same initial model, minibatch
streams and communication schedule, at the same sparsity. Run::

    python -m proxfed_dl.experiments --data-dir ../shared/data/femnist --out-dir femnist_dl

It writes ``femnist_dl.png`` (test accuracy, training loss and ``||sum_i h_i||``
against iterations), ``femnist_dl.md`` (the final numbers as a Markdown table)
and ``femnist_dl.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import proxfed

from .algorithms import ROUND_BASED, make_algorithm
from .data import femnist_clients
from .models import leaf_cnn
from .problem import TorchProblem

__all__ = ["FEMNIST_METHODS", "SPARSE_TRAINING_METHODS", "femnist_comparison", "run_methods", "write_results",
           "format_markdown", "main"]

#: Methods of the comparison, in plotting order.
FEMNIST_METHODS = ("sparse_proxskip", "accelerated_server_pruning", "sparse_proxskip_local", "fedavg", "fediht")
#: The sparse-training comparison (``--name femnist_sparse_training``): FedSparsify and FLASH against
#: Sparse-ProxSkip and FedAvg.
SPARSE_TRAINING_METHODS = ("fedsparsify_global", "fedsparsify_local", "spdst", "jmwst", "sparse_proxskip", "fedavg")

_LABELS = {
    "sparse_proxskip": "Sparse-ProxSkip (client pruning)",
    "accelerated_server_pruning": "ASP (server pruning)",
    "sparse_proxskip_local": "Sparse-ProxSkip-Local",
    "fedavg": "FedAvg + final TopK",
    "fediht": "FedIHT",
    "proxskip": "ProxSkip (dense)",
    "fedsparsify_global": "FedSparsify-Global",
    "fedsparsify_local": "FedSparsify-Local (majority vote)",
    "oneshot": "OneShot pruning",
    "random_pruning": "Random pruning",
    "pdst": "FLASH PDST",
    "spdst": "FLASH SPDST",
    "jmwst": "FLASH JMWST",
    "hetero_flash": "hetero-FLASH",
}


def femnist_comparison(data_dir, out_dir=None, *, n_writers: int = 10, methods=FEMNIST_METHODS,
                       sparsity: float = 0.9, iterations: int = 500, gamma: float = 0.2, local_steps: int = 10,
                       batch_size: int = 32, clip_norm: float | None = 10.0, weight_decay: float = 1e-4,
                       channels=(8, 16), hidden: int = 256, invert: bool = True, seed: int = 0, every: int = 20,
                       cache_dir=None, progress: bool = False, name: str = "femnist_dl") -> dict:
    """Run the comparison and write its figure and table.

    Parameters
    ----------
    data_dir : str or path-like
        FEMNIST in LEAF's layout (``train/``, ``test/``).
    out_dir : str or path-like, optional
        Where to write ``<name>.png``, ``<name>.md`` and ``<name>.json``.
    n_writers : int
        Clients (the first writers in id order).
    methods : sequence of str
        Names for :func:`proxfed_dl.make_algorithm`.
    sparsity : float
        Pruned fraction of all trainable parameters (TopK over all of them).
    iterations : int
        Local steps of every client.
    gamma : float
        Stepsize (SGD learning rate).
    local_steps : int
        ``1/p``: communication every ``local_steps`` iterations (fixed schedule),
        and FedAvg/FedIHT's local steps.
    batch_size : int
    clip_norm : float or None
    weight_decay : float
    channels : tuple of int
        CNN convolution channels (LEAF: (32, 64)).
    hidden : int
        CNN dense width (LEAF: 2048).
    invert : bool
        Ink = 1, background = 0 (LEAF's files have background = 1, on which
        the CNN stays much longer on the class-frequency plateau).
    seed : int
    every : int
        History cadence.
    cache_dir : str or path-like, optional
        Parsed-FEMNIST cache (see :func:`proxfed.data.load_femnist`).
    progress : bool
    name : str
        Stem of the files written to ``out_dir``.

    Returns
    -------
    dict
        ``{"config": ..., "rows": [summary per method], "history": {method: history}}``.
    """
    data = femnist_clients(data_dir, n_writers, cache_dir=cache_dir, invert=invert)
    config = {"n_writers": n_writers, "invert": invert, "n_train": data.n_samples, "n_test": int(data.test[0].shape[0]),
              "sparsity": sparsity, "iterations": iterations, "gamma": gamma, "local_steps": local_steps,
              "batch_size": batch_size, "clip_norm": clip_norm, "weight_decay": weight_decay,
              "channels": list(channels), "hidden": hidden, "seed": seed, "every": every, "schedule": "fixed",
              "torch_threads": torch.get_num_threads()}
    config["caption"] = (f"FEMNIST, {n_writers} writers ({config['n_train']} training / {config['n_test']} test "
                         f"images), CNN (conv channels {tuple(channels)}, dense {hidden})"
                         + (", inverted pixels (ink = 1)" if invert else ""))
    rows, histories = run_methods(
        lambda: TorchProblem(data, lambda: leaf_cnn(data.n_classes, hidden=hidden, channels=channels),
                             batch_size=batch_size, clip_norm=clip_norm, weight_decay=weight_decay, seed=seed),
        methods, config, progress=progress)
    out = {"config": config, "rows": rows, "history": histories}
    if out_dir is not None:
        write_results(out, out_dir, name)
    return out


def run_methods(make_problem, methods, config: dict, progress: bool = False):
    """Run every method on a fresh problem from ``make_problem()`` with the settings in ``config``.

    ``config`` holds ``gamma``, ``local_steps`` (``1/p``, fixed schedule),
    ``iterations``, ``sparsity``, ``seed`` and ``every``; ``dim`` is added.
    Every method starts from the same initial model and sees the same
    minibatch streams; FedSparsify and FLASH get ``iterations // local_steps``
    rounds.

    Returns
    -------
    (rows, histories) : list of dict, dict of str to dict of lists
    """
    rows, histories = [], {}
    it, steps = config["iterations"], config["local_steps"]
    for method in methods:
        prob = make_problem()
        config["dim"] = prob.dim
        extra = {"rounds": max(1, it // steps), "seed": config["seed"]} if method in ROUND_BASED else {}
        alg = make_algorithm(method, prob, config["gamma"], 1.0 / steps, sparsity=config["sparsity"],
                             schedule="fixed", **extra)
        t0 = time.perf_counter()
        res = proxfed.run(alg, prob, it, seed=config["seed"], w0=prob.initial_point(config["seed"]),
                          every=config["every"], progress=progress)
        wall = time.perf_counter() - t0
        h = res.history
        acc = np.asarray(h["metric"], dtype=float)
        rows.append({
            "method": method, "label": _LABELS.get(method, method), "status": res.status,
            "test_accuracy": float(acc[-1]), "best_test_accuracy": float(np.max(acc)),
            "train_loss": float(h["loss"][-1]), "dense_loss": float(h["loss_dense"][-1]),
            "sum_h_norm": float(h["sum_h_norm"][-1]), "communications": int(h["communications"][-1]),
            "uplink_mbit_per_client": float(h["bits_up"][-1]) / 1e6,
            "downlink_mbit_per_client": float(h["bits_down"][-1]) / 1e6, "nnz_output": int((res.w != 0).sum()),
            "wall_s": wall,
        })
        histories[method] = {k: np.asarray(v).tolist() for k, v in h.items()}
    return rows, histories


def write_results(out: dict, out_dir, name: str) -> Path:
    """``<name>.json``, ``<name>.md`` (:func:`format_markdown`) and ``<name>.png`` in ``out_dir``."""
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    (path / f"{name}.json").write_text(json.dumps(out, indent=1))
    (path / f"{name}.md").write_text(format_markdown(out) + "\n")
    _plot(out, path / f"{name}.png")
    return path


def format_markdown(result: dict) -> str:
    """The comparison's final numbers as a Markdown table, with the budget in a caption line.

    Parameters
    ----------
    result : dict
        As returned by :func:`femnist_comparison`.

    Returns
    -------
    str
    """
    c = result["config"]
    lines = [
        f"{c['caption']}, P = {c['dim']:,} parameters, "
        f"{c['sparsity']:.0%} sparsity (TopK over all parameters; FLASH: density over conv and linear weights), "
        f"{c['iterations']} iterations, "
        f"gamma = {c['gamma']}, {c['local_steps']} local steps (fixed schedule), batch {c['batch_size']}, "
        f"clip {c['clip_norm']}, weight decay {c['weight_decay']}, seed {c['seed']}, CPU "
        f"({c['torch_threads']} threads).",
        "",
        "| method | test accuracy (final) | best | train loss (pruned) | train loss (dense avg) | ‖Σh‖ "
        "| communications | uplink Mbit / client | downlink Mbit / client | non-zeros | wall s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['label']} | {r['test_accuracy']:.3f} | {r['best_test_accuracy']:.3f} "
                     f"| {r['train_loss']:.3f} | {r['dense_loss']:.3f} | {r['sum_h_norm']:.2e} "
                     f"| {r['communications']} | {r['uplink_mbit_per_client']:.1f} "
                     f"| {r.get('downlink_mbit_per_client', float('nan')):.1f} | {r.get('nnz_output', '—')} "
                     f"| {r['wall_s']:.0f} |")
    return "\n".join(lines)


def _plot(result, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(19, 4.2))
    for r in result["rows"]:
        h = result["history"][r["method"]]
        it = np.asarray(h["iteration"])
        axes[0].plot(it, h["metric"], label=r["label"])
        axes[1].plot(np.maximum(np.asarray(h["bits_up"]) / 1e6, 1e-2), h["metric"], label=r["label"])
        axes[2].plot(it, h["loss"], label=r["label"])
        axes[3].plot(it, np.maximum(np.asarray(h["sum_h_norm"]), 1e-12), label=r["label"])
    axes[0].set_ylabel("test accuracy (pruned model)")
    axes[1].set_ylabel("test accuracy (pruned model)")
    axes[1].set_xlabel("uplink Mbit per client")
    axes[1].set_xscale("log")
    axes[2].set_ylabel("training loss (pruned model)")
    axes[2].set_yscale("log")
    axes[3].set_ylabel("‖Σ_i h_i‖")
    axes[3].set_yscale("log")
    for i, ax in enumerate(axes):
        if i != 1:
            ax.set_xlabel("iteration (local steps)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    c = result["config"]
    fig.suptitle(f"{c['caption'].split(' (')[0]}, P = {c['dim']:,}, {c['sparsity']:.0%} sparsity, "
                 f"{c['local_steps']} local steps, gamma = {c['gamma']}, {c['iterations']} iterations")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    """Command line: ``python -m proxfed_dl.experiments --data-dir DIR [--out-dir OUT] [options]``.

    Parameters
    ----------
    argv : list of str, optional

    Returns
    -------
    int
        Exit status.
    """
    ap = argparse.ArgumentParser(prog="python -m proxfed_dl.experiments", description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out-dir", default="femnist_dl")
    ap.add_argument("--name", default="femnist_dl", help="stem of the output files")
    ap.add_argument("--writers", type=int, default=10)
    ap.add_argument("--methods", nargs="+", default=list(FEMNIST_METHODS))
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--gamma", type=float, default=0.2)
    ap.add_argument("--local-steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--clip", type=float, default=10.0)
    ap.add_argument("--channels", type=int, nargs=2, default=(8, 16))
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--no-invert", action="store_true", help="keep LEAF's background = 1 convention")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = femnist_comparison(args.data_dir, args.out_dir, n_writers=args.writers, methods=args.methods,
                             sparsity=args.sparsity, iterations=args.iterations, gamma=args.gamma,
                             local_steps=args.local_steps, batch_size=args.batch_size, clip_norm=args.clip,
                             channels=tuple(args.channels), hidden=args.hidden, invert=not args.no_invert,
                             seed=args.seed, every=args.every,
                             cache_dir=args.cache_dir, progress=False, name=args.name)
    print(format_markdown(out))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
