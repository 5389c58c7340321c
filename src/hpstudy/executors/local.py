"""Runs jobs on this machine: in sequence in this process, or in worker processes, one
device name per worker (`cuda:0` twice: two runs share one GPU; `cpu` twice: two CPU
workers that share the cores).

Each job gets its own worker process, so a process that dies (killed, out of
memory) fails its own run and no other: the others go on, and the next
`study run` retries it from its checkpoint.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable
from multiprocessing.connection import wait
from typing import Any, TypeVar

from hpstudy.executors import DataOptions, Job, record_failure, run_job
from hpstudy.progress import use_plain_lines
from hpstudy.run import RunDir, resolve_device

T = TypeVar("T")


def worker_main(job: Job, options: DataOptions, device: str, threads: int) -> None:
    use_plain_lines()  # workers share the terminal: no live display of their own
    if device == "cpu" or device.startswith("cpu"):
        import torch

        torch.set_num_threads(threads)  # CPU workers share the cores instead of fighting
    run_job(job, options, device=device)


class LocalExecutor:
    """`workers=None`: sequential, here. `workers=["cuda:0", "cuda:0", "cuda:1"]`: a process
    per job, as many at once as there are workers, each on its worker's device."""

    def __init__(
        self, options: DataOptions, workers: list[str] | None = None, device: str | None = None
    ) -> None:
        self.options = options
        self.workers = workers
        self.device = device
        self.in_process = workers is None

    def device_type(self) -> str:
        return resolve_device(self.workers[0] if self.workers else self.device or "auto").type

    def close(self) -> None:
        pass  # worker processes live only as long as their job

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args, self.workers[0] if self.workers else self.device)

    def run(self, jobs: Iterable[Job]) -> None:
        if not self.workers:
            for job in jobs:
                run_job(job, self.options, device=self.device)
            return
        # spawn, not fork: CUDA cannot be initialised in a forked child
        ctx = multiprocessing.get_context("spawn")
        cpu_workers = sum(1 for w in self.workers if w.startswith("cpu"))
        threads = max(1, (os.cpu_count() or 1) // max(1, cpu_workers))
        free = list(self.workers)
        # the next job is pulled only when a worker is free: its maker may wait on results
        pending = iter(jobs)
        running: dict[Any, tuple[Any, Job, str]] = {}
        try:
            while True:
                while free and (job := next(pending, None)) is not None:
                    device = free.pop(0)
                    args = (job, self.options, device, threads)
                    process = ctx.Process(target=worker_main, args=args, daemon=True)
                    process.start()
                    running[process.sentinel] = (process, job, device)
                if not running:
                    return
                for sentinel in wait(list(running)):
                    process, job, device = running.pop(sentinel)
                    process.join()
                    free.append(device)
                    if process.exitcode != 0 and not RunDir(job.run_dir).status().done:
                        record_failure(job, f"worker process died (exit code {process.exitcode})")
        finally:
            for process, _, _ in running.values():  # interrupted: stop the others too
                process.terminate()
                process.join()
