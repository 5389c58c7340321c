"""The figures that explain a stage's field and open its section, as the published report has them:
the learning rate under cosine annealing, the Beta density mixup draws λ from.

The analysis decides which stage a figure explains and gives its data
(`StageResult.explains`); RENDERERS maps each kind (its ReportFigures number's name)
to the blocks that show it. A new explaining figure is an entry in
`hpstudy.study.analysis.EXPLAINERS` and one here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath

from hpstudy.report import figures
from hpstudy.report.blocks import Block, Image, Para
from hpstudy.report.text import text
from hpstudy.study.analysis import BetaDensityFigure, LrScheduleFigure


def lr_schedule(data: LrScheduleFigure, number: int) -> list[Block]:
    """The learning rate a cosine run of this stage recorded, beside eq. (2)."""
    if data.run_hash is None or data.run_dir is None:
        return [Para(f"Figure {number} skipped: no cosine-schedule run has recorded an epoch.")]
    fig = figures.lr_schedule(
        number, data.epochs, data.lrs, data.run_hash,
        lr_max=data.lr_max, run_epochs=data.run_epochs, warmup_epochs=data.warmup_epochs,
    )  # fmt: skip
    return [Image(
        f"figures/fig{number}_cosine_lr.png",
        f"Figure {number}: learning rate per epoch as recorded in "
        f"`{PurePosixPath(data.run_dir).name}/metrics.csv` under cosine annealing, beside eq. (2).",
        fig,
    )]  # fmt: skip


def mixup_beta(data: BetaDensityFigure, number: int) -> list[Block]:
    """The Beta(α, α) density for the largest finite positive α of this stage."""
    blocks: list[Block] = []
    if data.alpha is not None:
        alpha = data.alpha
        blocks.append(Image(
            f"figures/fig{number}_beta_density.png",
            f"Figure {number}: the Beta({alpha:g}, {alpha:g}) density that mixup draws λ "
            "from, with a histogram of draws; the area between a and b is P(a < λ < b).",
            figures.beta_density(number, alpha),
        ))  # fmt: skip
    if data.odd:
        which = ", ".join(text(label) for label in data.odd)
        lead = "No density" if data.alpha is not None else f"Figure {number} skipped: no density"
        blocks.append(Para(f"{lead} for α = {which} (Beta(α, α) needs a finite positive α)."))
    elif data.alpha is None:
        blocks.append(Para(f"Figure {number} skipped: no setting has a positive α."))
    return blocks


RENDERERS: dict[str, Callable[..., list[Block]]] = {
    "lr_schedule": lr_schedule,
    "mixup_beta": mixup_beta,
}
