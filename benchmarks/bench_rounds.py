"""Round driver benchmark: proxfed.run_rounds against proxfed.run on batched BlogFeedback runs.

Both drivers produce the same trajectories (tests/test_round_runner.py); this measures their wall
time in the same process, as a ratio. Rows (ridge on BlogFeedback, alpha = 1, or data of the same
shape when ../shared/data is absent):

* search: R = 16 Sparse-ProxSkip configurations with p log-uniform in [0.03, 1] (a tuning
  stage), C communications each. ``proxfed.run`` must step all runs until the slowest has C
  communications; ``run_rounds`` advances every run to its own next coin.
* seeds: R = 15 runs (3 sparsities x 5 seeds) of one method at p = 0.2, Table 1's batch shape,
  C communications each, for the four Table-1 methods with closed-form local phases; the same
  batch of the three without (Sparse-ProxSkip-Local, RandProx-l1, FedIHT) is timed with
  ``proxfed.run`` per iteration. The last column extrapolates each to 10^4 communications.

Usage::

    python benchmarks/bench_rounds.py [--communications 30] [--json out.json] [--profile]
    python benchmarks/bench_rounds.py --backend torch --device cpu|cuda [--threads 1] [--json out.json]

``--profile`` also prints where the time of one Table-1 batch goes (cProfile, the functions with
the most own time): Sparse-ProxSkip by rounds and Sparse-ProxSkip-Local by iterations.

``--backend torch|cupy`` times ``run_rounds`` on the device against ``run_rounds`` on NumPy
(float64) in the same process instead, on the same workloads (the search stage and the four
Table-1 batches): seconds on NumPy, on the device in float64 and float32 and their ratios, the
device's one-off eigendecomposition (``setup``), kernels and host transfers per round (torch,
:func:`proxfed.kernels.count_kernels`) and the float64 run's largest relative deviation from
NumPy's loss history. ``--threads`` caps the BLAS and torch threads (both sides).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import os
import platform
import time

import numpy as np

import proxfed
from proxfed import algorithms as A
from proxfed.problems import Ridge
from proxfed.prox import sparsity_to_k
from proxfed.round_runner import communication_times

from bench_engine import blogfeedback_shape  # noqa: E402  (same folder)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--communications", type=int, default=30)
    ap.add_argument("--json", default=None)
    ap.add_argument("--profile", action="store_true", help="print a profile of one Table-1 batch per driver")
    ap.add_argument("--backend", choices=("numpy", "torch", "cupy"), default="numpy",
                    help="torch/cupy: run_rounds on the device against NumPy (see above)")
    ap.add_argument("--device", default=None, help="torch: cpu (default), cuda, cuda:1; cupy: a GPU index")
    ap.add_argument("--threads", type=int, default=None, help="BLAS and torch threads (default: theirs)")
    args = ap.parse_args(argv)
    if args.backend != "numpy":
        from bench_rounds_device import main as device_main  # noqa: E402  (same folder)

        return device_main(args)
    C = args.communications
    ds, what = blogfeedback_shape()
    prob = Ridge(ds, alpha=1.0)
    g = 0.5 / float(np.max(prob.smoothness()))
    prob.local_steps(np.zeros((prob.n_clients, prob.dim)), np.zeros((prob.n_clients, prob.dim)), g, 2)  # eigh cache
    rows = []
    print(f"{what}; ridge alpha = 1; {os.cpu_count()} CPUs; {platform.processor() or platform.machine()}", flush=True)

    def done(row):
        rows.append(row)
        print("  measured:", row, flush=True)

    # -- a search stage
    ps = np.exp(np.random.default_rng(0).uniform(np.log(0.03), np.log(1.0), 16))
    alg = A.sparse_proxskip(np.full(16, g), ps, 28)
    T = int(communication_times(alg, C, seed=0, runs=16)[:, -1].max()) + 1
    t_run, r1 = timed(lambda: proxfed.run(alg, prob, T, seed=0, every=T))
    t_rounds, r2 = timed(lambda: proxfed.run_rounds(alg, prob, C, seed=0, every=C))
    assert np.all(r2.state.communications == C)
    done({"workload": f"search: 16 SPS configurations, p in [0.03, 1], {C} communications each",
                 "run_s": t_run, "run_rounds_s": t_rounds, "ratio": t_run / t_rounds,
                 "note": f"run steps {T} iterations for all 16"})

    # -- Table 1's batch: 3 sparsities x 5 seeds
    ks = np.repeat([sparsity_to_k(prob.dim, s) for s in (0.8, 0.9, 0.95)], 5)
    seeds = list(range(15))
    p = 0.2
    makers = {
        "final_topk": lambda: A.final_topk(np.full(15, g), np.full(15, p), ks),
        "fedht": lambda: A.fedht(np.full(15, g), np.full(15, 5), ks),
        "accelerated_server_pruning": lambda: A.accelerated_server_pruning(np.full(15, g), np.full(15, p), ks),
        "sparse_proxskip": lambda: A.sparse_proxskip(np.full(15, g), np.full(15, p), ks),
    }
    for name, make in makers.items():
        alg = make()
        T = int(communication_times(alg, C, seed=seeds, runs=15)[:, -1].max()) + 1
        t_run, _ = timed(lambda: proxfed.run(alg, prob, T, seed=seeds, every=T))
        t_rounds, _ = timed(lambda: proxfed.run_rounds(alg, prob, C, seed=seeds, every=C))
        done({"workload": f"Table-1 batch (15 runs) {name}, p = 0.2, {C} communications",
                     "run_s": t_run, "run_rounds_s": t_rounds, "ratio": t_run / t_rounds,
                     "extrapolated_1e4_s": t_rounds * 1e4 / C})
    for name, make in {"sparse_proxskip_local": lambda: A.sparse_proxskip_local(np.full(15, g), np.full(15, p), ks),
                       "randprox_l1": lambda: A.randprox_l1(np.full(15, g), np.full(15, p), 1.0, ks),
                       "fediht": lambda: A.fediht(np.full(15, g), np.full(15, 5), ks)}.items():
        alg = make()
        T = int(round(C / p))
        t_run, _ = timed(lambda: proxfed.run(alg, prob, T, seed=seeds, every=T))
        done({"workload": f"Table-1 batch (15 runs) {name}, p = 0.2, {C} communications (no closed form)",
                     "run_s": t_run, "run_rounds_s": None, "ratio": None, "extrapolated_1e4_s": t_run * 1e4 / C})

    print(f"| workload | proxfed.run s | run_rounds s | ratio | 10^4 communications (s) |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        rr = "—" if r["run_rounds_s"] is None else f"{r['run_rounds_s']:.2f}"
        ra = "—" if r["ratio"] is None else f"{r['ratio']:.1f}×"
        ex = f"{r['extrapolated_1e4_s']:.0f}" if "extrapolated_1e4_s" in r else "—"
        print(f"| {r['workload']} | {r['run_s']:.2f} | {rr} | {ra} | {ex} |")
    total = sum(r.get("extrapolated_1e4_s", 0.0) for r in rows)
    print(f"\nTable-1 workload (7 methods x 3 sparsities x 5 seeds x 10^4 communications), extrapolated: "
          f"{total / 60:.1f} min")
    if args.profile:
        profile_batches(prob, g, ks, seeds, p, C)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"data": what, "communications": C, "rows": rows, "table1_minutes": total / 60}, f, indent=1)
    return 0


def profile_batches(prob, g, ks, seeds, p, C, top=10):
    """Own time per function for one Table-1 batch: SPS by rounds, SPS-Local by iterations."""
    R = len(seeds)
    for label, fn in [
        (f"Sparse-ProxSkip, run_rounds, {C} communications",
         lambda: proxfed.run_rounds(A.sparse_proxskip(np.full(R, g), np.full(R, p), ks), prob, C, seed=seeds, every=C)),
        (f"Sparse-ProxSkip-Local, run, {int(round(C / p))} iterations",
         lambda: proxfed.run(A.sparse_proxskip_local(np.full(R, g), np.full(R, p), ks), prob, int(round(C / p)),
                             seed=seeds, every=int(round(C / p)))),
    ]:
        prof = cProfile.Profile()
        prof.enable()
        fn()
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
        print(f"\nprofile: {label}")
        print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:4000])


if __name__ == "__main__":
    raise SystemExit(main())
