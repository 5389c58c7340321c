"""Where runs execute. A study hands an executor jobs; when `run` returns, each job's run
folder says its outcome (summary.json: finished, diverged, pruned or failed).

Jobs are consumed lazily: `run` takes any iterable and pulls the next job only when
a worker is free to start it, after the run folders of the jobs that ended before
are written. A search stage passes a generator that asks its sampler for the next
trial at that moment and reads the results of the runs that ended.

Executors differ only in where `run_job` (and `call`, for the study's other work on
the data: its summary and the final test evaluation) is called: in this process, in
worker processes on this machine, as Ray tasks, or as SLURM jobs (submitit).

`run` takes any iterable of jobs and pulls the next one only when a slot frees, so
whoever makes the jobs can decide the next one from the results so far.
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
    label: str = ""  # names the run in progress lines: "stage 2 schedule=cosine seed 0"
    trial: TrialRef | None = None


@dataclass(frozen=True)
class SlurmOptions:
    """How `--executor slurm` submits: submitit's cluster (slurm, or local/debug on this
    machine), the partition, GPUs and CPUs per job, the time limit, jobs in flight."""

    cluster: str = "slurm"
    partition: str | None = None
    gpus_per_job: int | None = None  # None: 1 on slurm; local/debug: 1 if a GPU is visible
    cpus_per_job: int | None = None  # None: slurm's default; threads follow what the job got
    time_minutes: int = 24 * 60
    max_parallel: int = 32
    folder: Path | None = None  # submitit's logs; None: STUDY/slurm


@dataclass(frozen=True)
class DataOptions:
    root: str | None
    verify: bool


class Executor(Protocol):
    # True where jobs train in this process (their progress can be drawn live here)
    in_process: bool

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
            config,
            job.run_dir,
            root=options.root,
            verify=options.verify,
            on_epoch=on_epoch,
            label=job.label or None,
        )
    except KeyboardInterrupt:
        raise
    except Exception as err:  # any failure of one run must not stop the others
        message = str(err) if isinstance(err, HpstudyError) else f"{type(err).__name__}: {err}"
        return record_failure(job, message, traceback.format_exc())


def describe(summary: Summary) -> str:
    """A finished job's outcome in a few words, for the executors' progress lines."""
    if summary.final is not None:
        return f"{summary.status}, val_acc {summary.final['val_acc']:.4f}"
    if summary.error:
        return f"{summary.status} ({summary.error})"
    return str(summary.status)


def first_line(err: BaseException) -> str:
    """An exception's type and first line: a remote failure's traceback in one line."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def record_failure(job: Job, message: str, details: str = "") -> Summary:
    summary = RunDir(job.run_dir).record_failure(job.config.run_hash(), message, details)
    log(f"[red]{job.label or job.run_dir.name}: failed: {message}[/red]")
    return summary


MAX_WORKERS = 256  # worker processes on one machine; more is a typo, not a plan


def make_executor(
    name: str,
    options: DataOptions,
    *,
    devices: list[int] | None = None,
    runs_per_device: int | None = None,
    address: str | None = None,
    device: str | None = None,
    slurm: SlurmOptions | None = None,
) -> Executor:
    if name == "ray":
        from hpstudy.executors.ray import RayExecutor

        return RayExecutor(options, address=address, device=device)
    if name == "slurm":
        from hpstudy.executors.slurm import SlurmExecutor

        return SlurmExecutor(options, slurm or SlurmOptions(), device=device)
    if name != "local":
        raise HpstudyError(f"executor: must be local, ray or slurm (got {name!r})")
    from hpstudy.executors.local import LocalExecutor

    workers = local_workers(devices, runs_per_device, device)
    if workers is None:
        return LocalExecutor(options, device=device)
    return LocalExecutor(options, workers=workers)


def local_workers(
    devices: list[int] | None, runs_per_device: int | None, device: str | None
) -> list[str] | None:
    """One device name per worker process (`None`: no workers, run in this process).

    `--devices 0,0` or `--runs-per-device 2` put two workers on one GPU; without a GPU
    (or with `--device cpu`) the same options start CPU workers that share the cores.
    Without either, the `auto` table's runs per device for the device type decides.
    """
    import torch

    from hpstudy.defaults import auto_row
    from hpstudy.run import resolve_device

    if runs_per_device is not None and not 1 <= runs_per_device <= MAX_WORKERS:
        raise HpstudyError(f"--runs-per-device: must be 1..{MAX_WORKERS} (got {runs_per_device})")
    if devices is not None:
        if not devices:
            raise HpstudyError("--devices: give at least one GPU index, like 0 or 0,1")
        if bad := [i for i in devices if i < 0]:
            raise HpstudyError(f"--devices: GPU indices are >= 0 (got {bad[0]})")
        count = len(devices) * (runs_per_device or 1)
        if count > MAX_WORKERS:
            raise HpstudyError(f"--devices: {count} workers asked for, at most {MAX_WORKERS}")
        on_cpu = device == "cpu" or (device in (None, "auto") and not torch.cuda.is_available())
        if on_cpu:
            log(f"no CUDA GPU in use: --devices starts {count} CPU worker processes")
            return ["cpu"] * count
        if device not in (None, "auto") and not device.startswith("cuda"):
            raise HpstudyError(f"--devices with --device {device}: use cuda, cpu or auto")
        names = [str(resolve_device(f"cuda:{i}")) for i in devices]
        # round-robin: the first runs spread over the GPUs before any GPU gets a second
        return names * (runs_per_device or 1)
    where = resolve_device(device or "auto")
    per_device = runs_per_device or auto_row(where.type).runs_per_device
    return None if per_device == 1 else [str(where)] * per_device
