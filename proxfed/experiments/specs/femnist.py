"""FEMNIST's spec: softmax regression on 100 writers, ``alpha`` on a hold-out, Tables 3, 4, Figure 3, Appendix D.

:func:`~proxfed.data.load_femnist` (the first 100 writers in sorted order;
pixels inverted to ``1 - x`` unless ``pixels="leaf"``),
:class:`~proxfed.problems.SoftmaxRegression`; tuning trains on
:func:`~proxfed.tune.holdout_split`'s 90 %, the final runs on all training
images. Diagnostics: ``dense_reference.md`` (the dense fit and its TopK under
both pixel conventions) and ``alpha_check.md`` (the dense fit per ``alpha``).
"""

from __future__ import annotations

import time

import numpy as np

from ... import _backend as B
from ..._stored import read_back_json
from ..._stored import write_json_atomic as write_json
from .._common import data_folder
from ..budgets import Budget
from ..demo import sparsity_to_k
from ..published import PUBLISHED
from ..tables import markdown_table
from .base import DatasetSpec, Loaded
from .softmax_checks import FEMNIST_CHECK_ALPHAS, alpha_rows, dense_fit, softmax_alpha_check, softmax_dense_reference

__all__ = ["FemnistSpec", "FEMNIST_BUDGETS", "PIXEL_CONVENTIONS", "row_sparsities"]

#: FEMNIST pixel conventions of :func:`~proxfed.experiments.paper.reproduce` (``pixels=``).
PIXEL_CONVENTIONS = {
    "inverted": "1 - x: background 0, ink near 1 (as MNIST)",
    "leaf": "LEAF's x: 1.0 = white background, ink dark",
}

#: FEMNIST's budgets (``paper``: the paper gives no horizon, 10^3 communications is our decision).
FEMNIST_BUDGETS = {
    "smoke": Budget("smoke", communications=2, seeds=2, tune_communications=1, n_stage1=3, n_stage2=2,
                    gamma_range=(0.1, 10.0), p_range=(0.5, 1.0), records=2, tune_records=2,
                    tune_sparsities=(0.9,), max_iterations=4, reference_iterations=30),
    "small": Budget("small", communications=30, seeds=5, tune_communications=10, n_stage1=6, n_stage2=3,
                    gamma_range=(0.1, 10.0), p_range=(0.1, 1.0), records=30, tune_records=10,
                    tune_sparsities=(0.9, 0.99), alpha_grid=(1e-5, 1e-4, 1e-3), alpha_iterations=100,
                    extra_thresholds=(0.50, 0.60, 0.65, 0.70)),
    "paper": Budget("paper", communications=1000, seeds=5, tune_communications=100, n_stage1=16, n_stage2=8,
                    gamma_range=(0.1, 10.0), p_range=(0.02, 1.0), records=500, tune_records=50,
                    alpha_grid=(1e-5, 3e-5, 1e-4, 3e-4, 1e-3), alpha_iterations=300),
}


def row_sparsities(rows, ks, sparsities) -> list:
    """The sparsity of each row of groups ``[dense, TopK at ks[0], ks[1], ...]`` (None for dense).

    By position, not by ``K``: two sparsities can round to the same ``K``.
    """
    out, j = [], 0
    for row in rows:
        j = 0 if row["k"] is None else j + 1
        if j and (j > len(ks) or row["k"] != ks[j - 1]):
            raise ValueError(f"row with K = {row['k']} out of the order of ks = {list(ks)}")
        out.append(None if j == 0 else sparsities[j - 1])
    return out


def dense_reference_markdown(ref: dict, alpha: float, pixels: str, sparsities) -> str:
    """``dense_reference.md``: the dense fit and its TopK under each pixel convention, beside Final-TopK's."""
    paper = PUBLISHED["femnist"]["metric"]["final_topk"]
    rows = []
    for conv, r in ref["conventions"].items():
        for row, s in zip(r["rows"], row_sparsities(r["rows"], ref["key"]["ks"], sparsities)):
            rows.append([conv + (" (the runs')" if conv == pixels else ""), row["model"],
                         "dense" if row["k"] is None else f"{row['k']} ({100 * s:g}%)",
                         f"{100 * row['test']:.1f}", f"{100 * row['train']:.1f}", f"{row['objective']:.4f}",
                         "85.4 (dense reference)" if s is None else f"{100 * paper[s]:.1f} (Final-TopK)"])
    fits = "; ".join(f"{conv}: smoothness L = max_i L_i = {r['L_max']:.4g}, final gradient norm {r['grad_norm']:.2e}"
                     for conv, r in ref["conventions"].items())
    return (f"# Diagnostic: the dense centralized fit (alpha = {alpha:g}) and its TopK\n\n"
            f"L-BFGS on the full training set from 0, at most {ref['key']['iterations']} iterations, under "
            f"each pixel convention ({fits}). The runs use the `{pixels}` convention: {PIXEL_CONVENTIONS[pixels]}. The "
            "dense models are the same class under both conventions (the intercept absorbs the shift), "
            "but TopK is not: with LEAF's white background every weight acts on every image. The paper's "
            "column is its own writers' dense estimator and Final-TopK (Table 4). Selects nothing.\n\n"
            + markdown_table(["pixels", "model", "K (sparsity)", "test accuracy (%)", "train accuracy (%)",
                              "objective F(w) (with α/2‖w‖²)", "paper (%)"], rows))


def softmax_alpha_check_markdown(check: dict, alpha: float, pixels: str, sparsities) -> str:
    """``alpha_check.md`` on FEMNIST: train and test accuracy of the dense fit and its TopK per alpha."""
    rows = [[f"{r['alpha']:g}" + (" (the runs')" if r["alpha"] == alpha else ""),
             "dense" if s is None else f"{r['k']} ({100 * s:g}%)",
             f"{100 * r['train']:.1f}", f"{100 * r['test']:.1f}", f"{r['objective']:.4f}", f"{r['grad_norm']:.2e}"]
            for r, s in zip(check["rows"], row_sparsities(check["rows"], check["key"]["ks"], sparsities))]
    return ("# Diagnostic: the dense centralized fit and its TopK for several alpha (FEMNIST)\n\n"
            f"L-BFGS on the full training set from 0, at most {check['key']['iterations']} iterations, "
            f"`{pixels}` pixels. The paper's dense reference is 85.4% and does not say on which split; "
            "compare it with both columns. Selects nothing.\n\n"
            + markdown_table(["alpha", "K (sparsity)", "train accuracy (%)", "test accuracy (%)",
                              "objective F(w) (with α/2‖w‖²)", "dense fit's gradient norm"], rows))


class FemnistSpec(DatasetSpec):
    """FEMNIST (Tables 3, 4; Figure 3; Appendix D): softmax regression, ``alpha`` on the hold-out."""

    name = "femnist"
    description = "Tables 3, 4, Figure 3 and Appendix D"
    alpha_policy = "FEMNIST chooses alpha on its hold-out by default"
    methods = ("final_topk", "fedht", "fediht", "accelerated_server_pruning", "sparse_proxskip_local",
               "sparse_proxskip", "proxskip")
    budgets = FEMNIST_BUDGETS
    metric_label = "test accuracy"
    pixels = True
    appendix_d = True
    metric_table = ("table4_accuracy", "Table 4", "test accuracy (%)")
    communication_table = ("table3_communication", "Table 3", "test accuracy")
    figure = ("figure3", "Figure 3")

    def threshold_label(self, t: float) -> str:
        """Accuracy thresholds in percent."""
        return f"≥ {100 * t:g}%"

    def load(self, data_dir, *, budget, alpha, seed, cache_dir, pixels, scaling, say) -> Loaded:
        """100 writers, the seeded hold-out, and ``alpha`` given, chosen on the hold-out, or ``1/n``."""
        from ...data import load_femnist
        from ...problems import SoftmaxRegression
        from ...tune import holdout_split

        ds = load_femnist(data_folder(data_dir, "femnist"), n_writers=100, cache_dir=cache_dir,
                          invert=pixels == "inverted")
        tune_ds = holdout_split(ds, budget.holdout_fraction, seed=seed)
        if alpha is not None:
            alpha_info = {"alpha": float(alpha), "how": "given"}
        elif budget.alpha_grid is None:
            alpha_info = {"alpha": 1.0 / ds.n_samples, "how": "1/n (scikit-learn's C = 1); the budget has no grid"}
        else:
            say(f"choosing alpha on the hold-out among {list(budget.alpha_grid)} (dense L-BFGS fits)")
            scores = {}
            for a in budget.alpha_grid:
                prob = SoftmaxRegression(tune_ds, alpha=a, init="zeros")
                scores[a] = float(prob.score(dense_fit(prob, budget.alpha_iterations), "validation"))
                say(f"  alpha={a:g}: validation accuracy {scores[a]:.4f}")
            best = max(scores, key=lambda a: (scores[a], -a))
            alpha_info = {"alpha": best, "how": "validation accuracy of the dense centralized fit",
                          "grid": {str(a): v for a, v in scores.items()}}
        alpha = alpha_info["alpha"]
        final_problem = SoftmaxRegression(ds, alpha=alpha)
        data_info = {"n_clients": ds.n_clients, "n_train": ds.n_samples, "n_tune_train": tune_ds.n_samples,
                     "n_validation": tune_ds.validation.n_samples, "n_test": ds.test.n_samples,
                     "dim": final_problem.dim, "writers": "first 100 in sorted order",
                     "pixels": f"{pixels}: {PIXEL_CONVENTIONS[pixels]}"}
        return Loaded(ds, SoftmaxRegression(tune_ds, alpha=alpha), final_problem, alpha_info, data_info)

    def key_extras(self, pixels) -> dict:
        """The pixel convention changes every run."""
        return {"pixels": pixels}

    def diagnostics(self, pipe, loaded: Loaded, *, data_dir, cache_dir, pixels) -> dict:
        """``dense_reference.md`` and ``alpha_check.md`` (each read back when stored with the same key)."""
        t0 = time.perf_counter()
        md, ref = self.dense_reference(pipe, loaded, data_dir=data_dir, cache_dir=cache_dir, pixels=pixels)
        out = {"dense_reference": md, "alpha_check": self.alpha_check(pipe, loaded, ref, pixels)}
        pipe.timings["dense_reference"] = time.perf_counter() - t0
        return out

    def dense_reference(self, pipe, loaded: Loaded, *, data_dir, cache_dir, pixels) -> tuple:
        """``diagnostics/dense_reference.md`` and its numbers: the dense fit under both pixel conventions."""
        from ...data import load_femnist
        from ...problems import SoftmaxRegression

        out, b, final_problem = pipe.out, pipe.budget, loaded.final_problem
        alpha = loaded.alpha_info["alpha"]
        ks = [sparsity_to_k(final_problem.dim, s) for s in pipe.sparsities]
        stored = out / "diagnostics" / "dense_reference.json"
        ref_key = {"alpha": alpha, "iterations": b.reference_iterations, "ks": ks, "pixels": pixels,
                   "columns": ["test", "train", "objective"]}
        ref = (read_back_json(stored) if stored.is_file() else None) or {}
        probs = {conv: final_problem if conv == pixels else SoftmaxRegression(
            load_femnist(data_folder(data_dir, "femnist"), n_writers=100, cache_dir=cache_dir,
                         invert=conv == "inverted"), alpha=alpha)
            for conv in (pixels, *sorted(set(PIXEL_CONVENTIONS) - {pixels}))}
        if ref.get("key") != ref_key:
            ref = {"key": ref_key, "conventions": {}}
            for conv, prob in probs.items():
                pipe.say(f"dense reference ({conv} pixels): {b.reference_iterations} L-BFGS iterations")
                ref["conventions"][conv] = softmax_dense_reference(prob, ks, b.reference_iterations)
        else:
            pipe.say("dense reference read back from diagnostics/dense_reference.json")
        for conv, prob in probs.items():  # seconds (the other convention is loaded either way), so not cached
            ref["conventions"][conv]["L_max"] = float(np.max(B.to_numpy(prob.smoothness())))
        md = dense_reference_markdown(ref, alpha, pixels, pipe.sparsities)
        (out / "diagnostics").mkdir(parents=True, exist_ok=True)
        (out / "diagnostics" / "dense_reference.md").write_text(md + "\n")
        write_json(out / "diagnostics" / "dense_reference.json", ref)
        return md, ref

    def alpha_check(self, pipe, loaded: Loaded, ref: dict, pixels) -> str:
        """``diagnostics/alpha_check.md``: the dense fit per alpha on the runs' pixels (the runs' alpha from ``ref``)."""
        out, b, alpha = pipe.out, pipe.budget, loaded.alpha_info["alpha"]
        stored = out / "diagnostics" / "alpha_check.json"
        check_key = {**ref["key"], "alphas": sorted({*FEMNIST_CHECK_ALPHAS, alpha}, reverse=True)}
        check = (read_back_json(stored, kind=None) if stored.is_file() else None) or {}
        if not isinstance(check, dict) or check.get("key") != check_key:  # (BlogFeedback's file is a list)
            others = [a for a in check_key["alphas"] if a != alpha]
            pipe.say(f"alpha check: dense fits for alpha in {others}, {b.reference_iterations} L-BFGS iterations")
            rows = softmax_alpha_check(loaded.final_problem.dataset, others, ref["key"]["ks"], b.reference_iterations)
            rows += alpha_rows(alpha, ref["conventions"][pixels])
            check = {"key": check_key, "rows": sorted(rows, key=lambda r: -r["alpha"])}
        else:
            pipe.say("alpha check read back from diagnostics/alpha_check.json")
        md = softmax_alpha_check_markdown(check, alpha, pixels, pipe.sparsities)
        (out / "diagnostics" / "alpha_check.md").write_text(md + "\n")
        write_json(stored, check)
        return md

    def run_appendix_d(self, pipe, loaded: Loaded, key) -> dict:
        """SPS, SPS-modified, ASP, ASP-modified at 90 % (:func:`proxfed.experiments.appendix_d.run_appendix_d`)."""
        from ..appendix_d import run_appendix_d

        return run_appendix_d(pipe, loaded.tune_problem, loaded.final_problem, key)
