"""``bench_rounds.py --backend torch|cupy``: run_rounds on a device against run_rounds on NumPy, in one run.

The workloads of ``bench_rounds.py`` (ridge on BlogFeedback, alpha = 1, or data of its shape):
the search stage (R = 16 Sparse-ProxSkip configurations, p log-uniform in [0.03, 1]) and the
Table-1 batches (R = 15: 3 sparsities x 5 seeds, p = 0.2) of the four rules with a closed-form
round, C communications each. Per row: seconds on NumPy float64 and on the device in float64
and float32 (after a warm-up of two rounds, which also builds the device's eigenbases), the
ratios NumPy / device, and the float64 run's largest relative deviation from NumPy's loss
history. Once per problem: the device's eigendecomposition (``setup``). torch only: kernels and
host transfers per round (the difference of a 6-round and a 2-round run, over 4).
"""

from __future__ import annotations

import json
import os
import platform
import time

import numpy as np

import proxfed
from proxfed import _backend as B
from proxfed import algorithms as A
from proxfed import kernels
from proxfed.problems import Ridge
from proxfed.prox import sparsity_to_k

from bench_engine import blogfeedback_shape  # noqa: E402  (same folder)


def sync(like):
    """Wait for the device (a timing must not end before the work does)."""
    name = B.namespace(like).__name__
    if name.endswith("torch") and getattr(like, "is_cuda", False):
        import torch

        torch.cuda.synchronize()
    elif "cupy" in name:  # pragma: no cover - needs a GPU
        import cupy

        cupy.cuda.Device().synchronize()


def workloads(prob, g):
    """(label, algorithm, seeds) of the search stage and the four Table-1 batches."""
    ps = np.exp(np.random.default_rng(0).uniform(np.log(0.03), np.log(1.0), 16))
    out = [("search: 16 SPS configurations, p in [0.03, 1]", A.sparse_proxskip(np.full(16, g), ps, 28), 0)]
    ks = np.repeat([sparsity_to_k(prob.dim, s) for s in (0.8, 0.9, 0.95)], 5)
    seeds, p, R = list(range(15)), 0.2, 15
    for name, alg in {
        "final_topk": A.final_topk(np.full(R, g), np.full(R, p), ks),
        "fedht": A.fedht(np.full(R, g), np.full(R, 5), ks),
        "accelerated_server_pruning": A.accelerated_server_pruning(np.full(R, g), np.full(R, p), ks),
        "sparse_proxskip": A.sparse_proxskip(np.full(R, g), np.full(R, p), ks),
    }.items():
        out.append((f"Table-1 batch (15 runs) {name}, p = 0.2", alg, seeds))
    return out


def timed_rounds(alg, prob, C, seed, like):
    """Seconds of ``run_rounds`` with C communications from zeros on ``like``'s library, and its result."""
    runs = alg.n_runs
    w0 = B.from_numpy(np.zeros((runs, prob.dim)), like=like)
    kw = dict(seed=seed, w0=w0, split=None)
    proxfed.run_rounds(alg, prob, 2, every=2, **kw)  # warm-up: eigenbases, layouts, constants
    sync(w0)
    t = time.perf_counter()
    res = proxfed.run_rounds(alg, prob, C, every=max(1, C // 10), **kw)
    sync(res.state.w)
    return time.perf_counter() - t, res


def per_round_counts(alg, prob, seed, like):
    """Kernels and host transfers of one round on torch (None elsewhere)."""
    if not B.namespace(like).__name__.endswith("torch"):
        return None
    w0 = B.from_numpy(np.zeros((alg.n_runs, prob.dim)), like=like)
    kw = dict(seed=seed, w0=w0, split=None, reference=None)
    counts = []
    for C in (2, 6):
        with kernels.count_kernels() as c:
            proxfed.run_rounds(alg, prob, C, every=C, **kw)
        counts.append(c)
    two, six = counts
    return {"kernels": (six.kernels - two.kernels) / 4,
            "to_host": (six.to_host + six.host_syncs - two.to_host - two.host_syncs) / 4,
            "from_host": (six.from_host - two.from_host) / 4}


def setup_seconds(ds, like):
    """The device's eigendecomposition of a fresh problem (once per problem and device)."""
    prob = Ridge(ds, alpha=1.0)
    W = B.from_numpy(np.zeros((1, prob.n_clients, prob.dim)), like=like)
    prob.local_steps(W, W, 1e-9, 1)  # the device layout (not timed)
    prob.device_spectra = type(prob.device_spectra)(prob._spectral_to_device)
    sync(W)
    t = time.perf_counter()
    prob.local_steps(W, W, 1e-9, 1)
    sync(W)
    return time.perf_counter() - t


def limit_threads(n, backend):
    if n is None:
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(n)
    if backend == "torch":
        import torch

        torch.set_num_threads(n)


def main(args) -> int:
    limit_threads(args.threads, args.backend)
    C = args.communications
    ds, what = blogfeedback_shape()
    prob = Ridge(ds, alpha=1.0)
    g = 0.5 / float(np.max(prob.smoothness()))
    host = np.empty(0)
    likes = {dt: B.array_template(args.backend, args.device, dt) for dt in ("float64", "float32")}
    device = args.device or ("cpu" if args.backend == "torch" else "0")
    print(f"{what}; ridge alpha = 1; {args.backend} on {device}; threads {args.threads or 'default'}; "
          f"{os.cpu_count()} CPUs; {platform.processor() or platform.machine()}", flush=True)
    setup = {dt: setup_seconds(ds, like) for dt, like in likes.items()}
    print(f"device eigendecomposition (once per problem): {setup['float64']:.2f} s float64, "
          f"{setup['float32']:.2f} s float32 (from float64)", flush=True)
    rows = []
    for label, alg, seed in workloads(prob, g):
        t_np, ref = timed_rounds(alg, prob, C, seed, host)
        row = {"workload": f"{label}, {C} communications", "R": alg.n_runs, "numpy_s": t_np}
        for dt, like in likes.items():
            t_dev, res = timed_rounds(alg, prob, C, seed, like)
            row[f"{dt}_s"], row[f"{dt}_ratio"] = t_dev, t_np / t_dev
            dev = np.abs(res.history["loss"] - ref.history["loss"]) / np.abs(ref.history["loss"])
            row[f"{dt}_loss_rel_dev"] = float(np.max(dev))
        row["per_round"] = per_round_counts(alg, prob, seed, likes["float64"])
        rows.append(row)
        print("  measured:", row, flush=True)
    table = render(rows, C)
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"data": what, "backend": args.backend, "device": device, "threads": args.threads,
                       "communications": C, "setup_s": setup, "rows": rows}, f, indent=1)
    return 0


def render(rows, C) -> str:
    out = ["| workload | R | NumPy f64 s | device f64 s | NumPy / device | device f32 s | NumPy / device f32 | "
           "kernels / to host per round | f64 loss rel. dev. |", "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        c = r["per_round"]
        counts = f"{c['kernels']:.0f} / {c['to_host']:.0f}" if c else "—"
        out.append(f"| {r['workload']} | {r['R']} | {r['numpy_s']:.2f} | {r['float64_s']:.2f} | "
                   f"{r['float64_ratio']:.2f}× | {r['float32_s']:.2f} | {r['float32_ratio']:.2f}× | {counts} | "
                   f"{r['float64_loss_rel_dev']:.1e} |")
    return "\n".join(out) + "\n"
