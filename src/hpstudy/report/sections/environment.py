"""The environment the study ran in, and every distinct run: status, epochs, time, speed, size."""

from __future__ import annotations

from hpstudy.report.blocks import (
    Block,
    FigureNumbers,
    Heading,
    NamedTable,
    Rendered,
    Section,
    Table,
)
from hpstudy.report.text import DASH, cell, code, fmt_seconds, num, text
from hpstudy.study.analysis import Analysis

RUN_TABLE_HEADER = ["run", "stage: setting", "seed", "status", "epochs done", "wall time",
                    "images/s", "parameters", "MACs/image"]  # fmt: skip
RUN_CSV_HEADER = ["run_hash", "stages", "seed", "status", "epochs_done", "train_seconds",
                  "images_per_s", "parameters", "macs_per_image"]  # fmt: skip


def render(a: Analysis, numbers: FigureNumbers) -> Rendered:
    rows, csv_rows = [], []
    for run in a.runs:
        macs = run.macs_per_image
        rows.append([
            code(run.run_hash), "; ".join(text(x) for x in run.stages), str(run.seed),
            str(run.status), str(run.epochs_done), fmt_seconds(run.train_seconds),
            cell(run.images_per_s, "{:,.0f}".format), cell(run.parameters, "{:,}".format),
            cell(macs and macs / 1e6, "{:.1f} M".format),
        ])  # fmt: skip
        csv_rows.append([
            run.run_hash, "; ".join(run.stages), run.seed, str(run.status), run.epochs_done,
            num(run.train_seconds), num(run.images_per_s),
            "" if run.parameters is None else run.parameters, "" if macs is None else macs,
        ])  # fmt: skip
    blocks: list[Block] = [
        Heading("Environment"),
        Table(["", "value"], [[text(k), text(v or DASH)] for k, v in a.environment.items()]),
        Heading("Runs", 3),
        Table(RUN_TABLE_HEADER, rows),
    ]
    return Rendered(blocks, [NamedTable("runs", RUN_TABLE_HEADER, rows, RUN_CSV_HEADER, csv_rows)])


SECTION = Section("environment", render)
