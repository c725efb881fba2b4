"""What a reproduction writes from its runs: the tables next to the paper's, the figures, README.md.

The tables a dataset has, their file names and labels come from its spec
(:class:`~proxfed.experiments.specs.DatasetSpec`): the final metric (Table 1
or 4), the train loss where the paper has one (Table 5), the communication
to reach the paper's thresholds (Table 2 or 3; the budget's own thresholds
as a second table) and the paper's orderings.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from .._stored import write_json_atomic as write_json
from ..metrics import BLOWUP_FACTOR
from ._common import banner, pct, skey
from .plots import have_matplotlib, plot_paper_figure
from .published import METHOD_LABELS, ORDERINGS, PUBLISHED
from .specs import SPECS
from .tables import format_bits, markdown_table, mean_se

__all__ = ["figures", "tables", "write_readme", "write_results"]


def curves(pipe, s) -> dict:
    """The history of each method at sparsity ``s`` (dense ProxSkip's at every ``s``), by label."""
    out = {}
    for m in pipe.methods:
        r = pipe.results.get(m, {}).get(s if m != "proxskip" else None)
        if r is not None:
            out[METHOD_LABELS.get(m, m)] = r["history"]
    return out


def threshold_bits(hist, thr) -> float:
    """Mean uplink bits at the first record whose seed-mean metric reaches ``thr`` (NaN: never)."""
    metric = np.asarray(hist["metric"], dtype=np.float64)
    bits = np.asarray(hist["bits_up"], dtype=np.float64)
    if metric.ndim == 1:
        metric, bits = metric[:, None], bits[:, None]
    m = metric.mean(axis=1)
    hit = np.flatnonzero(m >= thr)
    return math.nan if hit.size == 0 else float(bits[hit[0]].mean())


def side_by_side(pipe, methods, key, published, numbers, fmt_ours, fmt_paper, fmt_delta):
    """Header and rows of ours / paper / difference per sparsity for summary ``key``; fills ``numbers``."""
    header = ["method"]
    for s in pipe.sparsities:
        header += [f"{pct(s)} ours", f"{pct(s)} paper", f"{pct(s)} Δ"]
    rows = []
    for m in methods:
        row = [METHOD_LABELS.get(m, m)]
        for s in pipe.sparsities:
            r = pipe.results[m].get(None if m == "proxskip" else s)
            mean, se = mean_se(r["summary"][key]) if r else (math.nan, math.nan)
            paper = published.get(m, {}).get(s)
            entry = {"mean": mean, "se": se, "paper": paper}
            unstable = (r["summary"].get("unstable_seeds") or []) if r else []
            if key == "metric":
                entry["values"] = r["summary"][key] if r else None
            if unstable:
                entry["unstable_seeds"] = unstable
            numbers.setdefault(m, {})[str(s)] = entry
            row += [(fmt_ours(mean, se) + (f" {UNSTABLE_MARK}" if unstable else "")) if r else "—",
                    fmt_paper(paper) if paper is not None else "—",
                    fmt_delta(mean, paper) if (paper is not None and r) else "—"]
        rows.append(row)
    return header, rows



UNSTABLE_MARK = "‡"


def unstable_note(rows) -> str:
    """The footnote of a table with a cell marked :data:`UNSTABLE_MARK` (empty without one)."""
    if not any(UNSTABLE_MARK in cell for row in rows for cell in row):
        return ""
    return (f"\n{UNSTABLE_MARK} some seeds unstable: their training objective rose above {BLOWUP_FACTOR:g} times its "
            "start at some record (a run that stays finite is not stopped as diverged); see `unstable_seeds` and "
            "`peak_rise` in the run's summary.json.\n")


def tables(pipe) -> dict:
    """Markdown tables and their numbers."""
    spec, comm = SPECS[pipe.dataset], PUBLISHED[pipe.dataset]["communication"]
    out_md, numbers = {}, {"metric": {}, "loss": {}, "communication": {}}
    methods = [m for m in pipe.methods if m in pipe.results]
    head = banner(pipe.budget, pipe.communications)
    metric_table(pipe, spec, methods, head, out_md, numbers)
    if spec.loss_table is not None:
        loss_table(pipe, spec, methods, head, out_md, numbers)
    if comm["sparsity"] in pipe.sparsities and pipe.budget.extra_thresholds:
        extra_communication_table(pipe, spec, methods, head, out_md, numbers)
    if comm["sparsity"] in pipe.sparsities:
        communication_table(pipe, spec, methods, head, out_md, numbers)
    orderings_table(pipe, methods, head, out_md, numbers)
    return {"markdown": out_md, "numbers": numbers}


def metric_table(pipe, spec, methods, head, out_md, numbers) -> None:
    """The final metric after TopK beside the paper's (Table 1 / Table 4)."""
    header, rows = side_by_side(pipe, methods, "metric", PUBLISHED[pipe.dataset]["metric"], numbers["metric"],
                                lambda mean, se: f"{100 * mean:.1f} ± {100 * se:.1f}",
                                lambda paper: f"{100 * paper:.1f}",
                                lambda mean, paper: f"{100 * (mean - paper):+.1f}")
    name, tab_no, what = spec.metric_table
    out_md[name] = (f"# {tab_no}: final {what} after TopK, mean ± standard error over "
                    f"{pipe.budget.seeds} seeds\n\n{head}\nΔ = ours − paper, in points. Dense ProxSkip is "
                    f"a reference without TopK (the same value in every column).\n\n" + markdown_table(header, rows)
                    + unstable_note(rows))


def loss_table(pipe, spec, methods, head, out_md, numbers) -> None:
    """The final train loss beside the paper's (Table 5, BlogFeedback)."""
    header, rows = side_by_side(pipe, methods, "train_loss_sum", PUBLISHED[pipe.dataset]["loss"], numbers["loss"],
                                lambda mean, se: f"{mean:.4g} ± {se:.2g}",
                                lambda paper: f"{paper:.4g}",
                                lambda mean, paper: f"{100 * (mean / paper - 1):+.1f}%")
    out_md[spec.loss_table] = (
        "# Table 5: final train loss sum_i ½‖A_i w − b_i‖² after TopK, mean ± standard error over "
        f"{pipe.budget.seeds} seeds\n\n{head}\nΔ = ours / paper − 1.\n\n" + markdown_table(header, rows)
        + unstable_note(rows))


def bits_to(pipe, methods, s, thresholds) -> dict:
    """Per method (dense ProxSkip aside), the uplink bits to first reach each threshold at sparsity ``s``."""
    out = {}
    for m in methods:
        r = pipe.results[m].get(s) if m != "proxskip" else None
        if r is not None:
            out[m] = [threshold_bits(r["history"], t) for t in thresholds]
    return out


def extra_communication_table(pipe, spec, methods, head, out_md, numbers) -> None:
    """Bits to the budget's own (lower) thresholds, which short runs reach."""
    comm = PUBLISHED[pipe.dataset]["communication"]
    s, ref = comm["sparsity"], comm["reference"]
    extra = tuple(pipe.budget.extra_thresholds)
    bits = bits_to(pipe, methods, s, extra)
    rows = []
    numbers["communication_extra"] = {}
    for m, bl in bits.items():
        ref_bits = bits.get(ref, [math.nan] * len(extra))
        sps = [rb / b if (np.isfinite(b) and np.isfinite(rb)) else math.nan for b, rb in zip(bl, ref_bits)]
        numbers["communication_extra"][m] = {str(t): {"bits": b, "speedup": sp} for t, b, sp in zip(extra, bl, sps)}
        rows.append([METHOD_LABELS.get(m, m)] + [format_bits(b) + (f" ({sp:.2f}×)" if np.isfinite(sp) else "")
                                                 for b, sp in zip(bl, sps)])
    out_md["communication_extra_thresholds"] = (
        f"# Uplink bits per client to first reach lower thresholds at {pct(s)} sparsity (speed-up vs "
        f"{METHOD_LABELS[ref]})\n\n{head}\nThresholds of this budget, not the paper's (which the short runs "
        f"do not reach); compare the speed-ups with the paper's Table, not the bits.\n\n"
        + markdown_table(["method"] + [spec.threshold_label(t) for t in extra], rows))


def communication_table(pipe, spec, methods, head, out_md, numbers) -> None:
    """Bits to the paper's thresholds and the speed-ups, beside the paper's (Table 2 / Table 3)."""
    comm = PUBLISHED[pipe.dataset]["communication"]
    s, ref, thrs = comm["sparsity"], comm["reference"], comm["thresholds"]
    bits = bits_to(pipe, methods, s, thrs)
    header = ["method"]
    for t in thrs:
        label = spec.threshold_label(t)
        header += [f"{label} ours", f"{label} paper", f"{label} speed-up ours / paper"]
    rows = []
    for m, bl in bits.items():
        row = [METHOD_LABELS.get(m, m)]
        numbers["communication"][m] = {}
        for j, t in enumerate(thrs):
            ours = bl[j]
            ref_bits = bits.get(ref, [math.nan] * len(thrs))[j]
            sp = ref_bits / ours if (np.isfinite(ours) and np.isfinite(ref_bits)) else math.nan
            pb, ps = comm["bits"].get(m, {}).get(t), comm["speedup"].get(m, {}).get(t)
            numbers["communication"][m][str(t)] = {"bits": ours, "speedup": sp, "paper_bits": pb,
                                                   "paper_speedup": ps}
            cell = format_bits(ours) + (f" ({sp:.2f}×)" if np.isfinite(sp) else "")
            pcell = format_bits(pb) + (f" ({ps:g}×)" if ps is not None else "")
            ratio = f"{sp / ps:.2f}" if (np.isfinite(sp) and ps) else "—"
            row += [cell, pcell, ratio]
        rows.append(row)
    name, tab, what = spec.communication_table
    out_md[name] = (
        f"# {tab}: uplink bits per client to first reach a {what} at {pct(s)} sparsity "
        f"(speed-up vs {METHOD_LABELS[ref]})\n\n{head}\nOn the seed-mean curve, resolution one history "
        f"record; \"never\" = not reached within the run.\n\n" + markdown_table(header, rows))


def orderings_table(pipe, methods, head, out_md, numbers) -> None:
    """The paper's orderings of the methods (EXPERIMENTS.md) checked on ours."""
    s_ord, chain = ORDERINGS[pipe.dataset]
    lines = [f"# Orderings at {pct(s_ord)} sparsity (EXPERIMENTS.md)\n", head,
             "Paper: " + " > ".join(" ≈ ".join(METHOD_LABELS[m] for m in grp) for grp in chain) + "\n"]
    ranked = []
    for m in methods:
        r = pipe.results[m].get(s_ord) if m != "proxskip" else None
        if r is not None:
            ranked.append((mean_se(r["summary"]["metric"])[0], m))
    ranked.sort(reverse=True)
    lines.append("Ours: " + " > ".join(f"{METHOD_LABELS[m]} ({100 * v:.1f})" for v, m in ranked) + "\n")
    val = {m: v for v, m in ranked}
    checks = []
    for hi, lo in zip(chain[:-1], chain[1:]):
        for a in hi:
            for b in lo:
                if a in val and b in val:
                    checks.append([f"{METHOD_LABELS[a]} > {METHOD_LABELS[b]}", f"{100 * val[a]:.1f}",
                                   f"{100 * val[b]:.1f}", "holds" if val[a] > val[b] else "does not hold"])
    numbers["orderings"] = {"sparsity": s_ord, "checks": checks}
    out_md["orderings"] = "\n".join(lines) + "\n" + markdown_table(["claim", "left", "right", "ours"], checks)


def figures(pipe) -> list:
    """Figure 2 / 3 style plots, one per sparsity (none without matplotlib)."""
    if not have_matplotlib():
        return []
    stem, fig_no = SPECS[pipe.dataset].figure
    paths = []
    for s in pipe.sparsities:
        by_label = curves(pipe, s)
        if not by_label:
            continue
        path = pipe.out / "figures" / f"{stem}_{skey(s)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        plot_paper_figure(by_label, path, metric_label=SPECS[pipe.dataset].metric_label,
                          title=f"{fig_no} style: {pipe.dataset}, {pct(s)} sparsity, budget {pipe.budget.name}",
                          loss_label="training objective F (after TopK)")
        paths.append(path)
    return paths


def write_results(pipe) -> dict:
    """``tables/``, ``figures/`` and ``summary.json`` of the final runs; what :func:`reproduce` returns of them."""
    t0, out = time.perf_counter(), pipe.out
    made = tables(pipe)
    for name, md in made["markdown"].items():
        (out / "tables").mkdir(parents=True, exist_ok=True)
        (out / "tables" / f"{name}.md").write_text(md + "\n")
    write_json(out / "tables" / "tables.json", made["numbers"])
    paths = figures(pipe)
    kept = ("metric", "train_loss_sum", "objective", "communications", "bits_up", "status", "records",
            "iterations", "seeds", "params")
    optional = ("peak_rise", "unstable_seeds")  # absent where the history has no loss to check

    def brief(summ):
        return {**{k: summ[k] for k in kept}, **{k: summ[k] for k in optional if k in summ}}

    summary = {m: {str(s): brief(r["summary"]) for s, r in v.items()} for m, v in pipe.results.items()}
    write_json(out / "summary.json", summary)
    pipe.timings["tables_figures"] = time.perf_counter() - t0
    return dict(tables=made["markdown"], numbers=made["numbers"], summary=summary, figures=[str(p) for p in paths])


def _read_back_note(run_info) -> str:
    """Where nothing was computed, the wall time is a read-back's: say so, and where the runs' own are."""
    steps = run_info.get("run_steps")
    if not steps or sum(steps.values()):  # an old run.json without the count says nothing
        return ""
    return ("; every search and run was read back from this folder (each run's summary.json keeps the "
            "seconds it took)")


def _final_run_seconds(run_info) -> list:
    """The final runs' own seconds, summed over cells and sittings (a line, where there are any)."""
    total = run_info.get("final_run_seconds", {}).get("total")
    if not total:
        return []
    return [f"Final runs: {total:,.0f} s (each run's own wall clock, summed over the cells and "
            f"the sittings of resumed runs; run.json has each cell's; the searches are not included).  "]


def write_readme(pipe, result, run_info) -> None:
    """``README.md``: the tables, figures, diagnostics and Appendix D in one page."""
    b = pipe.budget
    parts = [f"# proxfed reproduction: {pipe.dataset}, budget `{b.name}`\n", banner(b, pipe.communications),
             f"Command: `{run_info['command']}`  ",
             f"Wall time: {run_info['timings']['total']:.0f} s on {run_info['machine']['processor']} "
             f"({run_info['machine']['cpu_count']} CPUs){_read_back_note(run_info)}.  ",
             *_final_run_seconds(run_info),
             f"alpha = {run_info['alpha']['alpha']:g} ({run_info['alpha']['how']}).\n"]
    for name, md in result.get("tables", {}).items():
        parts.append(md.replace("# ", "## ", 1) + "\n")
    for f in result.get("figures", []):
        parts.append(f"![{Path(f).stem}](figures/{Path(f).name})\n")
    for name in ("dense_reference", "alpha_check"):  # FEMNIST's alpha check builds on the dense reference
        if name in result:
            parts.append(result[name].replace("# ", "## ", 1) + "\n")
    if "appendix_d" in result:
        parts.append(result["appendix_d"]["markdown"].replace("# ", "## ", 1) + "\n")
        if result["appendix_d"]["figure"] is not None:
            parts.append("![appendix D](appendix_d/appendix_d.png)\n")
    (pipe.out / "README.md").write_text("\n".join(parts))
