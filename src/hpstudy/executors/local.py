"""Runs jobs on this machine: in sequence in this process, or one worker process per device."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

from hpstudy.executors import DataOptions, Job, record_failure, run_job

_worker_device: str | None = None


def _init_worker(devices: multiprocessing.Queue, n_workers: int) -> None:  # type: ignore[type-arg]
    global _worker_device
    _worker_device = devices.get()
    if _worker_device == "cpu":  # CPU workers share the cores instead of fighting for them
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // n_workers))


def _run_in_worker(job: Job, options: DataOptions) -> None:
    run_job(job, options, device=_worker_device)


class LocalExecutor:
    """`workers=None`: sequential, here. `workers=["cuda:0", "cuda:1"]`: one process each."""

    def __init__(
        self, options: DataOptions, workers: list[str] | None = None, device: str | None = None
    ) -> None:
        self.options = options
        self.workers = workers
        self.device = device

    def close(self) -> None:
        pass  # worker pools live only as long as one `run`

    def run(self, jobs: list[Job]) -> None:
        if not self.workers or (len(jobs) <= 1 and len(self.workers) <= 1):
            device = self.workers[0] if self.workers else self.device
            for job in jobs:
                run_job(job, self.options, device=device)
            return
        # spawn, not fork: CUDA cannot be initialised in a forked child
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        for device in self.workers:
            queue.put(device)
        with ProcessPoolExecutor(
            len(self.workers),
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(queue, len(self.workers)),
        ) as pool:
            futures = {pool.submit(_run_in_worker, job, self.options): job for job in jobs}
            for future in as_completed(futures):
                try:
                    future.result()
                except BrokenProcessPool as err:  # a worker died (killed, out of memory)
                    record_failure(futures[future], f"worker process died: {err}")
