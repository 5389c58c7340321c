"""Plugins: objects named by entry points or by "module:attr", loaded on first use.

Every registry that other packages may extend (executors, run hooks; models, datasets and
stage kinds next) finds its plugins here, in the entry-point group named after it:
`hpstudy.executors`, `hpstudy.hooks`, `hpstudy.models`, `hpstudy.datasets`,
`hpstudy.stage_kinds`. A package declares one in its pyproject.toml:

    [project.entry-points."hpstudy.executors"]
    mycluster = "mypackage.executor:MyClusterExecutor"

A leaf module (the standard library only): the command line's parser asks it which
executors exist without importing torch. A plugin that fails to import is one line naming
its distribution and entry point, never a traceback.
"""

from __future__ import annotations

import importlib
from typing import Any

from hpstudy.errors import HpstudyError

GROUPS = (
    "hpstudy.executors",
    "hpstudy.hooks",
    "hpstudy.models",
    "hpstudy.datasets",
    "hpstudy.stage_kinds",
)


def first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def entry_point_names(group: str) -> list[str]:
    """The names declared in `group` by installed distributions, none of them imported."""
    from importlib.metadata import entry_points

    return sorted({ep.name for ep in entry_points(group=group)})


def load_entry_point(group: str, name: str) -> Any | None:
    """The object entry point `name` of `group` names (None: no distribution declares it)."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=group, name=name):
        try:
            return ep.load()
        except Exception as err:  # a plugin's own bug or missing dependency: one line
            dist = ep.dist.name if ep.dist is not None else "an unknown distribution"
            raise HpstudyError(
                f"plugin {name!r} (entry point {ep.value!r} in group {group} of {dist}): "
                f"cannot be loaded ({first_line(err)})"
            ) from None
    return None


def load_entry_points(group: str) -> dict[str, Any]:
    """Every entry point of `group`, loaded: name -> object."""
    return {name: load_entry_point(group, name) for name in entry_point_names(group)}


def load_object(reference: str, what: str) -> Any:
    """The object a "module:attr" reference names (attr may be dotted), imported now."""
    module_name, sep, attr = reference.partition(":")
    if not sep or not module_name or not attr:
        raise HpstudyError(f"{what}: {reference!r} is not a 'module:attr' reference")
    try:
        found: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            found = getattr(found, part)
    except Exception as err:
        raise HpstudyError(f"{what}: cannot load {reference!r} ({first_line(err)})") from None
    return found


def is_reference(name: str) -> bool:
    """A "module:attr" reference rather than a registered name."""
    return ":" in name


__all__ = [
    "GROUPS",
    "entry_point_names",
    "is_reference",
    "load_entry_point",
    "load_entry_points",
    "load_object",
]
