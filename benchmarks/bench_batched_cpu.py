"""Does batching runs pay on the CPU? FEMNIST softmax, R batched runs against a plain per-client loop.

One dense local step ``w_i <- w_i - gamma (grad f_i(w_i) - h_i)`` of every client (Algorithm 1
without communication) for R runs with their own stepsizes:

* ``engine, R batched``: ``Algorithm1.step`` on ``(R, N, d)`` iterates (the problem's fused
  per-client gradient step: one GEMM per client for all runs);
* ``plain loop``: for every run and every client, the softmax gradient of that client with NumPy
  and the update in place -- what a hand-written simulation does.

Both are timed in the same process, alternating, best of ``--repeat``; the engine's peak of
allocated memory during a step (``tracemalloc``, which sees NumPy's buffers) is reported against
the state (``w`` and ``h``) it updates. Usage::

    python benchmarks/bench_batched_cpu.py            # FEMNIST from ../shared/data, R = 16
    python benchmarks/bench_batched_cpu.py --runs 4 --repeat 2
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from pathlib import Path

import numpy as np

from proxfed import algorithms as A
from proxfed.data import FederatedDataset, load_femnist
from proxfed.problems import SoftmaxRegression

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def plain_loop(problem, W, H, gammas):
    """Per run, per client: softmax gradient and in-place update, plain NumPy."""
    p, C = problem.n_inputs, problem.n_classes
    scale, alpha = problem._scale, problem.alpha
    for r in range(W.shape[0]):
        for i, (X, y) in enumerate(problem.dataset.clients()):
            w = W[r, i]
            Wm, c = w[: p * C].reshape(p, C), w[p * C:]
            Z = X @ Wm + c
            Z -= Z.max(axis=1, keepdims=True)
            P = np.exp(Z)
            P /= P.sum(axis=1, keepdims=True)
            P[np.arange(y.size), y] -= 1.0
            P *= scale
            g = np.concatenate([(X.T @ P).ravel(), P.sum(axis=0)]) + alpha * w
            w -= gammas[r] * (g - H[r, i])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    if (SHARED / "femnist").is_dir():
        ds, source = load_femnist(SHARED / "femnist", n_writers=100), "FEMNIST, 100 writers"
    else:
        g = np.random.default_rng(0)
        ds = FederatedDataset.from_clients([(g.random((n, 784)), g.integers(0, 62, n)) for n in g.integers(60, 400, 100)])
        source = "random data of FEMNIST's shape"
    problem = SoftmaxRegression(ds, alpha=1e-4)
    R = args.runs
    gammas = np.geomspace(0.01, 0.1, R)
    alg = A.proxskip(gammas, 0.5)
    rng = np.random.default_rng(0)
    W = rng.normal(scale=0.01, size=(R, problem.n_clients, problem.dim))
    H = rng.normal(scale=0.01, size=W.shape)
    H -= H.mean(axis=1, keepdims=True)
    state = alg.init(problem, W[:, 0].copy()).replace(w=W.copy(), h=H)
    coin = np.zeros(R, bool)
    engine, loop = [], []
    new = alg.step(state, problem, coin)  # warm-up (host caches)
    Wl = W.copy()
    plain_loop(problem, Wl, H, gammas)
    assert np.allclose(new.w, Wl, rtol=1e-10, atol=1e-12), "the engine and the loop disagree"
    for _ in range(args.repeat):
        t = time.perf_counter()
        alg.step(state, problem, coin)
        engine.append(time.perf_counter() - t)
        Wl = W.copy()
        t = time.perf_counter()
        plain_loop(problem, Wl, H, gammas)
        loop.append(time.perf_counter() - t)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    alg.step(state, problem, coin)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    state_bytes = W.nbytes + H.nbytes
    e, lp = min(engine), min(loop)
    print(f"{source}; d = {problem.dim}, R = {R}; best of {args.repeat}\n")
    print("| variant | s per step (all runs) | ms per run-step | vs plain loop |\n|---|---:|---:|---:|")
    print(f"| plain loop | {lp:.2f} | {1e3 * lp / R:.0f} | 1.00x |")
    print(f"| engine, R batched | {e:.2f} | {1e3 * e / R:.0f} | {lp / e:.2f}x |")
    print(f"\nengine step: peak {peak / 2**20:.0f} MiB allocated beyond the inputs = {peak / state_bytes:.2f}x the "
          f"state (w and h, {state_bytes / 2**20:.0f} MiB)")
    gemm_ceiling(problem, R, e, lp, args.repeat)


def gemm_ceiling(problem, R, engine_s, loop_s, repeat):
    """The step's GEMM work against plain GEMMs of the same shapes, timed in this run.

    Both variants do the same floating-point work, ``4 n p R C`` in two GEMMs per client (forward
    and gradient), the loop in R GEMMs of ``C`` columns, the engine in one of ``R C``: the ratio of
    the two plain GEMM rates bounds what batching can gain on this machine.
    """
    p, C = problem.n_inputs, problem.n_classes
    sizes = [X.shape[0] for X, _ in problem.dataset.clients()]
    flops = 4.0 * sum(sizes) * p * R * C
    g = np.random.default_rng(1)
    X = g.random((int(np.mean(sizes)), p))
    rates = {}
    for label, cols in (("loop", C), ("engine", R * C)):
        Wm = g.random((p, cols))
        reps = max(1, R // (cols // C))  # the same work in both shapes
        best = np.inf
        for _ in range(max(2, repeat)):
            t = time.perf_counter()
            for _ in range(reps):
                Z = X @ Wm
                X.T @ Z
            best = min(best, time.perf_counter() - t)
        rates[label] = 4.0 * X.shape[0] * p * cols * reps / best
    print(f"\nGEMM work {flops / 1e9:.1f} GFLOP per step: engine {flops / engine_s / 1e9:.1f} GFLOP/s, plain loop "
          f"{flops / loop_s / 1e9:.1f} GFLOP/s; plain GEMMs of the client shape (n = {X.shape[0]}, p = {p}): "
          f"{rates['engine'] / 1e9:.1f} GFLOP/s with {R * C} columns, {rates['loop'] / 1e9:.1f} with {C} columns. "
          f"Ceiling of batching here: {rates['engine'] / rates['loop']:.2f}x (measured {loop_s / engine_s:.2f}x); "
          f"engine at {flops / engine_s / rates['engine']:.0%} of its GEMM rate.")


if __name__ == "__main__":
    main()
