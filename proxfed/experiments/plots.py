"""Figures for results directories (matplotlib is optional)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["have_matplotlib", "plot_metric_vs_bits"]


def have_matplotlib() -> bool:
    """Whether matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_metric_vs_bits(histories: dict, path, metric_label: str = "test metric", title: str = "") -> Path:
    """Plot each method's metric against its cumulative uplink bits per client (log x axis).

    Parameters
    ----------
    histories : dict of str to dict
        Method name to a run history with ``bits_up`` and ``metric`` arrays.
    path : path-like
        Output PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_bits, ax_comm) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, hist in histories.items():
        bits = hist["bits_up"]
        ax_bits.plot(bits[bits > 0], hist["metric"][bits > 0], label=name, lw=1.4)
        ax_comm.plot(hist["communications"], hist["loss"], label=name, lw=1.4)
    ax_bits.set_xscale("log")
    ax_bits.set_xlabel("uplink bits per client")
    ax_bits.set_ylabel(metric_label)
    ax_comm.set_yscale("log")
    ax_comm.set_xlabel("communications")
    ax_comm.set_ylabel("training objective (after final prox)")
    ax_bits.grid(alpha=0.3)
    ax_comm.grid(alpha=0.3)
    ax_bits.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
