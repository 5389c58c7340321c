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
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from hpstudy.errors import HpstudyError
from hpstudy.executors import (
    DataOptions,
    ExecutorBase,
    Job,
    OptionGroup,
    describe,
    first_line,
    record_failure,
    run_job,
)
from hpstudy.progress import log_in_worker

if TYPE_CHECKING:
    from hpstudy.run import Summary

T = TypeVar("T")
CLUSTERS = ("slurm", "local", "debug")
PARTITION = re.compile(r"[A-Za-z0-9_.,-]{1,100}")
POLL_SECONDS = {"slurm": 15.0, "local": 0.5, "debug": 0.0}  # sacct is rate-limited on clusters
logger = logging.getLogger(__name__)


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
    folder: Path | None = None  # submitit's logs; None: STUDY/slurm (see `open`)


# --slurm-X option dest -> SlurmOptions field
OPTION_FIELDS = {
    "slurm_cluster": "cluster",
    "slurm_partition": "partition",
    "slurm_gpus_per_job": "gpus_per_job",
    "slurm_cpus_per_job": "cpus_per_job",
    "slurm_time": "time_minutes",
    "slurm_max_parallel": "max_parallel",
}


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

    def __init__(
        self, fn: Callable[..., Any], cpus_per_job: int | None, log_level: int = logging.INFO
    ) -> None:
        self.fn = fn
        self.cpus_per_job = cpus_per_job
        # a job's log file holds its lines (epochs, resuming) whatever the driver shows
        self.log_level = log_level
        self.driver_pid = os.getpid()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import torch

        in_driver = os.getpid() == self.driver_pid  # the debug cluster calls it there
        if not in_driver:
            log_in_worker(self.log_level)
        # torch sizes its thread pool to the whole node; a job owns only its CPUs
        threads = torch.get_num_threads()
        torch.set_num_threads(job_threads(self.cpus_per_job))
        try:
            return self.fn(*args, **kwargs)
        finally:
            if in_driver:  # the driver's own runs keep their threads (and their results)
                torch.set_num_threads(threads)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit calls this on preemption or at the time limit: requeue the same call."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


class SlurmRun(SlurmCall):
    """One run as a job; requeued after preemption, it resumes from the run folder's
    checkpoint (train always does), so nothing but the epoch in progress is lost."""

    def __init__(self, cpus_per_job: int | None, log_level: int = logging.INFO) -> None:
        super().__init__(run_job, cpus_per_job, log_level)


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


class SlurmExecutor(ExecutorBase):
    """Submits each run as one job, at most `max_parallel` queued or running at once,
    and the next only when one ends. Job logs go to `options.folder`, else to the study
    folder's slurm/ (given by `open`), else to ./slurm."""

    summary = "one SLURM job per run (pip install 'hpstudy[slurm]')"

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

    @classmethod
    def add_options(cls, group: OptionGroup) -> None:
        group.add_argument(
            "--slurm-cluster",
            choices=CLUSTERS,
            default="slurm",
            help="submitit's cluster; local runs the jobs as processes here, debug in this "
            "process (default: slurm)",
        )
        group.add_argument("--slurm-partition", default=None, metavar="NAME", help="the partition")
        group.add_argument(
            "--slurm-gpus-per-job",
            type=int,
            default=None,
            metavar="N",
            help="GPUs per run (default: 1; local/debug: 1 if a GPU is visible)",
        )
        group.add_argument(
            "--slurm-cpus-per-job",
            type=int,
            default=None,
            metavar="N",
            help="CPUs per run (default: the cluster's)",
        )
        group.add_argument(
            "--slurm-time",
            type=int,
            default=None,
            metavar="MINUTES",
            help="time limit per job; a job that hits it is requeued and resumes from its "
            "checkpoint (default: 1440)",
        )
        group.add_argument(
            "--slurm-max-parallel",
            type=int,
            default=None,
            metavar="N",
            help="jobs queued or running at once (default: 32)",
        )

    @classmethod
    def from_options(
        cls, options: DataOptions, device: str | None, values: dict[str, Any]
    ) -> SlurmExecutor:
        """`values` by the options' dests (slurm_time=30), or `slurm=SlurmOptions(...)`."""
        given = dict(values)
        slurm = given.pop("slurm", None) or SlurmOptions()
        unknown = set(given) - set(OPTION_FIELDS)
        if unknown:
            raise HpstudyError(f"slurm executor: unknown option(s) {', '.join(sorted(unknown))}")
        fields = {OPTION_FIELDS[k]: v for k, v in given.items() if v is not None}
        return cls(options, dataclasses.replace(slurm, **fields), device=device)

    def open(self, study_dir: Path) -> None:
        """Job logs in the study folder (shared storage), unless a folder was given."""
        if self.options.folder is None and self._executor is None:
            self.folder = Path(os.path.abspath(Path(study_dir) / "slurm"))

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

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return self.executor().submit(fn, *args, **kwargs)
        except Exception as err:  # sbatch refused: a bad partition, no allocation left
            raise HpstudyError(f"slurm: cannot submit a job ({first_line(err)})") from None

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args, DEVICE)` as one job with a run's resources; its one-line errors come
        back as they are."""
        call = SlurmCall(fn, self.options.cpus_per_job)
        job = self.submit(call, *args, self.device)
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
                logger.info(f"slurm: job {submitted.job_id}: {job.label or job.run_dir.name}")
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
                logger.info(f"slurm: {done} done, {name}: {describe(summary)}")


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

