"""An Optuna stage's own figures of its trials (history, parallel coordinates, importances),
drawn by Optuna from the stage's journal; a figure it cannot draw is skipped with the reason."""

from __future__ import annotations

from pathlib import Path

from hpstudy.errors import HpstudyError
from hpstudy.report import figures
from hpstudy.report.blocks import Block, FigureNumbers, Image, Para
from hpstudy.report.text import code, slugify, text
from hpstudy.study.analysis import StageResult


def render(folder: Path, stage: StageResult, numbers: FigureNumbers) -> list[Block]:
    from hpstudy.study.search import load_stage_study

    wanted = [(what, numbers.take(None)) for what in figures.OPTUNA_PLOTS]
    try:
        # the stage's journal and study name, as the state recorded them
        optuna_study = load_stage_study(folder, stage)  # type: ignore[arg-type]
    except HpstudyError as err:
        return [Para(f"Figures {', '.join(str(n) for _, n in wanted)} skipped: {text(err)}.")]
    blocks: list[Block] = []
    for what, number in wanted:
        title = figures.OPTUNA_PLOTS[what][1]
        try:
            fig = figures.optuna_plot(number, what, optuna_study, stage.name)
        except figures.FigureSkipped as why:
            blocks.append(Para(f"Figure {number} ({title}) skipped: {text(why)}."))
            continue
        complete = figures.complete_trials(optuna_study)
        caveat = ""
        if what == "importances" and complete < figures.FEW_TRIALS:
            caveat = (f" From {complete} complete trials only: importances this few trials "
                      "rest on are a rough guide, not a ranking.")  # fmt: skip
        blocks.append(Image(
            f"figures/fig{number}_{slugify(stage.name)}_{what}.png",
            f"Figure {number}: {text(stage.name)}: {title} (Optuna), from the stage's journal "
            f"{code(stage.journal)}, {complete} complete trials.{caveat}",
            fig,
        ))  # fmt: skip
    return blocks
