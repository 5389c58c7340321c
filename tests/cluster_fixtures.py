"""What the executor and search tests' module-scoped studies share.

conftest's autouse fixtures keep tests offline and on a speed cache of their own, leave
out a study's final export and write a blank PNG for each report figure; but they are
function-scoped, and a module-scoped fixture runs before them: its studies would write
the user's speed cache, export and rasterise (some 10 s per study on 2 cores) for tests
that read neither. `plain_study` does the same for such a fixture, for a `with` block.

`fork` runs a `study run` that gets killed in a child of the test process, which has
torch imported already, instead of a fresh process that spends some 4 s importing it.
`quick_slurm_polls` sees a submitit job end at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

# a random and an optuna stage, one run each on fewer images, for the executor tests' studies
# to end on: a study mixing every kind finishes on an executor whose runs train outside the
# driver (which counts their progress from study.json after every stage, with each kind)
SEARCH_STAGES = """
[[stages]]
name = "random"
kind = "random"
epochs = 1
n = 1
overrides = { limit_train = 128 }
space.momentum = { uniform = [0.8, 0.9] }

[[stages]]
name = "tpe"
kind = "optuna"
epochs = 1
n_trials = 1
overrides = { limit_train = 128 }
space.label_smoothing = { uniform = [0.0, 0.1] }
"""

UNREACHABLE_URL = "http://127.0.0.1:9/cifar-100-python.tar.gz"  # as conftest's
# a valid 1x1 PNG, as conftest writes it
BLANK_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154"
    "789c63f8ffff3f030008fc02fea79aa0a00000000049454e44ae426082"
)


@contextmanager
def plain_study(
    speed_cache: Path,
    render: Callable[[Path], bool] = lambda path: False,
    export: bool = False,
) -> Iterator[None]:
    """Studies run in this block (and the processes they start) use `speed_cache` and never
    download, skip their final export (unless `export`), and their reports hold a blank
    PNG for each figure but those that `render(path)` asks for, rendered as always."""
    from hpstudy import report
    from hpstudy.files import write_atomic

    real_save = report.save

    def save(fig: object, path: Path) -> Path:
        if render(path):
            return real_save(fig, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, BLANK_PNG)
        fig.clear()  # type: ignore[attr-defined]
        return path

    def no_export(run_dir: str, options: object, device: object) -> None:
        """The final export, left out. Defined in here so that cloudpickle sends it by value
        to Ray and SLURM job processes, which cannot import this module."""

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HPSTUDY_CIFAR100_URL", UNREACHABLE_URL)
        patch.setenv("HPSTUDY_CACHE", str(speed_cache))
        if not export:
            patch.setattr("hpstudy.study.remote.export_final", no_export)
        patch.setattr("hpstudy.report.save", save)
        yield


@contextmanager
def quick_slurm_polls() -> Iterator[None]:
    """submitit's local cluster, polled every 50 ms instead of every 0.5 s (hpstudy's
    executor) and 1 s (submitit's `result()`): a job's end is seen at once, where each of a
    SLURM study's nine jobs would otherwise wait up to a second after its process ended."""
    import time

    import submitit.core.core

    from hpstudy.executors import slurm

    def wait(self: submitit.core.core.Job) -> None:  # type: ignore[type-arg]
        while not self.done():
            time.sleep(0.05)

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(slurm.POLL_SECONDS, "local", 0.05)
        patch.setattr(submitit.core.core.Job, "wait", wait)
        yield


def fork(fn: Callable[[], int], log: Path) -> int:
    """`fn()` in a child process forked from this one, which has torch and hpstudy imported
    already (a fresh `python -m hpstudy` spends some 4 s importing them); its output goes
    to `log`, and it ends with `fn`'s exit code, never returning into pytest. Its pid."""
    import os
    import sys
    import traceback

    pid = os.fork()
    if pid:
        return pid
    code = 70
    try:
        out = open(log, "w", buffering=1)  # noqa: SIM115 (the child ends with os._exit)
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        sys.stdout = sys.stderr = out
        import torch

        torch.set_num_threads(1)  # a forked OpenMP thread pool may hang: one thread here
        code = fn()
    except BaseException:  # anything: said in the log, then the exit below
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


def wait(pid: int, timeout: float = 600) -> int:
    """A forked child's end as subprocess gives it: its exit code, or -N for signal N."""
    import os
    import signal
    import time

    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise TimeoutError(f"forked child {pid} still running after {timeout} s")
        time.sleep(0.05)


def signal_after_first_checkpoint(marker: Path, signum: int) -> Callable[..., Any]:
    """`run_job`, but the first run to write a checkpoint sends itself `signum` right after
    it (once ever: O_EXCL on `marker`, which records the run and its epoch). Sent by the
    run to itself, it comes while the run is surely still running (no race with its last
    epoch).

    Defined inside a function so Ray and cloudpickle ship it by value (workers and jobs
    cannot import this module); it imports what it needs itself for the same reason.
    """

    def task(job: Any, options: Any, device: str | None) -> Any:
        import os

        from hpstudy import executors
        from hpstudy.run import RunDir

        save = RunDir.save_checkpoint

        def save_then_signal(self: RunDir, state: dict[str, Any]) -> None:
            save(self, state)
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.write(fd, f"{job.run_dir.name} {state['epoch']}".encode())
            os.close(fd)
            os.kill(os.getpid(), signum)

        RunDir.save_checkpoint = save_then_signal  # type: ignore[method-assign]
        try:
            return executors.run_job(job, options, device)
        finally:
            RunDir.save_checkpoint = save  # type: ignore[method-assign]

    return task
