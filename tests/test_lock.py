"""constraints.txt is the lock of the test install: it agrees with pyproject.toml's lists.

The lock is compiled by the command written at its top (uv pip compile over pyproject.toml
with every extra, for Python 3.11 on Linux x86-64). A requirement added to pyproject.toml,
or a range that its pin no longer satisfies, fails here until the lock is compiled again
(README: "Refreshing the lock").
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s#;]+)\s*(?:#\s*via\s+(.*))?$")


def requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    found = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        found += [Requirement(r) for r in extra]
    return found


def pins() -> tuple[dict[str, Version], set[str]]:
    """Every `name==version` line, and the names the lock says pyproject.toml asked for."""
    versions: dict[str, Version] = {}
    direct: set[str] = set()
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = PIN.match(line.strip())
        assert match, f"constraints.txt: {line!r} is not an exact pin"
        name = canonicalize_name(match.group(1))
        assert name not in versions, f"constraints.txt pins {name} twice"
        versions[name] = Version(match.group(2))
        if "hpstudy (pyproject.toml)" in (match.group(3) or ""):
            direct.add(name)
    return versions, direct


def test_the_lock_names_the_command_that_made_it() -> None:
    head = (REPO / "constraints.txt").read_text().splitlines()[:3]
    command = next(line for line in head if "uv pip compile" in line)
    for part in ("pyproject.toml", "--all-extras", "--python-version 3.11", "x86_64"):
        assert part in command


def test_every_requirement_of_pyproject_is_pinned_inside_its_range() -> None:
    versions, _ = pins()
    for req in requirements():
        name = canonicalize_name(req.name)
        assert name in versions, f"{name} is in pyproject.toml but not in constraints.txt"
        assert req.specifier.contains(versions[name], prereleases=True), (
            f"constraints.txt pins {name}=={versions[name]}, outside pyproject's {req}"
        )


def test_the_lock_asks_for_nothing_pyproject_does_not() -> None:
    """The direct requirements the lock was compiled from are pyproject.toml's, no more."""
    _, direct = pins()
    assert direct == {canonicalize_name(r.name) for r in requirements()}


def test_torch_is_the_dev_build_and_the_package_keeps_a_range() -> None:
    versions, _ = pins()
    assert versions["torch"] == Version("2.13.0")
    torch = next(r for r in requirements() if r.name == "torch")
    assert str(torch.specifier).startswith(">="), "the package itself asks for a range"
