"""Runs jobs as SLURM jobs through submitit: one job per run, on a study folder every node sees.

Only where runs execute changes: each job calls `run_job`, which trains in the
job's run folder and records failures there. A job that SLURM preempts or stops
at its time limit is checkpointed by submitit (`SlurmRun.checkpoint`: the same
call again) and requeued; the run then resumes from its last epoch's checkpoint.
The study's other work on the data (its summary, the final test evaluation) runs
as a job too, so the submitting node needs neither the data nor a GPU.
`cluster="local"` runs the same jobs as processes on this machine (how CI tests
it); `cluster="debug"` runs them in this process.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from hpstudy.errors import HpstudyError
from hpstudy.executors import (
    DataOptions,
    Job,
    SlurmOptions,
    describe,
    first_line,
    record_failure,
    run_job,
)
from hpstudy.progress import log
from hpstudy.run import Summary

T = TypeVar("T")
CLUSTERS = ("slurm", "local", "debug")
PARTITION = re.compile(r"[A-Za-z0-9_.,-]{1,100}")
POLL_SECONDS = {"slurm": 15.0, "local": 0.5, "debug": 0.0}  # sacct is rate-limited on clusters


def job_threads(cpus_per_job: int | None) -> int:
    """The CPUs this job may use: what it asked for, else what SLURM (cgroups) gave it."""
    if cpus_per_job is not None:
        return cpus_per_job
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


class SlurmCall:
    """`fn(*args)` inside a job, on the job's share of the CPUs. Requeued as it is: the
    study's calls read finished runs only, so running one again gives the same answer."""

    def __init__(self, fn: Callable[..., Any], cpus_per_job: int | None) -> None:
        self.fn = fn
        self.cpus_per_job = cpus_per_job

    def __call__(self, *args: Any) -> Any:
        import torch

        # torch sizes its thread pool to the whole node; a job owns only its CPUs
        torch.set_num_threads(job_threads(self.cpus_per_job))
        return self.fn(*args)

    def checkpoint(self, *args: Any) -> Any:
        """submitit calls this on preemption or at the time limit: requeue the same call."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args)


class SlurmRun(SlurmCall):
    """One run as a job; requeued after preemption, it resumes from the run folder's
    checkpoint (train always does), so nothing but the epoch in progress is lost."""

    def __init__(self, cpus_per_job: int | None) -> None:
        super().__init__(run_job, cpus_per_job)


def check_options(o: SlurmOptions) -> None:
    if o.cluster not in CLUSTERS:
        raise HpstudyError(
            f"--slurm-cluster: must be one of {', '.join(CLUSTERS)} (got {o.cluster!r})"
        )
    if o.partition is not None and not PARTITION.fullmatch(o.partition):
        raise HpstudyError(f"--slurm-partition: not a partition name (got {o.partition!r})")
    bounds = {
        "--slurm-gpus-per-job": (o.gpus_per_job, 0, 64),
        "--slurm-cpus-per-job": (o.cpus_per_job, 1, 1024),
        "--slurm-time": (o.time_minutes, 1, 366 * 24 * 60),
        "--slurm-max-parallel": (o.max_parallel, 1, 100_000),
    }
    for flag, (value, low, high) in bounds.items():
        if value is not None and not low <= value <= high:
            raise HpstudyError(f"{flag}: must be {low}..{high} (got {value})")


class SlurmExecutor:
    """Submits each run as one job, at most `max_parallel` queued or running at once,
    and the next only when one ends. Job logs go to `options.folder` (STUDY/slurm)."""

    def __init__(
        self, data: DataOptions, options: SlurmOptions, *, device: str | None = None
    ) -> None:
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise HpstudyError(
                "the slurm executor needs submitit: pip install 'hpstudy[slurm]'"
            ) from None
        check_options(options)
        if device not in (None, "auto", "cpu", "cuda"):
            raise HpstudyError(
                f"--device {device} with --executor slurm: use cpu or cuda (each job sees "
                "only its own GPUs)"
            )
        root = None if data.root is None else os.path.abspath(Path(data.root).expanduser())
        self.data = DataOptions(root=root, verify=data.verify)  # jobs start elsewhere
        self.options = options
        self.in_process = False  # runs train in SLURM jobs, whose output goes to their logs
        self.gpus = (
            options.gpus_per_job
            if options.gpus_per_job is not None
            else default_gpus(options.cluster)
        )
        if device == "cuda" and self.gpus == 0:
            raise HpstudyError("--device cuda with --slurm-gpus-per-job 0: give the jobs a GPU")
        self.device = device if device not in (None, "auto") else ("cuda" if self.gpus else "cpu")
        self.folder = Path(os.path.abspath(options.folder or Path("slurm")))
        self._executor: Any = None

    def executor(self) -> Any:
        if self._executor is None:
            import submitit

            o = self.options
            try:
                ex = submitit.AutoExecutor(folder=self.folder, cluster=o.cluster)
                params: dict[str, Any] = {
                    "name": "hpstudy",
                    "timeout_min": o.time_minutes,
                    "gpus_per_node": self.gpus,
                    "tasks_per_node": 1,
                    "nodes": 1,
                }
                if o.cpus_per_job is not None:
                    params["cpus_per_task"] = o.cpus_per_job
                if o.partition is not None:
                    params["slurm_partition"] = o.partition
                ex.update_parameters(**params)
            except RuntimeError as err:  # e.g. no sbatch on this machine
                raise HpstudyError(f"--executor slurm: {first_line(err)}") from None
            self._executor = ex
        return self._executor

    def device_type(self) -> str:
        return "cuda" if self.device == "cuda" else "cpu"

    def close(self) -> None:
        pass  # a job ends with its run; nothing is left to stop

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return self.executor().submit(fn, *args)
        except Exception as err:  # sbatch refused: a bad partition, no allocation left
            raise HpstudyError(f"slurm: cannot submit a job ({first_line(err)})") from None

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args, device)` as one job with a run's resources; its one-line errors come
        back as they are."""
        job = self.submit(SlurmCall(fn, self.options.cpus_per_job), *args, self.device)
        try:
            return job.result()
        except Exception as err:
            raise HpstudyError(job_error(job, err)) from None

    def run(self, jobs: Iterable[Job]) -> None:
        task = SlurmRun(self.options.cpus_per_job)
        poll = POLL_SECONDS[self.options.cluster]
        pending = iter(jobs)
        running: list[tuple[Any, Job]] = []
        done = 0
        while True:
            while (
                len(running) < self.options.max_parallel
                and (job := next(pending, None)) is not None
            ):
                # jobs start on other nodes, in other working directories
                job = dataclasses.replace(job, run_dir=Path(os.path.abspath(job.run_dir)))
                submitted = self.submit(task, job, self.data, self.device)
                log(f"slurm: job {submitted.job_id}: {job.label or job.run_dir.name}")
                running.append((submitted, job))
            if not running:
                return
            finished = [(s, j) for s, j in running if self.options.cluster == "debug" or s.done()]
            if not finished:
                time.sleep(poll)
                continue
            for submitted, job in finished:
                running.remove((submitted, job))
                done += 1
                name = job.label or job.run_dir.name
                try:
                    summary: Summary = submitted.result()
                except Exception as err:  # the job died for good (killed, out of requeues)
                    record_failure(job, job_error(submitted, err))
                    continue
                log(f"slurm: {done} done, {name}: {describe(summary)}")


def default_gpus(cluster: str) -> int:
    if cluster == "slurm":
        return 1
    import torch

    return 1 if torch.cuda.is_available() else 0


def job_error(job: Any, err: BaseException) -> str:
    """One line for a job that did not return: its own one-line error, else the last line
    of its traceback (submitit quotes it between dashed lines), and where its log is."""
    if isinstance(err, HpstudyError):  # the debug cluster raises in this process
        return str(err)
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    ours = [line for line in lines if "HpstudyError: " in line]
    if ours:
        return ours[-1].split("HpstudyError: ", 1)[1]
    quoted = [line for line in lines if not line.startswith(("---", "- ", "You can check"))]
    last = quoted[-1] if quoted else type(err).__name__
    paths = getattr(job, "paths", None)
    where = f" (log: {paths.stderr})" if paths is not None else ""
    return f"slurm job {job.job_id} failed: {last[:300]}{where}"

