"""The report's sections, in reading order: each renders the analysis into blocks and named tables.

One module per section; each exposes a `Section` (a name and a `render(analysis,
numbers) -> Rendered`) and this registry lists them in reading order. A section
computes nothing: every number and verdict comes from `hpstudy.study.analysis`;
it chooses words, formats numbers, draws figures from the analysis' data and
takes figure numbers in reading order. A new section is one module and one
`register` call (before a named section, or at the end).
"""

from __future__ import annotations

from hpstudy.report.blocks import FigureNumbers, Rendered, Report, Section
from hpstudy.report.sections import (
    data,
    environment,
    export,
    failed,
    final,
    reproduction,
    stages,
    title,
)
from hpstudy.study.analysis import Analysis

SECTIONS: list[Section] = [
    title.SECTION,
    failed.UNDER_TITLE,  # an incomplete study lists its failed runs first
    title.OVERVIEW,
    data.SECTION,
    stages.SECTION,
    final.SECTION,
    export.SECTION,
    reproduction.SECTION,
    environment.SECTION,
    failed.AFTER_RUNS,  # any other study lists them with the runs
]


def register(section: Section, *, before: str | None = None) -> Section:
    """Add `section` to the report, before the section named `before` (default: at the end)."""
    names = [s.name for s in SECTIONS]
    if section.name in names:
        raise ValueError(f"report section {section.name!r} is registered already")
    if before is not None and before not in names:
        raise ValueError(f"report section {before!r} does not exist (sections: {names})")
    SECTIONS.insert(names.index(before) if before else len(SECTIONS), section)
    return section


def reserved_numbers(analysis: Analysis) -> list[int]:
    """The figure numbers the study file gives: no other figure may take them."""
    wanted = analysis.report.figures
    explicit = [wanted.class_proportions, *(s.figure for s in analysis.stages)]
    explicit += [getattr(wanted, s.explains.kind) for s in analysis.stages if s.explains]
    return [n for n in explicit if n is not None]


def build(analysis: Analysis) -> Report:
    """The whole report: every section's blocks in reading order, and its tables."""
    numbers = FigureNumbers(reserved_numbers(analysis))
    whole = Rendered()
    for section in SECTIONS:
        whole += section.render(analysis, numbers)
    heading = f"{analysis.report.title or analysis.name}: hpstudy report"
    return Report(title=heading, blocks=whole.blocks, tables=whole.tables)


__all__ = ["SECTIONS", "Section", "build", "register"]
