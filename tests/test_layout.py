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
