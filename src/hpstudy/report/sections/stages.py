"""One section per stage: what it varies, the figure explaining it, its table (final-epoch mean ±
std per setting, published values in brackets, the winner in bold), the winner in words, a
like-for-like warning, its curves, an Optuna stage's own figures, and its comparisons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
from hpstudy.study.state import METRICS, Stat

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


def searched_fields(stage: StageResult) -> list[str]:
    """A search stage's fields, a column each (a values stage has one column: its label)."""
    if stage.one_field:
        return []
    # the study file's order (state.json sorts a setting's keys), then any other key
    found: dict[str, None] = dict.fromkeys(f for f in stage.field.split(", ") if f)
    for setting in stage.settings:
        if isinstance(setting.value, dict):
            found.update(dict.fromkeys(setting.value))
    return list(found)


def full(value: Any) -> str:
    """A searched value at full precision (floats as Python writes them back exactly)."""
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def csv_stat(stat: Stat | None) -> list[str]:
    """mean and std as CSV cells; no std below two seeds, as the Markdown shows none."""
    if stat is None:
        return ["", ""]
    return [num(stat.mean), num(stat.std) if stat.n >= 2 else ""]


def stage_table(stage: StageResult, k: int) -> tuple[Table, NamedTable]:
    published = stage.has_published
    suffix = " (published)" if published else ""
    fields = searched_fields(stage)
    number = "trial" if any(s.trial is not None for s in stage.settings) else "#"
    # a values stage names a setting by its label; a search stage by its number, a column
    # per searched field
    names = [number, *fields] if fields else ["setting"]
    header = [*names, "seeds", "status", *(f"{METRIC_TITLES[m]}{suffix}" for m in METRICS)]
    csv_names = ["trial" if number == "trial" else "setting", *fields] if fields else ["setting"]
    csv_header = [*csv_names, "n", *(f"{m}_{s}" for m in METRICS for s in ("mean", "std"))]
    csv_header += [f"published_{m}" for m in METRICS] if published else []
    csv_header += ["val_acc_ci95_low", "val_acc_ci95_high", "val_acc_at_chance", "winner"]
    rows, csv_rows = [], []
    for i in stage.shown:
        setting = stage.settings[i]
        final, pub = setting.final, setting.published
        cells = [
            fmt_stat(final[m]) + (f" ({sig3(p)})" if (p := pub[m]) is not None else "")
            + (" (at chance)" if m == "val_acc" and setting.at_chance else "")
            for m in METRICS
        ]
        if fields:
            values = setting.value if isinstance(setting.value, dict) else {}
            ident = str(setting.trial if setting.trial is not None else i + 1)
            named = [ident, *(text(full(values.get(f))) or DASH for f in fields)]
            csv_named = [ident, *(full(values.get(f)) for f in fields)]
        else:
            named, csv_named = [text(setting.label)], [setting.label]
        row = [*named, f"{setting.n}/{len(setting.run_hashes)}",
               status_text(setting, stage.epochs), *cells]  # fmt: skip
        if i == stage.winner:
            row = [f"**{c}**" for c in row]
        rows.append(row)
        stats = [c for m in METRICS for c in csv_stat(final[m])]
        pubs = [num(pub[m]) for m in METRICS] if published else []
        ci = setting.val_acc_ci95 or [None, None]
        csv_rows.append([*csv_named, setting.n, *stats, *pubs, num(ci[0]), num(ci[1]),
                         int(setting.at_chance), int(i == stage.winner)])  # fmt: skip
    name = f"stage{k}_{slugify(stage.name)}"
    return Table(header, rows), NamedTable(name, header, rows, csv_header, csv_rows)


def pruned_text(stage: StageResult) -> str:
    """How many of the stage's runs its pruner stopped, and at which epochs."""
    runs = sum(len(s.run_hashes) for s in stage.settings)
    if not stage.pruned:
        return f"Pruned: none of {plural(runs, 'run')}."
    at = ", ".join(str(e) for e in stage.pruned)
    epochs = "epochs" if len(stage.pruned) > 1 else "epoch"
    n = len(stage.pruned)
    return f"Pruned: {n} of {plural(runs, 'run')}, at {epochs} {at} of {stage.epochs}."


def chance_para(a: Analysis, stage: StageResult) -> Para:
    """What guessing scores, and the settings whose val acc cannot be told from it."""
    words = (f"Chance (a uniform guess among {a.chance.classes} classes): accuracy "
             f"{sig3(a.chance.top1)}.")  # fmt: skip
    near = [stage.settings[i].label for i in stage.shown if stage.settings[i].at_chance]
    if not near:
        return Para(words)
    return Para(
        f"{words} **At chance:** the 95 % interval of the final val acc of "
        f"{', '.join(text(label) for label in near)} contains it: "
        "these runs show nothing learned (more epochs or images, or another learning rate).",
        note=True,
    )


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


def curve_label(stage: StageResult, i: int) -> str:
    """A line's name in the figure: a values stage's label; a search setting's number and
    its values, short (the table beside it has them in full)."""
    setting = stage.settings[i]
    if stage.one_field or not isinstance(setting.value, dict):
        return setting.label
    ident = f"trial {setting.trial}" if setting.trial is not None else f"#{i + 1}"
    values = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in setting.value.items())  # fmt: skip
    return f"{ident}: {values}"


def images_words(a: Analysis) -> str:
    """The images the runs trained on, where fewer than the split's."""
    used = [u.train for u in a.data.images_used if u.train is not None]
    if not used:
        return ""
    return f", {'/'.join(f'{n:,}' for n in sorted(set(used)))} train images"


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
    blocks += [table, chance_para(a, stage), winner_para(stage, a.selection)]
    if stage.journal is not None or stage.pruned:  # a search that may prune: say what it did
        blocks.append(Para(pruned_text(stage)))
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
    curves = [(curve_label(stage, i) + (" (winner)" if i == stage.winner else ""),
               stage.settings[i].curve, stage.settings[i].published)
              for i in stage.shown]  # fmt: skip
    if any(curve.seeds for _, curve, _ in curves):
        seeds = sorted({c.seeds for _, c, _ in curves if c.seeds})
        stars = (" Stars: the published final values (at the published study's own epochs)."
                 if stage.has_published else "")  # fmt: skip
        blocks.append(Image(
            f"figures/fig{number}_{slug}.png",
            f"Figure {number}: {text(stage.name)}: train and validation loss and accuracy per "
            f"epoch, one line per setting, mean over {'/'.join(map(str, seeds))} seed(s); "
            f"budget {code(a.budget)}, {plural(stage.epochs, 'epoch')}"
            f"{images_words(a)}. Dotted: chance ({sig3(a.chance.top1)}).{stars}",
            figures.stage_curves(number, stage.name, stage.field, curves, a.chance.top1,
                                 stage.epochs if stage.has_published else None),
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
