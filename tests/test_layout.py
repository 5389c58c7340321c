"""The package's shape: each module says its job, no module imports another's private names,
and the benchmarks use only the public API."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted((REPO / "src" / "hpstudy").rglob("*.py"))
BENCHMARKS = sorted((REPO / "benchmarks").glob("*.py"))
# what the benchmarks may import from: packages whose __all__ is their public API, and leaves
PUBLIC_PACKAGES = ("hpstudy.run", "hpstudy.study", "hpstudy.data", "hpstudy.models")
PUBLIC_LEAVES = (
    "hpstudy.config",
    "hpstudy.constants",
    "hpstudy.errors",
    "hpstudy.augment",
    "hpstudy.files",
)


def imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every `from module import name` in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (node.module or "", alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    ]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_module_opens_with_its_job(path: Path) -> None:
    if path.name == "__main__.py":
        return
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    assert docstring and len(docstring.split()) >= 4, f"{path} has no opening docstring"


def test_no_module_imports_a_private_name_of_another() -> None:
    offenders = [
        f"{path.relative_to(REPO)}: from {module} import {name}"
        for path in [*SOURCES, *BENCHMARKS]
        for module, name in imports(path)
        if module.startswith("hpstudy") and name.startswith("_") and not name.endswith("__")
    ]
    assert offenders == []


def test_benchmarks_use_only_the_public_api() -> None:
    offenders = []
    for path in BENCHMARKS:
        for module, name in imports(path):
            if not module.startswith("hpstudy") and module != "hpstudy":
                continue
            if module in PUBLIC_LEAVES:
                continue
            if module == "hpstudy" and f"hpstudy.{name}" in (*PUBLIC_PACKAGES, *PUBLIC_LEAVES):
                continue
            public = getattr(importlib.import_module(module), "__all__", ())
            if module not in PUBLIC_PACKAGES or name not in public:
                offenders.append(f"{path.name}: from {module} import {name}")
    assert offenders == []


def test_the_validation_share_is_written_once() -> None:
    """The 80/20 split lives in hpstudy.constants; nothing else spells the ratio out."""
    offenders = [
        str(path.relative_to(REPO))
        for path in [*SOURCES, *BENCHMARKS]
        if path.name != "constants.py"
        and any(t in path.read_text(encoding="utf-8") for t in ("0.8 *", "* 0.8", "0.2 *"))
    ]
    assert offenders == []


# ---------------------------------------------------------------- the import graph

SRC = REPO / "src"
# what executors may import: the run step, its config, and leaves (an executor runs jobs
# with their hooks and knows nothing of studies or reports)
EXECUTOR_IMPORTS = (
    "hpstudy.executors",
    "hpstudy.run",
    "hpstudy.config",
    "hpstudy.errors",
    "hpstudy.files",
    "hpstudy.constants",
    "hpstudy.defaults",
    "hpstudy.plugins",
    "hpstudy.progress",
)


def module_of(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_of(p): p for p in SOURCES}


def lazy_names(package: str) -> dict[str, str]:
    """A package's PEP 562 table (`_WHERE`: public name -> submodule), so that `from
    hpstudy.run import train` counts as importing hpstudy.run.loop, as it does at run time."""
    path = MODULES.get(package)
    if path is None or path.name != "__init__.py":
        return {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        named = isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_WHERE" for t in node.targets
        )
        if named and isinstance(node.value, ast.Dict):  # type: ignore[union-attr]
            pairs = zip(node.value.keys, node.value.values, strict=True)  # type: ignore[union-attr]
            return {k.value: f"{package}.{v.value}" for k, v in pairs}  # type: ignore[union-attr]
    return {}


def imported_modules(name: str, path: Path) -> set[str]:
    """The hpstudy modules `name` imports, at module level or inside functions (both run
    sooner or later); imports under `if TYPE_CHECKING:` never run and do not count."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for stmt in node.body
        for n in ast.walk(stmt)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in MODULES}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            lazy = lazy_names(base)
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:
                    found.add(f"{base}.{alias.name}")
                elif alias.name in lazy:
                    found.add(lazy[alias.name])
                elif base in MODULES:
                    found.add(base)
    return found - {name}


GRAPH = {name: imported_modules(name, path) for name, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_back_through_others() -> None:
    assert GRAPH["hpstudy.run.loop"] >= {"hpstudy.run.hooks", "hpstudy.run.folder"}
    assert cycles(GRAPH) == []


def test_executors_import_only_the_run_step_and_leaves() -> None:
    offenders = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if name.startswith("hpstudy.executors")
        for target in targets
        if not target.startswith(EXECUTOR_IMPORTS)
        or target.startswith(("hpstudy.study", "hpstudy.report"))
    ]
    assert offenders == []
