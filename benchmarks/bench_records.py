"""What recording the history costs: a run at the default cadence against the same run with one record.

For each workload the same run is timed three ways in one process, alternating, best of
``--repeat``: with a record only at the end (the baseline, no recording cost), at the default
cadence of :func:`proxfed.run` (``every=None``), and at every iteration (the default before
``MIN_RECORD_SPACING``, for runs under 400 iterations). The share of recording is
``1 - baseline / time``; on a loaded machine the difference of two whole runs is noisy, so the
table also gives a record's cost in local steps, from the many records of the every-iteration
run, and the share it implies at the default cadence. Prints a Markdown table; ``--json`` writes
the numbers.

    python benchmarks/bench_records.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import proxfed
from proxfed import algorithms as A
from proxfed.data import load_blogfeedback, load_femnist
from proxfed.problems import Ridge, SoftmaxRegression


def workloads(data_dir: Path, cache_dir):
    fem = SoftmaxRegression(load_femnist(data_dir / "femnist", n_writers=100, cache_dir=cache_dir), alpha=1e-4)
    blog = Ridge(load_blogfeedback(data_dir / "blogfeedback", cache_dir=cache_dir), alpha=1.0)
    L = float(np.max(blog.smoothness()))
    return [
        ("FEMNIST FedAvg, E = 10, 4 rounds (40 iterations)", fem, A.fedavg(0.5, local_steps=10), 40),
        ("BlogFeedback Sparse-ProxSkip 90%, p = 0.2, 300 iterations", blog,
         A.sparse_proxskip(1.0 / L, 0.2, k=28), 300),
    ]


def timed(alg, problem, iterations, every) -> tuple[float, int]:
    t0 = time.perf_counter()
    res = proxfed.run(alg, problem, iterations, seed=0, every=every, jumps=False, progress=False)
    return time.perf_counter() - t0, len(res.history["iteration"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data", type=Path)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = []
    for name, problem, alg, T in workloads(args.data_dir, args.cache_dir):
        cadences = {"end only": T, "default": None, "every iteration": 1}
        best = {k: (np.inf, 0) for k in cadences}
        timed(alg, problem, min(T, 20), T)  # warm-up (caches, layouts)
        for _ in range(args.repeat):
            for label, every in cadences.items():
                t, n = timed(alg, problem, T, every)
                best[label] = min(best[label], (t, n))
        base = best["end only"][0]
        # a record's cost from the many records of the every-iteration run, in local steps
        per_record = (best["every iteration"][0] - base) / (best["every iteration"][1] - best["end only"][1])
        per_step = base / T
        extra = best["default"][1] - best["end only"][1]
        row = {"workload": name, "iterations": T, **{f"{k} s": v[0] for k, v in best.items()},
               **{f"{k} records": v[1] for k, v in best.items()},
               "default share": 1 - base / best["default"][0], "every-iteration share": 1 - base / best["every iteration"][0],
               "record / step": per_record / per_step,
               "default share from record cost": extra * per_record / (base + extra * per_record)}
        rows.append(row)
        print(f"  {name}: " + ", ".join(f"{k} {v[0]:.2f} s ({v[1]} records)" for k, v in best.items()), flush=True)
    print("\n| workload | end only | default cadence | every iteration | share measured (default / every) "
          "| a record, in local steps | default share from it |")
    print("|:---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['workload']} | {r['end only s']:.2f} s | {r['default s']:.2f} s ({r['default records']} records) | "
              f"{r['every iteration s']:.2f} s ({r['every iteration records']}) | "
              f"{100 * r['default share']:.0f}% / {100 * r['every-iteration share']:.0f}% | "
              f"{r['record / step']:.2f} | {100 * r['default share from record cost']:.1f}% |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
