"""Progress on stderr: a rich bar on a terminal, one plain line per step otherwise."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


class Advance(Protocol):
    def __call__(self, steps: int = 1, info: Callable[[], str] | None = None) -> None: ...


@contextmanager
def bar(description: str, total: int, enabled: bool | None = None) -> Iterator[Advance]:
    """Yield `advance(steps, info)`; draws a bar only where someone watches a terminal.

    `info` is a callable so that what it reads (a loss on the GPU, which syncs)
    is only read when a bar is drawn.
    """
    if enabled is None:
        enabled = console.is_terminal
    if not enabled:
        yield lambda steps=1, info=None: None
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

        def advance(steps: int = 1, info: Callable[[], str] | None = None) -> None:
            if info is None:
                progress.advance(task, steps)
            else:
                progress.update(task, advance=steps, info=info())

        yield advance


def log(message: str) -> None:
    console.print(message, highlight=False, soft_wrap=True)
