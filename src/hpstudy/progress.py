"""What hpstudy says while it works: log lines, and a live display where someone watches.

Every module logs through `logging.getLogger("hpstudy.<module>")`; hpstudy itself installs
no handler (a NullHandler only), so a Python program that uses hpstudy prints nothing
unless it configures logging. The command line installs a `ConsoleHandler` for the
length of a command (`cli_logging`): each record one line on stderr, coloured by its
level on a terminal, plain (no control characters) anywhere else.

A study running its runs in this process opens a `StudyDisplay`: one live area with the
study's runs and epochs done, the time left at the measured speed, and the current run's
label, epoch and batch. It lives in the handler, so it is drawn only where the command
line installed one and stderr is a terminal; the training loop reaches it through the
run hook "progress" (hpstudy.run.hooks), never directly. Worker processes, Ray tasks and
SLURM jobs install a plain handler of their own at the driver's level (`log_in_worker`),
so their epoch lines come out as they do in this process.

A leaf module (logging and rich only): the command line imports it without torch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from rich.console import Console
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

ROOT_LOGGER = "hpstudy"
# third-party loggers the command line quiets: Optuna says "Trial 3 finished ..." per trial,
# which the study's own lines already say
QUIETED = {"optuna": logging.WARNING}
# colours by level on a terminal; a record's `style` extra (e.g. bold) overrides
LEVEL_STYLES = {logging.WARNING: "yellow", logging.ERROR: "red", logging.CRITICAL: "bold red"}
# how often a drawn bar reads the running loss (reading a GPU scalar waits for the GPU)
INFO_EVERY_S = 0.25

logger = logging.getLogger(__name__)


class Advance(Protocol):
    def __call__(self, steps: int = 1, info: Callable[[], str] | None = None) -> None: ...


class ConsoleHandler(logging.Handler):
    """Each record as one line on a rich console (stderr): the message exactly, styled by
    its level or its `style` extra where the console is a terminal. It holds the study's
    live display, if one is open, so lines are printed above it."""

    def __init__(self, console: Console | None = None, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.console = console if console is not None else Console(stderr=True)
        self.display: StudyDisplay | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            style = getattr(record, "style", None) or LEVEL_STYLES.get(record.levelno, "")
            self.console.print(
                record.getMessage(), style=style, markup=False, highlight=False, soft_wrap=True
            )
        except Exception:
            self.handleError(record)


def plain_console() -> Console:
    """A console that never draws: for processes whose lines interleave with others'."""
    return Console(stderr=True, force_terminal=False, no_color=True)


def active_handler() -> ConsoleHandler | None:
    """The ConsoleHandler this process installed (the command line's, or a worker's)."""
    for handler in logging.getLogger(ROOT_LOGGER).handlers:
        if isinstance(handler, ConsoleHandler):
            return handler
    return None


def install(handler: ConsoleHandler, level: int) -> Callable[[], None]:
    """Put `handler` on hpstudy's logger (instead of any ConsoleHandler there) at `level`,
    and quiet the QUIETED loggers; returns the function that undoes it all."""
    root = logging.getLogger(ROOT_LOGGER)
    replaced = [h for h in root.handlers if isinstance(h, ConsoleHandler)]
    for h in replaced:
        root.removeHandler(h)
    saved = {name: logging.getLogger(name).level for name in QUIETED}
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(level)
    for name, quiet in QUIETED.items():
        logging.getLogger(name).setLevel(max(quiet, level))

    def undo() -> None:
        root.removeHandler(handler)
        for h in replaced:
            root.addHandler(h)
        root.setLevel(old_level)
        for name, was in saved.items():
            logging.getLogger(name).setLevel(was)

    return undo


@contextmanager
def cli_logging(plain: bool = False, level: int = logging.INFO) -> Iterator[ConsoleHandler]:
    """The command line's logging for the block: hpstudy's records on stderr (`plain`: never
    drawn, whatever stderr is), Optuna's per-trial lines quieted; all undone after."""
    handler = ConsoleHandler(plain_console() if plain else None, level)
    undo = install(handler, level)
    try:
        yield handler
    finally:
        undo()


def worker_log_level() -> int | None:
    """The level at which this process shows hpstudy's records, for the workers it starts to
    show theirs the same way; None where no handler would show them (a Python program that
    configured no logging: its workers stay silent too)."""
    log: logging.Logger | None = logging.getLogger(ROOT_LOGGER)
    level = logging.getLogger(ROOT_LOGGER).getEffectiveLevel()
    while log is not None:
        if any(not isinstance(h, logging.NullHandler) for h in log.handlers):
            return level
        log = log.parent if log.propagate else None
    return None


def log_in_worker(level: int | None) -> None:
    """In a worker process (local worker, Ray task, SLURM job): plain lines on stderr at the
    driver's `level` (None: nothing), replacing what an earlier task of the process set."""
    if level is not None:
        install(ConsoleHandler(plain_console(), level), level)


def is_live() -> bool:
    """Whether a bar or a live area would be drawn: a handler is installed on a terminal."""
    handler = active_handler()
    return handler is not None and handler.console.is_terminal


def duration(seconds: float) -> str:
    """`40 s`, `12 min`, `3 h 05 min`, `3.4 days`: as precise as a prediction deserves."""
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return "unknown"
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} min"
    hours = minutes / 60
    if hours < 48:
        return f"{int(hours)} h {int(minutes % 60):02d} min"
    return f"{hours / 24:.1f} days"


class StudyDisplay:
    """The study's progress: runs and epochs done of the plan's, and time left from the speed
    (predicted before the first epoch, then measured on this study's epochs)."""

    def __init__(
        self,
        runs: int,
        epochs: int,
        runs_done: int,
        epochs_done: int,
        seconds_per_epoch: float | None,
        live: bool = True,
    ) -> None:
        self.live = live  # False: runs train elsewhere (workers, Ray), their lines come plain
        self.runs, self.epochs = runs, epochs
        self.runs_done, self.epochs_done = runs_done, epochs_done
        self.predicted = seconds_per_epoch
        self.measured: list[float] = []
        self.progress: Progress | None = None
        self.study_task = self.run_task = 0
        self.current = ""

    @property
    def seconds_left(self) -> float | None:
        per_epoch = sum(self.measured) / len(self.measured) if self.measured else self.predicted
        return None if per_epoch is None else per_epoch * max(0, self.epochs - self.epochs_done)

    def summary(self) -> str:
        left = self.seconds_left
        return (
            f"runs {self.runs_done}/{self.runs} · epochs {self.epochs_done:,}/{self.epochs:,} · "
            f"{'time left unknown' if left is None else duration(left) + ' left'}"
        )

    def start(self, console: Console) -> None:
        if not (self.live and console.is_terminal):
            return
        # bars first, at fixed widths; the words last, cut at the terminal's edge if need be
        self.progress = Progress(
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            console=console,
            transient=True,
        )
        self.study_task = self.progress.add_task(
            f"study · {self.summary()}", total=self.epochs, completed=self.epochs_done
        )
        self.run_task = self.progress.add_task("waiting for a run", total=None)
        self.progress.start()

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def redraw(self) -> None:
        if self.progress is not None:
            self.progress.update(
                self.study_task, completed=self.epochs_done, description=f"study · {self.summary()}"
            )

    def run_started(self, label: str) -> None:
        self.current = f"run {min(self.runs_done + 1, self.runs)}/{self.runs} · {label}"
        if self.progress is not None:
            self.progress.update(self.run_task, description=self.current)

    def epoch_finished(self, seconds: float) -> None:
        self.epochs_done += 1
        self.measured.append(seconds)
        self.redraw()

    def run_finished(self) -> None:
        self.runs_done += 1
        self.redraw()
        if self.progress is None:
            logger.info(f"study: {self.summary()}")

    def update(
        self, runs_done: int, epochs_done: int, seconds_per_epoch: float | None = None
    ) -> None:
        """Counts read back from the run folders (runs trained elsewhere: workers, Ray); the
        epochs timed there replace the predicted speed, as this process's own epochs do."""
        self.runs_done, self.epochs_done = runs_done, epochs_done
        if seconds_per_epoch is not None:
            self.measured = [seconds_per_epoch]
        self.redraw()
        if self.progress is None:
            logger.info(f"study: {self.summary()}")

    @contextmanager
    def run_bar(self, description: str, total: int) -> Iterator[Advance]:
        """The current run's line as the bar of one epoch: `run 3/8 · LABEL · epoch 2/4 ·
        loss 3.912`, its batches counted."""
        progress = self.progress
        assert progress is not None
        prefix = f"{self.current} · {description}"
        progress.reset(self.run_task, total=total, description=prefix)

        def update(steps: int, info: dict[str, str]) -> None:
            text = {"description": f"{prefix} · {info['info']}"} if info else {}
            progress.update(self.run_task, advance=steps, **text)

        yield throttled(update)


def open_display() -> StudyDisplay | None:
    handler = active_handler()
    return handler.display if handler is not None else None


@contextmanager
def study_display(d: StudyDisplay) -> Iterator[StudyDisplay]:
    """Show `d` for the block, where a handler is installed (else it only counts)."""
    handler = active_handler()
    if handler is None:
        yield d
        return
    handler.display = d
    d.start(handler.console)
    try:
        yield d
    finally:
        d.stop()
        handler.display = None


def run_started(label: str) -> None:
    if (display := open_display()) is not None:
        display.run_started(label)


def epoch_finished(line: str, seconds: float) -> None:
    """An epoch's labelled line, kept above the live area; the study's counts move on."""
    logger.info(line)
    if (display := open_display()) is not None:
        display.epoch_finished(seconds)


def run_finished() -> None:
    if (display := open_display()) is not None:
        display.run_finished()


def show_progress(
    runs_done: int, epochs_done: int, seconds_per_epoch: float | None = None
) -> None:
    """Counts read back from the run folders, for runs trained elsewhere (workers, Ray), and
    the seconds per epoch timed there (None: none timed yet)."""
    if (display := open_display()) is not None:
        display.update(runs_done, epochs_done, seconds_per_epoch)


def throttled(update: Callable[..., None]) -> Advance:
    """`advance(steps, info)` that reads `info` (a loss on the GPU) at most every
    INFO_EVERY_S seconds, and always on the first call."""
    last = [float("-inf")]

    def advance(steps: int = 1, info: Callable[[], str] | None = None) -> None:
        now = time.monotonic()
        if info is not None and now - last[0] >= INFO_EVERY_S:
            last[0] = now
            update(steps, {"info": info()})
        else:
            update(steps, {})

    return advance


def no_advance(steps: int = 1, info: Callable[[], str] | None = None) -> None:
    pass


@contextmanager
def bar(description: str, total: int, enabled: bool | None = None) -> Iterator[Advance]:
    """Yield `advance(steps, info)`; draws a bar only where someone watches a terminal: the
    open study display's run line, or a bar of its own.

    `info` is a callable so that what it reads (a loss on the GPU, which syncs)
    is only read when a bar is drawn, a few times a second.
    """
    handler = active_handler()
    live = handler is not None and handler.console.is_terminal
    if not (live if enabled is None else enabled and live):
        yield no_advance
        return
    assert handler is not None
    display = handler.display
    if display is not None and display.progress is not None:
        with display.run_bar(description, total) as advance:
            yield advance
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=handler.console,
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=total, info="")
        yield throttled(lambda steps, info: progress.update(task, advance=steps, **info))


def watch(render: Callable[[], str], ended: Callable[[], bool], seconds: float) -> None:
    """`render()` on stdout every `seconds` until `ended()`: redrawn in place on a terminal,
    else printed once per interval as plain text."""
    out = Console()
    if not out.is_terminal:
        while True:
            done = ended()  # first: a study ending meanwhile is still shown at its end
            text = render()
            out.print(Text(text), soft_wrap=True)
            out.file.flush()
            if done:
                return
            out.print()
            time.sleep(seconds)
    with Live(Text(render()), console=out, auto_refresh=False) as live:
        while True:
            done = ended()
            live.update(Text(render()), refresh=True)
            if done:
                return
            time.sleep(seconds)


def style(name: str) -> dict[str, Any]:
    """`extra=` for a record drawn in a rich style on a terminal:
    `logger.info(text, **style("bold"))`."""
    return {"extra": {"style": name}}


__all__ = [
    "ROOT_LOGGER",
    "ConsoleHandler",
    "StudyDisplay",
    "active_handler",
    "bar",
    "cli_logging",
    "duration",
    "epoch_finished",
    "is_live",
    "log_in_worker",
    "run_finished",
    "run_started",
    "show_progress",
    "study_display",
    "style",
    "watch",
    "worker_log_level",
]
