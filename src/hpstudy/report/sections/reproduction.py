"""Reproduction: every number the published study printed beside the measured one, the interval
it is judged on and the analysis' verdict (consistent, inside the prediction interval, outside,
cannot tell, not measured)."""

from __future__ import annotations

from hpstudy.report.blocks import FigureNumbers, Heading, NamedTable, Para, Rendered, Section, Table
from hpstudy.report.text import cell, fmt_interval, num, sig3, text
from hpstudy.study.analysis import Analysis

HEADER = ["what", "published", "measured", "95 % interval (see below)", "verdict"]
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
            "Every number the published study printed beside the measured one, taken as one "
            "more run of the same recipe. At two seeds or more the interval is the 95 % "
            "prediction interval for one new run (mean ± t·s·√(1 + 1/S) over the seeds): "
            "*consistent*: equivalent within the margin "
            f"±{a.report.equivalence_margin:g} (`[report] equivalence_margin`, two one-sided "
            "tests at 5 %; accuracies only); *inside the prediction interval*: not told "
            "apart, but not shown equivalent either; *outside*: not a run of this recipe, "
            "95 % of the time. *cannot tell*: one seed does not measure seed noise (the "
            "interval shown is that run's Wilson interval over these images; `--seeds 3` "
            "measures it)." + budget_note
        ),
        Table(HEADER, rows),
    ]
    return Rendered(blocks, [NamedTable("reproduction", HEADER, rows, CSV_HEADER, csv_rows)])


SECTION = Section("reproduction", render)
