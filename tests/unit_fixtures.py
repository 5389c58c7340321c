"""Helpers for module-scoped fixtures and for real processes started together.

conftest's autouse fixtures leave the final export out of in-process studies and write a
blank PNG in place of each report figure, but they are function-scoped: a module-scoped
fixture is built before them and would pay for both (about 3 s of export and half a
second per figure). `quick_studies` does the same for the fixture's own block.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

# a valid 1x1 PNG, as conftest writes for an unmarked test's figures
BLANK_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154"
    "789c63f8ffff3f030008fc02fea79aa0a00000000049454e44ae426082"
)


def _blank(fig: object, path: Path) -> Path:
    from hpstudy.files import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, BLANK_PNG)
    fig.clear()  # type: ignore[attr-defined]
    return path


@contextlib.contextmanager
def quick_studies() -> Iterator[None]:
    """Inside: studies skip the final export; reports build every figure but write a blank
    PNG for each (what conftest does for each unmarked test)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("hpstudy.study.remote.export_final", lambda *args: None)
        patch.setattr("hpstudy.report.save", _blank)
        yield


def run_here(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """`hpstudy ARGS` through hpstudy.cli.main in this process, reported as a finished process
    is (exit status, stdout, stderr): the command's own error handling, without a new
    interpreter and torch import per case."""
    from hpstudy.cli import main

    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exit_:  # argparse's usage errors end the parse with an exit
        code = exit_.code
    return subprocess.CompletedProcess(list(args), code, *capsys.readouterr())


def run_together(
    commands: Mapping[str, Sequence[str]],
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> dict[str, subprocess.CompletedProcess[str]]:
    """`python -m hpstudy ARGS` for every named ARGS, all started at once, all waited for:
    each process pays the interpreter and torch start-up (about 4 s), but side by side.
    `env` is added to every process's environment."""
    started = {
        name: subprocess.Popen(
            [sys.executable, "-m", "hpstudy", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        for name, argv in commands.items()
    }
    results = {}
    for name, proc in started.items():
        out, err = proc.communicate(timeout=timeout)
        results[name] = subprocess.CompletedProcess(list(commands[name]), proc.returncode, out, err)
    return results
