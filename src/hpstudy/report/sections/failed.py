"""The failed runs: where they failed, with which seed, and why; the next `study run` retries them.

An incomplete study lists them right under its title (UNDER_TITLE), any other study
after its runs table (AFTER_RUNS).
"""

from __future__ import annotations

from hpstudy.report.blocks import Block, FigureNumbers, Heading, Para, Rendered, Section, Table
from hpstudy.report.text import DASH, code, plural, text
from hpstudy.study.analysis import Analysis

FAILED_TABLE_HEADER = ["stage", "setting", "seed", "run", "error"]


def failed_blocks(a: Analysis, level: int) -> list[Block]:
    if not a.failed:
        return []
    rows = [
        [text(f.stage), text(f.setting), str(f.seed), code(f.run_hash), text(f.error or DASH)]
        for f in a.failed
    ]
    return [
        Heading("Failed runs", level),
        Para(f"{plural(len(a.failed), 'run')} failed; the next `hpstudy study run` retries them."),
        Table(FAILED_TABLE_HEADER, rows),
    ]


def under_title(a: Analysis, numbers: FigureNumbers) -> Rendered:
    return Rendered(failed_blocks(a, 2) if a.status == "incomplete" else [])


def after_runs(a: Analysis, numbers: FigureNumbers) -> Rendered:
    return Rendered(failed_blocks(a, 3) if a.status != "incomplete" else [])


UNDER_TITLE = Section("failed runs (incomplete study)", under_title)
AFTER_RUNS = Section("failed runs", after_runs)
