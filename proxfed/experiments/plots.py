"""Figures for results directories (matplotlib is optional)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["have_matplotlib", "plot_metric_vs_bits", "plot_paper_figure", "plot_comparison", "plot_appendix_d"]


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
    return _finish_bits_and_loss(plt, fig, ax_bits, ax_comm, metric_label,
                                 "training objective (after final prox)", title, path, "lower right")


def _finish_bits_and_loss(plt, fig, ax_bits, ax_comm, metric_label, loss_label, title, path, legend_loc):
    """Axes, labels, legend and file of the two-panel figure: metric vs uplink bits, loss vs communications."""
    ax_bits.set_xscale("log")
    ax_bits.set_xlabel("uplink bits per client")
    ax_bits.set_ylabel(metric_label)
    ax_comm.set_yscale("log")
    ax_comm.set_xlabel("communications")
    ax_comm.set_ylabel(loss_label)
    for ax in (ax_bits, ax_comm):
        ax.grid(alpha=0.3)
    ax_bits.legend(fontsize=7, loc=legend_loc)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mean_band(values):
    """Mean over seeds (axis 1) and its standard error, for curves of shape (records, seeds)."""
    import numpy as np

    a = np.asarray(values, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    n = a.shape[1]
    mean = a.mean(axis=1)
    se = a.std(axis=1, ddof=1) / np.sqrt(n) if n > 1 else np.zeros_like(mean)
    return mean, se


def plot_paper_figure(curves: dict, path, metric_label: str = "test metric", title: str = "",
                      loss_label: str = "training objective") -> Path:
    """Figures 2 and 3 of the paper: metric vs uplink bits per client, and loss vs communications.

    Each method is drawn as the mean over its seeds with a shaded band of one
    standard error. The x positions are the seed means of the uplink bits
    (left, log scale) and of the communications (right).

    Parameters
    ----------
    curves : dict of str to dict
        Method label to a history with ``bits_up``, ``metric``,
        ``communications`` and ``loss`` arrays of shape (records, seeds).
    path : path-like
        Output PNG.
    metric_label, loss_label, title : str
    """
    import numpy as np

    plt = _pyplot()
    fig, (ax_bits, ax_comm) = plt.subplots(1, 2, figsize=(12, 4.4))
    for i, (name, hist) in enumerate(curves.items()):
        color = f"C{i % 10}"
        style = "--" if "dense" in name else "-"
        bits, _ = _mean_band(hist["bits_up"])
        m, se = _mean_band(hist["metric"])
        keep = bits > 0
        ax_bits.plot(bits[keep], m[keep], style, color=color, label=name, lw=1.4)
        ax_bits.fill_between(bits[keep], (m - se)[keep], (m + se)[keep], color=color, alpha=0.2, lw=0)
        comm, _ = _mean_band(hist["communications"])
        lm, lse = _mean_band(hist["loss"])
        ax_comm.plot(comm, lm, style, color=color, label=name, lw=1.4)
        ax_comm.fill_between(comm, np.maximum(lm - lse, 1e-300), lm + lse, color=color, alpha=0.2, lw=0)
    return _finish_bits_and_loss(plt, fig, ax_bits, ax_comm, metric_label, loss_label, title, path, "best")


def plot_comparison(curves: dict, path, metric_label: str = "test metric", title: str = "") -> Path:
    """Three panels: metric vs uplink bits per client (log x), metric and loss vs communications.

    Each curve is the mean over its seeds with a shaded band of one standard
    error, at the seed means of the x positions (as :func:`plot_paper_figure`).
    The figure of ``proxfed run`` and ``proxfed compare``.

    Parameters
    ----------
    curves : dict of str to dict
        Label to a history with ``bits_up``, ``metric``, ``communications``
        and ``loss`` arrays of shape (records,) or (records, seeds).
    path : path-like
        Output PNG.
    metric_label, title : str

    Returns
    -------
    pathlib.Path
    """
    import numpy as np

    plt = _pyplot()
    fig, (ax_bits, ax_cm, ax_loss) = plt.subplots(1, 3, figsize=(15, 4.4))
    with np.errstate(over="ignore", invalid="ignore"):  # (a diverged run's last finite record may be huge)
        for i, (name, hist) in enumerate(curves.items()):
            color, style = f"C{i % 10}", ("-", "--", ":", "-.")[(i // 10) % 4]
            bits, _ = _mean_band(hist["bits_up"])
            comm, _ = _mean_band(hist["communications"])
            m, se = _mean_band(hist["metric"])
            lm, lse = _mean_band(hist["loss"])
            keep = bits > 0
            ax_bits.plot(bits[keep], m[keep], style, color=color, label=name, lw=1.4)
            ax_bits.fill_between(bits[keep], (m - se)[keep], (m + se)[keep], color=color, alpha=0.2, lw=0)
            ax_cm.plot(comm, m, style, color=color, label=name, lw=1.4)
            ax_cm.fill_between(comm, m - se, m + se, color=color, alpha=0.2, lw=0)
            ax_loss.plot(comm, lm, style, color=color, label=name, lw=1.4)
            ax_loss.fill_between(comm, np.maximum(lm - lse, 1e-300), lm + lse, color=color, alpha=0.2, lw=0)
        ax_bits.set_xscale("log")
        if all(np.all(np.asarray(h["loss"]) > 0) for h in curves.values()):
            ax_loss.set_yscale("log")
    ax_bits.set_xlabel("uplink bits per client")
    ax_cm.set_xlabel("communications")
    ax_loss.set_xlabel("communications")
    ax_bits.set_ylabel(metric_label)
    ax_cm.set_ylabel(metric_label)
    ax_loss.set_ylabel("training objective (after final prox)")
    for ax in (ax_bits, ax_cm, ax_loss):
        ax.grid(alpha=0.3)
    ax_bits.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    with np.errstate(over="ignore", invalid="ignore"):
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_appendix_d(curves: dict, path, title: str = "") -> Path:
    """Appendix D (Figures 6-8): accuracy, ``||sum_i h_i||`` vs mean ``||h_i||``, ``||w||`` and loss.

    Four panels against communications, mean over seeds with a shaded
    standard error. In the second panel the solid line is ``||sum_i h_i||``
    and the dashed line of the same colour is ``(1/N) sum_i ||h_i||``.

    Parameters
    ----------
    curves : dict of str to dict
        Method label to a history with ``communications``, ``metric``,
        ``sum_h_norm``, ``mean_h_norm``, ``w_norm`` and ``loss`` of shape
        (records, seeds).
    path : path-like
    title : str
    """
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    panels = [("metric", "test accuracy", False), ("sum_h_norm", "||sum_i h_i|| (solid), mean ||h_i|| (dashed)", True),
              ("w_norm", "||w|| (client average)", False), ("loss", "training objective", True)]
    for i, (name, hist) in enumerate(curves.items()):
        color = f"C{i % 10}"
        comm, _ = _mean_band(hist["communications"])
        for ax, (key, label, logy) in zip(axes.ravel(), panels):
            m, se = _mean_band(hist[key])
            ax.plot(comm, m, color=color, label=name, lw=1.4)
            ax.fill_between(comm, m - se, m + se, color=color, alpha=0.2, lw=0)
            if key == "sum_h_norm":
                mh, mse = _mean_band(hist["mean_h_norm"])
                ax.plot(comm, mh, "--", color=color, lw=1.2)
                ax.fill_between(comm, mh - mse, mh + mse, color=color, alpha=0.1, lw=0)
            ax.set_ylabel(label)
            ax.set_xlabel("communications")
            if logy:
                ax.set_yscale("symlog", linthresh=1e-8) if key == "sum_h_norm" else ax.set_yscale("log")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
