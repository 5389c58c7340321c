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

from hpstudy.report import figures
from hpstudy.report.read import Run, Study
from hpstudy.study.select import summarise
from hpstudy.study.state import METRICS, SettingState, StageState, Stat, StudyState

METRIC_TITLES = {
    "train_loss": "train loss",
    "train_acc": "train acc",
    "val_loss": "val loss",
    "val_acc": "val acc",
}
BETTER = {"val_acc": "highest", "val_loss": "lowest"}
DASH = "—"
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


def status_text(runs: list[Run]) -> str:
    counts = Counter(str(r.status) for r in runs)
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
    named = f"Study {code(state.name)}: " if state.report.title else ""
    blocks.append(Para(
        f"{named}{plural(len(state.stages), 'stage')}{so_far}, one hyperparameter at a time, each "
        f"keeping the winner of the one before: {settings} settings × {len(state.seeds)} "
        f"seed(s) {state.seeds} = {entries} runs, {distinct} distinct ({entries - distinct} "
        f"reused, not trained again). The winner of a stage has the "
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
    if stage.verdict and not stage.tie:  # a tie's verdict says what the sentence above says
        parts.append(stage.verdict)
    return Para(" ".join(parts))


def stage_blocks(
    study: Study, k: int, stage: StageState, numbers: FigureNumbers, extra: str | None
) -> tuple[list[Block], NamedTable]:
    """Stage `k`'s section and its table; `extra` ("lr" or "beta") opens it with that figure."""
    slug = slugify(stage.name)
    published = stage_has_published(stage)
    suffix = " (published)" if published else ""
    header = ["setting", "seeds", "status", *(f"{METRIC_TITLES[m]}{suffix}" for m in METRICS)]
    csv_header = ["setting", "n", *(f"{m}_{s}" for m in METRICS for s in ("mean", "std"))]
    csv_header += [f"published_{m}" for m in METRICS] if published else []
    csv_header.append("winner")
    rows, csv_rows, curves, finals = [], [], [], []
    for i, setting in enumerate(stage.settings):
        runs = study.runs_of(setting)
        final, pub = setting_finals(setting, runs), published_of(setting)
        finals.append(final)
        n = max((s.n for s in final.values() if s), default=0)
        cells = [
            fmt_stat(final[m]) + (f" ({sig3(pub[m])})" if pub[m] is not None else "")
            for m in METRICS
        ]
        row = [text(setting.label), f"{n}/{len(runs)}", status_text(runs), *cells]
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
    blocks: list[Block] = [
        Heading(f"Stage {k}: {text(stage.name)}"),
        Para(
            f"Varies {code(stage.field)} for {plural(stage.epochs, 'epoch')}. Final-epoch "
            f"values, mean ± sample std over the finished seeds, {what}the winner in bold."
        ),
    ]
    # the figure a stage explains (lr under cosine, the Beta density) opens it, as in the report
    if extra == "lr":
        blocks += lr_blocks(study, stage, numbers.take(study.state.report.figures.lr_schedule))
    elif extra == "beta":
        blocks += beta_blocks(stage, numbers.take(study.state.report.figures.mixup_beta))
    blocks += [Table(header, rows), winner_para(study, stage, finals)]
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
    return blocks, table


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
    measured = [
        ["test top-1", f"**{fmt_stat(final.test_top1)}**", cell(spec.published_test_top1)],
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
    shown = ", ".join(code(f"{k}={final.config[k]}") for k in FINAL_CONFIG_SHOWN
                      if k in final.config)  # fmt: skip
    blocks.append(Para(f"Final configuration: {shown or DASH}."))

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
    return blocks, tables


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
    cosine = [k for k, s in enumerate(stages)
              if s.field == "schedule" and any(is_cosine(x) for x in s.settings)]  # fmt: skip
    lr = cosine[0] if cosine else None
    beta = next((k for k, s in enumerate(stages) if s.field == "mixup_alpha"), None)
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
        section, table = stage_blocks(study, k + 1, stage, numbers, extra.get(k))
        blocks += section
        tables.append(table)
    final, final_tables = final_blocks(study)
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
