"""Small helpers shared by the reproduction modules (paper, pipeline, report, specs).

Public names in a private module: used across the reproduction modules, not part of the API.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import numpy as np

from .. import __version__
from ..memory import settings as memory_settings
from ..threads import blas_info


def pct(s: float) -> str:
    """A sparsity as a percentage label (``0.9`` -> ``"90%"``)."""
    return f"{round(100 * s)}%" if abs(100 * s - round(100 * s)) < 1e-9 else f"{100 * s:g}%"


def skey(s) -> str:
    """The folder name of a sparsity's runs (``"dense"`` for None)."""
    return "dense" if s is None else f"s{round(1000 * s):04d}"


def data_folder(data_dir, name: str) -> Path:
    """``data_dir/name`` when that folder exists, else ``data_dir``."""
    d = Path(data_dir).expanduser()
    return d / name if (d / name).is_dir() else d


def machine() -> dict:
    """Platform, Python, NumPy, proxfed and BLAS of this process, for ``run.json``."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": sys.version.split()[0], "numpy": np.__version__,
            "proxfed": __version__, "keep_freed_memory": memory_settings["keep_freed_memory"],
            "blas": [{k: lib[k] for k in ("internal_api", "num_threads", "version")} for lib in blas_info()]}


def run_steps(summary) -> int:
    """Local steps computed for a final run in this sitting: ``iterations`` per seed (or one count for
    all) less the ``resumed_at`` a resumed run started from, over the ``runs_computed`` runs (all
    seeds, or one where the seeds' runs are identical)."""
    its, n = summary["iterations"], len(summary["seeds"])
    per_seed = [int(i) for i in its] if isinstance(its, list) else [int(its)] * n
    start = int(summary.get("resumed_at") or 0)
    return sum(max(0, i - start) for i in per_seed[: summary.get("runs_computed", n)])


def banner(budget, communications: int | None = None) -> str:
    """The budget line of every table; ``communications`` overrides the final runs' horizon."""
    c = budget.communications if communications is None else communications
    if budget.name == "paper":
        return f"Budget: **paper** ({c} communications per final run, {budget.seeds} seeds).\n"
    return (f"Budget: **{budget.name}** ({c} communications per final run, "
            f"{budget.seeds} seeds) — these numbers check the pipeline; they are **not** a reproduction.\n")

