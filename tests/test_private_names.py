"""No private name crosses a module boundary (issue 22): a name used by two modules is public.

A private *module* (``proxfed/_backend.py``) is package-internal and may be imported anywhere in
the package; what it defines without a leading underscore is its interface. What is checked, with
:mod:`ast` over every module of ``proxfed`` and ``proxfed_dl``:

* ``from <package module> import _name`` where ``_name`` is not itself a module;
* ``alias._name`` where ``alias`` was bound by importing a package module (``from . import
  runner``; ``import proxfed.memory as m``), except attributes of ``self``/``cls``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("proxfed", "proxfed_dl")


def _modules(root: Path):
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = list(rel.parts)
            is_pkg = parts[-1] == "__init__"
            if is_pkg:
                parts = parts[:-1]
            yield ".".join(parts), path, is_pkg


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str | None:
    """The absolute module an ``ImportFrom`` reads from, or None outside the packages."""
    if node.level == 0:
        name = node.module or ""
    else:
        base = module.split(".") if is_pkg else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        name = ".".join(base + ([node.module] if node.module else []))
    return name if name.split(".")[0] in PACKAGES else None


def _is_module(name: str, root: Path) -> bool:
    path = root / Path(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def crossings(root: Path = ROOT) -> list[str]:
    """Every private name used across the modules under ``root``, as ``module: what``."""
    found = []
    for module, path, is_pkg in _modules(root):
        tree = ast.parse(path.read_text(), filename=str(path))
        module_aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = _resolve(module, is_pkg, node)
                if source is None:
                    continue
                for alias in node.names:
                    if _is_module(f"{source}.{alias.name}", root):
                        module_aliases.add(alias.asname or alias.name)
                    elif _private(alias.name):
                        found.append(f"{module}: from {source} import {alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in PACKAGES and alias.asname:
                        module_aliases.add(alias.asname)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name)
                    and node.value.id in module_aliases):
                found.append(f"{module}: {node.value.id}.{node.attr}")
    return sorted(set(found))


def test_the_checker_sees_a_crossing(tmp_path):
    pkg = tmp_path / "proxfed"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "_helpers.py").write_text("def _hidden():\n    pass\n\ndef shown():\n    pass\n")
    (pkg / "sub" / "user.py").write_text(
        "from .. import _helpers as H\nfrom .._helpers import _hidden, shown\n\nH._hidden()\nH.shown()\n")
    assert crossings(tmp_path) == ["proxfed.sub.user: H._hidden",
                                   "proxfed.sub.user: from proxfed._helpers import _hidden"]


def test_no_private_name_crosses_a_module_boundary():
    found = crossings()
    assert not found, "make these names public (a private module may hold them):\n  " + "\n  ".join(found)
