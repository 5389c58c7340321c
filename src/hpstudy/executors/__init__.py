"""Where runs execute. A study hands an executor jobs; when `run` returns, each job's run
folder says its outcome (summary.json: finished, diverged, pruned or failed).

Jobs are consumed lazily: `run` takes any iterable and pulls the next job only when
a worker is free to start it, after the run folders of the jobs that ended before
are written. A search stage passes a generator that asks its sampler for the next
trial at that moment and reads the results of the runs that ended.

Executors differ only in where `run_job` (and `call`, for the study's other work on
the data: its summary and the final test evaluation) is called: in this process, in
worker processes on this machine, or as Ray tasks.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from hpstudy.config import RunConfig
from hpstudy.errors import HpstudyError
from hpstudy.progress import log
from hpstudy.run import RunDir, Summary, train

T = TypeVar("T")


@dataclass(frozen=True)
class TrialRef:
    """The Optuna trial a run belongs to: its worker reports `metric` to it after each
    epoch and stops when the pruner says so. The journal is a file every worker reads."""

    journal: Path
    study_name: str
    number: int
    metric: str  # val_acc or val_loss
    pruner: str | None  # median, asha or none


@dataclass(frozen=True)
class Job:
    config: RunConfig
    run_dir: Path
    label: str = ""  # for progress lines: "stage / setting / seed"
    trial: TrialRef | None = None


@dataclass(frozen=True)
class DataOptions:
    root: str | None
    verify: bool


class Executor(Protocol):
    def device_type(self) -> str:
        """cpu or cuda: where runs will execute, so their precision can be resolved."""

    def run(self, jobs: Iterable[Job]) -> None:
        """Run every job, pulling the next one from `jobs` only when it can start."""

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args, device)` where runs run: the driver may have no data and no GPU."""

    def close(self) -> None:
        """Release what the executor started (a local Ray)."""


def run_job(job: Job, options: DataOptions, device: str | None = None) -> Summary:
    """Train one job; a failure is recorded in its run folder, never raised."""
    config = job.config if device is None else job.config.model_copy(update={"device": device})
    try:
        on_epoch = None
        if job.trial is not None:
            # the study's search step, imported only where a run belongs to a trial
            from hpstudy.study.search import trial_reporter

            on_epoch = trial_reporter(job.trial)
        return train(
            config, job.run_dir, root=options.root, verify=options.verify, on_epoch=on_epoch
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
