"""Runs jobs as Ray tasks: one GPU per run where the cluster has GPUs, else a node's CPUs.

Only where runs execute changes: each task calls `run_job`, which trains in the
job's run directory on storage every node sees and records failures there. A
run whose worker dies is retried by Ray and resumes from its last checkpoint.
The study's other work on the data (its summary, the final test evaluation) runs
as a task with the same resources, so the driver needs neither the data nor a GPU.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import weakref
from collections.abc import Callable, Iterable
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
from hpstudy.progress import log_in_worker, worker_log_level

if TYPE_CHECKING:
    from hpstudy.run import Summary

T = TypeVar("T")
Task = Callable[[Job, DataOptions, "str | None"], "Summary"]
logger = logging.getLogger(__name__)


def run_task(
    task: Task,
    job: Job,
    options: DataOptions,
    device: str | None,
    threads: int,
    log_level: int | None = None,
) -> Summary:
    return call_task(task, threads, log_level, job, options, device)


def call_task(fn: Callable[..., T], threads: int, log_level: int | None, *args: Any) -> T:
    import torch

    # Ray forwards a worker's stderr to the driver: its lines show as the driver's would
    log_in_worker(log_level)
    # torch sizes its thread pool once per worker process, to the whole node;
    # a run must use only the CPUs Ray granted it, or parallel runs oversubscribe
    torch.set_num_threads(threads)
    return fn(*args)


def absolute(path: str | Path) -> Path:
    """Absolute without resolving links: a shared mount may be a link that differs per node."""
    return Path(os.path.abspath(Path(path).expanduser()))


class RayExecutor(ExecutorBase):
    """`address=None` starts a local Ray (shut down with this executor); "auto" or
    HOST:PORT joins a running cluster. A Ray this process already holds is used as is.

    `task` replaces `run_job` inside the Ray task (tests use it to kill a worker).
    """

    summary = "a Ray cluster (pip install 'hpstudy[ray]')"

    def __init__(
        self,
        options: DataOptions,
        address: str | None = None,
        *,
        device: str | None = None,
        cpus_per_run: int | None = None,
        max_retries: int = 3,
        task: Task = run_job,
    ) -> None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise HpstudyError("the ray executor needs Ray: pip install 'hpstudy[ray]'") from None
        root = None if options.root is None else str(absolute(options.root))
        # None stays None: each worker then uses its own default root ($HPSTUDY_DATA)
        self.options = DataOptions(root=root, verify=options.verify)
        self.address = address
        self.device = device
        self.in_process = False  # runs train in Ray workers, whose lines Ray forwards
        self.cpus_per_run = cpus_per_run
        self.max_retries = max_retries
        self.task = task
        self._close: weakref.finalize | None = None

    @classmethod
    def add_options(cls, group: OptionGroup) -> None:
        group.add_argument(
            "--address", default=None, help="the cluster's address (auto joins a running one)"
        )

    def connect(self) -> None:
        import ray

        if ray.is_initialized():
            return
        if self.address is None:
            # "local", not None: None would join whatever `ray start` left on this machine
            ray.init(address="local", include_dashboard=False)
            # one local Ray for every stage of the study, gone with this executor
            self._close = weakref.finalize(self, ray.shutdown)
        else:
            try:
                ray.init(address=self.address)
            except ConnectionError as err:
                raise HpstudyError(
                    f"--address {self.address}: cannot join Ray ({first_line(err)})"
                ) from None

    def close(self) -> None:
        """Shut down the local Ray this executor started; a joined cluster is left running."""
        if self._close is not None:
            self._close()

    def device_type(self) -> str:
        """Where the runs will execute: the given device, else a GPU if the cluster has one."""
        import ray

        if self.device not in (None, "auto"):
            return "cuda" if self.device.startswith("cuda") else "cpu"
        self.connect()
        return "cuda" if ray.cluster_resources().get("GPU", 0) >= 1 else "cpu"

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args, DEVICE)` as one Ray task with a run's resources; its one-line errors
        come back as they are."""
        import ray

        self.connect()
        resources = self.resources()
        remote = ray.remote(call_task).options(**resources, max_retries=self.max_retries)
        threads, level = max(1, int(resources["num_cpus"])), worker_log_level()
        ref = remote.remote(fn, threads, level, *args, self.device)
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as err:
            if isinstance(err.cause, HpstudyError):
                raise HpstudyError(str(err.cause)) from None
            raise HpstudyError(f"ray task raised {first_line(err.cause)}") from None
        except ray.exceptions.RayError as err:
            raise HpstudyError(f"ray task failed: {first_line(err)}") from None

    def resources(self) -> dict[str, float]:
        """What one run asks for: one GPU where the cluster has any, else a node's CPUs."""
        import ray

        if ray.cluster_resources().get("GPU", 0) >= 1:
            return {"num_gpus": 1, "num_cpus": 1}
        if self.cpus_per_run is not None:
            return {"num_cpus": self.cpus_per_run}
        # the smallest node's CPUs: every node can take a run, and each run trains as
        # fast as the local executor would on that node
        cpus = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]]
        return {"num_cpus": max(1, int(min((c for c in cpus if c >= 1), default=1)))}

    def slots(self, resources: dict[str, float]) -> int:
        """How many runs the cluster holds at once: its GPUs, or its CPUs per run."""
        import ray

        total = ray.cluster_resources()
        if "num_gpus" in resources:
            return max(1, int(total.get("GPU", 0) // resources["num_gpus"]))
        return max(1, int(total.get("CPU", 0) // resources["num_cpus"]))

    def run(self, jobs: Iterable[Job]) -> None:
        import ray

        queue = iter(jobs)
        first = next(queue, None)
        if first is None:
            return
        self.connect()
        resources = self.resources()
        remote = ray.remote(run_task).options(
            **resources,
            # worker or node death only; a run's own failure is recorded by run_job
            max_retries=self.max_retries,
            retry_exceptions=False,
        )
        threads = max(1, int(resources["num_cpus"]))
        slots = self.slots(resources)
        level = worker_log_level()
        each = f"{resources['num_gpus']} GPU" if "num_gpus" in resources else f"{threads} CPU"
        logger.info(f"ray: up to {slots} runs at once, {each} each")
        pending: dict[Any, Job] = {}

        def submit(job: Job) -> None:
            # workers on other nodes do not share this process's working directory
            job = dataclasses.replace(job, run_dir=absolute(job.run_dir))
            ref = remote.remote(self.task, job, self.options, self.device, threads, level)
            pending[ref] = job

        submit(first)
        done_count = 0
        while True:
            # the next job is pulled only when a slot is free (lazy jobs: a search asks
            # its sampler for the next trial now, having read the runs that ended)
            while len(pending) < slots and (job := next(queue, None)) is not None:
                submit(job)
            if not pending:
                break
            ready, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready[0])
            done_count += 1
            name = job.label or job.run_dir.name
            try:
                summary = ray.get(ready[0])
            except ray.exceptions.RayTaskError as err:  # the task itself raised: not retried
                record_failure(job, f"ray task raised {first_line(err.cause)}", str(err))
                continue  # record_failure logged it
            except ray.exceptions.RayError as err:  # worker or node lost, retries spent
                message = f"ray task failed after {self.max_retries} retries: {first_line(err)}"
                record_failure(job, message, str(err))
                continue
            logger.info(f"ray: {done_count} done, {name}: {describe(summary)}")

