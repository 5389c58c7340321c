"""One writer per study folder: an OS lock (flock) on a lock file that names its holder.

The kernel releases a flock when the process holding it ends, however it ends,
so a killed `study run` never leaves its folder locked. The holder writes its
pid and host into the file only so that a second writer can say who holds it.
Readers (`study status`, `report`) take no lock. The holder's worker processes
(local processes, Ray tasks) neither inherit the lock (Python opens files
non-inheritable) nor take it: they write only their own run folders.
"""

from __future__ import annotations

import fcntl
import os
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from hpstudy.errors import HpstudyError

LOCK_NAME = ".hpstudy.lock"


def lock_path(folder: Path) -> Path:
    return folder / LOCK_NAME


@contextmanager
def hold(folder: Path) -> Iterator[None]:
    """Hold `folder`'s lock for the block, or raise one line naming the process that holds it.

    The folder must exist; the lock file is created in it.
    """
    path = lock_path(folder)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise HpstudyError(f"{path}: cannot open the lock file ({err.strerror or err})") from None
    try:
        take(fd, folder)
        with suppress(OSError):  # only for the message a second writer gets
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        yield
        with suppress(OSError):  # a clean end leaves no holder named (a killed one's is stale)
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def check_free(folder: Path) -> None:
    """Refuse now, before any work, if another process holds `folder`'s lock; creates nothing.

    A probe only: `hold` is what keeps the folder, and refuses in the same words.
    """
    path = lock_path(folder)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # no lock file (or an unreadable one): `hold` decides
    try:
        take(fd, folder)
    finally:
        os.close(fd)


def is_held(folder: Path) -> bool:
    """Whether a `study run` holds `folder`'s lock now (a probe: takes and drops it at once)."""
    try:
        fd = os.open(lock_path(folder), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # a file system without locks: nobody can be said to hold it
        return False
    finally:
        os.close(fd)  # releases the probe's lock
    return False


def held_since(folder: Path) -> float | None:
    """When the `study run` that holds `folder`'s lock took it (the lock file's time: the
    holder writes its pid on taking it); None when no one holds it."""
    if not is_held(folder):
        return None
    try:
        return lock_path(folder).stat().st_mtime
    except OSError:
        return None


def take(fd: int, folder: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise HpstudyError(
            f"{folder}: another `study run` is writing this study folder "
            f"({holder(lock_path(folder))}); wait for it to end, or stop it and run again"
        ) from None
    except OSError as err:  # a file system without locks
        raise HpstudyError(
            f"{lock_path(folder)}: cannot lock ({err.strerror or err}); "
            "use a study folder on a file system with locks"
        ) from None


def holder(path: Path) -> str:
    """`process PID on HOST` as the holder wrote it, or as much as can be read."""
    try:
        # 200 bytes at most, without waiting: the lock may have been replaced by a device
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            head = os.read(fd, 200) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
        finally:
            os.close(fd)
        fields = head.decode("utf-8", "replace").split()
    except OSError:
        fields = []
    if fields and fields[0].isdigit():
        host = fields[1] if len(fields) > 1 and fields[1].isprintable() else "an unknown host"
        return f"process {fields[0]} on {host}"
    return "a process that has not yet written its pid"
