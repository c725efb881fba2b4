"""The prox kernels on NumPy against their former formulas: TopK's threshold and the soft threshold.

**TopK.** :func:`proxfed._backend.topk_mask` finds each row's k-th largest magnitude with one
``np.partition``. NumPy's SIMD quickselect is much slower when one value is repeated at the
low end of the rows, which is what the magnitudes of a sparse model look like (exact zeros);
selecting the k-th smallest of ``-a`` puts them at the high end, but is a little slower on rows
without such ties. The library takes ``-a`` where more than 40% of a sample of rows equal their
row's minimum. All give the same threshold bit for bit (negation is exact), so the masks are
identical; the tests check the mask against a sort-based reference.

**Soft threshold.** ``sign(x) * max(|x| - tau, 0)`` (five passes; the baseline) against the
library's ``x - clip(x, -tau, tau)`` (two passes), the same numbers (the tests check it bit for
bit). RandProx-l1 applies it to every client's iterate after every local step.

Each part is timed in one process, alternating, best of ``--repeat``:

1. The kernels alone on the rows they really see: the client iterates of a batch of 8 runs
   (554 clients x 281 features, K = 28) captured from FedIHT, Sparse-ProxSkip-Local and
   Sparse-ProxSkip on BlogFeedback, and synthetic families that need no data.
2. Whole runs of those methods and RandProx-l1 (8 batched runs, 300 iterations), with the former
   formula (the baseline) and the library's.

Prints a Markdown table; ``--json`` writes the numbers.

    python benchmarks/bench_prox_kernels.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np

import proxfed
import proxfed._backend as backend
from proxfed.algorithms.registry import get_method, lam_max
from proxfed.data import load_blogfeedback
from proxfed.problems import Ridge
from _timing import best_of

R, K = 8, 28
METHODS = ("fediht", "sparse_proxskip_local", "sparse_proxskip")  # TopK rules
L1_METHOD = "randprox_l1"


def old_kth_largest(a, k: int):
    """The baseline: the (d - k)-th smallest of ``a`` (the formula before the change)."""
    d = a.shape[-1]
    return np.partition(a, d - k, axis=-1)[..., d - k : d - k + 1]


def negated_kth_largest(a, k: int):
    """The k-th smallest of ``-a``, negated."""
    return -np.partition(-a, k - 1, axis=-1)[..., k - 1 : k]


def library_kth_largest(a, k: int):
    """The library's choice between the two (:func:`proxfed._backend._kth_largest`)."""
    return backend._kth_largest(a, k, np)


def old_soft_threshold(x, tau):
    """The baseline: ``sign(x) * max(|x| - tau, 0)`` (the formula before the change)."""
    return np.sign(x) * np.clip(np.abs(x) - tau, 0.0, None)


@contextmanager
def kernels(kind: str):
    """Run the library with the former (``"old"``) or the current (``"new"``) kernels."""
    current_kth, current_soft = backend._kth_largest, backend.soft_threshold

    def old_kth(a, k, xp):
        return old_kth_largest(a, k) if isinstance(a, np.ndarray) else current_kth(a, k, xp)

    def old_soft(x, tau):
        return old_soft_threshold(x, tau) if isinstance(x, np.ndarray) else current_soft(x, tau)

    if kind == "old":
        backend._kth_largest, backend.soft_threshold = old_kth, old_soft
    try:
        yield
    finally:
        backend._kth_largest, backend.soft_threshold = current_kth, current_soft


def method(name: str, problem):
    L = float(np.max(problem.smoothness()))
    params = {"gamma": np.full(R, 1.0 / L), "p": np.full(R, 0.05), "local_steps": np.full(R, 20),
              "lam": np.full(R, 0.03 * lam_max(problem))}
    return get_method(name).build(params, k=K)


def captured_rows(name: str, problem, iterations: int = 100):
    """The last (R, n, d) magnitudes TopK ranked in a short run of ``name``."""
    seen = []
    current = backend._kth_largest

    def spy(a, k, xp):
        if getattr(a, "ndim", 0) == 3 and a.shape[1] > 1:  # the clients' rows, not the server's
            seen[:] = [np.array(a)]
        return current(a, k, xp)

    backend._kth_largest = spy
    try:
        proxfed.run(method(name, problem), problem, iterations, seed=0, progress=False)
    finally:
        backend._kth_largest = current
    return seen[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data", type=Path)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--repeat", type=int, default=15, help="best of this many (selection); runs use a third")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    shape = (R, 554, 281)
    dense = np.abs(rng.standard_normal(shape))
    inputs = {"synthetic: dense magnitudes": dense,
              "synthetic: 75% exact zeros": dense * (rng.random(shape) < 0.25)}
    blog = None
    if (args.data_dir / "blogfeedback").is_dir():
        blog = Ridge(load_blogfeedback(args.data_dir / "blogfeedback", cache_dir=args.cache_dir), alpha=1.0)
        for name in METHODS:
            inputs[f"BlogFeedback {get_method(name).label} client iterates"] = captured_rows(name, blog)
    rows = []
    for label, a in inputs.items():
        want = old_kth_largest(a, K)
        assert np.array_equal(want, negated_kth_largest(a, K)) and np.array_equal(want, library_kth_largest(a, K))
        t = {"old": np.inf, "negated": np.inf, "new": np.inf}
        for _ in range(3):  # alternate, so all see the same load
            for kind, f in (("old", old_kth_largest), ("negated", negated_kth_largest), ("new", library_kth_largest)):
                t[kind] = min(t[kind], best_of(lambda: f(a, K), args.repeat))
        rows.append({"workload": f"selection, {label}", "zeros": float(np.mean(a == 0)), "old_s": t["old"],
                     "negated_s": t["negated"], "new_s": t["new"], "speedup": t["old"] / t["new"]})
    x = np.random.default_rng(1).standard_normal(shape)
    tau = np.full((R, 1, 1), 0.5)
    assert np.array_equal(old_soft_threshold(x, tau), backend.soft_threshold(x, tau))
    t = {"old": np.inf, "new": np.inf}
    for _ in range(3):
        t["old"] = min(t["old"], best_of(lambda: old_soft_threshold(x, tau), args.repeat))
        t["new"] = min(t["new"], best_of(lambda: backend.soft_threshold(x, tau), args.repeat))
    rows.append({"workload": "soft threshold, synthetic (8, 554, 281), one tau per run", "zeros": None,
                 "old_s": t["old"], "negated_s": None, "new_s": t["new"], "speedup": t["old"] / t["new"]})
    if blog is not None:
        for name in (*METHODS, L1_METHOD):
            alg = method(name, blog)
            times = {"old": np.inf, "new": np.inf}
            for _ in range(max(1, args.repeat // 5)):
                for kind in times:
                    with kernels(kind):
                        times[kind] = min(times[kind], best_of(
                            lambda: proxfed.run(alg, blog, args.iterations, seed=0, progress=False), 1))
            rows.append({"workload": f"run, {get_method(name).label} 90%, {R} runs x {args.iterations} iterations",
                         "zeros": None, "old_s": times["old"], "negated_s": None, "new_s": times["new"],
                         "speedup": times["old"] / times["new"]})
    print("| workload | exact zeros | former formula (baseline) | -partition(-a, k - 1) | library | "
          "speed-up (baseline / library) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        zeros = "" if r["zeros"] is None else f"{r['zeros']:.0%}"
        neg = "" if r["negated_s"] is None else f"{r['negated_s'] * 1e3:.1f} ms"
        print(f"| {r['workload']} | {zeros} | {r['old_s'] * 1e3:.1f} ms | {neg} | {r['new_s'] * 1e3:.1f} ms | "
              f"{r['speedup']:.2f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps({"numpy": np.__version__, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
