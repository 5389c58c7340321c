"""Where runs execute. A study hands an executor jobs; when `run` returns, each job's run
folder says its outcome (summary.json: finished, diverged or failed).

Executors differ only in where `run_job` (and `call`, for the study's other work on
the data: its summary and the final test evaluation) is called: in this process, in
worker processes on this machine, or as Ray tasks.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from hpstudy.config import RunConfig
from hpstudy.errors import HpstudyError
from hpstudy.progress import log
from hpstudy.run import RunDir, Summary, train

T = TypeVar("T")


@dataclass(frozen=True)
class Job:
    config: RunConfig
    run_dir: Path
    label: str = ""  # names the run in progress lines: "stage 2 schedule=cosine seed 0"


@dataclass(frozen=True)
class DataOptions:
    root: str | None
    verify: bool


class Executor(Protocol):
    # True where jobs train in this process (their progress can be drawn live here)
    in_process: bool

    def device_type(self) -> str:
        """cpu or cuda: where runs will execute, so their precision can be resolved."""

    def run(self, jobs: list[Job]) -> None: ...

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args, device)` where runs run: the driver may have no data and no GPU."""

    def close(self) -> None:
        """Release what the executor started (a local Ray)."""


def run_job(job: Job, options: DataOptions, device: str | None = None) -> Summary:
    """Train one job; a failure is recorded in its run folder, never raised."""
    config = job.config if device is None else job.config.model_copy(update={"device": device})
    try:
        return train(
            config, job.run_dir, root=options.root, verify=options.verify, label=job.label or None
        )
    except KeyboardInterrupt:
        raise
    except Exception as err:  # any failure of one run must not stop the others
        message = str(err) if isinstance(err, HpstudyError) else f"{type(err).__name__}: {err}"
        return record_failure(job, message, traceback.format_exc())


def record_failure(job: Job, message: str, details: str = "") -> Summary:
    summary = RunDir(job.run_dir).record_failure(job.config.run_hash(), message, details)
    log(f"[red]{job.label or job.run_dir.name}: failed: {message}[/red]")
    return summary


def make_executor(
    name: str,
    options: DataOptions,
    *,
    devices: list[int] | None = None,
    address: str | None = None,
    device: str | None = None,
) -> Executor:
    if name == "ray":
        from hpstudy.executors.ray import RayExecutor

        return RayExecutor(options, address=address, device=device)
    if name != "local":
        raise HpstudyError(f"executor: must be local or ray (got {name!r})")
    from hpstudy.executors.local import LocalExecutor

    if devices:
        return LocalExecutor(options, workers=[f"cuda:{i}" for i in devices])
    return LocalExecutor(options, device=device)
