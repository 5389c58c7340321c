"""Checkpoints written by a background thread from a CPU copy, so an epoch never waits on disk.

`CheckpointWriter.submit(state)` copies every tensor of the state to the CPU first, in the
caller's thread: the live weights and optimizer buffers are updated in place by the next
step (on the CPU as on a GPU), so serialising them from another thread without a copy would
save a torn mixture of two steps. The copy is then serialised and written by
`RunDir.save_checkpoint` (a temporary file, fsync, an atomic rename) in one background
thread. At most one write is in flight: a second `submit` first waits for the first.

The ordering contract: when `submit` returns, the checkpoint is not yet on disk. The run's
other files may run ahead of it (metrics.csv may hold an epoch that checkpoint.pt does not
yet: a kill then leaves the previous checkpoint, and the resumed run trains that epoch
again, identically, and rewrites metrics.csv from the checkpoint's rows). Whatever reads
the checkpoint (test evaluation, export, a resume) is ordered after `wait()`: the loop
waits before it writes summary.json, and on leaving `train`. A kill at any moment leaves
the previous checkpoint.pt whole and at most a partial checkpoint.pt.tmp, which the run
folder counts as its own and the next write replaces.

An error in the thread (a full disk, a folder made read-only) is kept and raised by the next
`submit` or `wait` as one HpstudyError naming the file, never lost.
"""

from __future__ import annotations

import copy
import logging
import threading
from types import TracebackType
from typing import Any

import torch

from hpstudy.errors import HpstudyError
from hpstudy.run.folder import RunDir

logger = logging.getLogger(__name__)


def cpu_copy(state: Any) -> Any:
    """`state` with every tensor copied to the CPU and every dict, list and tuple copied too
    (the caller appends to its lists of rows after `submit`); numbers and strings are kept.
    A dict keeps its type and attributes (a state_dict's `_metadata`, which loading reads).
    Tensors on a CUDA device go to pinned memory without blocking, with one sync at the end."""
    on_device: list[bool] = []

    def copied(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            value = value.detach()
            if value.device.type == "cpu":
                return value.clone()
            if value.device.type == "cuda":
                on_device.append(True)
                pinned = torch.empty_like(value, device="cpu", pin_memory=True)
                return pinned.copy_(value, non_blocking=True)
            return value.cpu()  # another accelerator: a blocking copy
        if isinstance(value, dict):
            out = copy.copy(value)  # an OrderedDict keeps its _metadata
            for key in out:
                out[key] = copied(out[key])
            return out
        if isinstance(value, list):
            return [copied(v) for v in value]
        if isinstance(value, tuple):
            return tuple(copied(v) for v in value)
        return value

    result = copied(state)
    if on_device:
        torch.cuda.synchronize()  # the non-blocking copies have landed: one sync per checkpoint
    return result


class CheckpointWriter:
    """Writes a run's checkpoints in one background thread; a context manager that, on
    leaving, waits for the write in flight (so an exception in training loses no finished
    epoch's checkpoint) and raises its error if training itself ended without one."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def submit(self, state: dict[str, Any]) -> None:
        """Write `state` as the run's checkpoint in the background, from a CPU copy taken now;
        waits for the previous write first (and raises its error)."""
        self.wait()
        snapshot = cpu_copy(state)
        self.thread = threading.Thread(
            target=self.write, args=(snapshot,), name=f"checkpoint {self.run.name}"
        )
        self.thread.start()

    def write(self, snapshot: dict[str, Any]) -> None:
        try:
            self.run.save_checkpoint(snapshot)
        except BaseException as err:  # kept for the caller: a thread's error is otherwise lost
            self.error = err

    def wait(self) -> None:
        """Until the write in flight is on disk; its error, if any, as one HpstudyError."""
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        err, self.error = self.error, None
        if err is None:
            return
        if isinstance(err, HpstudyError):  # write_atomic's: it names the file already
            raise err
        if isinstance(err, OSError):
            reason = err.strerror or str(err)
        else:
            text = str(err).strip()
            reason = text.splitlines()[0] if text else type(err).__name__
        raise HpstudyError(f"{self.run.checkpoint_path}: cannot write ({reason})") from err

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.wait()
            return
        try:
            self.wait()  # the finished epoch's checkpoint reaches the disk before we go on
        except HpstudyError as err:  # training's own exception is the one to raise
            logger.error(f"{err} (as the run stopped on {type(exc).__name__})")
