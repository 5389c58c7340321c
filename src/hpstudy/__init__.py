"""hpstudy: rerun, trust and extend hyperparameter studies.

As a library it prints nothing of its own: its records go to `logging.getLogger("hpstudy")`
(a NullHandler only), for the program that uses it to show or silence. `__version__` is
read from the installed package's metadata on first use (from the checkout's
pyproject.toml for a source tree that was never installed), so pyproject.toml is the one
place the version is written (and `import hpstudy` stays cheap for the command line).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

logging.getLogger("hpstudy").addHandler(logging.NullHandler())


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hpstudy")
    except PackageNotFoundError:  # a source tree on sys.path, never installed
        return source_tree_version() or "0+unknown"


def source_tree_version() -> str | None:
    """The version the checkout's pyproject.toml writes (src/hpstudy -> the repository),
    for a tree run from source (PYTHONPATH=src) without being installed."""
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError):
        return None
    if not isinstance(project, dict) or project.get("name") != "hpstudy":
        return None
    return str(project["version"]) if isinstance(project.get("version"), str) else None


def __getattr__(name: str) -> Any:
    # PEP 562: names that would cost an import for every `import hpstudy`
    if name == "__version__":
        found = globals()["__version__"] = package_version()
        return found
    if name == "load_model":  # without importing torch for every `import hpstudy`
        return importlib.import_module("hpstudy.export").load_model
    if name == "run_study":  # a study (config, dict, file or name) in, a StudyResult out
        return importlib.import_module("hpstudy.study.runner").run
    if name == "register_dataset":  # your own data by name: a loader of numpy arrays
        return importlib.import_module("hpstudy.sources").register_dataset
    if name == "register_model":  # your own model by name: build(num_classes, width, **args)
        return importlib.import_module("hpstudy.models.registry").register_model
    if name in ("StudyConfig", "StudyResult"):
        return getattr(importlib.import_module("hpstudy.study"), name)
    raise AttributeError(f"module 'hpstudy' has no attribute {name!r}")


def __dir__() -> list[str]:
    # the lazy names too, so dir(hpstudy) and tab completion show load_model and run_study
    return sorted({*globals(), *__all__})


__all__ = [
    "StudyConfig",
    "StudyResult",
    "__version__",
    "load_model",
    "package_version",
    "register_dataset",
    "register_model",
    "run_study",
]
