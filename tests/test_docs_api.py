"""Every public name of proxfed and proxfed_dl appears in the API reference (docs/api.rst)."""

import importlib
import re
from pathlib import Path

import pytest

try:
    import torch  # noqa: F401
except ImportError:
    HAVE_TORCH = False
else:
    HAVE_TORCH = True

NO_TORCH = "proxfed_dl needs torch (the dl extra; on CPU machines pip install torch==2.13.0 first)"
API_RST = Path(__file__).resolve().parents[1] / "docs" / "api.rst"
PUBLIC_MODULES = [
    "proxfed", "proxfed.prox", "proxfed.problems", "proxfed.algorithms", "proxfed.runner", "proxfed.round_runner", "proxfed.threads", "proxfed.comm",
    "proxfed.theory", "proxfed.metrics", "proxfed.algorithms.rounds", "proxfed.algorithms.registry", "proxfed.data", "proxfed.experiments", "proxfed.experiments.demo",
    "proxfed.experiments.plots", "proxfed.experiments.catalog", "proxfed.experiments.own",
    "proxfed.experiments.compare", "proxfed.experiments.protocols", "proxfed.cli", "proxfed.cli_own",
    "proxfed.config_file", "proxfed.extensions", "proxfed.tune", "proxfed_dl", "proxfed_dl.distributed",
    "proxfed_dl.experiments", "proxfed_dl.reproduce",
]


def documented():
    """(objects documented by identity, dotted names documented with autodata).

    Without torch, the entries of proxfed_dl's modules are left out (they cannot be imported).
    """
    objects, names = [], set()
    module = None
    in_summary = False
    for line in API_RST.read_text().splitlines():
        if m := re.match(r"\.\. currentmodule:: (\S+)", line):
            module, in_summary = m.group(1), False
        elif line.startswith(".. autosummary::"):
            in_summary = True
        elif m := re.match(r"\.\. (autodata|automodule):: (\S+)", line):
            names.add(m.group(2))
            in_summary = False
        elif in_summary and (m := re.match(r"   ([A-Za-z_][\w.]*)$", line)):
            if not HAVE_TORCH and module.split(".")[0] == "proxfed_dl":
                continue
            obj = importlib.import_module(module)
            for part in m.group(1).split("."):
                obj = getattr(obj, part)
            objects.append(obj)
        elif line and not line.startswith(" "):
            in_summary = False
    return objects, names


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_public_names_are_documented(module_name):
    if module_name.split(".")[0] == "proxfed_dl" and not HAVE_TORCH:
        pytest.skip(NO_TORCH)
    objects, names = documented()
    module = importlib.import_module(module_name)
    missing = []
    for name in getattr(module, "__all__", []):
        obj = getattr(module, name)
        if isinstance(obj, type(module)):
            continue  # submodules are documented through their own names
        if any(obj is o for o in objects):
            continue
        if f"{module_name}.{name}" in names or any(n.endswith(f".{name}") and obj is _resolve(n) for n in names):
            continue
        missing.append(name)
    assert not missing, f"{module_name}: public names missing from docs/api.rst: {missing}"


def _resolve(dotted):
    mod, _, attr = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError):
        return None
