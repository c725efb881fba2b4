"""Final-TopK at 95% on BlogFeedback over 10^4 communications: the search's pick against the capped one.

Reads two stored final runs (``history.npz`` and ``summary.json`` of a reproduction's
``runs/final_topk/s0950``) and draws each seed's training objective and test R² against
communications. Made with::

    python plot_stability.py UNCAPPED_RUN_DIR CAPPED_RUN_DIR stability_final_topk_s0950.png
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def main(uncapped: str, capped: str, out: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for where, style, color in ((uncapped, "-", None), (capped, "--", "black")):
        d = Path(where)
        summary = json.loads((d / "summary.json").read_text())
        with np.load(d / "history.npz") as h:
            comms, loss, metric = h["communications"], h["loss"], h["metric"]
        gamma, p = summary["params"]["gamma"], summary["params"]["p"]
        for r, seed in enumerate(summary["seeds"]):
            label = f"γ = {gamma:.3g}, p = {p:.3g}" if r == 0 else None
            c = f"C{r}" if color is None else color
            axes[0].semilogy(comms[:, r], loss[:, r], style, color=c, lw=0.8, label=label)
            axes[1].plot(comms[:, r], np.clip(metric[:, r], -1.0, None), style, color=c, lw=0.8, label=label)
    axes[0].set(xlabel="communications", ylabel="training objective F(TopK(w̄))",
                title="each seed: search's pick (colours), capped at 2/L (black, dashed)")
    axes[1].set(xlabel="communications", ylabel="test R² (clipped at −1)", ylim=(-1.05, 0.35))
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:4])
