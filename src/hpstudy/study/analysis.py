"""The study's analysis: every number and verdict its report shows, as one typed, JSON-ready record.

`analyse(study_dir)` reads state.json and each run folder once, through their owners
(`StudyFolder.read_state`, `RunDir`), and returns an `Analysis`: per stage, each setting's
final-epoch stats over its finished seeds (from the runs' metrics rows), how its runs
ended, the per-epoch curves the figures draw, the figure that explains the stage, the
published values; the winner, tie, verdict and comparisons as selection recorded them in
the state; the final test result with its interval; every published number beside the
measured one (reproduction); the runs table; the data and the images the runs used; the
environment. The report renders it and computes nothing; `hpstudy study status --json`
prints it. Each interval is made by one function of `hpstudy.study.compare`.
"""

from __future__ import annotations

import json
import math
import shlex
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from hpstudy.config import EXECUTION_FIELDS, SOURCE_FIELDS, RunConfig
from hpstudy.errors import HpstudyError
from hpstudy.run import MetricRow, RunDir, RunStatus, Summary
from hpstudy.study.compare import reproduction, seed_mean_interval, wilson
from hpstudy.study.kinds import StageKind, find_kind
from hpstudy.study.select import summarise
from hpstudy.study.spec import ReportSpec, Selection, format_value
from hpstudy.study.state import (
    METRICS,
    Comparison,
    DataSummary,
    FinalRun,
    Follow,
    Record,
    RunEntry,
    SettingState,
    StageState,
    Stat,
    StudyFolder,
    StudyState,
    StudyStatus,
    TestTop1,
    TestTouch,
    tested_configs,
)

# the final configuration's fields the report always lists, at their default or not
FINAL_CONFIG_ALWAYS = ("model", "dataset")
# a published number against the measured runs: equivalent within the margin (TOST), inside
# or outside the 95 % prediction interval for one new run, one seed, nothing measured
Verdict = Literal[
    "consistent", "inside the prediction interval", "outside", "cannot tell", "not measured"
]
# the metrics a published value is tested for equivalence on (the margin is in accuracy)
ACCURACIES = ("val_acc", "train_acc")


# ---------------------------------------------------------------- the record


class StatusCount(Record):
    """How many of a setting's runs ended one way; a pruned run with the epoch it reached."""

    status: RunStatus
    count: int
    epoch: int | None = None


class CurvePoints(Record):
    """One metric of one setting per epoch, across its seeds (non-finite values left out)."""

    epochs: list[int]
    mean: list[float]
    std: list[float]
    n: list[int]


class Curve(Record):
    """A setting's line in its stage's figure: the seeds it rests on, each metric per epoch."""

    seeds: int  # finished seeds when there are any (as in the table), else those with epochs
    metrics: dict[str, CurvePoints]


class SettingResult(Record):
    label: str
    value: Any  # a values stage's value; a search stage's {field: value}
    trial: int | None  # an optuna stage's trial number
    run_hashes: list[str]  # one per seed, in the state's order
    n: int  # seeds whose final-epoch values the stats rest on
    statuses: list[StatusCount]  # in order of first appearance
    final: dict[str, Stat | None]  # METRICS at the final epoch over the finished seeds
    published: dict[str, float | None]  # METRICS as the published study printed them
    curve: Curve
    val_acc_ci95: list[float] | None = None  # the final val_acc's 95 % interval (as reproduction's)
    at_chance: bool = False  # that interval contains chance (1 / classes): nothing learned shows


class LrScheduleFigure(Record):
    """The learning rate a cosine run of the stage recorded (run None: none has an epoch)."""

    kind: Literal["lr_schedule"] = "lr_schedule"
    run_hash: str | None = None
    run_dir: str | None = None  # relative to the study folder
    epochs: list[float] = Field(default_factory=list)
    lrs: list[float] = Field(default_factory=list)
    lr_max: float | None = None
    run_epochs: int | None = None
    warmup_epochs: int = 0


class BetaDensityFigure(Record):
    """The Beta(α, α) density mixup draws λ from, for the stage's largest finite positive α."""

    kind: Literal["mixup_beta"] = "mixup_beta"
    alpha: float | None  # None: no setting has a finite positive α
    odd: list[str]  # labels of the settings whose α is not a finite number


# the figure that opens a stage to explain its field; `kind` names its ReportFigures number
ExplainFigure = Annotated[LrScheduleFigure | BetaDensityFigure, Field(discriminator="kind")]


class ConfigMismatch(Record):
    """A stage measured from other settings than the published runs started from."""

    measured: list[str]  # e.g. "lr 0.5", or a search stage's setting label
    published: list[str]


class StageResult(Record):
    name: str
    field: str  # the varied fields, ", "-joined
    kind: str  # the stage kind's name (values, grid, random, optuna or a plugin's)
    one_field: bool  # its settings are one field's values (shown in the file's order)
    words: str  # how the report opens its section: "<words> `lr` for 15 epochs"
    epochs: int
    figure: int | None  # the study file's number for the stage's figure
    settings: list[SettingResult]  # in the study file's order: the indices below point here
    shown: list[int]  # the order the report lists them in
    has_published: bool
    published_winner: str | None
    winner: int | None
    runner_up: int | None
    carried: int | None  # the setting later stages start from (None: the winner)
    margin: float | None
    spread: float | None
    tie: bool
    tie_break: str | None
    winner_mean: float | None  # the winner's mean of the selection metric (a tie's value)
    verdict: str | None
    comparisons: list[Comparison]
    decided: bool
    looks: int  # how often the stage was judged at two seeds or more (--until-decided)
    alpha_spent: float  # the error rate those looks spent
    journal: str | None  # an optuna stage's journal, relative to the study folder
    optuna_study: str | None
    explains: ExplainFigure | None = None
    mismatch: ConfigMismatch | None = None
    pruned: list[int] = Field(default_factory=list)  # epoch each pruned run reached, sorted


class FinalAnalysis(Record):
    config: dict[str, Any]  # the winning configuration, seed left out
    shown_config: dict[str, Any]  # model, dataset and every field off RunConfig's default
    base_toml: str  # shown_config as a study file's [base] table
    train_command: str  # `hpstudy train ...` that retrains the first final seed's run
    runs: list[FinalRun]
    test_top1: TestTop1
    test_top5: Stat
    test_loss: Stat
    published_top1: float | None
    published_loss: str | None
    # the published top-1 against a new run's test top-1 (as the reproduction table says)
    published_verdict: Verdict | None
    prediction: list[float] | None  # the 95 % prediction interval for one new run's top-1
    equivalence_margin: float
    at_chance: bool  # the test top-1's interval contains chance (1 / classes)
    most_test_evaluations: int  # the most any final run met the test split (its ledger)
    config_hash: str | None  # the configuration reported (None: a state from before the ledger)
    test_touches: list[TestTouch]  # every test evaluation made for the study (test_ledger.jsonl)
    tested_configs: list[str]  # the distinct configurations among them, first touched first
    superclass: dict[str, Stat | None]  # test top-1 per coarse label over the final runs
    device: str


class ReproductionRow(Record):
    """A published number beside the measured one, its 95 % interval and how it was made."""

    what: str
    published: float
    measured: float | None
    ci95: list[float] | None
    interval: str
    verdict: Verdict


class RunResult(Record):
    """One distinct run folder, as the runs table shows it."""

    run_hash: str
    run_dir: str  # relative to the study folder
    stages: list[str]  # "stage: setting" wherever it appears
    seed: int
    status: RunStatus
    error: str | None
    epochs_done: int
    train_seconds: float | None
    images_per_s: float | None  # mean over its epochs
    parameters: int | None
    macs_per_image: int | None


class FailedRun(Record):
    stage: str
    setting: str
    seed: int
    run_hash: str
    error: str | None


class ImagesUsed(Record):
    train: int | None  # None: the whole split
    val: int | None


class DataResult(DataSummary):
    images_used: list[ImagesUsed]  # the runs' subsets of the split (budgets), if any


class RunCounts(Record):
    settings: int  # settings over all stages
    entries: int  # runs over all stages, a reused one counted wherever it appears
    distinct: int  # distinct run folders
    reused: int  # entries met before: not trained again


class Chance(Record):
    """What guessing scores: a uniform guess among the classes (balanced test and val)."""

    classes: int
    top1: float
    top5: float


def chance_top1(classes: int) -> float:
    return 1 / classes if classes > 0 else 0.0


def chance_of(classes: int) -> Chance:
    top1 = chance_top1(classes)
    return Chance(classes=classes, top1=top1, top5=min(1.0, 5 * top1))


class Analysis(Record):
    folder: str
    name: str
    budget: str
    chance: Chance
    study_hash: str
    status: StudyStatus
    seeds: list[int]
    selection: Selection
    follow: Follow
    until_decided: int | None
    report: ReportSpec  # title, notes, figure numbers and published test values
    has_published: bool
    counts: RunCounts
    data: DataResult
    stages: list[StageResult]
    final: FinalAnalysis | None
    reproduction: list[ReproductionRow]  # empty for a study without published numbers
    runs: list[RunResult]
    failed: list[FailedRun]
    environment: dict[str, str]
    export: dict[str, Any] | None  # export.json of the final run (its first seed)


# ---------------------------------------------------------------- reading


@dataclass
class RunRead:
    """One run folder as read once for the analysis."""

    entry: RunEntry  # the first the state names it by (seed, hash, folder)
    status: RunStatus
    error: str | None
    config: RunConfig | None  # None while the folder has no config.json
    rows: list[MetricRow]
    summary: Summary | None
    stages: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status == RunStatus.FINISHED


def read_run(study_dir: Path, entry: RunEntry) -> RunRead:
    """A run folder through RunDir; one that does not exist yet is a run with no rows, its
    status taken from the state."""
    folder = RunDir(study_dir / entry.run_dir)
    if not folder.path.is_dir():
        return RunRead(entry, entry.status, entry.error, None, [], None)
    summary = folder.read_summary()
    # the run folder's own record is fresher than the state of a study still running
    status = folder.status()
    if summary is None and status == RunStatus.PENDING:
        status = entry.status
    return RunRead(
        entry=entry,
        status=status,
        error=entry.error or (summary.error if summary else None),
        config=folder.read_config() if folder.config_path.is_file() else None,
        rows=folder.read_metrics(),
        summary=summary,
    )


# a setting's runs, each read once
RunsOf = Callable[[SettingState], list[RunRead]]


def read_runs(path: Path, state: StudyState) -> dict[Path, RunRead]:
    """Each distinct run the state names, read once (a reused configuration appears in
    several stages), keyed by its folder."""
    runs: dict[Path, RunRead] = {}
    for stage in state.stages:
        for setting in stage.settings:
            for entry in setting.runs:
                key = path / entry.run_dir
                if key not in runs:
                    runs[key] = read_run(path, entry)
                runs[key].stages.append(f"{stage.name}: {setting.label}")
    return runs


# ---------------------------------------------------------------- per setting


def published_of(setting: SettingState) -> dict[str, float | None]:
    p = setting.published
    return {m: getattr(p, m) if p is not None else None for m in METRICS}


def stage_has_published(stage: StageState) -> bool:
    return any(v is not None for s in stage.settings for v in published_of(s).values())


def setting_finals(setting: SettingState, runs: list[RunRead]) -> dict[str, Stat | None]:
    """Final-epoch stats per metric over the finished seeds, from their metrics rows."""
    rows = [r.rows[-1] for r in runs if r.finished and r.rows]
    if not rows:
        # run folders gone (a copied state only): fall back on the study's own numbers
        return {m: (setting.final or {}).get(m) for m in METRICS}
    return {m: summarise([row[m] for row in rows if m in row]) for m in METRICS}


def status_counts(runs: list[RunRead]) -> list[StatusCount]:
    """How the runs ended, in order of first appearance; pruned runs by the epoch reached."""

    def key(r: RunRead) -> tuple[RunStatus, int | None]:
        if r.status != RunStatus.PRUNED:
            return r.status, None
        return r.status, r.summary.epochs_done if r.summary else len(r.rows)

    counts = Counter(key(r) for r in runs)
    return [StatusCount(status=s, count=n, epoch=e) for (s, e), n in counts.items()]


def mean_curve(seeds: list[list[MetricRow]], metric: str) -> CurvePoints:
    """Epochs, mean, std and n across seeds, epoch by epoch (NaNs of a diverged run skipped)."""
    by_epoch: dict[int, list[float]] = {}
    for rows in seeds:
        for row in rows:
            if "epoch" in row and metric in row:
                by_epoch.setdefault(int(row["epoch"]), []).append(row[metric])
    kept = [(e, s) for e, v in sorted(by_epoch.items()) if (s := summarise(v)) is not None]
    return CurvePoints(
        epochs=[e for e, _ in kept],
        mean=[s.mean for _, s in kept],
        std=[s.std for _, s in kept],
        n=[s.n for _, s in kept],
    )


def curve_of(runs: list[RunRead]) -> Curve:
    """Finished seeds when there are any (as in the table), else whatever has epochs so far."""
    seeds = [r.rows for r in runs if r.finished and r.rows] or [r.rows for r in runs if r.rows]
    return Curve(seeds=len(seeds), metrics={m: mean_curve(seeds, m) for m in METRICS})


def val_acc_interval(runs: list[RunRead], val_images: int) -> list[float] | None:
    """The finished seeds' final val_acc, a 95 % interval for its mean (t over seeds; Wilson
    over the validation images for one seed): where it holds chance, the setting is at it."""
    done = [r for r in runs if r.finished and r.rows and "val_acc" in r.rows[-1]]
    values = [r.rows[-1]["val_acc"] for r in done]
    if not values:
        return None
    images = min((r.config.limit_val or val_images) if r.config else val_images for r in done)
    if len(values) == 1:  # one run: Wilson over the validation images it was judged on
        n = min(images, val_images)
        ci = wilson(round(values[0] * n), n)
    else:  # the mean over seeds: a t-interval
        ci = seed_mean_interval(values)
    return list(ci) if ci is not None else None


def contains(ci95: list[float] | None, value: float) -> bool:
    return ci95 is not None and ci95[0] <= value <= ci95[1]


def setting_result(
    setting: SettingState, runs: list[RunRead], val_images: int = 0, chance: float = 0.0
) -> SettingResult:
    final = setting_finals(setting, runs)
    ci = val_acc_interval(runs, val_images) if val_images else None
    return SettingResult(
        label=setting.label,
        value=setting.value,
        trial=setting.trial,
        run_hashes=[r.run_hash for r in setting.runs],
        n=max((s.n for s in final.values() if s), default=0),
        statuses=status_counts(runs),
        final=final,
        published=published_of(setting),
        curve=curve_of(runs),
        val_acc_ci95=ci,
        at_chance=contains(ci, chance),
    )


def stage_kind(stage: StageState) -> type[StageKind]:
    """The stage's kind, asked how to word and order it; a kind not installed here (a
    plugin of the process that ran the study) is taken as any several-field stage."""
    try:
        return find_kind(stage.kind) or StageKind
    except HpstudyError:  # a plugin that fails to load here: the analysis still reads
        return StageKind


def shown_order(stage: StageState, settings: list[SettingResult], selection: str) -> list[int]:
    """A values stage in the study file's order; a search stage's settings best first, those
    without a finished run (pruned, diverged, failed, pending) last, in their order."""
    if stage_kind(stage).one_field:
        return list(range(len(settings)))
    sign = -1 if selection == "val_acc" else 1

    def key(i: int) -> tuple[int, bool, float, int]:
        stat = settings[i].final.get(selection)
        if stat is None or not math.isfinite(stat.mean):
            return (1, True, 0.0, i)
        return (0, i != stage.winner, sign * stat.mean, i)  # the winner heads a tie

    return sorted(range(len(settings)), key=key)


# ---------------------------------------------------------------- figures that explain a stage


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


def lr_schedule_figure(stage: StageState, runs_of: RunsOf) -> LrScheduleFigure:
    """The first cosine setting's run that has recorded an epoch, a finished one first."""
    for setting in stage.settings:
        if not is_cosine(setting):
            continue
        found = sorted((r for r in runs_of(setting) if r.rows), key=lambda r: not r.finished)
        if found:
            run, cfg = found[0], found[0].config
            return LrScheduleFigure(
                run_hash=run.entry.run_hash,
                run_dir=run.entry.run_dir,
                epochs=[row["epoch"] for row in run.rows],
                lrs=[row["lr"] for row in run.rows],
                lr_max=cfg.lr if cfg else None,
                run_epochs=cfg.epochs if cfg else None,
                warmup_epochs=cfg.warmup_epochs if cfg else 0,
            )
    return LrScheduleFigure()


def beta_density_figure(stage: StageState, runs_of: RunsOf) -> BetaDensityFigure:
    alphas = [as_alpha(s.value) for s in stage.settings]
    finite = [a for a in alphas if math.isfinite(a) and a > 0]
    odd = [s.label for s, a in zip(stage.settings, alphas, strict=True) if not math.isfinite(a)]
    return BetaDensityFigure(alpha=max(finite) if finite else None, odd=odd)


@dataclass(frozen=True)
class Explainer:
    """A figure that explains a field: it opens the first values stage it applies to."""

    kind: str  # the ReportFigures field that numbers it
    applies: Callable[[StageState], bool]
    figure: Callable[[StageState, RunsOf], LrScheduleFigure | BetaDensityFigure]


# the learning rate under cosine annealing where a stage varies the schedule (and has a
# cosine setting); the Beta density where one varies mixup's α
EXPLAINERS = (
    Explainer(
        "lr_schedule",
        lambda s: s.field == "schedule" and any(is_cosine(x) for x in s.settings),
        lr_schedule_figure,
    ),
    Explainer("mixup_beta", lambda s: s.field == "mixup_alpha", beta_density_figure),
)


def explained_stages(stages: list[StageState]) -> dict[int, Explainer]:
    """Which stage opens with which explaining figure (a search stage's settings are dicts:
    only values stages have one field's values)."""
    chosen: dict[int, Explainer] = {}
    for explainer in EXPLAINERS:
        fitting = (k for k, s in enumerate(stages)
                   if stage_kind(s).one_field and explainer.applies(s))  # fmt: skip
        k = next(fitting, None)
        if k is not None:
            chosen[k] = explainer
    return chosen


# ---------------------------------------------------------------- stages


def carried_index(stage: StageState) -> int | None:
    return stage.carried if stage.carried is not None else stage.winner


def config_mismatch(state: StudyState, k: int) -> ConfigMismatch | None:
    """Where stage k's runs start from other settings than the published runs did (an
    earlier stage carried forward another setting than the published winner)."""
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
        if mine.label != theirs.label and stage_kind(earlier).one_field:
            measured.append(f"{earlier.field} {format_value(mine.value)}")
            published.append(f"{earlier.field} {format_value(theirs.value)}")
        elif mine.label != theirs.label:  # a search stage's label names every field
            measured.append(mine.label)
            published.append(theirs.label)
    if not measured:
        return None
    return ConfigMismatch(measured=measured, published=published)


def pruned_epochs(settings: list[SettingResult]) -> list[int]:
    """The epoch each pruned run of a stage reached, sorted."""
    return sorted(
        c.epoch or 0
        for r in settings
        for c in r.statuses
        if c.status == RunStatus.PRUNED
        for _ in range(c.count)
    )


def stage_result(
    state: StudyState, k: int, runs_of: RunsOf, explainer: Explainer | None
) -> StageResult:
    stage = state.stages[k]
    kind = stage_kind(stage)
    chance = chance_top1(state.data.num_classes)
    settings = [setting_result(s, runs_of(s), state.data.val_size, chance) for s in stage.settings]
    winner_mean = None
    if stage.winner is not None and stage.winner < len(settings):
        stat = (settings[stage.winner].final.get(state.selection)
                or (stage.settings[stage.winner].final or {}).get(state.selection))  # fmt: skip
        winner_mean = stat.mean if stat else None
    return StageResult(
        name=stage.name,
        field=stage.field,
        kind=stage.kind,
        one_field=kind.one_field,
        words=kind.words,
        epochs=stage.epochs,
        figure=stage.figure,
        settings=settings,
        shown=shown_order(stage, settings, state.selection),
        has_published=stage_has_published(stage),
        published_winner=stage.published_winner,
        winner=stage.winner,
        runner_up=stage.runner_up,
        carried=stage.carried,
        margin=stage.margin,
        spread=stage.spread,
        tie=stage.tie,
        tie_break=stage.tie_break,
        winner_mean=winner_mean,
        verdict=stage.verdict,
        comparisons=stage.comparisons,
        decided=stage.decided,
        looks=stage.looks,
        alpha_spent=stage.alpha_spent,
        journal=stage.journal,
        optuna_study=stage.optuna_study,
        explains=explainer.figure(stage, runs_of) if explainer else None,
        mismatch=config_mismatch(state, k),
        pruned=pruned_epochs(settings),
    )


# ---------------------------------------------------------------- the final result


def changed_config(config: dict[str, Any]) -> dict[str, Any]:
    """Model, dataset and every field of a run's config that differs from RunConfig's
    default, in RunConfig's order: what rebuilds the run (the seed, and fields that only
    say where or how fast it runs, left out, and those filled in when a config is made)."""
    shown = {}
    for name, spec in RunConfig.model_fields.items():
        skipped = name == "seed" or name in EXECUTION_FIELDS or name in SOURCE_FIELDS
        if skipped or config.get(name) is None:
            continue
        # a field built by a factory (model_args' {}) compares with what the factory makes
        if name in FINAL_CONFIG_ALWAYS or config[name] != spec.get_default(
            call_default_factory=True
        ):
            shown[name] = config[name]
    return shown


def toml_value(value: Any) -> str:
    """A TOML literal of a config value (a str, bool, int or finite float: RunConfig's)."""
    return json.dumps(value)  # JSON's true/false, numbers and quoted strings are TOML's


def base_toml(shown: dict[str, Any]) -> str:
    return "\n".join(["[base]", *(f"{k} = {toml_value(v)}" for k, v in shown.items())])


def train_command(shown: dict[str, Any], seed: int, out: str = "final-run") -> str:
    """The `hpstudy train` line that trains the same run (the same run hash) again into
    the run folder `out`."""
    words = ["hpstudy", "train"]
    for name, value in shown.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else f"--no-{flag[2:]}")
        else:
            words += [flag, shlex.quote(json.dumps(value) if isinstance(value, float)
                                        else str(value))]  # fmt: skip
    return " ".join([*words, "--seed", str(seed), "--out", shlex.quote(out)])


def final_analysis(state: StudyState) -> FinalAnalysis | None:
    final, spec = state.final, state.report
    if final is None:
        return None
    t, published = final.test_top1, spec.published_test_top1
    verdict, prediction = None, None
    if published is not None:
        verdict, prediction = test_verdict(state, published)
    per_run = [r.test.superclass_top1 for r in final.runs]
    names = list(per_run[0]) if per_run else []
    shown = changed_config(final.config)
    first_seed = final.runs[0].seed if final.runs else (state.seeds or [0])[0]
    return FinalAnalysis(
        config=final.config,
        shown_config=shown,
        base_toml=base_toml(shown),
        train_command=train_command(shown, first_seed, f"{state.name}-final-seed{first_seed}"),
        runs=final.runs,
        test_top1=t,
        test_top5=final.test_top5,
        test_loss=final.test_loss,
        published_top1=published,
        published_loss=spec.published_test_loss,
        published_verdict=verdict,
        prediction=prediction,
        equivalence_margin=spec.equivalence_margin,
        at_chance=contains(t.ci95, chance_top1(state.data.num_classes)),
        most_test_evaluations=max((r.test_evaluations for r in final.runs), default=0),
        config_hash=final.config_hash,
        test_touches=final.test_touches,
        tested_configs=tested_configs(final.test_touches),
        superclass={n: summarise([acc[n] for acc in per_run if n in acc]) for n in names},
        device=final.device,
    )


def test_verdict(state: StudyState, published: float) -> tuple[Verdict, list[float] | None]:
    """The published test top-1 against the final runs' (one run: cannot tell), and the
    prediction interval for one new run it was judged on (None at one run)."""
    assert state.final is not None
    values = [r.test.top1 for r in state.final.runs]
    verdict, ci, _ = reproduction(values, published, state.report.equivalence_margin)
    return verdict, list(ci) if ci is not None and len(values) > 1 else None  # type: ignore[return-value]


def reproduction_rows(state: StudyState, runs_of: RunsOf) -> list[ReproductionRow]:
    """Every published number beside the measured one, the interval it was judged on, and
    the verdict (`hpstudy.study.compare.reproduction`)."""
    rows: list[ReproductionRow] = []
    margin = state.report.equivalence_margin

    def add(what: str, published: float, measured: float | None, verdict: str,
            ci: tuple[float, float] | list[float] | None, how: str) -> None:  # fmt: skip
        rows.append(ReproductionRow(what=what, published=published, measured=measured,
                                    ci95=list(ci) if ci else None, interval=how,
                                    verdict=verdict))  # type: ignore[arg-type]  # fmt: skip

    val_images = state.data.val_size
    for stage in state.stages:
        for setting in stage.settings:
            runs = [r for r in runs_of(setting) if r.finished and r.rows]
            for metric, published in published_of(setting).items():
                if published is None:
                    continue
                values = [r.rows[-1][metric] for r in runs if metric in r.rows[-1]]
                stat = summarise(values)
                # an accuracy is a proportion of the validation images the runs saw
                images = None
                if metric == "val_acc" and values:
                    images = min((r.config.limit_val or val_images) if r.config else val_images
                                 for r in runs)  # fmt: skip
                verdict, ci, how = reproduction(
                    values, published, margin if metric in ACCURACIES else None, images
                )
                add(f"{stage.name}: {setting.label} {metric}", published,
                    stat.mean if stat else None, verdict, ci, how)  # fmt: skip
    published_top1 = state.report.published_test_top1
    if published_top1 is not None:
        t = state.final.test_top1 if state.final else None
        if state.final is None or t is None:
            add("test top-1", published_top1, None, "not measured", None, "")
        else:
            verdict, prediction = test_verdict(state, published_top1)
            if prediction is None:  # one run: that run's interval over the test images
                how = f"one run, {t.interval or 'no interval'} (seed noise not measured)"
                add("test top-1", published_top1, t.mean, verdict, t.ci95, how)
            else:
                how = f"95 % prediction interval for one new run ({t.n} runs)"
                add("test top-1", published_top1, t.mean, verdict, prediction, how)
    return rows


# ---------------------------------------------------------------- runs, data, environment


def run_result(run: RunRead) -> RunResult:
    s = run.summary
    ips = summarise([row["images_per_s"] for row in run.rows if "images_per_s" in row])
    return RunResult(
        run_hash=run.entry.run_hash,
        run_dir=run.entry.run_dir,
        stages=run.stages,
        seed=run.entry.seed,
        status=run.status,
        error=run.error,
        epochs_done=s.epochs_done if s else len(run.rows),
        train_seconds=s.train_seconds if s else None,
        images_per_s=ips.mean if ips else None,
        parameters=s.parameters if s else None,
        macs_per_image=s.macs_per_image if s else None,
    )


def images_used(runs: list[RunRead]) -> list[ImagesUsed]:
    """The (train, val) subsets of the split the runs trained and validated on (budgets)."""
    limits = sorted({(r.config.limit_train, r.config.limit_val)
                     for r in runs if r.config is not None},
                    key=lambda tv: (tv[0] or 0, tv[1] or 0))  # fmt: skip
    return [ImagesUsed(train=t, val=v) for t, v in limits if (t, v) != (None, None)]


def environment_of(state: StudyState, runs: list[RunRead]) -> dict[str, str]:
    """The study's environment; the runs' precisions where the state names none."""
    env = dict(state.environment)
    precisions = {r.summary.precision for r in runs if r.summary}
    env.setdefault("precision", ", ".join(sorted(p for p in precisions if p)))
    return env


def has_published(state: StudyState) -> bool:
    return (
        any(stage_has_published(stage) for stage in state.stages)
        or state.report.published_test_top1 is not None
        or state.report.published_test_loss is not None
    )


# ---------------------------------------------------------------- the whole


def analyse(study_dir: str | Path) -> Analysis:
    """The analysis of the study in `study_dir`, finished or not: state.json and each run
    folder it names, read once. A study folder without state.json is a user error."""
    path = Path(study_dir)
    folder = StudyFolder(path)
    state = folder.read_state()
    runs = read_runs(path, state)
    if state.final is not None and folder.ledger_path.exists():
        # the ledger is fresher than the state: a test evaluation made since (`hpstudy
        # evaluate` on a run of the folder) is counted by the next `hpstudy report`
        ledger = folder.read_ledger()
        if len(ledger) > len(state.final.test_touches):
            state.final = state.final.model_copy(update={"test_touches": ledger})

    def runs_of(setting: SettingState) -> list[RunRead]:
        return [runs[path / entry.run_dir] for entry in setting.runs]

    explained = explained_stages(state.stages)
    stages = [stage_result(state, k, runs_of, explained.get(k)) for k in range(len(state.stages))]
    entries = sum(len(st.runs) for s in state.stages for st in s.settings)
    failed = [
        FailedRun(stage=stage.name, setting=setting.label, seed=entry.seed,
                  run_hash=entry.run_hash, error=entry.error or runs[path / entry.run_dir].error)
        for stage, setting, entry in state.failed_runs()
    ]  # fmt: skip
    export = None
    if state.final is not None and state.final.runs:
        export = RunDir(path / state.final.runs[0].run_dir).read_export()
    published = has_published(state)
    return Analysis(
        folder=str(path),
        name=state.name,
        budget=state.budget,
        chance=chance_of(state.data.num_classes),
        study_hash=state.study_hash,
        status=state.status,
        seeds=state.seeds,
        selection=state.selection,
        follow=state.follow,
        until_decided=state.until_decided,
        report=state.report,
        has_published=published,
        counts=RunCounts(
            settings=sum(len(s.settings) for s in state.stages),
            entries=entries,
            distinct=len(runs),
            reused=entries - len(runs),
        ),
        data=DataResult(**state.data.model_dump(), images_used=images_used(list(runs.values()))),
        stages=stages,
        final=final_analysis(state),
        reproduction=reproduction_rows(state, runs_of) if published else [],
        runs=[run_result(r) for r in runs.values()],
        failed=failed,
        environment=environment_of(state, list(runs.values())),
        export=export,
    )


__all__ = [
    "EXPLAINERS",
    "FINAL_CONFIG_ALWAYS",
    "Analysis",
    "BetaDensityFigure",
    "Chance",
    "Curve",
    "CurvePoints",
    "FinalAnalysis",
    "LrScheduleFigure",
    "ReproductionRow",
    "RunResult",
    "SettingResult",
    "StageResult",
    "Verdict",
    "analyse",
]
