"""The layer diagram of proxfed and proxfed_dl, drawn from their actual imports.

Every module of both packages is parsed with :mod:`ast` (nothing is imported, so torch is not
needed) and placed in a layer of :data:`LAYERS`; the ``import-graph`` directive of the
architecture page then shows, at every docs build,

* ``:show: diagram`` -- the layers and the imports between their units: a Graphviz graph when
  ``sphinx.ext.graphviz`` is loaded (conf.py loads it only where the ``dot`` program exists),
  otherwise an ASCII listing, top layer first;
* ``:show: modules`` -- a table module -> lines -> the modules it imports;
* ``:show: upward`` -- imports from a lower layer into a higher one (the design card forbids them);
* ``:show: sizes`` -- the size allowlist (``tests/size_allowlist.json``): today's modules and
  functions over the size limits, issue 22's remaining work.

A module that matches no layer is a build warning (so ``sphinx -W`` fails): add its name to
:data:`LAYERS`. Run ``python docs/_ext/import_graph.py`` for the text version.
"""

from __future__ import annotations

import ast
import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("proxfed", "proxfed_dl")
ALLOWLIST = ROOT / "tests" / "size_allowlist.json"

#: The layers, bottom first: (name, what lives there, module names). A name stands for that module
#: and, for a package, every module under it. A module may import from its own layer and below.
LAYERS = (
    ("foundation", "array-library primitives, input checks, stored-state helpers, threads, extension registry",
     ("proxfed._backend", "proxfed._validation", "proxfed._stored", "proxfed.threads", "proxfed.memory",
      "proxfed.kernels", "proxfed.extensions")),
    ("operators", "prox operators, communication accounting, metrics, stepsizes from L and mu",
     ("proxfed.prox", "proxfed.comm", "proxfed.metrics", "proxfed.theory")),
    ("data and problems", "datasets, loaders, partitioners, generators; smooth federated objectives",
     ("proxfed.data", "proxfed.problems")),
    ("update rules", "init/step pairs over stacked client state",
     ("proxfed.algorithms",)),
    ("drivers", "the run loop and its drivers, closed-form rounds, random search; the package's public facade",
     ("proxfed.run_files", "proxfed.recording", "proxfed.run_setup", "proxfed.drivers", "proxfed.iteration_driver",
      "proxfed.runner", "proxfed.round_runner", "proxfed.search_space", "proxfed.search", "proxfed.tune", "proxfed")),
    ("DL extension", "torch models and gradient oracles plugged into the same rules and drivers",
     ("proxfed_dl",)),
    ("experiments", "paper reproductions, the method and dataset catalog, own experiments, plots, tables",
     ("proxfed.experiments",)),
    ("interfaces", "the command line and its configuration files",
     ("proxfed.cli", "proxfed.cli_own", "proxfed.cli_checks", "proxfed.config_file", "proxfed.__main__")),
)

#: Subpackages drawn as one box in the diagram (their modules are listed in the tables).
COLLAPSED = ("proxfed.data", "proxfed.problems", "proxfed.algorithms", "proxfed.experiments", "proxfed_dl")


@dataclass
class Module:
    name: str
    path: Path
    lines: int
    is_package: bool
    tree: ast.Module
    imports: dict = field(default_factory=dict)  # imported module -> True when every import of it is deferred


def _module_name(path: Path, root: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _parse(root: Path) -> dict:
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            name, is_package = _module_name(path, root)
            text = path.read_text(encoding="utf-8")
            modules[name] = Module(name, path, len(text.splitlines()), is_package, ast.parse(text, str(path)))
    return modules


def _deferred_nodes(tree: ast.AST):
    """Import nodes with whether they are deferred (inside a function or an ``if TYPE_CHECKING:``)."""
    def walk(node, deferred):
        for child in ast.iter_child_nodes(node):
            d = deferred or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                d = True
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, deferred
            else:
                yield from walk(child, d)
    yield from walk(tree, False)


def _reexports(modules: dict) -> dict:
    """package -> {name: module it is imported from} (the ``from .x import name`` of its __init__)."""
    out = {}
    for m in modules.values():
        if m.is_package:
            table = {}
            for node, _ in _deferred_nodes(m.tree):
                if isinstance(node, ast.ImportFrom):
                    source = _absolute(m, node)
                    for alias in node.names:
                        table[alias.asname or alias.name] = f"{source}.{alias.name}" if f"{source}.{alias.name}" \
                            in modules else source
            out[m.name] = table
    return out


def _absolute(m: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = (m.name if m.is_package else m.name.rpartition(".")[0]).split(".")
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _resolve(name: str, attr: str, modules: dict, reexports: dict) -> str:
    """The module that ``from name import attr`` reads ``attr`` from (through package facades)."""
    for _ in range(10):
        if f"{name}.{attr}" in modules:
            return f"{name}.{attr}"
        source = reexports.get(name, {}).get(attr)
        if source is None or source == name:
            return name
        if source in modules and not modules[source].is_package:
            return source
        name = source
    return name


def _attributes(tree: ast.AST, dotted: str) -> set:
    """The attributes read from ``dotted`` (an imported module's name) in ``tree``: ``proxfed.run`` -> run."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            try:
                base = ast.unparse(node.value)
            except Exception:  # pragma: no cover - unparse handles every expression node
                continue
            if base == dotted:
                out.add(node.attr)
    return out


def collect(root: Path = ROOT) -> dict:
    """Module name -> :class:`Module` with its imports of proxfed and proxfed_dl resolved to modules."""
    modules = _parse(root)
    reexports = _reexports(modules)
    for m in modules.values():
        found = {}
        for node, deferred in _deferred_nodes(m.tree):
            if isinstance(node, ast.Import):
                targets = []
                for a in node.names:
                    used = _attributes(m.tree, a.asname or a.name) if a.name in modules else set()
                    targets += [_resolve(a.name, attr, modules, reexports) for attr in sorted(used)] or [a.name]
            else:
                source = _absolute(m, node)
                targets = [_resolve(source, a.name, modules, reexports) for a in node.names]
            for t in targets:
                while t not in modules and "." in t:
                    t = t.rpartition(".")[0]
                if t in modules and t != m.name:
                    found[t] = found.get(t, True) and deferred
        m.imports = dict(sorted(found.items()))
    return modules


def layer_of(name: str) -> int | None:
    """Index in :data:`LAYERS` of the layer that holds module ``name`` (longest matching prefix)."""
    best, best_len = None, -1
    for i, (_, _, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    return best


def unit_of(name: str) -> str:
    """The box of the diagram that module ``name`` is drawn in."""
    for c in COLLAPSED:
        if name == c or name.startswith(c + "."):
            return c
    return name


def unclassified(modules: dict) -> list:
    return [n for n in modules if layer_of(n) is None]


def upward(modules: dict) -> list:
    """(importer, imported, deferred) for every import from a lower layer into a higher one."""
    out = []
    for m in modules.values():
        lm = layer_of(m.name)
        for t, deferred in m.imports.items():
            lt = layer_of(t)
            if lm is not None and lt is not None and lt > lm:
                out.append((m.name, t, deferred))
    return out


def unit_edges(modules: dict) -> dict:
    """(unit, imported unit) -> True when every import behind it is deferred; facade ``__init__`` left out."""
    edges = {}
    for m in modules.values():
        if m.is_package and m.name in ("proxfed",):
            continue  # the public facade re-exports; its users are resolved through it
        for t, deferred in m.imports.items():
            a, b = unit_of(m.name), unit_of(t)
            if a != b and b != "proxfed":
                edges[a, b] = edges.get((a, b), True) and deferred
    return edges


def _units_by_layer(modules: dict) -> list:
    layers = [[] for _ in LAYERS]
    for n in modules:
        i = layer_of(n)
        u = unit_of(n)
        if i is not None and u != "proxfed" and u not in layers[i]:
            layers[i].append(u)
    return layers


def _lines(modules: dict, unit: str) -> int:
    return sum(m.lines for n, m in modules.items() if unit_of(n) == unit)


def dot_source(modules: dict) -> str:
    """The diagram in Graphviz's language: one cluster per layer, top layer first."""
    layers = _units_by_layer(modules)
    out = ["digraph proxfed {", '  rankdir=TB; newrank=true; node [shape=box, fontsize=10, fontname="sans-serif"];',
           '  edge [color="#555555", arrowsize=0.6];']
    for i in reversed(range(len(LAYERS))):
        out.append(f'  subgraph cluster_{i} {{ label="{LAYERS[i][0]}"; fontsize=11; style=rounded; color="#999999";')
        for u in layers[i]:
            out.append(f'    "{u}" [label="{_short(u)}\\n{_lines(modules, u)} lines"];')
        out.append("  }")
    for (a, b), deferred in sorted(unit_edges(modules).items()):
        style = ' [style=dashed]' if deferred else ""
        out.append(f'  "{a}" -> "{b}"{style};')
    out.append("}")
    return "\n".join(out)


def ascii_diagram(modules: dict) -> str:
    """The diagram as text: the layers top first, each unit with the units it imports."""
    layers = _units_by_layer(modules)
    edges = unit_edges(modules)
    width = max(len(_short(u)) for units in layers for u in units)
    out = []
    for i in reversed(range(len(LAYERS))):
        name, what, _ = LAYERS[i]
        out.append(f"[{i}] {name} -- {what}")
        for u in layers[i]:
            uses = [f"{_short(b)}{'*' if d else ''}" for (a, b), d in sorted(edges.items()) if a == u]
            text = textwrap.wrap(", ".join(uses) if uses else "(nothing)", 96 - width)
            out.append(f"    {_short(u):<{width}}  -> {text[0]}")
            out.extend(" " * (width + 11) + t for t in text[1:])
        if i:
            out.append("        |")
            out.append("        v")
    out.append("(* only inside functions: imported when called; dl = proxfed_dl; the rest is proxfed.)")
    return "\n".join(out)


def _rst_table(header: list, rows: list) -> list:
    out = [".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        out.append(f"   * - {row[0]}")
        out.extend(f"     - {cell}" for cell in row[1:])
    return out


def _short(name: str) -> str:
    if name == "proxfed_dl" or name.startswith("proxfed_dl."):
        return "dl" + name[len("proxfed_dl"):]
    return name[len("proxfed."):] if name.startswith("proxfed.") else name


def diagram_rst(modules: dict, graphviz: bool) -> list:
    if graphviz:
        return [".. graphviz::", "", *("   " + line for line in dot_source(modules).splitlines()), "",
                "Dashed arrows: imports made only inside functions (deferred until called); ``dl`` is "
                "``proxfed_dl``, the other boxes are modules or subpackages of ``proxfed``."]
    return ["::", "", *("   " + line for line in ascii_diagram(modules).splitlines())]


def modules_rst(modules: dict) -> list:
    rows = []
    for n, m in modules.items():
        i = layer_of(n)
        imports = ", ".join(f"``{_short(t)}``" + (" (deferred)" if d else "") for t, d in m.imports.items())
        rows.append([f"``{n}``", LAYERS[i][0] if i is not None else "**none**", str(m.lines), imports or "--"])
    return _rst_table(["module", "layer", "lines", "imports (``dl.`` = ``proxfed_dl.``)"], rows)


def upward_rst(modules: dict) -> list:
    found = upward(modules)
    if not found:
        return ["None: every import of proxfed and proxfed_dl goes to the module's own layer or a lower one."]
    rows = [[f"``{a}``", f"``{b}``", "deferred" if d else "at import"] for a, b, d in found]
    return _rst_table(["importer", "imports (higher layer)", "when"], rows)


def sizes_rst(allowlist: Path = ALLOWLIST) -> list:
    data = json.loads(allowlist.read_text())
    limits = data["limits"]
    out = []
    for kind, limit, header in (("modules", limits["module_lines"], "module"),
                                ("functions", limits["function_lines"], "function")):
        entries = sorted(data[kind].items(), key=lambda kv: -kv[1])
        if not entries:
            out += [f"No {header} is over {limit} lines.", ""]
            continue
        out += [f"{kind.capitalize()} over {limit} lines:", ""]
        out += _rst_table([header, "lines"], [[f"``{k}``", str(v)] for k, v in entries]) + [""]
    return out


def setup(app):
    from docutils.parsers.rst import directives
    from docutils.statemachine import StringList
    from sphinx.util import logging
    from sphinx.util.docutils import SphinxDirective
    from sphinx.util.nodes import nested_parse_with_titles

    logger = logging.getLogger(__name__)

    class ImportGraph(SphinxDirective):
        option_spec = {"show": lambda arg: directives.choice(arg, ("diagram", "modules", "upward", "sizes"))}

        def run(self):
            show = self.options.get("show", "diagram")
            modules = collect()
            for m in modules.values():
                self.env.note_dependency(str(m.path))
            if show == "sizes":
                self.env.note_dependency(str(ALLOWLIST))
                lines = sizes_rst()
            elif show == "modules":
                lines = modules_rst(modules)
            elif show == "upward":
                lines = upward_rst(modules)
            else:
                for n in unclassified(modules):
                    logger.warning(f"module {n} is in no layer of docs/_ext/import_graph.py:LAYERS; add it there",
                                   location=(self.env.docname, self.lineno))
                lines = diagram_rst(modules, "sphinx.ext.graphviz" in self.env.app.extensions)
            from docutils import nodes

            container = nodes.container()
            nested_parse_with_titles(self.state, StringList(lines, source="import_graph"), container)
            return container.children

    app.add_directive("import-graph", ImportGraph)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "env_version": 1}


if __name__ == "__main__":
    mods = collect()
    print(ascii_diagram(mods))
    for n in unclassified(mods):
        print(f"unclassified: {n}")
    for a, b, d in upward(mods):
        print(f"upward: {a} -> {b}{' (deferred)' if d else ''}")
