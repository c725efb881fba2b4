"""Checks of the command line's paths, shared by ``proxfed reproduce`` and ``proxfed run``/``tune``/``compare``.

Each returns what is wrong (or raises the subcommand's usage error) before any
work and before any directory is made.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

__all__ = ["missing_dirs", "check_out", "data_dir_problem"]


def missing_dirs(path: Path) -> list:
    """``path`` and those of its parents that do not exist yet, deepest first."""
    path = Path(os.path.abspath(path.expanduser()))
    missing = []
    while not path.exists() and not path.is_symlink() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def check_out(sub, out) -> None:
    """A usage error unless ``out`` is a writable directory or can be made as one."""
    path = Path(os.path.abspath(Path(out).expanduser()))
    missing = missing_dirs(path)
    existing = missing[-1].parent if missing else path
    if not existing.is_dir():
        what = "exists and is not a directory" if existing == path else f"{existing} is not a directory"
        sub.error(f"--out {out}: {what}")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == path else f"cannot be made: {existing} is not writable"
        sub.error(f"--out {out}: {what}")


def data_dir_problem(name: str, path: Path) -> str | None:
    """What ``--data-dir`` lacks for the dataset or reproduction ``name`` (None: the loader's files are there).

    Asked of the dataset's loader module, ``proxfed.data.<dataset>.missing_files``.
    """
    if not path.exists():
        return "no such file or directory"
    from .experiments.specs import EXPERIMENTS

    dataset = EXPERIMENTS.get(name, (name,))[0]
    return importlib.import_module(f"{__package__}.data.{dataset}").missing_files(path)
