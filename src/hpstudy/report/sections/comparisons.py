"""A stage's comparisons: its winner against every other setting (difference, 95 % interval,
p-value, P(better on a new seed)) as selection recorded them, a table and a figure."""

from __future__ import annotations

from hpstudy.report import figures
from hpstudy.report.blocks import Block, Image, NamedTable, Para, Rendered, Table
from hpstudy.report.text import DASH, cell, fmt_interval, num, text
from hpstudy.study.analysis import StageResult

CSV_HEADER = ["setting", "difference", "ci95_lo", "ci95_hi", "p_value", "prob_better",
              "seeds", "test", "images_ci95_lo", "images_ci95_hi", "prob_better_lo",
              "prob_better_hi", "decision_lo", "decision_hi", "setting_lost",
              "winner_lost"]  # fmt: skip


def share(prob: float | None, ci: list[float] | None) -> str:
    """The share of seeds the winner won, with its exact interval over seeds."""
    if prob is None:
        return DASH
    return f"{prob:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def looks_words(stage: StageResult) -> str:
    if stage.looks <= 1:
        return ""
    return f" and for {stage.looks} looks of `--until-decided` (α spent {stage.alpha_spent:.3g})"


def render(stage: StageResult, selection: str, number: str, k: int, slug: str) -> Rendered:
    """Stage `k`'s comparisons; the figure is numbered after the stage's (`number`, "2b")."""
    header = ["setting", f"winner − setting ({selection})", "95 % interval", "p-value",
              "P(winner better on a new seed)", "seeds", "test", "95 % interval, these images",
              "diverged or failed (setting / winner)"]  # fmt: skip
    name = f"comparisons{k}_{slug}"
    if stage.winner is None or not stage.comparisons:
        return Rendered([], [NamedTable(name, header, [], CSV_HEADER, [])])
    winner = stage.settings[stage.winner].label
    rows, csv_rows, plotted = [], [], []
    for c in stage.comparisons:
        rows.append([
            text(c.setting), cell(c.difference, "{:+.4f}".format), fmt_interval(c.ci95, True),
            cell(c.p_value, "{:.3g}".format), share(c.prob_better, c.prob_better_ci95),
            str(c.seeds) if c.ci95 else DASH, text(c.test), fmt_interval(c.images_ci95, True),
            f"{c.setting_lost} / {c.winner_lost}",
        ])  # fmt: skip
        csv_rows.append([c.setting, num(c.difference), num(c.ci95 and c.ci95[0]),
                         num(c.ci95 and c.ci95[1]), num(c.p_value), num(c.prob_better),
                         c.seeds, c.test, num(c.images_ci95 and c.images_ci95[0]),
                         num(c.images_ci95 and c.images_ci95[1]),
                         num(c.prob_better_ci95 and c.prob_better_ci95[0]),
                         num(c.prob_better_ci95 and c.prob_better_ci95[1]),
                         num(c.decision_ci and c.decision_ci[0]),
                         num(c.decision_ci and c.decision_ci[1]), c.setting_lost,
                         c.winner_lost])  # fmt: skip
        if c.ci95 is not None and c.difference is not None:
            plotted.append((c.setting, c.difference, (c.ci95[0], c.ci95[1])))
    one_seed = all(c.seeds <= 1 for c in stage.comparisons)
    decided = (
        "**decided**: every interval, widened for the comparisons with the winner "
        f"(Bonferroni){looks_words(stage)}, lies on the winner's side" if stage.decided else
        "**not decided** at one seed: these intervals are about these validation images "
        "and this seed only; seed noise is not measured (`--seeds 3` measures it)" if one_seed
        else "**not decided**: an interval, widened for the comparisons with the winner "
        f"(Bonferroni){looks_words(stage)}, reaches the other side of 0 or could not be made"
    )  # fmt: skip
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
