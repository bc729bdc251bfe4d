"""The package's shape, read from the source with :mod:`ast` (nothing is imported).

The house rules: imports point down the stages, with no circles; no module reaches into
another's private names (if you need ``_forward``, the other module owes you a public call).
So, over every ``lipsync/**/*.py``:

* no ``from lipsync.x import _name`` from another module, and no ``x._name`` where ``x``
  names another lipsync module (through an import, or ``f = x``);
* no import circle among lipsync modules: none at import time (module-level imports, with the
  packages a dotted import runs first), and none hidden in a function (an import moved into
  a function to dodge a circle still points up a stage).

A private name used inside its own module (``self._ref``, ``gen._prepare`` on a class of the
same file) is that module's business and is not looked at.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lipsync"


@dataclass
class Module:
    name: str  #: dotted, e.g. lipsync.speech.tts (a package is named by its folder)
    path: Path
    is_package: bool
    tree: ast.Module = field(repr=False)


def _modules() -> dict[str, Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        name = ".".join(parts)
        out[name] = Module(name, path, is_package, ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return out


MODULES = _modules()


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _base(mod: Module, node: ast.ImportFrom) -> str:
    """The module a ``from ... import`` reads from, absolute."""
    if not node.level:
        return node.module or ""
    parts = mod.name.split(".") if mod.is_package else mod.name.split(".")[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def _nodes(tree: ast.AST, in_function: bool = False):
    """Every node with whether it runs inside a function (later) rather than at import time."""
    for child in ast.iter_child_nodes(tree):
        yield child, in_function
        yield from _nodes(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))


class Import(NamedTuple):
    line: int
    target: str  #: the module read from (``import lipsync.x``: lipsync.x; ``from lipsync.x import y``: lipsync.x)
    name: str | None  #: the name taken from it (None for ``import``)
    local: str  #: the name bound here
    bound: str | None  #: the lipsync module ``local`` names, if it names one
    now: bool  #: runs at import time (not inside a function)


def _imports(mod: Module):
    """Each import of a lipsync module, as an :class:`Import`."""
    for node, in_function in _nodes(mod.tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "lipsync" or a.name.startswith("lipsync."):
                    # ``import lipsync.x`` binds ``lipsync``; ``import lipsync.x as z`` binds z to lipsync.x
                    local, bound = (a.asname, a.name) if a.asname else ("lipsync", "lipsync")
                    yield Import(node.lineno, a.name, None, local, bound, not in_function)
        elif isinstance(node, ast.ImportFrom):
            base = _base(mod, node)
            if base != "lipsync" and not base.startswith("lipsync."):
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                yield Import(node.lineno, base, a.name, a.asname or a.name, sub if sub in MODULES else None,
                             not in_function)


def _aliases(mod: Module) -> dict[str, str]:
    """Local names bound to a lipsync module: by an import, or by ``f = features`` of such a name."""
    out = {i.local: i.bound for i in _imports(mod) if i.bound is not None}
    for _ in range(3):  # a = features; b = a
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                m = _module_of(node.value, out)
                if m is not None:
                    out[node.targets[0].id] = m
    return out


def _module_of(expr: ast.expr, aliases: dict[str, str]) -> str | None:
    """The lipsync module ``expr`` names (``features``, ``lipsync.speech.catalogue``), else None."""
    if isinstance(expr, ast.Name):
        return aliases.get(expr.id)
    if isinstance(expr, ast.Attribute):
        parent = _module_of(expr.value, aliases)
        if parent is not None and f"{parent}.{expr.attr}" in MODULES:
            return f"{parent}.{expr.attr}"
    return None


def private_uses() -> list[str]:
    """``path:line: what`` for each use of another lipsync module's private name."""
    found = []
    for mod in MODULES.values():
        rel = mod.path.relative_to(ROOT)
        for i in _imports(mod):
            if i.name is not None and _private(i.name) and i.target != mod.name:
                found.append(f"{rel}:{i.line}: from {i.target} import {i.name}")
        aliases = _aliases(mod)
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                owner = _module_of(node.value, aliases)
                if owner is not None and owner != mod.name:
                    found.append(f"{rel}:{node.lineno}: {ast.unparse(node)} ({owner}.{node.attr})")
    return sorted(set(found), key=lambda s: (s.split(":")[0], int(s.split(":")[1]), s))


def import_graph(at_import: bool = True) -> dict[str, set[str]]:
    """Module -> the lipsync modules it imports: at import time only (module level), or
    with ``at_import=False`` also those its functions import when called.

    ``from a.b import c`` runs ``a.b`` (or the module ``a.b.c``), and before it the
    packages above (``a``), except the importer's own packages, which are already running.
    """
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for mod in MODULES.values():
        own = {".".join(mod.name.split(".")[:i]) for i in range(1, mod.name.count(".") + 1)}
        for i in _imports(mod):
            if at_import and not i.now:
                continue
            runs = i.bound if i.name is not None and i.bound is not None else i.target
            parts = runs.split(".")
            for n in range(1, len(parts) + 1):
                m = ".".join(parts[:n])
                if m in MODULES and m != mod.name and (m == runs or m not in own):
                    graph[mod.name].add(m)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle (``[a, b, ..., a]``) through each strongly connected group of ``graph`` (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph[v]:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    out = []
    for group in groups:
        start = min(group)
        # breadth first, inside the group, back to start: the shortest circle through it
        paths = {start: [start]}
        queue = [start]
        circle = None
        while queue and circle is None:
            v = queue.pop(0)
            for w in sorted(graph[v] & group):
                if w == start:
                    circle = paths[v] + [start]
                    break
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    queue.append(w)
        out.append(circle)
    return out


def test_the_scan_sees_the_package():
    assert "lipsync.speech.tts" in MODULES and "lipsync" in MODULES
    g = import_graph()
    assert "lipsync.speech.catalogue" in g["lipsync.speech.tts"]
    assert "lipsync.media" in g["lipsync.speech.narration"]  # from ..media.audio runs media/__init__ first
    assert "lipsync.speech" not in g["lipsync.speech.tts"]  # its own package is already running
    assert "lipsync.speech.tts" not in g["lipsync.options"]  # Request imports it in __post_init__ ...
    assert "lipsync.speech.tts" in import_graph(at_import=False)["lipsync.options"]  # ... seen here


def test_the_checks_catch_what_they_are_for():
    tree = ast.parse(
        "from lipsync.speech import catalogue as c\n"
        "from lipsync.features import _window\n"
        "import lipsync.speech.catalogue\n"
        "f = c\n"
        "def g():\n"
        "    return c._failures, f._SPECS, lipsync.speech.catalogue._SPECS, c.list_voices, c.__name__\n"
    )
    probe = Module("lipsync.probe", PACKAGE / "probe.py", False, tree)
    MODULES[probe.name] = probe
    try:
        found = [u.split(": ", 1)[1] for u in private_uses() if u.startswith(str(Path("lipsync", "probe.py")))]
    finally:
        del MODULES[probe.name]
    assert found == [
        "from lipsync.features import _window",
        "c._failures (lipsync.speech.catalogue._failures)",
        "f._SPECS (lipsync.speech.catalogue._SPECS)",
        "lipsync.speech.catalogue._SPECS (lipsync.speech.catalogue._SPECS)",
    ]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_uses_another_modules_private_names():
    found = private_uses()
    assert not found, "private names used across lipsync modules (the owner owes a public name):\n" + "\n".join(found)


def test_module_level_imports_have_no_circle():
    found = cycles(import_graph())
    assert not found, "import circles among lipsync modules (module-level imports):\n" + "\n".join(
        " -> ".join(c) for c in found
    )


def test_no_circle_hides_in_a_function():
    """An import moved into a function to dodge a circle still points up a stage: no circle at all."""
    found = cycles(import_graph(at_import=False))
    assert not found, "import circles among lipsync modules (imports inside functions included):\n" + "\n".join(
        " -> ".join(c) for c in found
    )
