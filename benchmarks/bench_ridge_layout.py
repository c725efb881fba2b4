"""Ridge's batched gradients on NumPy: the Gram clients' GEMM on a strided or a contiguous operand.

:meth:`proxfed.problems.Ridge._data_terms` computes the gradients of R batched runs as batched
GEMMs over client blocks, with the runs as the last axis, ``(N, d, R)``, built as
``moveaxis(W, 0, -1)[order]``: the fancy index keeps the source's stride order, so within a
client the runs are the slowest axis. The former code multiplied the Gram blocks (clients with
more than d/2 rows, ``G_i`` of d x d) by that strided view; the library multiplies them by a
C-contiguous copy of the Gram clients' part (``_gram_operand``). The row clients' GEMMs are
unchanged (a full contiguous copy cost more than it saved at R = 2-4 and 32). The last column
compares the gradients of the two (equal to rounding; on this machine, NumPy 2.4 with OpenBLAS,
bit for bit on BlogFeedback in float64, though not in float32 at 5 and 8 runs).

Timed in one process, alternating, best of ``--repeat``:

1. the data terms alone (``_data_terms``, gradients only) for R = 1, 2, 5, 8 batched runs (at
   R = 1 both columns run the same code: a single run's layout has no strided view; its ratio is
   the noise floor);
2. the Gram part alone, ``G_i @ W_i`` over the Gram clients, for R = 5 and 8 (the copy included);
3. whole runs of the step-by-step rules that call it once per local step, Sparse-ProxSkip-Local
   and RandProx-l1 (R = 5 batched runs, ``--iterations`` local steps each).

BlogFeedback (554 clients x 281 features, the reproductions' problem) from ``--data-dir``.
Prints a Markdown table; ``--json`` writes the numbers.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_ridge_layout.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np

import proxfed
import proxfed.problems.ridge as ridge
from proxfed.algorithms.registry import get_method, lam_max
from proxfed.data import load_blogfeedback
from proxfed.problems import Ridge
from _timing import best_of

K = 28  # 90% sparsity on BlogFeedback


@contextmanager
def layout(kind: str):
    current = ridge._gram_operand
    if kind == "strided":  # the former code: the strided view itself
        ridge._gram_operand = lambda Wg: Wg
    try:
        yield
    finally:
        ridge._gram_operand = current


def alternate(f, repeat: int, rounds: int = 3) -> dict:
    """Best seconds of ``f`` under each layout, the two alternating so that both see the same load."""
    t = {"strided": np.inf, "contiguous": np.inf}
    for _ in range(rounds):
        for kind in t:
            with layout(kind):
                t[kind] = min(t[kind], best_of(f, repeat))
    return t


def rule(name: str, problem, runs: int):
    L = float(np.max(problem.smoothness()))
    params = {"gamma": np.full(runs, 1.0 / L), "p": np.full(runs, 0.05),
              "lam": np.full(runs, 0.03 * lam_max(problem))}
    return get_method(name).build(params, k=K)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data", type=Path)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--repeat", type=int, default=10, help="best of this many (data terms); runs: a fifth")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    folder = args.data_dir / "blogfeedback"
    if not folder.is_dir():
        parser.error(f"no BlogFeedback folder at {folder}")
    problem = Ridge(load_blogfeedback(folder, cache_dir=args.cache_dir), alpha=1.0)
    rng = np.random.default_rng(0)
    rows = []
    for runs in (1, 2, 5, 8):
        W = rng.standard_normal((runs, problem.n_clients, problem.dim)) * 1e-3
        with layout("strided"):
            want = problem.grad(W)
        got = problem.grad(W)
        err = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
        t = alternate(lambda: problem.grad(W), args.repeat)
        rows.append({"workload": f"gradients, {runs} run{'s' * (runs > 1)}", "strided_s": t["strided"],
                     "contiguous_s": t["contiguous"], "speedup": t["strided"] / t["contiguous"],
                     "max_rel_diff": err})
    for runs in (5, 8):  # the Gram part alone: the strided view against a contiguous copy (copy included)
        W = rng.standard_normal((runs, problem.n_clients, problem.dim)) * 1e-3
        lay = problem._host_layout(True, W.dtype)
        ng = lay["gram_clients"].size
        Wp = np.moveaxis(W, 0, -1)[lay["order"]]  # the runs-last view _data_terms builds
        G = lay["G"]
        want = np.matmul(G, Wp[:ng])
        got = np.matmul(G, ridge._gram_operand(Wp[:ng]))
        err = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
        t = alternate(lambda: np.matmul(G, ridge._gram_operand(Wp[:ng])), args.repeat)  # looked up per call
        rows.append({"workload": f"Gram GEMM alone ({ng} clients), {runs} runs", "strided_s": t["strided"],
                     "contiguous_s": t["contiguous"], "speedup": t["strided"] / t["contiguous"], "max_rel_diff": err})
    for name in ("sparse_proxskip_local", "randprox_l1"):
        alg = rule(name, problem, 5)
        t = alternate(lambda: proxfed.run(alg, problem, args.iterations, seed=[1, 2, 3, 4, 5], progress=False),
                      1, rounds=max(1, args.repeat // 5))
        rows.append({"workload": f"run, {get_method(name).label} 90%, 5 runs x {args.iterations} iterations",
                     "strided_s": t["strided"], "contiguous_s": t["contiguous"],
                     "speedup": t["strided"] / t["contiguous"], "max_rel_diff": None})
    print("| workload | strided runs-last (baseline) | contiguous (library) | speed-up | max relative difference |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        unit, scale = ("s", 1.0) if r["workload"].startswith("run") else ("ms", 1e3)
        diff = "" if r["max_rel_diff"] is None else f"{r['max_rel_diff']:.1e}"
        print(f"| {r['workload']} | {r['strided_s'] * scale:.2f} {unit} | {r['contiguous_s'] * scale:.2f} {unit} | "
              f"{r['speedup']:.2f}x | {diff} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"numpy": np.__version__, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
