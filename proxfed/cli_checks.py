"""Checks of the command line's paths, shared by ``proxfed reproduce`` and ``proxfed run``/``tune``/``compare``.

Each returns what is wrong (or raises the subcommand's usage error) before any
work and before any directory is made.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["missing_dirs", "check_out", "data_dir_problem", "cifar10_problem"]


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


def data_dir_problem(experiment: str, path: Path) -> str | None:
    """What ``--data-dir`` lacks for ``experiment`` (None: the files the loader reads are there)."""
    if not path.exists():
        return "no such file or directory"
    if experiment == "cifar10":
        return cifar10_problem(path)
    dataset = "femnist" if experiment.startswith("femnist") else "blogfeedback"  # (run's and reproduce's names)
    folder = path / dataset if (path / dataset).is_dir() else path
    if dataset == "femnist":
        if not all((folder / split).is_dir() for split in ("train", "test")):
            return "no FEMNIST train/ and test/ folders (LEAF's output) in it or in its femnist/ folder"
        return None
    if folder.is_file():
        return None  # the UCI zip; the loader checks its members
    from .data.blogfeedback import TEST_PATTERN, TRAIN_NAMES

    names = [p.name for p in folder.iterdir()]
    if not any(n in TRAIN_NAMES for n in names) or not any(TEST_PATTERN.match(n) for n in names):
        return ("no BlogFeedback files (blogData_train.csv and blogData_test-*.csv, or the UCI zip) in it or in "
                "its blogfeedback/ folder")
    return None


def cifar10_problem(path: Path) -> str | None:
    """What a CIFAR-10 ``--data-dir`` lacks (see :func:`proxfed.data.read_cifar10`)."""
    from .data.cifar10 import FOLDER, META, TEST_BATCH, TRAIN_BATCHES

    if path.is_file():
        return None  # the .tar.gz; the loader checks its members
    folder = path / FOLDER if (path / FOLDER).is_dir() and not (path / META).exists() else path
    missing = [n for n in (*TRAIN_BATCHES, TEST_BATCH, META) if not (folder / n).is_file()]
    if missing:
        return f"no CIFAR-10 python batches ({', '.join(missing)} missing) in it or in its {FOLDER}/ folder"
    return None
