"""A run hook for the worker tests (test_study_rules): it writes, into each run's folder, the
pid of the process that trains the run and how many models that process has compiled so
far, through a counting stand-in for torch.compile that it puts in place where it is built
(in the worker, never in the test's own process); `fail=True` fails the run at its start."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from hpstudy.run import RunHook

compiled: list[int] = []  # one entry per torch.compile in this process


class CountedCompile(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, **options: Any) -> None:
        super().__init__()
        self.inner = model
        compiled.append(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class WhoTrains(RunHook):
    def __init__(self, fail: bool = False) -> None:
        torch.compile = CountedCompile  # type: ignore[assignment]
        self.fail = fail

    def on_start(self, config: Any, run_dir: Path, start_epoch: int) -> None:
        # the run's model is built (and compiled) before its hooks start
        record = {"pid": os.getpid(), "compiled": len(compiled)}
        (Path(run_dir) / "worker.json").write_text(json.dumps(record))
        if self.fail:
            raise RuntimeError("this run fails on purpose")


def who_trained(run_dir: Path) -> dict[str, int]:
    return json.loads((run_dir / "worker.json").read_text())  # type: ignore[no-any-return]
