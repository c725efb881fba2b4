"""Modules stay under 500 lines and functions under 80 (DESIGN.md), except a shrinking allowlist.

Sizes are read with :mod:`ast`: a module's lines are its physical lines, a function's are its lines
of code, ``end_lineno - lineno + 1`` (from ``def`` to its last line) less its docstring's lines --
DESIGN.md limits code, and a numpydoc docstring stating the exact objective should not count
against it. Methods are named ``Class.method``, nested functions ``outer.inner``. ``tests/size_allowlist.json`` records tolerated
offenders with their sizes (none since issue 22). The test fails when

* a module or function that is not in the allowlist goes over its limit (a new offender: split it),
* a listed offender grows beyond its recorded size,
* a listed offender is back under its limit or gone (remove it from the allowlist),

so the allowlist can only shrink. ``python tests/test_module_sizes.py`` prints the offenders;
``--shrink`` lowers the recorded sizes to today's and drops the entries that are fixed (it never
adds an entry or raises a size).
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOWLIST = Path(__file__).resolve().with_name("size_allowlist.json")
#: What is measured (paths relative to the repository root); tests/ and benchmarks/ are not.
SCANNED = ("proxfed", "proxfed_dl", "examples", "docs/conf.py", "docs/_ext")


def _docstring_lines(node) -> int:
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first.end_lineno - first.lineno + 1
    return 0


def module_sizes(path: Path) -> tuple[int, dict]:
    """(lines of the module, {qualified function name: lines}) of one Python file."""
    text = path.read_text(encoding="utf-8")
    functions = {}

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    size = child.end_lineno - child.lineno + 1 - _docstring_lines(child)
                    functions[name] = max(size, functions.get(name, 0))  # e.g. a property and its setter
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(text, str(path)), "")
    return len(text.splitlines()), functions


def python_files(root: Path = ROOT, scanned=SCANNED) -> list:
    out = []
    for entry in scanned:
        p = root / entry
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            out.extend(sorted(q for q in p.rglob("*.py") if "__pycache__" not in q.parts))
    return out


def offenders(root: Path = ROOT, scanned=SCANNED, module_limit: int = 500, function_limit: int = 80) -> dict:
    """{"modules": {path: lines}, "functions": {"path::name": lines}} of everything over its limit."""
    modules, functions = {}, {}
    for path in python_files(root, scanned):
        rel = path.relative_to(root).as_posix()
        lines, funcs = module_sizes(path)
        if lines > module_limit:
            modules[rel] = lines
        functions.update({f"{rel}::{n}": s for n, s in funcs.items() if s > function_limit})
    return {"modules": modules, "functions": functions}


def compare(found: dict, allowed: dict) -> list:
    """The complaints about ``found`` offenders against the ``allowed`` ones (both as :func:`offenders`)."""
    problems = []
    for kind in ("modules", "functions"):
        now, then = found[kind], allowed.get(kind, {})
        for key, size in sorted(now.items(), key=lambda kv: -kv[1]):
            if key not in then:
                problems.append(f"new offender: {key} has {size} lines; split it (DESIGN.md: modules <= 500 lines, "
                                f"functions <= 80 lines of code)")
            elif size > then[key]:
                problems.append(f"grown: {key} has {size} lines, the allowlist says {then[key]}; it may only shrink")
        for key in sorted(set(then) - set(now)):
            problems.append(f"fixed: {key} is under the limit now (or gone); remove it from tests/{ALLOWLIST.name}")
    return problems


def load_allowlist(path: Path = ALLOWLIST) -> dict:
    return json.loads(path.read_text())


def _limits(allowed: dict) -> dict:
    return {"module_limit": allowed["limits"]["module_lines"], "function_limit": allowed["limits"]["function_lines"]}


def _listing(found: dict) -> str:
    rows = [f"  {size:5d}  {key}" for kind in ("modules", "functions")
            for key, size in sorted(found[kind].items(), key=lambda kv: -kv[1])]
    return "\n".join(rows)


def test_sizes_hold_against_the_allowlist():
    allowed = load_allowlist()
    found = offenders(**_limits(allowed))
    problems = compare(found, allowed)
    assert not problems, ("\n".join(problems) + f"\n\nall offenders today ({len(found['modules'])} modules, "
                          f"{len(found['functions'])} functions):\n" + _listing(found))


def test_allowlist_names_scanned_files():
    allowed = load_allowlist()
    for kind in ("modules", "functions"):
        for key in allowed[kind]:
            assert (ROOT / key.split("::")[0]).is_file(), f"{key}: no such file"
            assert key.startswith(tuple(SCANNED)), f"{key} is outside the scanned paths {SCANNED}"


def test_checker_reports_long_functions_only(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(90))
    doc = '    """' + "\n".join(["Docstring."] * 100) + '\n    """'
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text(
        f"def long():\n{body}\n    return x0\n\n\ndef short():\n    return 1\n\n\n"
        f"def documented():\n{doc}\n    return 1\n\n\n"
        f"class C:\n    def method(self):\n{body.replace('    ', '        ')}\n        return 0\n")
    found = offenders(tmp_path, scanned=("pkg",), module_limit=500, function_limit=80)
    # 90 assignments + def + return; a long docstring does not count (documented() is 2 lines of code)
    assert found["functions"] == {"pkg/mod.py::long": 92, "pkg/mod.py::C.method": 92}
    assert found["modules"] == {}
    found = offenders(tmp_path, scanned=("pkg",), module_limit=250, function_limit=80)
    assert found["modules"] == {"pkg/mod.py": sum(1 for _ in (tmp_path / "pkg" / "mod.py").open())}


def test_compare_flags_new_grown_and_fixed_offenders():
    allowed = {"modules": {"a.py": 600, "gone.py": 700}, "functions": {"a.py::f": 100}}
    found = {"modules": {"a.py": 650, "b.py": 501}, "functions": {"a.py::f": 90}}
    problems = compare(found, allowed)
    assert any(p.startswith("grown: a.py has 650") for p in problems)
    assert any(p.startswith("new offender: b.py") for p in problems)
    assert any(p.startswith("fixed: gone.py") for p in problems)
    assert not any("a.py::f" in p for p in problems)  # shrunk but still over: allowed
    assert compare(allowed, allowed) == []


def _shrink() -> None:
    allowed = load_allowlist()
    found = offenders(**_limits(allowed))
    for kind in ("modules", "functions"):
        allowed[kind] = {k: min(v, found[kind][k]) for k, v in allowed[kind].items() if k in found[kind]}
    ALLOWLIST.write_text(json.dumps(allowed, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    if "--shrink" in sys.argv[1:]:
        _shrink()
    allowed = load_allowlist()
    found = offenders(**_limits(allowed))
    print(_listing(found))
    print("\n".join(compare(found, allowed)) or "the allowlist holds")
