"""No import cycles among the project's modules (issue 20).

The graph is read from the source with :mod:`ast`, without importing anything:

- A node is one file: ``pkg/mod.py`` is ``pkg.mod``; ``pkg/__init__.py`` is ``pkg``.
- Every ``import`` / ``from ... import`` anywhere in a file is an edge: at module level, inside
  functions and methods, under ``try`` and under ``if TYPE_CHECKING:``. An import moved into a
  function still runs (the first time the function does) and still ties the two modules
  together, so it is no way out of a cycle. Imports only for type checkers count too: they say
  the two modules know about each other, which is the layering this test guards, and a cycle
  kept alive by annotations alone is fixed the same way (move the shared name down).
- ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``
  (its ``__init__``). ``import a.b.c`` is an edge to ``a.b.c``, and to the packages ``a`` and
  ``a.b`` too, since Python runs their ``__init__`` first, except where the importing module is
  itself inside them (they are already running then). So ``pkg/__init__.py`` re-exporting its
  submodules while they import each other with ``from . import x`` is no cycle, but a submodule
  doing ``from pkg import name`` (a name of the ``__init__``) is an edge to ``pkg``.
- Modules named in plain strings and loaded with :mod:`importlib` are real runtime dependencies
  too, so a string constant that reads ``"package.module:attribute"`` or is exactly the dotted
  name of a project module (``"metaadv.commands.train"``) is an edge as well. Names built at
  run time (f-strings such as ``tune/__init__``'s lazy ``f"{__name__}.{_LAZY[name]}"`` or
  ``tune_experiments.registry``'s ``f"tune_experiments.{name}"``) are not resolvable from the
  source and are left out. Both point into their own package, and ``metaadv.tune``'s runs only
  on attribute access, after the package's ``__init__`` has finished. (Counted by hand, the registry's adds no
  cycle; ``metaadv.tune``'s lazy ``runner`` would close ``metaadv.tune -> tune.runner ->
  distributed.tune_trial -> metaadv.tune``, the last edge being Python running
  ``tune/__init__`` before ``tune.trainable``: a package-level knot, never an import-time one.)

Imports of anything outside the project (``torch``, ``ray``, the standard library) are ignored.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("metaadv", "analysis", "tune_experiments")

_MODULE_ATTR = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):[A-Za-z_]\w*$")


def module_files(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under each package in ``packages``."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _resolve_from(module: str, path: Path, level: int, target: str | None) -> str:
    """The absolute name ``from <level dots><target> import ...`` refers to inside ``module``."""
    if level == 0:
        return target or ""
    package = module.split(".") if _is_package(path) else module.split(".")[:-1]
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that ``module`` (the file ``path``) imports, as dotted names."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    ours = _top_levels(modules)

    def add(name: str) -> None:
        # ``import a.b.c`` where only ``a.b`` is ours still depends on ``a.b``.
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name:
            found.add(name)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ours:
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(module, path, node.level, node.module)
            if base.split(".")[0] not in ours:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if sub in modules else base)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            match = _MODULE_ATTR.match(text)
            if match and match.group(1) in modules:
                found.add(match.group(1))
            elif "." in text and text in modules:
                found.add(text)
    # Importing ``a.b.c`` first runs ``a/__init__`` and ``a/b/__init__``, except those already
    # running when ``module`` does: its own ancestors.
    running = _ancestors(module) | ({module} if _is_package(path) else set())
    for name in list(found):
        found |= {p for p in _ancestors(name) if p in modules and p not in running}
    found.discard(module)
    return found


def _ancestors(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _top_levels(modules: dict[str, Path]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def import_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    modules = module_files(root, packages)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative), each
    sorted, largest first. A module importing itself is not reported (``imports_of`` drops it)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components, key=lambda c: (-len(c), c))


def _describe(graph: dict[str, set[str]], component: list[str]) -> str:
    members = set(component)
    edges = [f"    {a} -> {b}" for a in component for b in sorted(graph[a] & members)]
    return f"  {{{', '.join(component)}}}\n" + "\n".join(edges)


# -- the tests ---------------------------------------------------------------------------------


def test_no_import_cycles_among_project_modules():
    graph = import_graph()
    assert len(graph) > 100, "the walk found too few modules; did the layout change?"
    found = cycles(graph)
    assert not found, "import cycles among the project's modules:\n" + "\n".join(
        _describe(graph, c) for c in found)


def test_graph_sees_imports_inside_functions_and_in_strings():
    graph = import_graph()
    assert "metaadv.distributed.ray_session" in graph["metaadv.distributed.train"]
    # distributed.train loads its run classes by "module:attribute" strings ...
    assert {"metaadv.training.run", "metaadv.meta.run"} <= graph["metaadv.distributed.train"]
    # ... the CLI its sub-commands by module name ...
    assert "metaadv.commands.train" in graph["metaadv.cli"]
    # ... and the commands import distributed.train inside a function.
    assert "metaadv.distributed.train" in graph["metaadv.commands.train"]


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_finder_reports_a_cycle_through_a_function_level_import(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from .b import f\n",
        "pkg/b.py": "def f():\n    from pkg import c\n    return c\n",
        "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n",
        "pkg/d.py": "import pkg.a\n",  # imports into the cycle, is not part of it
    })
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_finder_sees_module_attribute_strings_and_package_reexports(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "from .x import X\n",
        "pkg/x.py": "LOADERS = {'y': 'pkg.sub.y:make'}\nX = 1\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/y.py": "from pkg import X\n",  # a name of pkg/__init__, so an edge to ``pkg``
    })
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.sub.y"] == {"pkg"}
    assert cycles(graph) == [["pkg", "pkg.sub.y", "pkg.x"]]


def test_finder_counts_the_packages_an_import_runs_first(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.sub.b import f\ng = 1\n",  # runs pkg/sub/__init__.py first
        "pkg/sub/__init__.py": "from ..a import g\n",
        "pkg/sub/b.py": "from . import c\ndef f():\n    pass\n",  # pkg.sub is running already: no edge
        "pkg/sub/c.py": "",
    })
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.a"] == {"pkg.sub", "pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.sub.c"}
    assert cycles(graph) == [["pkg.a", "pkg.sub"]]


def test_finder_is_quiet_on_a_tree(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "from . import a, b\n",
        "pkg/a.py": "import os\nfrom . import b\nfrom .b import g\n",
        "pkg/b.py": "import json\ndef g():\n    import pkg.c\n",
        "pkg/c.py": "",
    })
    graph = import_graph(tmp_path, ("pkg",))
    assert graph == {"pkg": {"pkg.a", "pkg.b"}, "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.c"}, "pkg.c": set()}
    assert cycles(graph) == []
