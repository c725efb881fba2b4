"""Reports on federated partitions: client sizes, label counts, histogram tables and plots.

Plotting needs matplotlib (the ``plot`` extra); it is imported only inside the
plotting functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dataset import FederatedDataset

__all__ = ["PartitionReport", "partition_report", "plot_partition", "client_size_table", "plot_client_sizes"]


@dataclass(frozen=True)
class PartitionReport:
    """Per-client sizes and label counts of a partition.

    Attributes
    ----------
    sizes : numpy.ndarray, shape (N,)
        Rows per client.
    counts : numpy.ndarray, shape (N, C)
        ``counts[i, c]``: rows of class ``c`` held by client ``i``.
    """

    sizes: np.ndarray
    counts: np.ndarray

    @property
    def n_clients(self) -> int:
        """Number of clients N."""
        return int(self.sizes.shape[0])

    @property
    def n_classes(self) -> int:
        """Number of classes C (columns of ``counts``)."""
        return int(self.counts.shape[1])

    def summary(self) -> dict:
        """Size statistics and label skew: min/median/mean/max size and mean classes per client."""
        present = (self.counts > 0).sum(axis=1)
        return {
            "n_clients": self.n_clients,
            "n_samples": int(self.sizes.sum()),
            "size_min": int(self.sizes.min()),
            "size_median": float(np.median(self.sizes)),
            "size_mean": float(self.sizes.mean()),
            "size_max": int(self.sizes.max()),
            "classes_per_client_mean": float(present.mean()),
        }

    def table(self, max_rows: int = 50) -> str:
        """A plain-text table: one line per client with its size and label counts."""
        width = max(5, len(str(int(self.counts.max(initial=0)))) + 1)
        head = "client " + "  size " + "".join(f"{c:>{width}}" for c in range(self.n_classes))
        lines = [head]
        for i in range(min(self.n_clients, max_rows)):
            lines.append(f"{i:>6} {self.sizes[i]:>6} " + "".join(f"{v:>{width}}" for v in self.counts[i]))
        if self.n_clients > max_rows:
            lines.append(f"... {self.n_clients - max_rows} more clients")
        return "\n".join(lines)


def partition_report(labels, parts=None, n_classes: int | None = None) -> PartitionReport:
    """Sizes and label counts of a partition.

    Parameters
    ----------
    labels : array of int, shape (n,) or FederatedDataset
        Class of every row; or a dataset with integer targets (its clients are the parts).
    parts : list of integer arrays, optional
        The partition (required unless ``labels`` is a dataset).
    n_classes : int, optional
        Number of classes (default ``max(label) + 1``).

    Returns
    -------
    PartitionReport

    Examples
    --------
    >>> import numpy as np
    >>> from proxfed.data import partition_report
    >>> rep = partition_report(np.array([0, 1, 1, 2]), [np.array([0, 1]), np.array([2, 3])])
    >>> rep.sizes.tolist(), rep.counts.tolist()
    ([2, 2], [[1, 1, 0], [0, 1, 1]])
    """
    if isinstance(labels, FederatedDataset):
        ds = labels
        labels = ds.y
        parts = [np.arange(lo, hi) for lo, hi in zip(ds.offsets[:-1], ds.offsets[1:])]
    if parts is None:
        raise ValueError("parts is required when labels is an array")
    y = np.asarray(labels)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ValueError(f"labels must be a 1-d integer array, got shape {y.shape} and dtype {y.dtype}")
    C = int(y.max()) + 1 if n_classes is None else int(n_classes)
    if y.size and (y.min() < 0 or y.max() >= C):
        raise ValueError(f"labels must lie in [0, {C})")
    counts = np.stack([np.bincount(y[np.asarray(p, dtype=np.int64)], minlength=C) for p in parts])
    return PartitionReport(sizes=counts.sum(axis=1), counts=counts)


def plot_partition(report: PartitionReport, path=None, *, ax=None, title: str | None = None):
    """Heatmap of the label counts: clients on the vertical axis, classes on the horizontal.

    Parameters
    ----------
    report : PartitionReport
    path : str or path-like, optional
        Write the figure there (PNG by suffix).
    ax : matplotlib Axes, optional
        Draw into it instead of a new figure.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(1.5 + 0.45 * report.n_classes, min(12.0, 1.5 + 0.25 * report.n_clients)))
        ax = fig.subplots()
    else:
        fig = ax.figure
    im = ax.imshow(report.counts, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xlabel("class")
    ax.set_ylabel("client")
    ax.set_title(title or f"label counts per client (N={report.n_clients})")
    fig.colorbar(im, ax=ax, label="rows")
    if path is not None:
        fig.savefig(Path(path), dpi=120, bbox_inches="tight")
    return fig


def _size_bins(sizes: np.ndarray) -> np.ndarray:
    """Edges 1, 2, 5, 10, 20, 50, ... up to the first edge above the largest size."""
    top = int(sizes.max())
    edges, base = [], 1
    while True:
        for m in (1, 2, 5):
            edges.append(base * m)
            if base * m > top:
                return np.array(edges)
        base *= 10


def client_size_table(sizes, bins=None) -> str:
    """Histogram of client sizes as a plain-text table.

    Parameters
    ----------
    sizes : array of int, shape (N,) or FederatedDataset
        Rows per client (or a dataset, whose ``client_sizes`` are used).
    bins : sequence of int, optional
        Increasing bin edges; bin ``[a, b)`` counts clients with ``a <= size < b``.
        Default: 1, 2, 5, 10, 20, 50, ... up to past the largest client.

    Returns
    -------
    str
        One line per bin with the number of clients, their share and the rows
        they hold, then a summary line (N, n, min, median, max).

    Examples
    --------
    >>> from proxfed.data import client_size_table
    >>> print(client_size_table([1, 3, 3, 12], bins=[1, 2, 10, 20]))
    client size     clients   share     rows
    [1, 2)                1   25.0%        1
    [2, 10)               2   50.0%        6
    [10, 20)              1   25.0%       12
    N=4 n=19 min=1 median=3 max=12
    """
    if isinstance(sizes, FederatedDataset):
        sizes = sizes.client_sizes
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.ndim != 1 or sizes.size == 0:
        raise ValueError("sizes must be a non-empty 1-d array")
    edges = _size_bins(sizes) if bins is None else np.asarray(bins, dtype=np.int64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError("bins must be at least two increasing edges")
    lines = [f"{'client size':<14}{'clients':>9}{'share':>8}{'rows':>9}"]
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (sizes >= lo) & (sizes < hi)
        lines.append(f"{f'[{lo}, {hi})':<14}{int(sel.sum()):>9}{100 * sel.mean():>7.1f}%{int(sizes[sel].sum()):>9}")
    outside = int(((sizes < edges[0]) | (sizes >= edges[-1])).sum())
    if outside:
        lines.append(f"{'outside bins':<14}{outside:>9}")
    lines.append(f"N={sizes.size} n={int(sizes.sum())} min={int(sizes.min())} "
                 f"median={np.median(sizes):g} max={int(sizes.max())}")
    return "\n".join(lines)


def plot_client_sizes(sizes, path=None, *, ax=None, title: str | None = None, log: bool = True):
    """Histogram of the number of rows per client (like the paper's Figure 5 for BlogFeedback).

    Parameters
    ----------
    sizes : array of int, shape (N,) or FederatedDataset
    path : str or path-like, optional
        Write the figure there.
    ax : matplotlib Axes, optional
    title : str, optional
    log : bool
        Logarithmic size axis (log-spaced bins), the readable choice for
        heavy-tailed sizes.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if isinstance(sizes, FederatedDataset):
        sizes = sizes.client_sizes
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.ndim != 1 or sizes.size == 0 or sizes.min() < 1:
        raise ValueError("sizes must be a non-empty 1-d array of positive integers")
    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6.0, 3.6))
        ax = fig.subplots()
    else:
        fig = ax.figure
    if log:  # log-spaced bins aligned to integers, so that no bin is empty for lack of an integer in it
        bins = np.unique(np.round(np.logspace(0, np.log10(sizes.max() + 1), 30))) - 0.5
        bins = np.append(bins, sizes.max() + 0.5) if bins[-1] < sizes.max() + 0.5 else bins
        ax.set_xscale("log")
    else:
        bins = 30
    ax.hist(sizes, bins=bins, color="#3b6ea8", edgecolor="white")
    ax.set_xlabel("rows per client")
    ax.set_ylabel("clients")
    ax.set_title(title or f"client sizes (N={sizes.size}, n={int(sizes.sum())})")
    if path is not None:
        fig.savefig(Path(path), dpi=120, bbox_inches="tight")
    return fig
