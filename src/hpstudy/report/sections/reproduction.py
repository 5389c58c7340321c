"""Reproduction: every number the published study printed beside the measured one, its 95 %
interval and the analysis' verdict (consistent, not, cannot tell, not measured)."""

from __future__ import annotations

from hpstudy.report.blocks import FigureNumbers, Heading, NamedTable, Para, Rendered, Section, Table
from hpstudy.report.text import cell, fmt_interval, num, sig3, text
from hpstudy.study.analysis import Analysis

HEADER = ["what", "published", "measured", "95 % interval", "verdict"]
CSV_HEADER = ["what", "published", "measured", "ci95_lo", "ci95_hi", "interval", "verdict"]


def render(a: Analysis, numbers: FigureNumbers) -> Rendered:
    if not a.has_published:
        return Rendered()
    rows, csv_rows = [], []
    for r in a.reproduction:
        ci = r.ci95
        rows.append([text(r.what), sig3(r.published), cell(r.measured, "{:.4f}".format),
                     fmt_interval(ci), r.verdict])  # fmt: skip
        csv_rows.append([r.what, num(r.published), num(r.measured), num(ci and ci[0]),
                         num(ci and ci[1]), r.interval, r.verdict])  # fmt: skip
    budget_note = (
        f" At budget `{a.budget}` the runs are shorter than the published ones, so *not* "
        "is expected." if a.budget != "full" else ""
    )  # fmt: skip
    blocks = [
        Heading("Reproduction"),
        Para(
            "Every number the published study printed beside the measured one. "
            "*consistent*: the published number lies inside the measured 95 % interval "
            "(t-interval over seeds; Wilson over the validation images for one seed's "
            "accuracy; the test interval above); *cannot tell*: one seed gives no interval "
            "for a loss or a train accuracy (add seeds)." + budget_note
        ),
        Table(HEADER, rows),
    ]
    return Rendered(blocks, [NamedTable("reproduction", HEADER, rows, CSV_HEADER, csv_rows)])


SECTION = Section("reproduction", render)
