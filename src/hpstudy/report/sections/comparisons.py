"""A stage's comparisons: its winner against every other setting (difference, 95 % interval,
p-value, P(better on a new seed)) as selection recorded them, a table and a figure."""

from __future__ import annotations

from hpstudy.report import figures
from hpstudy.report.blocks import Block, Image, NamedTable, Para, Rendered, Table
from hpstudy.report.text import DASH, cell, fmt_interval, num, text
from hpstudy.study.analysis import StageResult

CSV_HEADER = ["setting", "difference", "ci95_lo", "ci95_hi", "p_value", "prob_better",
              "seeds", "test"]  # fmt: skip


def render(stage: StageResult, selection: str, number: str, k: int, slug: str) -> Rendered:
    """Stage `k`'s comparisons; the figure is numbered after the stage's (`number`, "2b")."""
    header = ["setting", f"winner − setting ({selection})", "95 % interval", "p-value",
              "P(winner better on a new seed)", "seeds", "test"]  # fmt: skip
    name = f"comparisons{k}_{slug}"
    if stage.winner is None or not stage.comparisons:
        return Rendered([], [NamedTable(name, header, [], CSV_HEADER, [])])
    winner = stage.settings[stage.winner].label
    rows, csv_rows, plotted = [], [], []
    for c in stage.comparisons:
        rows.append([
            text(c.setting), cell(c.difference, "{:+.4f}".format), fmt_interval(c.ci95, True),
            cell(c.p_value, "{:.3g}".format), cell(c.prob_better, "{:.2f}".format),
            str(c.seeds) if c.ci95 else DASH, text(c.test),
        ])  # fmt: skip
        csv_rows.append([c.setting, num(c.difference), num(c.ci95 and c.ci95[0]),
                         num(c.ci95 and c.ci95[1]), num(c.p_value), num(c.prob_better),
                         c.seeds, c.test])  # fmt: skip
        if c.ci95 is not None and c.difference is not None:
            plotted.append((c.setting, c.difference, (c.ci95[0], c.ci95[1])))
    decided = ("**decided**: every interval excludes 0" if stage.decided else
               "**not decided**: an interval contains 0 or could not be made")  # fmt: skip
    lower = " (lower is better: a negative difference favours the winner)" if (
        selection == "val_loss") else ""  # fmt: skip
    blocks: list[Block] = [
        Para(f"The winner {text(winner)} against each other setting, in {selection}{lower}; "
             f"the stage is {decided}."),
        Table(header, rows),
    ]  # fmt: skip
    if plotted:
        blocks.append(Image(
            f"figures/fig{number}_{slug}_differences.png",
            f"Figure {number}: {text(stage.name)}: {text(winner)} minus each setting in "
            f"{selection}, with its 95 % interval; an interval crossing 0 is not a difference "
            "these seeds can tell.",
            figures.stage_differences(number, stage.name, winner, selection, plotted),
        ))  # fmt: skip
    return Rendered(blocks, [NamedTable(name, header, rows, CSV_HEADER, csv_rows)])
