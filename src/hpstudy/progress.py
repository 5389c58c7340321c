"""Progress on stderr: one rich live display on a terminal, plain lines everywhere else.

A study running its runs in this process opens a `StudyDisplay`: one live area
with the study's runs and epochs done, the time left at the measured speed, and
the current run's label, epoch and batch. The training loop reports to whatever
display is open (none: a bare `hpstudy train`), so it never needs to know about
studies. Each finished epoch leaves one labelled line above the live area. When
stderr is not a terminal (CI, a log file, Ray workers, worker processes), nothing
is drawn: the same lines come out plain, without control characters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

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

console = Console(stderr=True)
# how often a drawn bar reads the running loss (reading a GPU scalar waits for the GPU)
INFO_EVERY_S = 0.25


def use_plain_lines() -> None:
    """Plain lines from now on, whatever stderr is: for worker processes, whose lines
    interleave with others' on the same terminal."""
    global console
    console = Console(stderr=True, force_terminal=False, no_color=True)


def is_live() -> bool:
    return console.is_terminal


class Advance(Protocol):
    def __call__(self, steps: int = 1, info: Callable[[], str] | None = None) -> None: ...


def log(message: str) -> None:
    console.print(message, highlight=False, soft_wrap=True)


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

    def start(self) -> None:
        if not (self.live and is_live()):
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
            log(f"study: {self.summary()}")

    def update(self, runs_done: int, epochs_done: int) -> None:
        """Counts read back from the run folders (runs trained elsewhere: workers, Ray)."""
        self.runs_done, self.epochs_done = runs_done, epochs_done
        self.redraw()
        if self.progress is None:
            log(f"study: {self.summary()}")

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


display: StudyDisplay | None = None  # the study being shown in this process, if any


@contextmanager
def study_display(d: StudyDisplay) -> Iterator[StudyDisplay]:
    global display
    display = d
    d.start()
    try:
        yield d
    finally:
        d.stop()
        display = None


def run_started(label: str) -> None:
    if display is not None:
        display.run_started(label)


def epoch_finished(line: str, seconds: float) -> None:
    """An epoch's labelled line, kept above the live area; the study's counts move on."""
    log(line)
    if display is not None:
        display.epoch_finished(seconds)


def run_finished() -> None:
    if display is not None:
        display.run_finished()


def show_progress(runs_done: int, epochs_done: int) -> None:
    """Counts read back from the run folders, for runs trained elsewhere (workers, Ray)."""
    if display is not None:
        display.update(runs_done, epochs_done)


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


@contextmanager
def bar(description: str, total: int, enabled: bool | None = None) -> Iterator[Advance]:
    """Yield `advance(steps, info)`; draws a bar only where someone watches a terminal: the
    open study display's run line, or a bar of its own.

    `info` is a callable so that what it reads (a loss on the GPU, which syncs)
    is only read when a bar is drawn, a few times a second.
    """
    if enabled is None:
        enabled = is_live()
    if not enabled:
        yield lambda steps=1, info=None: None
        return
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
        console=console,
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
