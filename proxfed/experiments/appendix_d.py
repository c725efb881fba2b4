"""FEMNIST's Appendix D diagnostics: SPS, SPS-modified, ASP, ASP-modified at 90 % (Figures 6-8).

SPS-modified takes SPS's tuned hyperparameters and ASP-modified ASP's; SPS
and ASP at 90 % are the tables' final runs (read back from ``runs/``).
Written under ``appendix_d/``: ``appendix_d.md``, ``appendix_d.json``, ``appendix_d.png``.
"""

from __future__ import annotations

import numpy as np

from .._stored import write_json_atomic as write_json
from ._common import banner, run_steps
from .plots import have_matplotlib, plot_appendix_d
from .published import METHOD_LABELS
from .tables import markdown_table, mean_se

__all__ = ["APPENDIX_D_METHODS", "appendix_d_checks", "run_appendix_d"]

APPENDIX_D_METHODS = ("sparse_proxskip", "sps_modified", "accelerated_server_pruning", "asp_modified")


def run_appendix_d(pipe, tune_problem, final_problem, key) -> dict:
    """FEMNIST at 90 %: SPS, SPS-modified, ASP, ASP-modified side by side (Figures 6-8)."""
    s = 0.9
    where = pipe.out / "appendix_d"
    pipe.say("Appendix D: SPS, SPS-modified, ASP, ASP-modified at 90%")
    base = {"sparse_proxskip": "sparse_proxskip", "sps_modified": "sparse_proxskip",
            "accelerated_server_pruning": "accelerated_server_pruning", "asp_modified": "accelerated_server_pruning"}
    for m in set(base.values()):
        if m not in pipe.tuned:
            pipe.tuned[m] = pipe.tune(m, tune_problem, key)
    hists, rows, numbers = {}, [], {}
    for m in APPENDIX_D_METHODS:
        params = pipe.params_for(base[m], s, final_problem)
        # SPS and ASP at 90 % are the tables' final runs: read back from runs/ when they are there
        d = pipe.run_dir(m, s) if base[m] == m else where / m
        hist, summ = pipe.final_run(m, s, params, final_problem, d, pipe.communications)
        if not summ.get("read_back"):
            pipe.run_steps["appendix_d"] += run_steps(summ)
        hists[METHOD_LABELS[m]] = hist
        last = {k: mean_se(np.asarray(hist[k])[-1]) for k in ("metric", "sum_h_norm", "mean_h_norm", "w_norm", "loss")}
        loss_curve = np.asarray(hist["loss"]).mean(axis=1)
        last["loss_min"] = (float(loss_curve.min()), 0.0)
        numbers[m] = {k: {"mean": v[0], "se": v[1]} for k, v in last.items()}
        numbers[m]["params"] = params
        rows.append([METHOD_LABELS[m], f"{100 * last['metric'][0]:.1f} ± {100 * last['metric'][1]:.1f}",
                     f"{last['sum_h_norm'][0]:.3g}", f"{last['mean_h_norm'][0]:.3g}",
                     f"{last['w_norm'][0]:.4g}", f"{last['loss'][0]:.4g}", f"{last['loss_min'][0]:.4g}"])
    checks = appendix_d_checks(numbers, final_problem.n_clients)
    md = (f"# Appendix D diagnostics: FEMNIST, 90% sparsity, final values (mean over {pipe.budget.seeds} seeds)\n\n"
          f"{banner(pipe.budget, pipe.communications)}\nSPS-modified uses SPS's tuned hyperparameters and ASP-modified ASP's.\n\n"
          + markdown_table(["method", "test accuracy (%)", "‖Σ_i h_i‖", "mean ‖h_i‖", "‖w‖", "final loss",
                            "min loss"], rows)
          + "\n\n## Appendix D's qualitative findings on our runs\n\n" + markdown_table(["finding", "ours"], checks))
    (where / "appendix_d.md").parent.mkdir(parents=True, exist_ok=True)
    (where / "appendix_d.md").write_text(md + "\n")
    write_json(where / "appendix_d.json", {"final": numbers, "checks": checks, "budget": pipe.budget.name})
    figure = None
    if have_matplotlib():
        figure = plot_appendix_d(hists, where / "appendix_d.png",
                                 title=f"Appendix D: FEMNIST, 90% sparsity, budget {pipe.budget.name}")
    return {"markdown": md, "numbers": numbers, "checks": checks, "figure": figure}


def appendix_d_checks(numbers: dict, n_clients: int) -> list:
    """Appendix D's qualitative findings on the final values ``numbers`` (by method): ``[finding, ours]`` rows."""
    v = {m: numbers[m] for m in numbers}

    def mean(m, q):
        return v[m][q]["mean"]

    checks = [
        ["ASP: ‖Σ_i h_i‖ > mean ‖h_i‖ (the sum dominates)",
         "holds" if mean("accelerated_server_pruning", "sum_h_norm") > mean("accelerated_server_pruning", "mean_h_norm")
         else "does not hold"],
        ["SPS and ASP-modified keep Σ_i h_i = 0 (‖Σh‖ ≤ 1e-8·N·mean‖h‖)",
         "holds" if all(mean(m, "sum_h_norm") <= 1e-8 * n_clients * max(mean(m, "mean_h_norm"), 1e-300)
                        for m in ("sparse_proxskip", "asp_modified")) else "does not hold"],
        ["SPS beats SPS-modified in accuracy",
         "holds" if mean("sparse_proxskip", "metric") > mean("sps_modified", "metric") else "does not hold"],
        ["ASP-modified beats ASP in accuracy",
         "holds" if mean("asp_modified", "metric") > mean("accelerated_server_pruning", "metric") else "does not hold"],
        ["ASP's loss grows (final > 1.01 × its minimum)",
         "holds" if mean("accelerated_server_pruning", "loss") > 1.01 * v["accelerated_server_pruning"]["loss_min"]["mean"]
         else "does not hold"],
        ["SPS-modified's loss grows (final > 1.01 × its minimum)",
         "holds" if mean("sps_modified", "loss") > 1.01 * v["sps_modified"]["loss_min"]["mean"] else "does not hold"],
        ["‖w‖ of SPS and ASP-modified closer to each other than to ASP's and SPS-modified's",
         "holds" if abs(mean("sparse_proxskip", "w_norm") - mean("asp_modified", "w_norm")) < min(
             abs(mean("sparse_proxskip", "w_norm") - mean(m, "w_norm")) for m in ("accelerated_server_pruning",
                                                                                    "sps_modified"))
         else "does not hold"],
    ]
    return checks
