"""Helpers shared by the study tests: the CLI in this process, and studies that skip the
two slow steps no study test here checks (rasterising report figures, exporting the model).

Each `python -m hpstudy` pays a torch import (seconds) before it does anything, so a test
runs the CLI in this process unless another process is what it checks: a kill, a lock
held by another process, what a real pipe receives, or the README's command end to end.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpstudy.cli import main

UNREACHABLE_URL = "http://127.0.0.1:9/cifar-100-python.tar.gz"  # as conftest's
# a valid 1x1 PNG: what a report holds in place of each rendered figure
BLANK_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154"
    "789c63f8ffff3f030008fc02fea79aa0a00000000049454e44ae426082"
)

# scripts for `python -c`: `hpstudy ARGV` in a process of its own that leaves out the steps
# conftest leaves out in-process (the final model's export; with NO_FIGURES, rendering the
# report's figures: they become blank PNGs) and reads the load as conftest does (a speed read
# while the suite keeps the machine busy is kept in the tests' cache, not measured again by
# every study); the rest, from the command line to the last line on stderr, is the real
# command
NO_EXPORT = """
import sys
import hpstudy.study.runner
hpstudy.study.remote.export_final = lambda *args: None
hpstudy.study.cost.load_average = lambda: 0.0
"""
NO_FIGURES = f"""
from pathlib import Path
import hpstudy.report
from hpstudy.files import write_atomic
def blank(fig, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, bytes.fromhex("{BLANK_PNG.hex()}"))
    fig.clear()
    return path
hpstudy.report.save = blank
"""
MAIN = """
from hpstudy.cli import main
sys.exit(main(sys.argv[1:]))
"""


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """`hpstudy ARGS` in this process (no interpreter to start): its exit code and output,
    shaped as a subprocess's so that `assert_one_line_error` reads it."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["hpstudy", *args], code, out, err)


@contextlib.contextmanager
def as_in_a_test(speed_cache: Path) -> Iterator[None]:
    """What conftest's autouse fixtures give each test, for a module- or session-scoped
    fixture (those run before them): the tests' speed cache, no download, blank report
    figures, no model export."""
    from hpstudy.files import write_atomic

    def blank(fig: object, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, BLANK_PNG)
        fig.clear()  # type: ignore[attr-defined]
        return path

    with pytest.MonkeyPatch.context() as patch:
        for key, value in isolated_env(speed_cache).items():
            patch.setenv(key, value)
        patch.setattr("hpstudy.report.save", blank)
        patch.setattr("hpstudy.study.remote.export_final", lambda *args: None)
        yield


def lean_command(*args: str, figures: bool = False, prelude: str = "") -> list[str]:
    """The argv of `hpstudy ARGS` in a process of its own, without the export, without
    rendering figures unless `figures`, after the Python lines `prelude`."""
    script = NO_EXPORT + ("" if figures else NO_FIGURES) + prelude + MAIN
    return [sys.executable, "-c", script, *args]


def run_lean(
    *args: str,
    figures: bool = False,
    prelude: str = "",
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        lean_command(*args, figures=figures, prelude=prelude),
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def isolated_env(speed_cache: Path) -> dict[str, str]:
    """The environment conftest's autouse `_offline` gives a test (the tests' own speed
    cache, no download), for a fixture that runs or starts a study before it applies."""
    return {"HPSTUDY_CIFAR100_URL": UNREACHABLE_URL, "HPSTUDY_CACHE": str(speed_cache)}


def stage_finals(out: Path) -> list[tuple[str, list[object]]]:
    state = json.loads((out / "state.json").read_text())
    return [
        (s["settings"][s["winner"]]["label"], [(x["label"], x["final"]) for x in s["settings"]])
        for s in state["stages"]
    ]
