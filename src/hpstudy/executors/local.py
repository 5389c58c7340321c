"""Runs jobs on this machine: in sequence in this process, or in worker processes, one
device name per worker (`cuda:0` twice: two runs share one GPU; `cpu` twice: two CPU
workers that share the cores).

Each worker slot has one long-lived process that is handed jobs one at a time over a pipe
and says when each ends, so a process compiles its model once and reuses it for every run
of the same shape it is given (hpstudy.run.compiled). A process that dies (killed, out of
memory) fails its own run and no other: the others go on, its slot gets a fresh process,
and the next `study run` retries the run from its checkpoint. A run that ends failed
retires its process too (a CUDA error poisons the process's context): the slot's next run
starts in a fresh one. A worker whose driver is gone (a `study run` killed with SIGKILL,
which no handler sees) stops within a second, so that the next `study run` never resumes a
run that an orphan still writes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Callable, Iterable
from multiprocessing.connection import wait
from typing import Any, TypeVar

from hpstudy.errors import HpstudyError
from hpstudy.executors import DataOptions, ExecutorBase, Job, OptionGroup, record_failure, run_job
from hpstudy.progress import log_in_worker, worker_log_level

T = TypeVar("T")
MAX_WORKERS = 256  # worker processes on one machine; more is a typo, not a plan
FAILED = "failed"  # RunStatus.FAILED (hpstudy.run.folder imports torch; the driver need not)
logger = logging.getLogger(__name__)


def worker_main(
    jobs: Any,
    options: DataOptions,
    device: str,
    threads: int,
    log_level: int | None = None,
    place: tuple[str, dict[str, str]] | None = None,
    driver: int | None = None,
) -> None:
    """A worker process: run each job received on the connection `jobs`, answering with
    its status, until the driver closes it (or sends None). A run that ends failed ends
    the process after its answer: a failed CUDA run can leave the context unusable."""
    enter_worker(device, threads, log_level, place, driver)
    while True:
        try:
            job = jobs.recv()
        except EOFError:  # the driver is done with this worker
            return
        if job is None:
            return
        summary = run_job(job, options, device=device)
        jobs.send(str(summary.status))
        if summary.status == FAILED:
            return


def call_main(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    device: str,
    threads: int,
    log_level: int | None,
    place: tuple[str, dict[str, str]] | None,
    driver: int | None,
    reply: Any,
) -> None:
    """`fn(*args, device)` in a worker process; its result, or its one-line error, sent back
    on `reply` (an internal error as its type and message)."""
    enter_worker(device, threads, log_level, place, driver)
    try:
        answer: tuple[str, Any] = ("ok", fn(*args, device))
    except HpstudyError as err:
        answer = ("error", str(err))
    except Exception as err:  # a bug: the driver raises it as one, with what it was
        answer = ("internal", f"{type(err).__name__}: {err}")
    reply.send(answer)
    reply.close()


def enter_worker(
    device: str,
    threads: int,
    log_level: int | None,
    place: tuple[str, dict[str, str]] | None,
    driver: int | None,
) -> None:
    """What every worker process does first: stop with its driver, move to the driver's
    folder and environment, log plain lines, and take its share of the cores."""
    if driver is not None:
        stop_when_orphaned(driver)
    if place is not None:  # a fork server's child starts where the server started: move
        os.chdir(place[0])  # to the driver's folder and environment as they are now
        os.environ.clear()
        os.environ.update(place[1])
    log_in_worker(log_level)  # workers share the terminal: plain lines, no live display
    # workers share the cores instead of fighting over them: for their kernels on a CPU,
    # and on a GPU for the host side and for Inductor's compiler processes, which torch
    # otherwise starts one per core in every worker
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)


def stop_when_orphaned(driver: int, every: float = 0.2) -> None:
    """End this process once the `driver` process is gone. Its parent cannot tell: a fork
    server lives on while any of its children does. Ending here is as safe as the SIGKILL
    that ended the driver (every file a run writes is replaced atomically)."""

    def watch() -> None:
        while running(driver):
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, name="hpstudy-orphan-watch", daemon=True).start()


PROC = os.path.exists("/proc/self/stat")


def running(pid: int) -> bool:
    """Whether `pid` runs (a zombie, ended but not yet reaped by its parent, does not)."""
    if PROC:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: there is one
        return True
    return True


class LocalExecutor(ExecutorBase):
    """`workers=None`: sequential, here. `workers=["cuda:0", "cuda:0", "cuda:1"]`: a process
    per worker, each on its worker's device, handed one job at a time."""

    summary = "this machine"
    reuses_compiled = True  # in this process, or in a worker that trains run after run

    def __init__(
        self, options: DataOptions, workers: list[str] | None = None, device: str | None = None
    ) -> None:
        super().__init__(options, device=device)
        self.workers = workers
        self.in_process = workers is None

    @classmethod
    def add_options(cls, group: OptionGroup) -> None:
        group.add_argument(
            "--devices",
            default=None,
            help="comma-separated GPU indices, one worker each; repeat an index (0,0) to "
            "share a GPU; without a GPU, that many CPU workers",
        )
        group.add_argument(
            "--runs-per-device",
            type=int,
            default=None,
            metavar="N",
            help="N worker processes per device (default: the auto table's, 1)",
        )

    @classmethod
    def from_options(
        cls, options: DataOptions, device: str | None, values: dict[str, Any]
    ) -> LocalExecutor:
        """`devices` as the command line gives it ("0,1") or as a list of indices."""
        unknown = set(values) - {"devices", "runs_per_device"}
        if unknown:
            raise HpstudyError(f"local executor: unknown option(s) {', '.join(sorted(unknown))}")
        devices = values.get("devices")
        if isinstance(devices, str):
            devices = parse_devices(devices) if devices else None
        workers = local_workers(devices, values.get("runs_per_device"), device)
        if workers is None:
            return cls(options, device=device)
        return cls(options, workers=workers)

    def device_type(self) -> str:
        from hpstudy.run import resolve_device

        return resolve_device(self.workers[0] if self.workers else self.device or "auto").type

    def threads(self) -> int:
        """Each worker's share of the cores (its intra-op and Inductor compile threads)."""
        return max(1, (os.cpu_count() or 1) // max(1, len(self.workers or [])))

    def setting(self, device: str) -> tuple[Any, ...]:
        """What `enter_worker` takes, for a worker on `device` started now: its share of the
        cores, the log level, this process's folder and environment as they are now (a fork
        server's child starts where the server started) and this process's pid."""
        place = (os.getcwd(), dict(os.environ))
        return device, self.threads(), worker_log_level(), place, os.getpid()

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args, DEVICE)`: here without workers; with them, in a worker process of the
        first worker's device, as the runs are, so that the driver never holds a device
        (the speed measurement, the per-image outcomes and the test evaluation run there)."""
        if not self.workers:
            return fn(*args, self.device)
        return self.call_in(self.workers[:1], fn, args)[0]

    def runs_at_once(self) -> int:
        return len(self.workers or [None])

    def call_at_once(self, fn: Callable[..., T], *args: Any) -> list[T]:
        """`fn(*args, DEVICE)` in a process per worker, all started together."""
        if not self.workers:
            return [fn(*args, self.device)]
        return self.call_in(self.workers, fn, args)

    def call_in(self, devices: list[str], fn: Callable[..., T], args: tuple[Any, ...]) -> list[T]:
        """`fn(*args, device)` in a worker process per device, at once; their results in
        order, or the first one-line error (an internal error raised as what it was)."""
        ctx = worker_context()
        calls = []
        try:
            for device in devices:
                receive, reply = ctx.Pipe(duplex=False)
                work = (fn, args, *self.setting(device), reply)
                process = ctx.Process(target=call_main, args=work, daemon=True)
                process.start()
                reply.close()  # the child's end: its exit is then an EOF here
                calls.append((process, receive))
            answers = [call_answer(process, receive, fn.__name__) for process, receive in calls]
        finally:  # interrupted, or one failed: the others go too
            for process, receive in calls:
                receive.close()
                if process.is_alive():
                    process.terminate()
                process.join()
        for kind, value in answers:
            if kind == "error":
                raise HpstudyError(value)
            if kind == "internal":
                raise RuntimeError(f"{fn.__name__} in a worker process: {value}")
        return [value for _, value in answers]

    def run(self, jobs: Iterable[Job]) -> None:
        if not self.workers:
            for job in jobs:
                run_job(job, self.options, device=self.device)
            return
        start = functools.partial(self.start_worker, worker_context())
        slots = [Slot(device, start) for device in self.workers]
        try:
            # the next job is pulled only when a worker is free: its maker may wait on results
            pending = iter(jobs)
            while True:
                for slot in slots:
                    if slot.job is None and (job := next(pending, None)) is not None:
                        slot.give(job)
                busy = [slot for slot in slots if slot.job is not None]
                if not busy:
                    break
                ready = set(wait([w for slot in busy for w in slot.waitables()]))
                for slot in busy:
                    if ready.intersection(slot.waitables()):
                        slot.settle()
        except BaseException:  # interrupted: every worker stops now, its run mid-epoch
            for slot in slots:
                slot.stop(now=True)
            raise
        for slot in slots:  # done: each idle worker is told so and ends
            slot.stop(now=False)

    def start_worker(self, ctx: Any, device: str) -> tuple[Any, Any]:
        """A worker process on `device` and the driver's end of its pipe."""
        mine, theirs = ctx.Pipe(duplex=True)
        args = (theirs, self.options, *self.setting(device))
        process = ctx.Process(target=worker_main, args=args, daemon=True)
        process.start()
        theirs.close()  # the worker's end, now in the worker: its exit is then an EOF here
        return process, mine


def call_answer(process: Any, receive: Any, name: str) -> tuple[str, Any]:
    """What a `call_main` process sent back; a one-line error where it died first."""
    try:
        return receive.recv()  # type: ignore[no-any-return]
    except EOFError:
        process.join()
        raise HpstudyError(
            f"a worker process died (exit code {process.exitcode}) in {name}"
        ) from None


RETIRE_WAIT = 30.0  # seconds a retiring worker gets to end on its own before it is killed


class Slot:
    """One worker of a LocalExecutor: its device, its process (started when a job needs one;
    None again once it died or retired) and the job it runs (None: free)."""

    def __init__(self, device: str, start: Callable[[str], tuple[Any, Any]]) -> None:
        self.device = device
        self.start = start
        self.process: Any = None
        self.connection: Any = None
        self.job: Job | None = None

    def waitables(self) -> tuple[Any, Any]:
        return self.connection, self.process.sentinel

    def give(self, job: Job) -> None:
        if self.process is not None and not self.process.is_alive():
            self.retire()  # ended while idle: its slot gets a fresh process
        if self.process is None:
            self.process, self.connection = self.start(self.device)
        self.job = job
        with contextlib.suppress(OSError):  # it died at this moment: `settle` hears it
            self.connection.send(job)

    def settle(self) -> None:
        """The running job's end: the worker's answer, or its process's death (the job's
        failure, unless its run folder says it was done)."""
        job, self.job = self.job, None
        assert job is not None
        status = self.answer()
        if status is None:  # ended without an answer: killed, out of memory, a crash
            code = self.retire()
            if not job_done(job):
                record_failure(job, f"worker process died (exit code {code})")
        elif status == FAILED:  # the worker ends itself after a failed run
            self.retire()

    def answer(self) -> str | None:
        try:
            return self.connection.recv() if self.connection.poll() else None  # type: ignore[no-any-return]
        except (EOFError, OSError, pickle.UnpicklingError):
            return None

    def retire(self) -> int | None:
        """Close the pipe and wait for the process to end (killed if it does not within
        RETIRE_WAIT); its exit code. The slot starts a fresh process for its next job."""
        self.connection.close()
        self.process.join(RETIRE_WAIT)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        code: int | None = self.process.exitcode
        self.process = self.connection = None
        return code

    def stop(self, now: bool) -> None:
        """End the worker: at once (terminated, mid-run), or once it sees its pipe closed."""
        if self.process is None:
            return
        if now:
            self.process.terminate()
        self.retire()


# what a worker process imports before it trains: loaded once by the fork server. The first
# optimizer a process builds imports torch._dynamo (2.5 s here, more under load; it starts
# no thread, so the server may fork after it): paid once, not once per worker
WORKER_PRELOAD = ["torch", "torch._dynamo", "hpstudy.run.loop", "hpstudy.executors.local"]


def worker_context() -> Any:
    """How job processes start: from a fork server where the platform has one (Linux,
    macOS), which has imported torch once, so a job's process starts in milliseconds,
    not the seconds a fresh interpreter takes to import torch; else spawned. Never plain
    fork: CUDA cannot be initialised in a child forked from a process that uses it, and
    the server itself touches no device."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(WORKER_PRELOAD)  # read when the server starts (once)
    return ctx


def job_done(job: Job) -> bool:
    from hpstudy.run import RunDir

    return RunDir(job.run_dir).status().done


def parse_devices(text: str) -> list[int]:
    try:
        return [int(d) for d in text.split(",")]
    except ValueError:  # int() also refuses "" (0,,1) and huge text
        raise HpstudyError(f"--devices: expected GPU indices like 0,1 (got {text!r})") from None


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
            logger.info(f"no CUDA GPU in use: --devices starts {count} CPU worker processes")
            return ["cpu"] * count
        if device not in (None, "auto") and not device.startswith("cuda"):
            raise HpstudyError(f"--devices with --device {device}: use cuda, cpu or auto")
        names = [str(resolve_device(f"cuda:{i}")) for i in devices]
        # round-robin: the first runs spread over the GPUs before any GPU gets a second
        return names * (runs_per_device or 1)
    where = resolve_device(device or "auto")
    per_device = runs_per_device or auto_row(where.type).runs_per_device
    return None if per_device == 1 else [str(where)] * per_device
