"""The report's content as data: blocks (headings, paragraphs, tables, figures), named tables,
what a section is and renders, and the figure numbers the sections take in reading order.

Sections make these; `render` turns blocks into Markdown and HTML and `write_report`
writes the named tables and the figures. Nothing here reads or computes a result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from matplotlib.figure import Figure

from hpstudy.study.analysis import Analysis


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str  # Markdown inline: **bold**, *italic* and `code`
    note: bool = False  # a call-out (a quote in Markdown)


@dataclass
class Table:
    header: list[str]  # Markdown inline per cell; render escapes the pipes
    rows: list[list[str]]


@dataclass
class Image:
    path: str  # relative to the study folder, e.g. figures/fig2_learning_rate.png
    caption: str
    figure: Figure  # not saved yet


@dataclass
class Code:
    """A block of literal text to copy (a TOML table, a command line)."""

    text: str
    lang: str = ""


Block = Heading | Para | Table | Image | Code


@dataclass
class NamedTable:
    """A table written twice by write_report: tables/<name>.md (as shown) and <name>.csv."""

    name: str
    header: list[str]
    rows: list[list[str]]
    csv_header: list[str]
    csv_rows: list[list[Any]]


@dataclass
class Rendered:
    """What one section renders: its blocks in reading order and its named tables."""

    blocks: list[Block] = field(default_factory=list)
    tables: list[NamedTable] = field(default_factory=list)

    def __iadd__(self, other: Rendered) -> Rendered:
        self.blocks += other.blocks
        self.tables += other.tables
        return self


@dataclass
class Report:
    title: str
    blocks: list[Block]
    tables: list[NamedTable]

    @property
    def images(self) -> list[Image]:
        return [b for b in self.blocks if isinstance(b, Image)]


@dataclass(frozen=True)
class Section:
    """One section of the report: its name (for `register`) and how it renders the analysis."""

    name: str
    render: Callable[[Analysis, FigureNumbers], Rendered]


class FigureNumbers:
    """Numbers from the study file where given; the others in order of appearance, each the
    smallest positive integer no figure has taken."""

    def __init__(self, explicit: Iterable[int]) -> None:
        self.taken = set(explicit)

    def take(self, explicit: int | None) -> int:
        if explicit is not None:
            self.taken.add(explicit)
            return explicit
        n = 1
        while n in self.taken:
            n += 1
        self.taken.add(n)
        return n


__all__ = [
    "Block",
    "FigureNumbers",
    "Heading",
    "Image",
    "NamedTable",
    "Para",
    "Rendered",
    "Report",
    "Section",
    "Table",
]
