"""The report's content: blocks (headings, paragraphs, tables, figures) and table data per section.

It turns a read Study into a `Report`: the blocks in reading order, the named
tables (shown in Markdown and kept at full precision for CSV) and the figures
as unsaved matplotlib Figures inside Image blocks. It writes no file: that is
`write_report`'s job. A study need not be finished: every missing value is "—".
Nothing of the published study is assumed: published numbers, notes and figure
numbers come from the state's `report`, and a study without them gets none.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from matplotlib.figure import Figure

from hpstudy.errors import HpstudyError
from hpstudy.report import figures
from hpstudy.report.read import Run, Study
from hpstudy.run import RunStatus
from hpstudy.study.compare import seed_mean_interval, wilson
from hpstudy.study.kinds import StageKind, find_kind
from hpstudy.study.select import summarise
from hpstudy.study.spec import format_value
from hpstudy.study.state import METRICS, SettingState, StageState, Stat, StudyState

METRIC_TITLES = {
    "train_loss": "train loss",
    "train_acc": "train acc",
    "val_loss": "val loss",
    "val_acc": "val acc",
}
BETTER = {"val_acc": "highest", "val_loss": "lowest"}
SEARCH_ORDER = (
    "; best first, pruned and unfinished runs last (pruned ones with the epoch they reached)"
)
DASH = "—"


def kind_of(stage: StageState) -> type[StageKind]:
    """The stage's kind, asked how to word and order it; one not installed here (a plugin
    of the process that ran the study) is worded as any several-field stage."""
    try:
        return find_kind(stage.kind) or StageKind
    except HpstudyError:  # a plugin that fails to load here: the report still reads
        return StageKind
FINAL_CONFIG_SHOWN = ("lr", "schedule", "weight_decay", "mixup_alpha", "epochs")
RUN_TABLE_HEADER = ["run", "stage: setting", "seed", "status", "epochs done", "wall time",
                    "images/s", "parameters", "MACs/image"]  # fmt: skip
FAILED_TABLE_HEADER = ["stage", "setting", "seed", "run", "error"]


# ---------------------------------------------------------------- blocks of content


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str  # Markdown inline: **bold**, *italic* and `code`
    note: bool = False  # a call-out (a quote in Markdown)


@dataclass
class Table:
    header: list[str]  # Markdown inline per cell; render escapes the pipes
    rows: list[list[str]]


@dataclass
class Image:
    path: str  # relative to the study folder, e.g. figures/fig2_learning_rate.png
    caption: str
    figure: Figure  # not saved yet


Block = Heading | Para | Table | Image


@dataclass
class NamedTable:
    """A table written twice by write_report: tables/<name>.md (as shown) and <name>.csv."""

    name: str
    header: list[str]
    rows: list[list[str]]
    csv_header: list[str]
    csv_rows: list[list[Any]]


@dataclass
class Report:
    title: str
    blocks: list[Block]
    tables: list[NamedTable]

    @property
    def images(self) -> list[Image]:
        return [b for b in self.blocks if isinstance(b, Image)]


# ---------------------------------------------------------------- numbers and text


def sig3(x: float) -> str:
    """3 significant figures with trailing zeros kept, as the report prints them (0.450, 1.00)."""
    if not math.isfinite(x):
        return str(x)
    text = f"{x:#.3g}"
    return text if "e" in text else text.rstrip(".")


def fmt_stat(s: Stat | None) -> str:
    """`mean ± std`, the std to the mean's decimals (but never shown as a bare zero)."""
    if s is None:
        return DASH
    mean = sig3(s.mean)
    if s.n < 2:
        return mean
    if "e" in mean:
        return f"{mean} ± {s.std:.2g}"
    decimals = len(mean.split(".")[1]) if "." in mean else 0
    std = f"{s.std:.{decimals}f}"
    if float(std) == 0 and s.std > 0:
        std = f"{s.std:.1g}"
    return f"{mean} ± {std}"


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return DASH
    if s < 120:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def num(x: float | None) -> str:
    """A CSV cell: full precision, empty when missing."""
    return "" if x is None else repr(float(x))


def cell(x: Any, fmt: Callable[[Any], str] = sig3) -> str:
    """A Markdown cell: formatted, or a dash when the value is missing."""
    return DASH if x is None else fmt(x)


def plural(n: int | None, word: str) -> str:
    return f"{DASH} {word}s" if n is None else f"{n} {word}" + ("" if n == 1 else "s")


def slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "stage"


def text(s: Any) -> str:
    """Plain text (a label, a name, an error) made safe as Markdown inline: one line, literal."""
    one_line = " ".join(str(s).split())
    escaped = re.sub(r"([\\`*\[\]<>])", r"\\\1", one_line)
    # an underscore inside a word (val_loss) is literal in CommonMark: escape only the others
    return re.sub(r"(?<!\w)_|_(?!\w)", r"\\_", escaped)


def code(s: Any) -> str:
    """`s` as a code span, long enough to hold any backticks inside it."""
    s = " ".join(str(s).split())
    ticks = "`" * (max((len(m) for m in re.findall(r"`+", s)), default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{ticks}{pad}{s}{pad}{ticks}"


# ---------------------------------------------------------------- figure numbers


class FigureNumbers:
    """Numbers from the study file where given; the others in order of appearance, each the
    smallest positive integer no figure has taken."""

    def __init__(self, explicit: Iterable[int]) -> None:
        self.taken = set(explicit)

    def take(self, explicit: int | None) -> int:
        if explicit is not None:
            self.taken.add(explicit)
            return explicit
        n = 1
        while n in self.taken:
            n += 1
        self.taken.add(n)
        return n


# ---------------------------------------------------------------- per-setting results


def published_of(setting: SettingState) -> dict[str, float | None]:
    p = setting.published
    return {m: getattr(p, m) if p is not None else None for m in METRICS}


def stage_has_published(stage: StageState) -> bool:
    return any(v is not None for s in stage.settings for v in published_of(s).values())


def study_has_published(state: StudyState) -> bool:
    return (
        any(stage_has_published(stage) for stage in state.stages)
        or state.report.published_test_top1 is not None
        or state.report.published_test_loss is not None
    )


def setting_finals(setting: SettingState, runs: list[Run]) -> dict[str, Stat | None]:
    """Final-epoch stats per metric over the finished seeds, from their metrics rows."""
    rows = [r.rows[-1] for r in runs if r.finished and r.rows]
    if not rows:
        # run folders gone (a copied state only): fall back on the study's own numbers
        return {m: (setting.final or {}).get(m) for m in METRICS}
    return {m: summarise([row[m] for row in rows if m in row]) for m in METRICS}


def status_text(runs: list[Run], epochs: int | None = None) -> str:
    """How the runs ended; a pruned run with the epoch it reached ("pruned at epoch 3/30")."""
    def word(r: Run) -> str:
        if r.status != RunStatus.PRUNED:
            return str(r.status)
        reached = r.summary.epochs_done if r.summary else len(r.rows)
        return f"pruned at epoch {reached}" + (f"/{epochs}" if epochs else "")

    counts = Counter(word(r) for r in runs)
    return ", ".join(f"{n} {status}" for status, n in counts.items()) or DASH


def curve_rows(runs: list[Run]) -> list[list[dict[str, float]]]:
    """Finished seeds when there are any (as in the table), else whatever has epochs so far."""
    finished = [r.rows for r in runs if r.finished and r.rows]
    return finished or [r.rows for r in runs if r.rows]


def as_alpha(value: Any) -> float:
    """A mixup_alpha setting value as a float; NaN for anything that is not a number."""
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def is_cosine(setting: SettingState) -> bool:
    return "cosine" in (setting.value, setting.label)


# ---------------------------------------------------------------- sections


def failed_blocks(study: Study, level: int) -> list[Block]:
    failed = study.state.failed_runs()
    if not failed:
        return []
    rows = [
        [text(stage.name), text(setting.label), str(entry.seed), code(entry.run_hash),
         text(entry.error or study.run(entry).error or DASH)]
        for stage, setting, entry in failed
    ]  # fmt: skip
    return [
        Heading("Failed runs", level),
        Para(f"{plural(len(failed), 'run')} failed; the next `hpstudy study run` retries them."),
        Table(FAILED_TABLE_HEADER, rows),
    ]


def title_blocks(study: Study) -> list[Block]:
    state = study.state
    settings = sum(len(s.settings) for s in state.stages)
    entries = sum(len(st.runs) for s in state.stages for st in s.settings)
    distinct = len(study.runs)
    blocks: list[Block] = [
        Heading(f"{text(state.report.title or state.name)} (budget {text(state.budget)})", 1)
    ]
    if state.status == "incomplete":
        failed = len(state.failed_runs())
        which = f": {plural(failed, 'run')} failed (listed below)" if failed else ""
        blocks.append(Para(
            f"**This study is incomplete**{which}; running `hpstudy study run` again retries "
            "failed runs. Tables and figures show the runs done so far.",
            note=True,
        ))  # fmt: skip
        blocks += failed_blocks(study, 2)
    elif state.status != "finished":
        blocks.append(Para(
            f"**This study is not finished** (status: {state.status}): tables and figures "
            "show the runs done so far.",
            note=True,
        ))  # fmt: skip
    blocks += [Para(note) for note in state.report.notes]
    so_far = "" if state.status == "finished" else " so far"
    how = (
        "one hyperparameter at a time, each keeping the winner of the one before"
        if all(kind_of(s).one_field for s in state.stages)
        else "each keeping the winners of the ones before"
    )
    grown = (f", more in stages not decided at {len(state.seeds)} (`--until-decided "
             f"{state.until_decided}`)" if state.until_decided else "")  # fmt: skip
    if state.follow == "published":
        blocks.append(Para(
            "Each stage starts from the **published** winners of the stages before it "
            "(`--follow published`), so every table measures the published configurations; "
            "each stage still says what hpstudy's own selection chose."
        ))  # fmt: skip
    named = f"Study {code(state.name)}: " if state.report.title else ""
    blocks.append(Para(
        f"{named}{plural(len(state.stages), 'stage')}{so_far}, {how}: {settings} settings × "
        f"{len(state.seeds)} seed(s) {state.seeds}{grown} = {entries} runs, {distinct} distinct "
        f"({entries - distinct} reused, not trained again). The winner of a stage has the "
        f"{BETTER[state.selection]} mean `{state.selection}` at the final epoch, on the "
        "validation split."
    ))  # fmt: skip
    if state.budget in BUDGET_NOTES:
        blocks.append(Para(BUDGET_NOTES[state.budget]))
    if state.budget != "full" and study_has_published(state):
        blocks.append(Para(
            f"Budget `{state.budget}` shortens runs and data: the published values in "
            "brackets are from the full study, a reference rather than a target."
        ))  # fmt: skip
    return blocks


# what a cheaper budget's numbers can and cannot say
BUDGET_NOTES = {
    "smoke": "Budget `smoke` checks the plumbing, not the results: every run and every step of "
    "the study is exercised on a few thousand images for one or two epochs, so its numbers "
    "say that the study runs end to end, not which setting is better.",
    "quick": "Budget `quick` trains on a subset of the images for a fraction of the epochs, so "
    "every healthy run ends well above chance but far below the full study: its winners are "
    "a first hint, not the full study's answer.",
}


def data_blocks(study: Study, numbers: FigureNumbers) -> list[Block]:
    d = study.state.data
    # budgets train on subsets of the split: say how many images the runs really saw
    limits = sorted({(r.config.limit_train, r.config.limit_val)
                     for r in study.runs.values() if r.config is not None},
                    key=lambda tv: (tv[0] or 0, tv[1] or 0))  # fmt: skip
    used = "; ".join(f"{cell(t, '{:,}'.format)} / {cell(v, '{:,}'.format)}" for t, v in limits
                     if (t, v) != (None, None))  # fmt: skip

    def vec(values: list[float]) -> str:
        return ", ".join(f"{v:.4f}" for v in values) if values else DASH

    rows = [
        ["train / val / test images", f"{d.train_size:,} / {d.val_size:,} / {d.test_size:,}"],
        ["mean (R, G, B)", vec(d.mean)],
        ["std (R, G, B)", vec(d.std)],
        ["val indices sha256", code(d.val_indices_sha256)],
    ]
    if used:
        rows.insert(1, ["train / val images used by the runs (budget)", used])
    blocks: list[Block] = [Heading("Data"), Table(["", "value"], rows)]
    number = numbers.take(study.state.report.figures.class_proportions)
    if d.class_proportions:
        mean = d.class_proportion_mean
        blocks.append(Image(
            f"figures/fig{number}_class_proportions.png",
            f"Figure {number}: proportion of each class in the train split; red line: the "
            f"mean proportion {mean:.3f}.",
            figures.class_proportions(number, d.class_proportions),
        ))  # fmt: skip
    else:
        blocks.append(Para(f"Figure {number} skipped: the state has no class proportions."))
    return blocks


def lr_blocks(study: Study, stage: StageState, number: int) -> list[Block]:
    """The learning rate a cosine run of this stage recorded, beside eq. (2)."""
    for setting in stage.settings:
        if not is_cosine(setting):
            continue
        found = sorted((r for r in study.runs_of(setting) if r.rows), key=lambda r: not r.finished)
        if found:
            run = found[0]
            cfg = run.config
            fig = figures.lr_schedule(
                number, run.rows, run.run_hash,
                lr_max=cfg.lr if cfg else None, epochs=cfg.epochs if cfg else None,
                warmup_epochs=cfg.warmup_epochs if cfg else 0,
            )  # fmt: skip
            return [Image(
                f"figures/fig{number}_cosine_lr.png",
                f"Figure {number}: learning rate per epoch as recorded in "
                f"`{run.run_dir.name}/metrics.csv` under cosine annealing, beside eq. (2).",
                fig,
            )]  # fmt: skip
    return [Para(f"Figure {number} skipped: no cosine-schedule run has recorded an epoch.")]


def beta_blocks(stage: StageState, number: int) -> list[Block]:
    """The Beta(α, α) density for the largest finite positive α of this stage."""
    alphas = [as_alpha(s.value) for s in stage.settings]
    finite = [a for a in alphas if math.isfinite(a) and a > 0]
    odd = [s.label for s, a in zip(stage.settings, alphas, strict=True) if not math.isfinite(a)]
    blocks: list[Block] = []
    if finite:
        alpha = max(finite)
        blocks.append(Image(
            f"figures/fig{number}_beta_density.png",
            f"Figure {number}: the Beta({alpha:g}, {alpha:g}) density that mixup draws λ "
            "from, with a histogram of draws; the area between a and b is P(a < λ < b).",
            figures.beta_density(number, alpha),
        ))  # fmt: skip
    if odd:
        which = ", ".join(text(label) for label in odd)
        lead = "No density" if finite else f"Figure {number} skipped: no density"
        blocks.append(Para(f"{lead} for α = {which} (Beta(α, α) needs a finite positive α)."))
    elif not finite:
        blocks.append(Para(f"Figure {number} skipped: no setting has a positive α."))
    return blocks


def winner_para(study: Study, stage: StageState, finals: list[dict[str, Stat | None]]) -> Para:
    selection = study.state.selection
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
        stat = finals[winner].get(selection) or (settings[winner].final or {}).get(selection)
        broken = f"; broken by {text(stage.tie_break)}" if stage.tie_break else ""
        parts.append(
            f"A tie on {selection} ({cell(stat and stat.mean)} each) between "
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


def stage_blocks(
    study: Study,
    k: int,
    stage: StageState,
    numbers: FigureNumbers,
    extra: str | None,
    extra_tables: list[NamedTable],
) -> tuple[list[Block], NamedTable]:
    """Stage `k`'s section and its table (its comparisons table goes to `extra_tables`);
    `extra` ("lr" or "beta") opens it with that figure."""
    slug = slugify(stage.name)
    published = stage_has_published(stage)
    suffix = " (published)" if published else ""
    header = ["setting", "seeds", "status", *(f"{METRIC_TITLES[m]}{suffix}" for m in METRICS)]
    csv_header = ["setting", "n", *(f"{m}_{s}" for m in METRICS for s in ("mean", "std"))]
    csv_header += [f"published_{m}" for m in METRICS] if published else []
    csv_header.append("winner")
    rows, csv_rows, curves = [], [], []
    finals = [setting_finals(s, study.runs_of(s)) for s in stage.settings]
    for i in shown_order(stage, finals, study.state.selection):
        setting, final = stage.settings[i], finals[i]
        runs = study.runs_of(setting)
        pub = published_of(setting)
        n = max((s.n for s in final.values() if s), default=0)
        cells = [
            fmt_stat(final[m]) + (f" ({sig3(pub[m])})" if pub[m] is not None else "")
            for m in METRICS
        ]
        row = [text(setting.label), f"{n}/{len(runs)}", status_text(runs, stage.epochs), *cells]
        if i == stage.winner:
            row = [f"**{c}**" for c in row]
        rows.append(row)
        stats = [num(final[m] and getattr(final[m], s)) for m in METRICS for s in ("mean", "std")]
        pubs = [num(pub[m]) for m in METRICS] if published else []
        csv_rows.append([setting.label, n, *stats, *pubs, int(i == stage.winner)])
        curves.append((setting.label + (" (winner)" if i == stage.winner else ""),
                       curve_rows(runs)))  # fmt: skip
    table = NamedTable(f"stage{k}_{slug}", header, rows, csv_header, csv_rows)

    what = "published value in brackets; " if published else ""
    order = "" if kind_of(stage).one_field else SEARCH_ORDER
    blocks: list[Block] = [
        Heading(f"Stage {k}: {text(stage.name)}"),
        Para(
            f"{kind_of(stage).words} {code(stage.field)} for {plural(stage.epochs, 'epoch')}. "
            f"Final-epoch values, mean ± sample std over the finished seeds, {what}the winner "
            f"in bold{order}."
        ),
    ]
    # the figure a stage explains (lr under cosine, the Beta density) opens it, as in the report
    if extra == "lr":
        blocks += lr_blocks(study, stage, numbers.take(study.state.report.figures.lr_schedule))
    elif extra == "beta":
        blocks += beta_blocks(stage, numbers.take(study.state.report.figures.mixup_beta))
    blocks += [Table(header, rows), winner_para(study, stage, finals)]
    if flags := config_flags(study.state, k - 1):
        blocks.append(Para(
            f"**Not like for like:** measured with {flags[0]}, published with {flags[1]}, so "
            "the published values in brackets are of another configuration (`hpstudy study "
            "run --follow published` measures the published one).",
            note=True,
        ))  # fmt: skip

    number = numbers.take(stage.figure)
    if any(seeds for _, seeds in curves):
        blocks.append(Image(
            f"figures/fig{number}_{slug}.png",
            f"Figure {number}: {text(stage.name)}: train and validation loss and accuracy per "
            "epoch, one line per setting.",
            figures.stage_curves(number, stage.name, stage.field, curves),
        ))  # fmt: skip
    else:
        blocks.append(Para(f"Figure {number} skipped: no epoch of this stage has finished yet."))
    if stage.journal is not None:  # a stage that kept an Optuna journal
        blocks += optuna_blocks(study, stage, numbers)
    # the differences figure belongs to the stage figure (Nb): no other figure is renumbered
    comparison_section, comparison_table = comparison_blocks(study, stage, f"{number}b", k, slug)
    extra_tables.append(comparison_table)
    return blocks + comparison_section, table


def shown_order(
    stage: StageState, finals: list[dict[str, Stat | None]], selection: str
) -> list[int]:
    """A values stage in the study file's order; a search stage's settings best first, those
    without a finished run (pruned, diverged, failed, pending) last, in their order."""
    if kind_of(stage).one_field:
        return list(range(len(stage.settings)))
    sign = -1 if selection == "val_acc" else 1

    def key(i: int) -> tuple[int, bool, float, int]:
        stat = finals[i].get(selection)
        if stat is None or not math.isfinite(stat.mean):
            return (1, True, 0.0, i)
        return (0, i != stage.winner, sign * stat.mean, i)  # the winner heads a tie

    return sorted(range(len(stage.settings)), key=key)


def optuna_blocks(study: Study, stage: StageState, numbers: FigureNumbers) -> list[Block]:
    """Optuna's own figures of the stage's trials, read from its journal."""
    from hpstudy.study.search import load_stage_study

    wanted = [(what, numbers.take(None)) for what in figures.OPTUNA_PLOTS]
    try:
        optuna_study = load_stage_study(study.path, stage)
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
        blocks.append(Image(
            f"figures/fig{number}_{slugify(stage.name)}_{what}.png",
            f"Figure {number}: {text(stage.name)}: {title} (Optuna), from the stage's journal "
            f"{code(stage.journal)}.",
            fig,
        ))  # fmt: skip
    return blocks


def final_blocks(study: Study) -> tuple[list[Block], list[NamedTable]]:
    final, spec = study.state.final, study.state.report
    show_published = spec.published_test_top1 is not None
    header = ["run", "seed", "test top-1", "test top-5", "test loss", "test evaluations"]
    csv_header = ["run_hash", "seed", "test_loss", "test_top1", "test_top5", "test_evaluations"]
    csv_header += ["published_test_top1"] if show_published else []
    blocks: list[Block] = [Heading("Final test result")]
    if final is None:
        blocks.append(Para("The test result is **pending**: the study has not reached its final "
                           "evaluation, and the test split has not been touched."))  # fmt: skip
        return blocks, [NamedTable("final", header, [], csv_header, [])]

    loss_published = spec.published_test_loss
    top1 = final.test_top1
    within = f" (95 % interval {fmt_interval(top1.ci95)})" if top1.ci95 else ""
    measured = [
        ["test top-1", f"**{fmt_stat(top1)}**{within}", cell(spec.published_test_top1)],
        ["test top-5", fmt_stat(final.test_top5), DASH],
        ["test loss (mean cross-entropy per image)", fmt_stat(final.test_loss),
         text(loss_published) if loss_published is not None else DASH],
    ]  # fmt: skip
    if show_published:
        blocks.append(Table(["metric", "measured", "published"], measured))
    else:
        blocks.append(Table(["metric", "measured"], [row[:2] for row in measured]))
        if loss_published is not None:
            blocks.append(Para(f"Published test loss: {text(loss_published)}."))
    blocks.append(Para(test_interval_sentence(study.state)))
    shown = ", ".join(code(f"{k}={final.config[k]}") for k in FINAL_CONFIG_SHOWN
                      if k in final.config)  # fmt: skip
    blocks.append(Para(f"Final configuration: {shown or DASH}."))
    blocks.append(Para(selected_weights_text(final.config)))

    rows, csv_rows = [], []
    for run in final.runs:
        t = run.test
        rows.append([code(run.run_hash), str(run.seed), sig3(t.top1), sig3(t.top5), sig3(t.loss),
                     str(run.test_evaluations)])  # fmt: skip
        csv_rows.append([run.run_hash, run.seed, num(t.loss), num(t.top1), num(t.top5),
                         run.test_evaluations,
                         *([num(spec.published_test_top1)] if show_published else [])])  # fmt: skip
    blocks.append(Table(header, rows))
    most = max((r.test_evaluations for r in final.runs), default=0)
    if most > 1:
        touched = (f"Note: the test split was evaluated up to {most} times on a final run "
                   "(the run's test-evaluation ledger).")  # fmt: skip
    elif most == 0:
        touched = "No test evaluation is recorded for the final runs."
    else:
        touched = "The test split was evaluated once, on the final configuration only."
    blocks.append(Para(
        "Selection used the validation split only, carved out of the official training set; "
        f"the test split played no part in it. {touched}"
    ))  # fmt: skip
    tables = [NamedTable("final", header, rows, csv_header, csv_rows)]

    per_run = [r.test.superclass_top1 for r in final.runs]
    names = list(per_run[0]) if per_run else []
    if names:
        stats = {name: summarise([acc[name] for acc in per_run if name in acc]) for name in names}
        rows = [[text(name.replace("_", " ")), fmt_stat(s)] for name, s in stats.items()]
        csv_rows = [[name, num(s and s.mean), num(s and s.std), s.n if s else 0]
                    for name, s in stats.items()]  # fmt: skip
        blocks += [Para("Test top-1 per superclass (coarse label):"),
                   Table(["superclass", "top-1"], rows)]  # fmt: skip
        csv_header = ["superclass", "top1_mean", "top1_std", "n"]
        tables.append(NamedTable("superclass", ["superclass", "top-1"], rows, csv_header, csv_rows))
    export_blocks_, export_tables = export_blocks(study.export)
    return blocks + export_blocks_, tables + export_tables


def selected_weights_text(config: dict[str, Any]) -> str:
    decay = config.get("ema_decay") or 0
    if decay:
        return (f"Selected and tested weights: the exponential moving average of the weights "
                f"(decay {decay:g}), as for every run with an EMA: its validation metrics chose "
                "the winners and it was evaluated on test; the raw weights' validation metrics "
                "are in each run's `metrics.csv` (`raw_val_*`).")  # fmt: skip
    return "Selected and tested weights: the weights at the final epoch."


def export_blocks(export: dict | None) -> tuple[list[Block], list[NamedTable]]:
    """The shipped final model: size, files, the ONNX check and the CPU latency table."""
    blocks: list[Block] = [Heading("The final model, exported", 3)]
    if export is None:
        blocks.append(Para("Not exported (see `hpstudy export`; it needs "
                           "`pip install 'hpstudy[export]'`)."))  # fmt: skip
        return blocks, []
    files = ", ".join(f"`{name}` {size / 1e6:.2f} MB" for name, size in export["files"].items())
    blocks.append(Para(f"{export['parameters']:,} parameters, {export['macs_per_image']:,} "
                       f"multiply-adds per image; {files}. ONNX input: "
                       f"{text(export['onnx_input'])}."))  # fmt: skip
    if (c := export.get("check")) is not None:
        verdict = "passed" if c["passed"] else "**failed**"
        blocks.append(Para(
            f"ONNX Runtime against PyTorch on {c['images']} validation images: largest logit "
            f"difference {c['max_abs_logit_diff']:.1e} (allowed "
            f"{c['tolerance']['max_abs_logit_diff']:g}), top-1 agreement "
            f"{c['top1_agreement']:.4f} (at least {c['tolerance']['min_top1_agreement']}): "
            f"{verdict}."
        ))  # fmt: skip
    header = ["runtime", "batch 1 latency (ms, median)", "batch 256 throughput (images/s)"]
    rows, csv_rows = [], []
    for name, t in export.get("latency", {}).items():
        ms, ips = t["latency_ms_batch1_median"], t["throughput_images_per_s_batch256"]
        rows.append([name, f"{ms:.2f}", f"{ips:.0f}"])
        csv_rows.append([name, num(ms), num(ips), t["latency_runs"]])
    blocks += [Para(f"CPU timings ({export['threads']} threads):"), Table(header, rows)]
    csv_header = ["runtime", "latency_ms_batch1_median", "throughput_images_per_s_batch256",
                  "latency_runs"]  # fmt: skip
    return blocks, [NamedTable("export", header, rows, csv_header, csv_rows)]


def fmt_interval(ci95: list[float] | tuple[float, float] | None, signed: bool = False) -> str:
    if ci95 is None:
        return DASH
    f = "{:+.4f}" if signed else "{:.4f}"
    return f"[{f.format(ci95[0])}, {f.format(ci95[1])}]"


def test_interval_sentence(state: StudyState) -> str:
    """How the test interval was made and whether the published test top-1 lies inside it."""
    assert state.final is not None
    t, published = state.final.test_top1, state.report.published_test_top1
    if t.ci95 is None:
        why = (t.interval or "").removeprefix("none: ") or "no per-image test outcomes"
        return f"No interval for the test top-1: {text(why)}."
    lo, hi = t.ci95
    how = f"{text(t.interval or 'interval')}, {plural(t.n, 'run')}"
    sentence = f"The 95 % interval of the test top-1 ({how}) is {fmt_interval(t.ci95)}."
    if published is not None:
        inside = lo <= published <= hi
        sentence += (
            f" The published {published:g} lies **{'inside' if inside else 'outside'}** it"
            + (": consistent with the published result." if inside else ".")
        )
        if state.budget != "full":
            sentence += f" (Budget `{state.budget}`: the published number is a full-budget one.)"
    return sentence


def comparison_blocks(
    study: Study, stage: StageState, number: str, k: int, slug: str
) -> tuple[list[Block], NamedTable]:
    """The winner against every other setting: a table and a figure of the differences."""
    selection = study.state.selection
    header = ["setting", f"winner − setting ({selection})", "95 % interval", "p-value",
              "P(winner better on a new seed)", "seeds", "test"]  # fmt: skip
    csv_header = ["setting", "difference", "ci95_lo", "ci95_hi", "p_value", "prob_better",
                  "seeds", "test"]  # fmt: skip
    name = f"comparisons{k}_{slug}"
    if stage.winner is None or not stage.comparisons:
        return [], NamedTable(name, header, [], csv_header, [])
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
    return blocks, NamedTable(name, header, rows, csv_header, csv_rows)


def carried_index(stage: StageState) -> int | None:
    return stage.carried if stage.carried is not None else stage.winner


def config_flags(state: StudyState, k: int) -> tuple[str, str] | None:
    """("lr 0.5", "lr 0.05") when stage k's runs start from other settings than the published
    runs did (an earlier stage carried forward another setting than the published winner)."""
    stage = state.stages[k]
    if not stage_has_published(stage):
        return None
    measured, published = [], []
    for earlier in state.stages[:k]:
        carried = carried_index(earlier)
        labels = [s.label for s in earlier.settings]
        if carried is None or earlier.published_winner not in labels:
            continue
        theirs = earlier.settings[labels.index(earlier.published_winner)]
        mine = earlier.settings[carried]
        if mine.label != theirs.label and kind_of(earlier).one_field:
            measured.append(f"{earlier.field} {format_value(mine.value)}")
            published.append(f"{earlier.field} {format_value(theirs.value)}")
        elif mine.label != theirs.label:  # a search stage's label names every field
            measured.append(mine.label)
            published.append(theirs.label)
    if not measured:
        return None
    return ", ".join(code(m) for m in measured), ", ".join(code(p) for p in published)


REPRODUCTION_HEADER = ["what", "published", "measured", "95 % interval", "verdict"]


def reproduction_blocks(study: Study) -> tuple[list[Block], NamedTable | None]:
    """Every published number beside the measured one, its interval, and whether the
    published number lies inside it ("consistent") or not."""
    state = study.state
    if not study_has_published(state):
        return [], None
    rows, csv_rows = [], []

    def add(what: str, published: float, measured: float | None,
            ci: tuple[float, float] | None, how: str) -> None:  # fmt: skip
        if ci is None:
            verdict = "cannot tell" if measured is not None else "not measured"
        else:
            verdict = "consistent" if ci[0] <= published <= ci[1] else "not"
        rows.append([text(what), sig3(published), cell(measured, "{:.4f}".format),
                     fmt_interval(ci), verdict])  # fmt: skip
        csv_rows.append([what, num(published), num(measured), num(ci and ci[0]),
                         num(ci and ci[1]), how, verdict])  # fmt: skip

    val_images = state.data.val_size
    for stage in state.stages:
        for setting in stage.settings:
            pub = published_of(setting)
            runs = [r for r in study.runs_of(setting) if r.finished and r.rows]
            for metric in METRICS:
                if pub[metric] is None:
                    continue
                values = [r.rows[-1][metric] for r in runs if metric in r.rows[-1]]
                stat = summarise(values)
                ci, how = seed_mean_interval(values), "t-interval over seeds"
                if ci is None and len(values) == 1 and metric == "val_acc":
                    n = min((r.config.limit_val or val_images) if r.config else val_images
                            for r in runs)  # fmt: skip
                    ci, how = wilson(round(values[0] * n), n), "Wilson over validation images"
                add(f"{stage.name}: {setting.label} {metric}", pub[metric],  # type: ignore[arg-type]
                    stat.mean if stat else None, ci, how)  # fmt: skip
    final, published_top1 = state.final, state.report.published_test_top1
    if published_top1 is not None:
        t = final.test_top1 if final else None
        ci = (t.ci95[0], t.ci95[1]) if t and t.ci95 else None
        add("test top-1", published_top1, t.mean if t else None, ci,
            (t.interval or "") if t else "")  # fmt: skip
    budget_note = (
        f" At budget `{state.budget}` the runs are shorter than the published ones, so *not* "
        "is expected." if state.budget != "full" else ""
    )  # fmt: skip
    blocks: list[Block] = [
        Heading("Reproduction"),
        Para(
            "Every number the published study printed beside the measured one. "
            "*consistent*: the published number lies inside the measured 95 % interval "
            "(t-interval over seeds; Wilson over the validation images for one seed's "
            "accuracy; the test interval above); *cannot tell*: one seed gives no interval "
            "for a loss or a train accuracy (add seeds)." + budget_note
        ),
        Table(REPRODUCTION_HEADER, rows),
    ]
    csv_header = ["what", "published", "measured", "ci95_lo", "ci95_hi", "interval", "verdict"]
    return blocks, NamedTable("reproduction", REPRODUCTION_HEADER, rows, csv_header, csv_rows)


def environment_blocks(study: Study) -> tuple[list[Block], NamedTable]:
    env = dict(study.state.environment)
    precisions = {r.summary.precision for r in study.runs.values() if r.summary}
    env.setdefault("precision", ", ".join(sorted(p for p in precisions if p)) or DASH)
    rows, csv_rows = [], []
    for run in study.runs.values():
        s = run.summary
        ips = summarise([row["images_per_s"] for row in run.rows if "images_per_s" in row])
        macs = s.macs_per_image if s else None
        epochs_done = s.epochs_done if s else len(run.rows)
        rows.append([
            code(run.run_hash), "; ".join(text(x) for x in run.stages), str(run.seed),
            str(run.status), str(epochs_done), fmt_seconds(s.train_seconds if s else None),
            f"{ips.mean:,.0f}" if ips else DASH,
            cell(s.parameters if s else None, "{:,}".format),
            cell(macs and macs / 1e6, "{:.1f} M".format),
        ])  # fmt: skip
        csv_rows.append([
            run.run_hash, "; ".join(run.stages), run.seed, str(run.status), epochs_done,
            num(s.train_seconds if s else None), num(ips and ips.mean),
            "" if s is None or s.parameters is None else s.parameters,
            "" if macs is None else macs,
        ])  # fmt: skip
    csv_header = ["run_hash", "stages", "seed", "status", "epochs_done", "train_seconds",
                  "images_per_s", "parameters", "macs_per_image"]  # fmt: skip
    blocks: list[Block] = [
        Heading("Environment"),
        Table(["", "value"], [[text(k), text(v)] for k, v in env.items()]),
        Heading("Runs", 3),
        Table(RUN_TABLE_HEADER, rows),
    ]
    if study.state.status != "incomplete":  # an incomplete study lists them under its title
        blocks += failed_blocks(study, 3)
    return blocks, NamedTable("runs", RUN_TABLE_HEADER, rows, csv_header, csv_rows)


def extra_figures(stages: list[StageState]) -> dict[int, str]:
    """Which stage opens with which extra figure: the first stage varying `schedule` with a
    cosine setting gets the learning rate, the first varying `mixup_alpha` the Beta density."""
    extra: dict[int, str] = {}
    # a values stage's settings are the field's values; a search stage's are dicts
    plain = [(k, s) for k, s in enumerate(stages) if kind_of(s).one_field]
    cosine = [k for k, s in plain
              if s.field == "schedule" and any(is_cosine(x) for x in s.settings)]  # fmt: skip
    lr = cosine[0] if cosine else None
    beta = next((k for k, s in plain if s.field == "mixup_alpha"), None)
    if lr is not None:
        extra[lr] = "lr"
    if beta is not None:
        extra[beta] = "beta"
    return extra


def build(study: Study) -> Report:
    """The whole report: every section's blocks in reading order, and its tables."""
    state = study.state
    extra = extra_figures(state.stages)
    wanted = state.report.figures
    explicit = [wanted.class_proportions, *(s.figure for s in state.stages)]
    explicit += [wanted.lr_schedule] if "lr" in extra.values() else []
    explicit += [wanted.mixup_beta] if "beta" in extra.values() else []
    numbers = FigureNumbers(n for n in explicit if n is not None)

    blocks = title_blocks(study) + data_blocks(study, numbers)
    tables: list[NamedTable] = []
    for k, stage in enumerate(state.stages):
        comparisons: list[NamedTable] = []
        section, table = stage_blocks(study, k + 1, stage, numbers, extra.get(k), comparisons)
        blocks += section
        tables += [table, *comparisons]
    final, final_tables = final_blocks(study)
    reproduction, reproduction_table = reproduction_blocks(study)
    if reproduction_table is not None:
        final += reproduction
        final_tables.append(reproduction_table)
    env, runs_table = environment_blocks(study)
    return Report(
        title=f"{state.report.title or state.name}: hpstudy report",
        blocks=blocks + final + env,
        tables=[*tables, *final_tables, runs_table],
    )


__all__ = [
    "Block",
    "FigureNumbers",
    "Heading",
    "Image",
    "NamedTable",
    "Para",
    "Report",
    "Table",
    "build",
    "fmt_stat",
    "sig3",
]
