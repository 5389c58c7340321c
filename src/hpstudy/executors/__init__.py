"""Where runs execute. A study hands an executor jobs; when `run` returns, each job's run
folder says its outcome (summary.json: finished, diverged, pruned or failed).

Jobs are consumed lazily: `run` takes any iterable and pulls the next job only when
a worker is free to start it, after the run folders of the jobs that ended before
are written. A search stage passes a generator that asks its sampler for the next
trial at that moment and reads the results of the runs that ended.

Executors differ only in where `run_job` (and `call`, for the study's other work on
the data: its summary and the final test evaluation) is called: in this process, in
worker processes on this machine, as Ray tasks, or as SLURM jobs (submitit). A job
carries its run hooks as `HookSpec`s, resolved where it trains, so an executor knows
nothing of studies: it imports `hpstudy.run` and `hpstudy.config`, never `hpstudy.study`.

Executors are plugins: a registry of names (`register_executor`; the built-ins local, ray
and slurm; entry points of the group `hpstudy.executors`), each an `ExecutorBase`
subclass that declares its command-line options (`add_options`) and builds itself from
them (`from_options`). A new executor is one file: see docs/plugins.md.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from hpstudy import plugins
from hpstudy.errors import HpstudyError
from hpstudy.run.hooks import HookSpec, default_hooks

if TYPE_CHECKING:
    import argparse

    from hpstudy.config import RunConfig
    from hpstudy.run import Summary

T = TypeVar("T")
EXECUTOR_GROUP = "hpstudy.executors"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One run to train: its config, its folder, its label in progress lines (`stage 2
    schedule=cosine seed 0`) and its hooks (None: `default_hooks(label)`, TensorBoard and
    the epoch lines). Plain data: it is pickled to worker processes, Ray tasks, SLURM jobs."""

    config: RunConfig
    run_dir: Path
    label: str = ""
    hooks: tuple[HookSpec, ...] | None = None


@dataclass(frozen=True)
class DataOptions:
    root: str | None
    verify: bool


class Executor(Protocol):
    """What a study needs of an executor. `ExecutorBase` gives every method but `run` and
    `call` a default."""

    # True where jobs train in this process (their progress can be drawn live here)
    in_process: bool
    # True where a process trains run after run and keeps its compiled model for the next
    reuses_compiled: bool

    def open(self, study_dir: Path) -> None:
        """Called once by a study, before any `call` or `run`, with its folder: where the
        executor may keep files of its own (slurm: its job logs)."""

    def device_type(self) -> str:
        """cpu or cuda: where runs will execute, so their precision can be resolved."""

    def run(self, jobs: Iterable[Job]) -> None:
        """Run every job (`run_job` where it trains), pulling the next one from `jobs` only
        when it can start. A job's failure is recorded in its run folder, never raised."""

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args, DEVICE)` where runs run: the device name the runs use there (a str, or
        None for auto) is APPENDED as the last positional argument, so every function a
        study ships this way ends in a `device` parameter. It is the study's other work on
        the data (its summary, the speed, the test evaluation), for a driver that may have
        no data and no GPU. `fn` and `args` must pickle (top-level functions, plain data);
        its one-line errors (HpstudyError) come back as they are."""

    def runs_at_once(self) -> int:
        """How many runs train at once at most (the cost block's concurrency)."""

    def call_at_once(self, fn: Callable[..., T], *args: Any) -> list[T]:
        """`fn(*args, DEVICE)` in each of `runs_at_once()` places at the same moment, as that many
        runs would train (how fast each run goes while the others share its device)."""

    def close(self) -> None:
        """Release what the executor started (a local Ray)."""


class OptionGroup:
    """An argparse group that remembers the options added to it: the command line refuses
    an executor's options given with another executor."""

    def __init__(self, group: Any) -> None:
        self.group = group
        self.actions: list[argparse.Action] = []

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = self.group.add_argument(*args, **kwargs)
        self.actions.append(action)
        return action


class ExecutorBase:
    """Defaults for an executor: no options, nothing to open or close, runs elsewhere.

    A subclass sets `summary` (its line in `--executor`'s help), implements `run` and
    `call`, and where it takes options, `add_options` (argparse options, best prefixed by
    its name: `--slurm-time`) and `from_options` (which receives them by their dests).
    """

    summary: ClassVar[str] = ""
    in_process: bool = False
    # whether a process trains several runs and keeps its compiled model across them (else
    # every run with `compile` compiles: the cost block counts it so)
    reuses_compiled: ClassVar[bool] = False

    def __init__(self, options: DataOptions, *, device: str | None = None) -> None:
        self.options = options
        self.device = device

    @classmethod
    def add_options(cls, group: OptionGroup) -> None:
        """Add this executor's command-line options to `group` (none by default)."""

    @classmethod
    def from_options(
        cls, options: DataOptions, device: str | None, values: dict[str, Any]
    ) -> Executor:
        """The executor for the data `options`, the runs' `device` (None: auto) and its own
        options' `values` (by dest; Python callers pass the same keywords)."""
        return cls(options, device=device, **values)  # type: ignore[return-value]

    def open(self, study_dir: Path) -> None:
        pass

    def close(self) -> None:
        pass

    def device_type(self) -> str:
        from hpstudy.run import resolve_device

        return resolve_device(self.device or "auto").type

    def runs_at_once(self) -> int:
        """One run at a time, unless the executor says otherwise: the cost block then adds
        the runs' times up."""
        return 1

    def call_at_once(self, fn: Callable[..., T], *args: Any) -> list[T]:
        return [self.call(fn, *args)]  # type: ignore[attr-defined]


ExecutorClass = type[ExecutorBase]

# name -> class, or the "module:attr" of one (imported when first asked for)
_EXECUTORS: dict[str, ExecutorClass | str] = {
    "local": "hpstudy.executors.local:LocalExecutor",
    "ray": "hpstudy.executors.ray:RayExecutor",
    "slurm": "hpstudy.executors.slurm:SlurmExecutor",
}


def register_executor(name: str, factory: ExecutorClass | str) -> None:
    """Make `--executor NAME` (and `make_executor(NAME, ...)`) build `factory`: a class like
    ExecutorBase's, or its "module:attr" reference (imported when first asked for)."""
    if not name or plugins.is_reference(name):
        raise HpstudyError(f"executor name {name!r}: a plain name (no ':')")
    _EXECUTORS[name] = factory


def executor_names() -> list[str]:
    """Built-in and registered executors first, in order, then those of installed plugins."""
    plugged = [n for n in plugins.entry_point_names(EXECUTOR_GROUP) if n not in _EXECUTORS]
    return [*_EXECUTORS, *plugged]


def executor_class(name: str) -> ExecutorClass:
    """The class `--executor NAME` builds, imported now; one line for a name nobody knows."""
    found: Any = _EXECUTORS.get(name)
    if found is None:
        found = plugins.load_entry_point(EXECUTOR_GROUP, name)
    if found is None:
        known = ", ".join(executor_names())
        raise HpstudyError(f"executor: must be one of {known} (got {name!r})")
    if isinstance(found, str):  # looked up each time: a module reloaded (or patched) counts
        found = plugins.load_object(found, f"executor {name!r}")
    return found  # type: ignore[no-any-return]


def make_executor(
    name: str, options: DataOptions, *, device: str | None = None, **values: Any
) -> Executor:
    """The executor `name` for these data options and device; `values` are its own options
    (local: devices, runs_per_device; ray: address; slurm: slurm_cluster, slurm_time, ...)."""
    return executor_class(name).from_options(options, device, values)


def open_executor(
    executor: str | Executor, options: DataOptions, study_dir: Path, device: str | None = None
) -> Executor:
    """A study's executor, given by name or as an instance, opened on the study's folder."""
    if isinstance(executor, str):
        executor = make_executor(executor, options, device=device)
    executor.open(study_dir)
    return executor


def run_job(job: Job, options: DataOptions, device: str | None = None) -> Summary:
    """Train one job, its hooks resolved here; a failure is recorded in its run folder,
    never raised."""
    from hpstudy.run import train

    config = job.config if device is None else job.config.model_copy(update={"device": device})
    try:
        return train(
            config,
            job.run_dir,
            root=options.root,
            verify=options.verify,
            hooks=job.hooks if job.hooks is not None else default_hooks(job.label or None),
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
    return plugins.first_line(err)


def record_failure(job: Job, message: str, details: str = "") -> Summary:
    from hpstudy.run import RunDir

    summary = RunDir(job.run_dir).record_failure(job.config.run_hash(), message, details)
    logger.error(f"{job.label or job.run_dir.name}: failed: {message}")
    return summary


__all__ = [
    "EXECUTOR_GROUP",
    "DataOptions",
    "Executor",
    "ExecutorBase",
    "Job",
    "OptionGroup",
    "describe",
    "executor_class",
    "executor_names",
    "first_line",
    "make_executor",
    "open_executor",
    "record_failure",
    "register_executor",
    "run_job",
]
