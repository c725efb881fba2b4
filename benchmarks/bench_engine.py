"""Engine benchmarks: each row is measured in the same run as its baseline and reported as a ratio.

Workloads
---------
W1  BlogFeedback (from ../shared/data when present, else synthetic data of the same shape),
    ridge, d = 281: one local step of Sparse-ProxSkip (gradient + update) for every client.
W2  FEMNIST shape (N = 100 clients, 784 inputs, 62 classes, d = 48,670), softmax regression.

Rows: W1 engine vs a naive per-client loop vs the byte bound (bytes of each client's cheapest
form / measured read bandwidth); W1 batched R = 1, 16, 64 per run-step (float64, and float32
at R = 64); W2 vs the naive loop and the measured GEMM peak; communication + TopK vs a local
step; W2 communication when 2 of 5 batched runs communicate (and all 5) vs the branch
for every run kept by ``np.where``; a paper-length W1 run (10^4 communications, p = 0.2) with closed-form local phases vs
explicit engine steps vs the naive loop (the naive loop's time is extrapolated from a
measured prefix, and said so).

Usage::

    python benchmarks/bench_engine.py            # quick (about 3 minutes on 2 cores)
    python benchmarks/bench_engine.py --full     # the paper-length run in full
    python benchmarks/bench_engine.py --json out.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

import proxfed
from proxfed import algorithms as A
from proxfed.data import FederatedDataset, load_blogfeedback
from proxfed.problems import Ridge, SoftmaxRegression
import _timing

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
best_of = functools.partial(_timing.best_of, warmup=1)  # one untimed call first


def read_bandwidth():
    """Bytes per second of a streaming read (sum over a 256 MB array), best of 5."""
    a = np.ones(32 * 1024 * 1024)
    return a.nbytes / best_of(a.sum, 5)


def gemm_peak(dtype):
    """FLOP/s of a large square matrix product in ``dtype``, best of 3."""
    n = 1536
    a = np.ones((n, n), dtype)
    b = np.ones((n, n), dtype)
    return 2 * n**3 / best_of(lambda: a @ b, 3)


def blogfeedback_shape():
    """The real BlogFeedback training data, or synthetic data of the same client sizes and shape."""
    folder = SHARED / "blogfeedback"
    if folder.is_dir():
        return load_blogfeedback(folder), "BlogFeedback (real)"
    rng = np.random.default_rng(0)
    sizes = np.maximum(1, np.round(rng.lognormal(np.log(85) - 1.5, 1.7, 554))).astype(int)
    sizes = np.round(sizes * 47157 / sizes.sum()).astype(int).clip(1)
    X = rng.uniform(size=(sizes.sum(), 281))
    X[:, -1] = 1.0
    y = rng.poisson(5.0, sizes.sum()).astype(float)
    return FederatedDataset(X, y, np.concatenate([[0], np.cumsum(sizes)])), "BlogFeedback shape (synthetic)"


class NaiveRidge:
    """The plain per-client loop: two passes over each client's rows per gradient."""

    def __init__(self, dataset, alpha):
        self.clients = list(dataset.clients())
        self.alpha = alpha

    def local_step(self, W, H, gamma):
        return np.stack([w - gamma * (A.T @ (A @ w - b) + (self.alpha / 2) * w - h)
                         for (A, b), w, h in zip(self.clients, W, H)])

    def communicate(self, V, H, gamma, p, k):
        U = np.stack([v * (np.abs(v) >= np.sort(np.abs(v))[-k]) for v in V])  # TopK by a full sort
        wbar = U.mean(axis=0)
        return np.tile(wbar, (len(V), 1)), H + (p / gamma) * (wbar - U)


class NaiveSoftmax:
    """Per-client loop of softmax gradients."""

    def __init__(self, problem):
        self.p = problem
        self.clients = list(problem.dataset.clients())

    def grad(self, W):
        out = []
        C = self.p.n_classes
        for (X, y), w in zip(self.clients, W):
            Wm, c = w[:-C].reshape(-1, C), w[-C:]
            Z = X @ Wm + c
            Z -= Z.max(axis=1, keepdims=True)
            P = np.exp(Z)
            P /= P.sum(axis=1, keepdims=True)
            P[np.arange(len(y)), y] -= 1.0
            P *= self.p._scale
            out.append(np.concatenate([(X.T @ P).ravel(), P.sum(axis=0)]) + self.p.alpha * w)
        return np.stack(out)


def femnist_shape(seed=0):
    """Synthetic data of FEMNIST's federated shape: 100 writers, 784 inputs, 62 classes."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(60, 200, 100)
    X = (rng.uniform(size=(sizes.sum(), 784)) > 0.8).astype(float)
    y = rng.integers(0, 62, sizes.sum())
    return FederatedDataset(X, y, np.concatenate([[0], np.cumsum(sizes)]), name="femnist-shape")


def all_runs_finish(alg, state, V, mask):
    """Sparse-ProxSkip's lines 8-13 computed for every batched run, then kept by ``np.where`` where
    ``mask`` is true: what the engine did before it computed the branch for the communicating runs only."""
    gamma, p = alg.gamma[:, None, None], alg.p[:, None, None]
    U = alg.uplink.prox(V, gamma / p)
    w_bar = U.mean(axis=-2, keepdims=True)
    H_new = state.h + (p / gamma) * (w_bar - U)
    np.count_nonzero(U, axis=-1)  # the accounting's count
    m = mask[:, None, None]
    return np.where(m, np.broadcast_to(w_bar, V.shape), V), np.where(m, H_new, state.h)


def row(name, baseline_s, engine_s, baseline="naive loop", note=""):
    return {"workload": name, "baseline": baseline, "baseline_ms": baseline_s * 1e3, "engine_ms": engine_s * 1e3,
            "ratio": baseline_s / engine_s, "note": note}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="run the paper-length W1 run in full")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--rst", help="also write the table as reStructuredText (for docs/performance.rst)")
    args = parser.parse_args(argv)
    rows = []
    bw = read_bandwidth()
    peak64, peak32 = gemm_peak(np.float64), gemm_peak(np.float32)

    # -- W1 -----------------------------------------------------------------------------
    ds, label = blogfeedback_shape()
    problem = Ridge(ds, alpha=1e3)
    N, d = problem.n_clients, problem.dim
    k = d - round(0.9 * d)
    gamma, p = 1.0 / problem.smoothness().max(), 0.2
    naive = NaiveRidge(ds, 1e3)
    rng = np.random.default_rng(0)
    W = rng.standard_normal((N, d)) * 0.01
    H = np.zeros_like(W)
    alg = A.sparse_proxskip(gamma, p, k)
    state = alg.init(problem, np.zeros(d)).replace(w=W, h=H)
    t_naive = best_of(lambda: naive.local_step(W, H, gamma), 5)
    t_engine = best_of(lambda: alg.step(state, problem, False), 9)
    sizes = ds.client_sizes
    cheapest = np.where(sizes > d, d * d, sizes * d).sum() * 8
    t_bound = cheapest / bw
    rows.append(row(f"W1 local step ({label}, N={N}, d={d})", t_naive, t_engine))
    rows.append(row("W1 local step vs byte bound", t_bound, t_engine, baseline="byte bound",
                    note=f"{cheapest / 1e6:.1f} MB at {bw / 1e9:.1f} GB/s"))

    for R, dtype in [(1, np.float64), (16, np.float64), (64, np.float64), (64, np.float32)]:
        algR = A.sparse_proxskip(np.full(R, gamma), p, k)
        WR = np.broadcast_to(W, (R, N, d)).astype(dtype)
        stR = algR.init(problem, np.zeros((R, d), dtype)).replace(w=WR, h=np.zeros_like(WR))
        t = best_of(lambda: algR.step(stR, problem, False), 5 if R > 1 else 9)
        rows.append(row(f"W1 batched R={R} {np.dtype(dtype).name}, per run-step", t_naive, t / R))

    # BLAS threads: one against all cores, same step, same run
    cores = os.cpu_count() or 1
    if cores > 1:
        for R in (1, 64):
            algR = A.sparse_proxskip(np.full(R, gamma), p, k) if R > 1 else alg
            stR = state if R == 1 else algR.init(problem, np.zeros((R, d))).replace(
                w=np.broadcast_to(W, (R, N, d)).copy(), h=np.zeros((R, N, d)))
            timed = {}
            for n in (1, cores):
                with proxfed.blas_threads(n):
                    timed[n] = best_of(lambda: algR.step(stR, problem, False), 5)
            rows.append(row(f"W1 local step R={R}: {cores} BLAS threads vs 1", timed[1], timed[cores],
                            baseline="1 BLAS thread", note="ratio > 1: the threads help"))

    # communication + TopK vs a local step
    V = alg.step(state, problem, False).w
    t_comm_naive = best_of(lambda: naive.communicate(V, H, gamma, p, k), 5)
    t_step_comm = best_of(lambda: alg.step(state, problem, True), 9)
    rows.append(row("W1 communication step + TopK (engine, incl. local step)", t_engine, t_step_comm,
                    baseline="engine local step", note="ratio >= 0.5 means comm + TopK <= one local step"))
    rows.append(row("W1 communication + TopK: naive vs engine extra", t_comm_naive,
                    max(t_step_comm - t_engine, 1e-9)))

    # -- W2 -----------------------------------------------------------------------------
    fem = SoftmaxRegression(femnist_shape(), alpha=1e-4, n_classes=62)
    Wf = np.zeros((fem.n_clients, fem.dim))
    naive_f = NaiveSoftmax(fem)
    t_nf = best_of(lambda: naive_f.grad(Wf), 3)
    t_ef = best_of(lambda: fem.grad(Wf), 3)
    flops = 2 * 2 * fem.dataset.n_samples * fem.n_inputs * fem.n_classes
    rows.append(row("W2 softmax gradient (FEMNIST shape) float64", t_nf, t_ef,
                    note=f"{flops / t_ef / peak64:.0%} of GEMM peak {peak64 / 1e9:.0f} GFLOP/s"))
    Wf32 = Wf.astype(np.float32)
    t_ef32 = best_of(lambda: fem.grad(Wf32), 3)
    rows.append(row("W2 softmax gradient float32", t_nf, t_ef32,
                    note=f"{flops / t_ef32 / peak32:.0%} of GEMM peak {peak32 / 1e9:.0f} GFLOP/s"))

    # W2 communication where only some batched runs communicate (5 seeds at p = 0.3: at 83% of the
    # iterations some run communicates, on average 1.5 of 5): the branch for those runs vs for all
    R, k_f = 5, fem.dim - round(0.9 * fem.dim)
    alg_f = A.sparse_proxskip(np.full(R, 1e-3), np.full(R, 0.3), np.full(R, k_f))
    g5 = np.random.default_rng(1)
    st_f = alg_f.init(fem, g5.uniform(-0.03, 0.03, (R, fem.dim)))
    st_f = st_f.replace(h=g5.normal(size=st_f.w.shape) * 1e-3)
    V_f = st_f.w + g5.normal(size=st_f.w.shape) * 1e-3
    for mask in (np.array([True, False, True, False, False]), np.ones(R, bool)):
        W_ref, H_ref = all_runs_finish(alg_f, st_f, V_f, mask)
        out = alg_f.finish_step(st_f, fem, mask, V_f)
        assert np.allclose(out.w, W_ref, rtol=0, atol=1e-12) and np.allclose(out.h, H_ref, rtol=0, atol=1e-12)
        t_all = best_of(lambda: all_runs_finish(alg_f, st_f, V_f, mask), 3)
        t_sub = best_of(lambda: alg_f.finish_step(st_f, fem, mask, V_f), 3)
        rows.append(row(f"W2 SPS communication, R={R}, {int(mask.sum())} of {R} runs communicate", t_all, t_sub,
                        baseline="branch for all runs + where", note="incl. accounting and the kept uploads"))

    # -- paper-length W1 run ------------------------------------------------------------
    comms = 10_000 if args.full else 1_000
    iterations = int(comms / p)
    prefix = 200
    t0 = time.perf_counter()
    Wn, Hn = np.zeros((N, d)), np.zeros((N, d))
    coins = alg.coins(prefix, seed=0)
    for c in coins:
        Vn = naive.local_step(Wn, Hn, gamma)
        Wn, Hn = naive.communicate(Vn, Hn, gamma, p, k) if c else (Vn, Hn)
    t_naive_run = (time.perf_counter() - t0) * iterations / prefix
    t0 = time.perf_counter()
    res_jump = proxfed.run(alg, problem, iterations, seed=0, every=iterations // 10)
    t_jump = time.perf_counter() - t0
    t0 = time.perf_counter()
    explicit_its = iterations if args.full else iterations // 5
    proxfed.run(alg, problem, explicit_its, seed=0, every=explicit_its // 10, jumps=False)
    t_explicit = (time.perf_counter() - t0) * iterations / explicit_its
    what = f"{comms:,} communications, p={p}, {iterations:,} iterations"
    rows.append(row(f"W1 SPS run, {what}", t_naive_run, t_jump,
                    note=f"naive extrapolated from {prefix} iterations; final test R² {res_jump.history['metric'][-1]:.3f}"))
    rows.append(row(f"W1 SPS run, {what}: explicit engine steps vs closed-form local phases", t_explicit, t_jump,
                    baseline="engine, explicit steps",
                    note="" if args.full else f"explicit extrapolated from {explicit_its:,} iterations"))

    machine = (f"{platform.machine()}, {os.cpu_count()} cores, read bandwidth {bw / 1e9:.1f} GB/s, "
               f"GEMM {peak64 / 1e9:.0f} GFLOP/s (float64) / {peak32 / 1e9:.0f} GFLOP/s (float32); "
               f"NumPy {np.__version__}, proxfed {proxfed.__version__}")
    print(f"machine: {machine}")
    print()
    print("| workload | baseline | baseline ms | engine ms | ratio | note |")
    print("|---|---|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['workload']} | {r['baseline']} | {r['baseline_ms']:.2f} | {r['engine_ms']:.2f} | "
              f"{r['ratio']:.2f}x | {r['note']} |")
    if args.rst:
        lines = [f"Measured on: {machine}.", "", ".. list-table::", "   :header-rows: 1", "",
                 "   * - workload", "     - baseline", "     - baseline ms", "     - engine ms", "     - ratio",
                 "     - note"]
        for r in rows:
            lines += [f"   * - {r['workload']}", f"     - {r['baseline']}", f"     - {r['baseline_ms']:.2f}",
                      f"     - {r['engine_ms']:.2f}", f"     - {r['ratio']:.2f}x", f"     - {r['note'] or '–'}"]
        Path(args.rst).write_text("\n".join(lines) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"bandwidth": bw, "gemm64": peak64, "gemm32": peak32, "rows": rows},
                                              indent=2))


if __name__ == "__main__":
    main()
