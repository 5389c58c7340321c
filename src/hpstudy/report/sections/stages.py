"""One section per stage: what it varies, the figure explaining it, its table (final-epoch mean ±
std per setting, published values in brackets, the winner in bold), the winner in words, a
like-for-like warning, its curves, an Optuna stage's own figures, and its comparisons."""

from __future__ import annotations

from pathlib import Path

from hpstudy.report import figures
from hpstudy.report.blocks import (
    Block,
    FigureNumbers,
    Heading,
    Image,
    NamedTable,
    Para,
    Rendered,
    Section,
    Table,
)
from hpstudy.report.sections import comparisons, explain, optuna
from hpstudy.report.text import DASH, cell, code, fmt_stat, num, plural, sig3, slugify, text
from hpstudy.study.analysis import Analysis, SettingResult, StageResult
from hpstudy.study.state import METRICS

METRIC_TITLES = {
    "train_loss": "train loss",
    "train_acc": "train acc",
    "val_loss": "val loss",
    "val_acc": "val acc",
}
SEARCH_ORDER = (
    "; best first, pruned and unfinished runs last (pruned ones with the epoch they reached)"
)


def status_text(setting: SettingResult, epochs: int | None = None) -> str:
    """How the runs ended; a pruned run with the epoch it reached ("pruned at epoch 3/30")."""
    words = []
    for s in setting.statuses:
        word = str(s.status)
        if s.epoch is not None:
            word = f"pruned at epoch {s.epoch}" + (f"/{epochs}" if epochs else "")
        words.append(f"{s.count} {word}")
    return ", ".join(words) or DASH


def stage_table(stage: StageResult, k: int) -> tuple[Table, NamedTable]:
    published = stage.has_published
    suffix = " (published)" if published else ""
    header = ["setting", "seeds", "status", *(f"{METRIC_TITLES[m]}{suffix}" for m in METRICS)]
    csv_header = ["setting", "n", *(f"{m}_{s}" for m in METRICS for s in ("mean", "std"))]
    csv_header += [f"published_{m}" for m in METRICS] if published else []
    csv_header.append("winner")
    rows, csv_rows = [], []
    for i in stage.shown:
        setting = stage.settings[i]
        final, pub = setting.final, setting.published
        cells = [
            fmt_stat(final[m]) + (f" ({sig3(p)})" if (p := pub[m]) is not None else "")
            for m in METRICS
        ]
        row = [text(setting.label), f"{setting.n}/{len(setting.run_hashes)}",
               status_text(setting, stage.epochs), *cells]  # fmt: skip
        if i == stage.winner:
            row = [f"**{c}**" for c in row]
        rows.append(row)
        stats = [num(final[m] and getattr(final[m], s)) for m in METRICS for s in ("mean", "std")]
        pubs = [num(pub[m]) for m in METRICS] if published else []
        csv_rows.append([setting.label, setting.n, *stats, *pubs, int(i == stage.winner)])
    name = f"stage{k}_{slugify(stage.name)}"
    return Table(header, rows), NamedTable(name, header, rows, csv_header, csv_rows)


def winner_para(stage: StageResult, selection: str) -> Para:
    settings, winner = stage.settings, stage.winner
    won = settings[winner].label if winner is not None and winner < len(settings) else None
    agree = ""
    if stage.published_winner is not None and won is not None:
        agree = (" (as published)" if won == stage.published_winner
                 else f" (published: **{text(stage.published_winner)}**)")  # fmt: skip
    parts = [f"Winner: **{text(won) if won is not None else 'none yet'}**{agree}."]
    spread = f"seed spread (largest std): {cell(stage.spread)}"
    runner = stage.runner_up
    if stage.tie and won is not None and runner is not None and runner < len(settings):
        broken = f"; broken by {text(stage.tie_break)}" if stage.tie_break else ""
        parts.append(
            f"A tie on {selection} ({cell(stage.winner_mean)} each) between "
            f"{text(won)} and {text(settings[runner].label)}{broken}; {spread}."
        )
    elif stage.margin is not None:
        parts.append(f"Margin over the runner-up: {sig3(stage.margin)} {selection}; {spread}.")
    carried = stage.carried
    if carried is not None and won is not None and carried != winner and carried < len(settings):
        parts.append(
            f"hpstudy's own selection chose **{text(won)}**; following the published study "
            f"(`--follow published`), **{text(settings[carried].label)}** carries forward."
        )
    if stage.verdict and not stage.tie:  # a tie's verdict says what the sentence above says
        parts.append(stage.verdict)
    return Para(" ".join(parts))


def stage_section(a: Analysis, k: int, stage: StageResult, numbers: FigureNumbers) -> Rendered:
    """Stage `k`'s blocks, its table and its comparisons table."""
    slug = slugify(stage.name)
    what = "published value in brackets; " if stage.has_published else ""
    order = "" if stage.one_field else SEARCH_ORDER
    blocks: list[Block] = [
        Heading(f"Stage {k}: {text(stage.name)}"),
        Para(
            f"{stage.words} {code(stage.field)} for {plural(stage.epochs, 'epoch')}. "
            f"Final-epoch values, mean ± sample std over the finished seeds, {what}the winner "
            f"in bold{order}."
        ),
    ]
    # the figure a stage explains (lr under cosine, the Beta density) opens it, as in the report
    if stage.explains is not None:
        number = numbers.take(getattr(a.report.figures, stage.explains.kind))
        blocks += explain.RENDERERS[stage.explains.kind](stage.explains, number)
    table, named = stage_table(stage, k)
    blocks += [table, winner_para(stage, a.selection)]
    if stage.mismatch is not None:
        measured = ", ".join(code(m) for m in stage.mismatch.measured)
        published = ", ".join(code(p) for p in stage.mismatch.published)
        blocks.append(Para(
            f"**Not like for like:** measured with {measured}, published with {published}, so "
            "the published values in brackets are of another configuration (`hpstudy study "
            "run --follow published` measures the published one).",
            note=True,
        ))  # fmt: skip

    number = numbers.take(stage.figure)
    curves = [(s.label + (" (winner)" if i == stage.winner else ""), s.curve)
              for i, s in ((i, stage.settings[i]) for i in stage.shown)]  # fmt: skip
    if any(curve.seeds for _, curve in curves):
        blocks.append(Image(
            f"figures/fig{number}_{slug}.png",
            f"Figure {number}: {text(stage.name)}: train and validation loss and accuracy per "
            "epoch, one line per setting.",
            figures.stage_curves(number, stage.name, stage.field, curves),
        ))  # fmt: skip
    else:
        blocks.append(Para(f"Figure {number} skipped: no epoch of this stage has finished yet."))
    if stage.journal is not None:  # a stage that kept an Optuna journal
        blocks += optuna.render(Path(a.folder), stage, numbers)
    # the differences figure belongs to the stage figure (Nb): no other figure is renumbered
    compared = comparisons.render(stage, a.selection, f"{number}b", k, slug)
    return Rendered(blocks + compared.blocks, [named, *compared.tables])


def render(a: Analysis, numbers: FigureNumbers) -> Rendered:
    whole = Rendered()
    for k, stage in enumerate(a.stages, start=1):
        whole += stage_section(a, k, stage, numbers)
    return whole


SECTION = Section("stages", render)
