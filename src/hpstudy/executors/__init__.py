"""Where runs execute. A study hands an executor a list of jobs; when `run` returns,
each job's run directory says its outcome (summary.json: finished, diverged or failed).

Executors differ only in where `run_job` is called: in this process, in one
worker process per GPU, or as Ray tasks.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hpstudy.config import RunConfig
from hpstudy.errors import HpstudyError
from hpstudy.progress import log
from hpstudy.train import train, write_json


@dataclass(frozen=True)
class Job:
    config: RunConfig
    run_dir: Path
    label: str = ""  # for progress lines: "stage / setting / seed"


@dataclass(frozen=True)
class DataOptions:
    root: str | None
    verify: bool


class Executor(Protocol):
    def run(self, jobs: list[Job]) -> None: ...

    def close(self) -> None:
        """Release what the executor started (a local Ray, worker processes)."""


def run_job(job: Job, options: DataOptions, device: str | None = None) -> dict[str, Any]:
    """Train one job; a failure is recorded in its run directory, never raised."""
    config = job.config if device is None else job.config.model_copy(update={"device": device})
    try:
        return train(config, job.run_dir, root=options.root, verify=options.verify)
    except KeyboardInterrupt:
        raise
    except Exception as err:  # any failure of one run must not stop the others
        message = str(err) if isinstance(err, HpstudyError) else f"{type(err).__name__}: {err}"
        return record_failure(job, message, traceback.format_exc())


def record_failure(job: Job, message: str, details: str = "") -> dict[str, Any]:
    job.run_dir.mkdir(parents=True, exist_ok=True)
    summary = {"status": "failed", "error": message, "run_hash": job.config.run_hash()}
    write_json(job.run_dir / "summary.json", summary)
    if details:
        (job.run_dir / "error.log").write_text(details)
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
    from hpstudy.executors.local import LocalExecutor

    if devices:
        return LocalExecutor(options, workers=[f"cuda:{i}" for i in devices])
    return LocalExecutor(options, device=device)
