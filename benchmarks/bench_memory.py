"""Keeping freed memory (:func:`proxfed.keep_freed_memory`) against glibc's default, in fresh processes.

Workloads: Sparse-ProxSkip steps (K = 10%, p = 0.3) with R = 5 batched runs on the FEMNIST data
(../shared/data when present, inverted pixels; else synthetic data of the same shape), and on
BlogFeedback's shape (ridge, d = 281). The same steps alternate between the default allocator
settings and ``keep_freed_memory()``, each measurement in a fresh process (mallopt changes the whole
process), alternating ``--rounds`` times; the table gives the best wall time per setting, with the
CPU split into user and system time and the minor page faults of that round.

Usage::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_memory.py        # about 3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import proxfed
from proxfed.algorithms import sparse_proxskip
from proxfed.memory import keep_freed_memory
from proxfed.problems import Ridge, SoftmaxRegression

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import SHARED, blogfeedback_shape, femnist_shape  # noqa: E402


def femnist():
    folder = SHARED / "femnist"
    if folder.is_dir():
        from proxfed.data import load_femnist

        return load_femnist(folder, n_writers=100, invert=True), "FEMNIST (real, inverted pixels)"
    return femnist_shape(), "FEMNIST shape (synthetic)"


def measure(problem, iterations, R=5):
    k = max(1, problem.dim // 10)
    gamma = 0.5 / float(np.max(problem.smoothness()))
    alg = sparse_proxskip(gamma=np.full(R, gamma), p=np.full(R, 0.3), k=k)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    proxfed.run(alg, problem, iterations, seed=list(range(R)), every=10**9)
    t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    return {"wall": t1 - t0, "user": r1.ru_utime - r0.ru_utime, "sys": r1.ru_stime - r0.ru_stime,
            "faults": r1.ru_minflt - r0.ru_minflt}


def child(workload: str, setting: str, iterations: int) -> dict:
    """One measurement in this (fresh) process: ``setting`` is "default" or "keep"."""
    if setting == "keep" and not keep_freed_memory():
        sys.exit("keep_freed_memory needs glibc; nothing to compare")
    if workload == "femnist":
        ds, label = femnist()
        problem = SoftmaxRegression(ds, alpha=1e-4)
    else:
        ds, label = blogfeedback_shape()
        problem, iterations = Ridge(ds, alpha=1.0), 20 * iterations
    measure(problem, 2)  # warm-up: data on the host, code paths run once
    return {"label": f"{label}, {iterations} steps, R = 5", **measure(problem, iterations)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=10, help="steps per FEMNIST measurement")
    parser.add_argument("--child", nargs=2, metavar=("WORKLOAD", "SETTING"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child, args.iterations)))
        return
    print("| workload | setting | wall (s) | user (s) | system (s) | minor faults | default / keep |")
    print("|:---|:---|---:|---:|---:|---:|---:|")
    for workload in ("femnist", "blogfeedback"):
        best = {}
        for _ in range(args.rounds):  # alternate fresh processes, so each setting sees the same machine
            for setting in ("default", "keep"):
                out = subprocess.run([sys.executable, __file__, "--child", workload, setting,
                                      "--iterations", str(args.iterations)], capture_output=True, text=True, check=True)
                m = json.loads(out.stdout.strip().splitlines()[-1])
                if setting not in best or m["wall"] < best[setting]["wall"]:
                    best[setting] = m
        ratio = best["default"]["wall"] / best["keep"]["wall"]
        for setting in ("default", "keep"):
            m = best[setting]
            print(f"| {m['label']} | {setting} | {m['wall']:.2f} | {m['user']:.2f} | {m['sys']:.2f} | "
                  f"{m['faults']} | {f'{ratio:.2f}x' if setting == 'keep' else ''} |", flush=True)


if __name__ == "__main__":
    main()
