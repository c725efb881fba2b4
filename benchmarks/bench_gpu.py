"""Per-run-iteration time of the closed-form problems on a device against NumPy, in one run.

Rows (each with its baseline measured in the same process):

* BlogFeedback ridge (alpha = 1), Sparse-ProxSkip at 95% sparsity, R batched runs
  (R = 1, 64, 256; ``--quick``: 1, 16): microseconds per run-iteration on NumPy float64 (the
  baseline) and on the device in float64 and float32, by ``proxfed.run(..., jumps=False)``
  with random coins p = 0.2, recording only at the ends;
* FEMNIST softmax (100 writers, d = 48,670), the same rule at 90% (R = 1, 16; ``--quick``: 1, 4);
* for every device row: kernels, bytes written (in units of the iterates) and host transfers of
  one iteration with and without communication (torch only, :func:`proxfed.kernels.count_kernels`);
* the softmax rows' GEMM FLOP rate as a fraction of a plain device GEMM of the same dtype
  measured in the same run;
* the projected wall time of the ``paper`` budgets at the largest R (38 million run-iterations
  for BlogFeedback and 2 million for FEMNIST, the counts on the reproducing page).

The real data is read from ``../shared/data`` when present; otherwise random data of the same
shapes stands in (and the table says so). Usage::

    python benchmarks/bench_gpu.py --quick                   # torch on the CPU: the GPU code path
    python benchmarks/bench_gpu.py --device cuda --out DIR   # on a GPU (table.md and run.json in DIR)
    python benchmarks/bench_gpu.py --backend cupy --device 0
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

import proxfed
from proxfed import _backend as B
from proxfed import algorithms as A
from proxfed import kernels
from proxfed.data import FederatedDataset, load_blogfeedback, load_femnist
from proxfed.problems import Ridge, SoftmaxRegression
from proxfed.prox import sparsity_to_k

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PAPER_RUN_ITERATIONS = {"blogfeedback": 38e6, "femnist": 2e6}


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=("torch", "cupy"), default="torch")
    ap.add_argument("--device", default=None, help="torch: cpu (default), cuda, cuda:1; cupy: a GPU index")
    ap.add_argument("--quick", action="store_true", help="small R and few iterations (minutes on 2 cores)")
    ap.add_argument("--iterations", type=int, default=None, help="timed iterations per row")
    ap.add_argument("--out", default=None, help="folder for table.md and run.json")
    ap.add_argument("--cache-dir", default=None, help="cache of the parsed datasets")
    return ap.parse_args(argv)


def sync(like):
    """Wait for the device (timings must not end before the work does)."""
    if B.namespace(like).__name__.endswith("torch") and getattr(like, "is_cuda", False):
        import torch

        torch.cuda.synchronize()
    elif "cupy" in B.namespace(like).__name__:  # pragma: no cover - needs a GPU
        import cupy

        cupy.cuda.Device().synchronize()


def datasets(cache_dir):
    """BlogFeedback and FEMNIST (100 writers) from ../shared/data, or random stand-ins of their shapes."""
    out = {}
    if (SHARED / "blogfeedback").is_dir():
        out["blogfeedback"] = (load_blogfeedback(SHARED / "blogfeedback", cache_dir=cache_dir), "real")
    else:
        g = np.random.default_rng(0)
        sizes = np.minimum(3269, np.ceil(g.pareto(0.7, 554) + 1)).astype(int)
        out["blogfeedback"] = (FederatedDataset.from_clients(
            [(g.random((n, 281)), g.random(n) * 10) for n in sizes]), "random, BlogFeedback's shape")
    if (SHARED / "femnist").is_dir():
        out["femnist"] = (load_femnist(SHARED / "femnist", n_writers=100, cache_dir=cache_dir), "real")
    else:
        g = np.random.default_rng(1)
        out["femnist"] = (FederatedDataset.from_clients(
            [(g.random((n, 784)), g.integers(0, 62, n)) for n in g.integers(60, 400, 100)]),
            "random, FEMNIST's shape")
    return out


def template(backend, device, dtype):
    if backend == "numpy":
        return np.empty(0, dtype=dtype)
    return B.array_template(backend, device, dtype)


def time_run(problem, like, runs, sparsity, gamma, iterations):
    """Seconds per run-iteration of Sparse-ProxSkip with R = ``runs`` on ``like``'s library."""
    k = sparsity_to_k(problem.dim, sparsity)
    alg = A.sparse_proxskip(np.full(runs, gamma), np.full(runs, 0.2), np.full(runs, k))
    w0 = B.from_numpy(np.zeros((runs, problem.dim)), like=like)
    kw = dict(w0=w0, seed=list(range(runs)), jumps=False, split=None, reference=None)
    proxfed.run(alg, problem, 3, every=3, **kw)  # warm-up: layouts, caches, kernels

    def timed(n):
        sync(like)
        t = time.perf_counter()
        res = proxfed.run(alg, problem, n, every=n, **kw)
        sync(res.state.w)
        return time.perf_counter() - t

    # the difference of two lengths cancels what a call costs once (two records, setup)
    return (timed(iterations) - timed(1)) / ((iterations - 1) * runs), alg


def step_counts(problem, alg, like, runs):
    """Kernels, bytes (x the iterates) and host transfers of one iteration without / with communication."""
    if not B.namespace(like).__name__.endswith("torch"):
        return None
    state = alg.init(problem, B.from_numpy(np.zeros((runs, problem.dim)), like=like))
    out = {}
    for label, coin in (("local", np.zeros(runs, bool)), ("communication", np.ones(runs, bool))):
        alg.step(state, problem, coin)  # warm-up: device constants
        with kernels.count_kernels() as c:
            alg.step(state, problem, coin)
        out[label] = {"kernels": c.kernels, "bytes_x_iterates": c.bytes_written / (state.w.numel() * state.w.element_size()),
                      "to_host": c.to_host + c.host_syncs, "from_host": c.from_host}
    return out


def gemm_rate(like, n=2048):
    """FLOP/s of a plain n x n matmul on ``like``'s library and dtype (best of 5)."""
    xp = B.namespace(like)
    a = B.from_numpy(np.random.default_rng(0).random((n, n)), like=like)
    xp.matmul(a, a)
    sync(like)
    best = np.inf
    for _ in range(5):
        t = time.perf_counter()
        xp.matmul(a, a)
        sync(like)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def softmax_flops(problem, runs):
    """GEMM FLOPs of one softmax gradient: ``X1 @ W`` and ``X1^T @ (P - Y)`` over every row, all runs."""
    return 2 * 2 * problem.dataset.n_samples * (problem.n_inputs + 1) * problem.n_classes * runs


def main(argv=None):
    args = parse(argv)
    data = datasets(args.cache_dir)
    plan = {"blogfeedback": ([1, 16] if args.quick else [1, 64, 256], 0.95, 1e-6),
            "femnist": ([1, 4] if args.quick else [1, 16], 0.9, 0.05)}
    rows, started = [], time.perf_counter()
    for name, (runs_list, sparsity, gamma) in plan.items():
        ds, source = data[name]
        problem = Ridge(ds, alpha=1.0) if name == "blogfeedback" else SoftmaxRegression(ds, alpha=1e-4)
        iters = args.iterations or (20 if args.quick else (200 if name == "blogfeedback" else 50))
        for runs in runs_list:
            base, _ = time_run(problem, np.empty(0), runs, sparsity, gamma, max(4, iters // 4))
            for dtype in ("float64", "float32"):
                like = template(args.backend, args.device, dtype)
                t, alg = time_run(problem, like, runs, sparsity, gamma, iters)
                row = {"problem": name, "data": source, "R": runs, "dtype": dtype,
                       "numpy_f64_us": base * 1e6, "device_us": t * 1e6, "speedup": base / t,
                       "counts": step_counts(problem, alg, like, runs)}
                if name == "femnist":
                    row["gemm_fraction"] = softmax_flops(problem, runs) / (t * runs) / gemm_rate(like)
                row["paper_hours"] = PAPER_RUN_ITERATIONS[name] * t / 3600
                rows.append(row)
                print(format_row(row), flush=True)
    table = render(rows, args)
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.md").write_text(table)
        (out / "run.json").write_text(json.dumps({"rows": rows, "machine": machine(args),
                                                   "wall_s": time.perf_counter() - started}, indent=2))


def format_row(r):
    c = r["counts"]
    counts = (f"{c['local']['kernels']}/{c['communication']['kernels']} kernels, "
              f"{c['local']['bytes_x_iterates']:.0f}/{c['communication']['bytes_x_iterates']:.0f}x bytes, "
              f"{c['local']['to_host']}/{c['communication']['to_host']} to host") if c else "-"
    gemm = f"{100 * r['gemm_fraction']:.1f}%" if "gemm_fraction" in r else "-"
    return (f"| {r['problem']} | {r['R']} | {r['dtype']} | {r['numpy_f64_us']:.0f} | {r['device_us']:.1f} | "
            f"{r['speedup']:.2f}x | {counts} | {gemm} | {r['paper_hours']:.1f} |")


def render(rows, args) -> str:
    head = ("| problem | R | dtype | NumPy f64 µs/run-it | device µs/run-it | device vs NumPy | "
            "per iteration: local/communication | GEMM-rate fraction | paper budget, hours |\n"
            "|---|---:|---|---:|---:|---:|---|---:|---:|\n")
    m = machine(args)
    return (f"{m['backend']} on {m['device']} ({m['platform']}); data: "
            + ", ".join(sorted({f"{r['problem']} {r['data']}" for r in rows})) + "\n\n"
            + head + "\n".join(format_row(r) for r in rows) + "\n")


def machine(args):
    info = {"backend": args.backend, "device": args.device or ("cpu" if args.backend == "torch" else "0"),
            "platform": platform.platform(), "processor": platform.processor(), "numpy": np.__version__}
    if args.backend == "torch":
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available() and str(info["device"]).startswith("cuda"):
            info["gpu"] = torch.cuda.get_device_name()
    return info


if __name__ == "__main__":
    main()
