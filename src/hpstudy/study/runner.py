"""The runner: a study at a budget -> its runs trained, winners chosen, the test touched once.

Nothing is remembered that cannot be derived: each `study run` expands the
stages again from the run folders, so a study killed anywhere resumes where it
stopped, a finished run is never trained twice, and a failed run (or one whose
folder vanished) is trained again.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpstudy import __version__, data
from hpstudy.errors import HpstudyError
from hpstudy.executors import DataOptions, Executor, Job, open_executor
from hpstudy.progress import StudyDisplay, duration, show_progress, study_display, style, watch
from hpstudy.run import RunDir, RunStatus, evaluate, image_outcomes, load_data
from hpstudy.study.compare import accuracy_interval
from hpstudy.study.cost import (
    StudyCost,
    budget_costs,
    cost_block,
    epochs_in,
    folder_progress,
    measure_speed,
    study_cost,
)
from hpstudy.study.lock import is_held
from hpstudy.study.plan import BUDGETS, Plan
from hpstudy.study.search import OptunaSearch, needs_training
from hpstudy.study.select import SeedOutcomes, judge, select, summarise
from hpstudy.study.spec import Stage, StudyConfig, format_value, load_study, validate_study
from hpstudy.study.state import (
    METRICS,
    DataSummary,
    FinalResult,
    FinalRun,
    Follow,
    RunEntry,
    SettingState,
    SplitScores,
    StageState,
    Stat,
    StudyFolder,
    StudyRecord,
    StudyState,
    TestTop1,
)

logger = logging.getLogger(__name__)
FOLLOW = ("own", "published")
MAX_SEEDS = 1000  # --seeds N and --until-decided N: a study of runs, not of a lifetime


def default_out(name: str, budget: str, follow: str = "own") -> Path:
    """runs/NAME[-BUDGET][-published]: following the published winners trains other runs
    and writes another report, so it gets a folder of its own by default."""
    folder = name if budget == "full" else f"{name}-{budget}"
    return Path("runs") / (folder if follow == "own" else f"{folder}-{follow}")


def parse_seeds(text: str) -> list[int]:
    """`3` -> seeds 0, 1, 2; `0,1,5` (or `5,`) -> those seeds; else one HpstudyError."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        numbers = [int(p) for p in parts if p]
    except ValueError:
        numbers = []
    if not numbers:
        raise HpstudyError(
            f"--seeds: expected a count like 3 or seeds like 0,1,2 (got {text!r})"
        )
    if len(parts) == 1:
        if not 1 <= numbers[0] <= MAX_SEEDS:
            raise HpstudyError(f"--seeds: a count must be 1..{MAX_SEEDS} (got {numbers[0]})")
        return list(range(numbers[0]))
    return numbers


def with_options(
    study: StudyConfig, seeds: list[int] | None, split_follows_seed: bool | None
) -> StudyConfig:
    """The study with the command line's seeds and split option, validated like the file."""
    if seeds is None and split_follows_seed is None:
        return study
    raw = study.model_dump()
    if seeds is not None:
        raw["seeds"] = seeds
    if split_follows_seed is not None:
        raw["split_follows_seed"] = split_follows_seed
    changed = validate_study(raw, f"{study.source} with the command line's options")
    changed._source = study.source
    return changed


def data_summary(
    options: DataOptions, split_seed: int, dataset: str, device: str | None
) -> dict[str, Any]:
    """What the report says of the data; runs where the runs run (the driver may lack it)."""
    info = data.split_info(load_data(options.root, options.verify, dataset), split_seed)
    return {"root": str(data.resolve_root(options.root)), **info}


def test_evaluation(run_dir: str, options: DataOptions, device: str | None) -> dict[str, Any]:
    return evaluate(run_dir, "test", root=options.root, verify=options.verify, device=device)


def export_final(run_dir: str, options: DataOptions, device: str | None) -> None:
    """Ship the final model (hpstudy.export) once; without the extra, or if its check fails,
    say so in one line: the study's result does not depend on it."""
    from hpstudy.export import export_run

    if RunDir(run_dir).export_path.exists():
        return
    try:
        export_run(run_dir, root=options.root, verify=options.verify)
    except HpstudyError as err:
        logger.warning(f"final model not exported: {err}")


def environment(device: str | None) -> dict[str, str]:
    import torch

    return {
        "hpstudy": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def run_study(
    spec: str | Path,
    *,
    out: Path | None = None,
    budget: str = "full",
    executor: str | Executor = "local",
    root: str | None = None,
    verify: bool = True,
    device: str | None = None,
    seeds: list[int] | None = None,
    until_decided: int | None = None,
    follow: Follow = "own",
    split_follows_seed: bool | None = None,
) -> StudyState:
    """Run (or resume) a study; returns its state. Writes the report at the end.

    `executor` is a name (`make_executor(executor, ..., device=device)`) or an Executor,
    which the study opens on its folder and closes at the end.

    `seeds` replace the study's (not its identity: only new runs train); `until_decided`
    gives an undecided stage one more seed at a time, up to that many, before the next
    starts; `follow="published"` starts each stage from the published winners before it;
    `split_follows_seed` draws each run's split from its seed (part of the identity)."""
    # the report is the step after the study: imported here so that importing
    # hpstudy.report never has to import the runner first
    from hpstudy.report import write_report

    if follow not in FOLLOW:
        raise HpstudyError(f"--follow: must be own or published (got {follow!r})")
    if until_decided is not None and not 1 <= until_decided <= MAX_SEEDS:
        raise HpstudyError(f"--until-decided: must be 1..{MAX_SEEDS} seeds (got {until_decided})")
    study = with_options(load_study(spec), seeds, split_follows_seed)
    published = [getattr(s, "published_winner", None) for s in study.stages]
    if follow == "published" and not any(published):
        raise HpstudyError(
            f"{study.source}: --follow published needs published winners (published_winner), "
            "and no stage names one"
        )
    # a bad study fails before anything is started; the device, and so what `auto`
    # precision means and whether fp16 is possible, is known once the executor is
    Plan(study, budget, device_type=None).validate()
    folder = StudyFolder(Path(out) if out is not None else default_out(study.name, budget, follow))
    record = StudyRecord(
        name=study.name,
        budget=budget,
        study_hash=study.identity_hash(budget),
        identity=study.identity(budget),
    )
    folder.check(record)  # a folder it may not use is refused before anything starts
    if done := already_done(folder, study, follow, until_decided):
        logger.info(f"{folder.path}: study {study.name} ({budget}) already finished; nothing to do")
        logger.info(report_line(folder))
        return done

    options = DataOptions(root=root, verify=verify)
    runner = open_executor(executor, options, folder.path, device)
    started = time.perf_counter()
    try:
        plan = Plan(study, budget, runner.device_type())
        plan.validate()
        base = plan.config_for_base()
        split_seed = study.seeds[0] if study.split_follows_seed else base.split_seed
        # with split_follows_seed the data section describes the first seed's split
        summary = runner.call(data_summary, options, split_seed, base.dataset)
        cost = announce_cost(folder, plan, summary, runner)
        # the folder is made only once the data is there (no half-claimed folder), and
        # written by this process alone from study.json to the report
        with folder.lock():
            folder.claim(record)
            state = StudyState(
                name=study.name,
                budget=budget,
                study_hash=record.study_hash,
                seeds=study.seeds,
                selection=study.selection,
                status="running",
                report=study.report,
                data=DataSummary(**summary),
                stages=[],
                final=None,
                environment={},
                follow=follow,
                until_decided=until_decided,
            )
            with study_display(
                StudyDisplay(
                    cost.runs,
                    cost.epochs,
                    cost.done_runs,
                    cost.done_epochs,
                    cost.seconds / max(1, cost.epochs - cost.done_epochs) if cost.seconds else None,
                    live=runner.in_process,
                )
            ):
                run_stages(folder, plan, state, runner, options)
            state.final = final_evaluation(folder, state, runner, options)
            state.environment = {**runner.call(environment), "device": state.final.device}
            failed = state.failed_runs()
            state.status = "incomplete" if failed else "finished"
            state.wall_seconds_this_invocation = time.perf_counter() - started
            conclude(folder, state, write_report)
    finally:
        runner.close()

    t = state.final.test_top1
    within = f" (95 % interval [{t.ci95[0]:.4f}, {t.ci95[1]:.4f}])" if t.ci95 else ""
    logger.info(f"study {study.name} ({budget}) {state.status}: test top-1 {t.mean:.4f}{within}")
    if failed:
        logger.warning(
            f"{len(failed)} run(s) failed (the report lists why); run the same command again "
            "to retry them"
        )
    logger.info(report_line(folder))
    return state


def announce_cost(
    folder: StudyFolder, plan: Plan, summary: dict[str, Any], runner: Executor
) -> StudyCost:
    """Before anything trains: what the study costs here, and what cheaper budgets would.
    The speed is measured where the runs run (a few steps; cached per device and model)."""
    speed = runner.call(measure_speed, plan.config_for_base())
    sizes = (summary["train_size"], summary["val_size"], summary["test_size"])
    cost = study_cost(plan, *sizes, speed, epochs_done=lambda config: epochs_in(folder, config))
    cheaper = budget_costs(plan, *sizes, speed)
    for line in cost_block(plan.study.name, cost, cheaper, speed):
        logger.info(line)
    return cost


def conclude(folder: StudyFolder, state: StudyState, write_report: Callable[[Path], Path]) -> None:
    """The final state, then the report: a study is done only once both exist.

    The report shows state.json, so the state is written first; the old report goes
    before it, so a kill in between leaves a finished state without report.md, which
    is not done (`already_done`) and the next `study run` writes the report. A report
    that fails sets the state back to running and says so in one line.
    """
    folder.drop_report()
    folder.write_state(state)
    try:
        write_report(folder.path)
    except BaseException as err:
        status, state.status = state.status, "running"
        folder.write_state(state)
        if isinstance(err, HpstudyError):
            raise HpstudyError(
                f"{folder.path}: the study is {status} but its report could not be written "
                f"({err}); run the same command again to write it"
            ) from None
        raise


def already_done(
    folder: StudyFolder, study: StudyConfig, follow: str = "own", until_decided: int | None = None
) -> StudyState | None:
    """The state of a study finished and reported with these seeds, this mode and this
    --until-decided; else None (and the next `study run` trains only what is new)."""
    if not folder.state_path.exists():
        return None
    state = folder.read_state()
    finished = state.status == "finished" and folder.report_path.exists()
    same = (state.seeds, state.follow, state.until_decided) == (
        study.seeds, follow, until_decided,
    )
    return state if finished and same else None


def report_line(folder: StudyFolder) -> str:
    return f"report: {folder.path / 'report.md'} and {folder.path / 'report.html'}"


def run_stages(
    folder: StudyFolder, plan: Plan, state: StudyState, runner: Executor, options: DataOptions
) -> None:
    study = plan.study
    winners: dict[str, Any] = {}
    seen: set[str] = set()
    for k, stage in enumerate(study.stages):
        if stage.kind == "optuna":
            # trials are asked and told by the search itself; more seeds do not apply
            state.stages.append(optuna_stage(folder, plan, k, winners, seen, state, runner))
            refresh(folder, state)
            state.stages[k] = chosen = judged(folder, state.stages[k], study, runner, options)
            folder.write_state(state)
            if chosen.winner is None:
                raise no_usable_run(chosen)
        else:
            chosen = run_stage(folder, plan, k, winners, seen, state, runner, options)
        published_winner = getattr(stage, "published_winner", None)
        published_at = published_index(published_winner, chosen)
        carried = carried_setting(published_at, chosen, state.follow)
        state.stages[k] = chosen = chosen.model_copy(update={"carried": carried})
        folder.write_state(state)
        winners.update(stage.assignment(chosen.settings[carried].value))
        label = chosen.settings[chosen.winner].label  # type: ignore[index]
        published = ""
        if published_winner is not None:
            same = published_winner == label
            published = " (as published)" if same else f" (published: {published_winner})"
        if carried != chosen.winner:
            published += f"; following the published study, {published_winner} carries on"
        logger.info(f"stage {stage.name}: winner {label}{published} — {chosen.verdict}")


def run_stage(
    folder: StudyFolder,
    plan: Plan,
    k: int,
    winners: dict[str, Any],
    seen: set[str],
    state: StudyState,
    runner: Executor,
    options: DataOptions,
) -> StageState:
    """Stage k trained and judged; with --until-decided, grown by a seed at a time (for every
    setting) while no interval decides it."""
    study = plan.study
    stage = study.stages[k]
    seeds = list(study.seeds)
    while True:
        # a stage grown by a seed is expanded again: its own runs are not "reused"
        seen_here = set(seen)
        stage_plan = plan if seeds == study.seeds else plan.with_seeds(seeds)
        stage_state, jobs = expand_stage(folder, stage_plan, k, winners, seen_here)
        if len(state.stages) > k:
            state.stages[k] = stage_state
        else:
            state.stages.append(stage_state)
        refresh(folder, state)
        folder.write_state(state)
        runs = sum(len(s.runs) for s in stage_state.settings)
        logger.info(
            f"stage {k + 1}/{len(study.stages)} {stage.name}: {runs} runs, {len(jobs)} to train",
            **style("bold"),
        )
        runner.run(jobs)
        if not runner.in_process and (p := folder_progress(folder, state)) is not None:
            show_progress(p.runs_done, p.epochs_done)  # runs trained elsewhere: counted here
        refresh(folder, state)
        state.stages[k] = chosen = judged(folder, state.stages[k], study, runner, options)
        folder.write_state(state)
        if chosen.winner is None:
            raise no_usable_run(chosen)
        grow = state.until_decided is not None and len(seeds) < state.until_decided
        if chosen.decided or not grow:
            break
        seeds.append(max(seeds) + 1)
        logger.info(f"stage {stage.name}: not decided; one more seed ({len(seeds)} seeds)")
    seen |= seen_here
    return chosen


def judged(
    folder: StudyFolder,
    stage: StageState,
    study: StudyConfig,
    runner: Executor,
    options: DataOptions,
) -> StageState:
    """The stage's winner chosen, then compared with every other setting."""
    chosen = select(stage, study.selection)
    if chosen.winner is None:
        return chosen
    return compare_stage(folder, chosen, study.selection, runner, options)


def optuna_stage(
    folder: StudyFolder,
    plan: Plan,
    k: int,
    winners: dict[str, Any],
    seen: set[str],
    state: StudyState,
    runner: Executor,
) -> StageState:
    """Stage k's Optuna trials, asked as workers free up; the state is written as they end."""
    stage = plan.study.stages[k]
    search = OptunaSearch(folder, plan, k, winners, seen)
    logger.info(
        f"stage {k + 1}/{len(plan.study.stages)} {stage.name}: "
        f"{stage.n_trials} Optuna trials ({len(search.trials)} asked before), "  # type: ignore[union-attr]
        f"journal {search.journal}",
        **style("bold"),
    )
    state.stages.append(search.stage_state())

    def on_change(stage_state: StageState) -> None:
        state.stages[-1] = stage_state
        refresh(folder, state)
        folder.write_state(state)

    done = search.run(runner, on_change)
    state.stages.pop()
    return done


def published_index(published_winner: str | None, stage: StageState) -> int | None:
    """The index of the published winner among the stage's settings (None: not named)."""
    labels = [s.label for s in stage.settings]
    return labels.index(published_winner) if published_winner in labels else None


def carried_setting(published: int | None, stage: StageState, follow: str) -> int:
    """The setting later stages start from: the published winner when following it (where
    the study names one and it has a usable run: a diverged one cannot be built on), else
    the stage's own winner."""
    if follow == "published" and published is not None and stage.settings[published].final:
        return published
    assert stage.winner is not None
    return stage.winner


def compare_stage(
    folder: StudyFolder, stage: StageState, selection: str, runner: Executor, options: DataOptions
) -> StageState:
    """The stage judged on its runs' per-image validation outcomes (read where the data is)."""
    run_dirs = [
        [(r.seed, str((folder.path / r.run_dir).resolve())) for r in setting.runs
         if r.status == RunStatus.FINISHED]
        for setting in stage.settings
    ]  # fmt: skip
    outcomes = runner.call(validation_outcomes, run_dirs, options)
    return judge(stage, outcomes, selection)


def validation_outcomes(
    run_dirs: list[list[tuple[int, str]]], options: DataOptions, device: str | None
) -> list[SeedOutcomes]:
    """Per setting, per seed: right/wrong and loss per validation image, for the runs that
    keep their predictions (a run folder older than them is left out, and judged missing)."""
    outcomes: list[SeedOutcomes] = []
    for runs in run_dirs:
        mine: SeedOutcomes = {}
        for seed, path in runs:
            found = image_outcomes(path, "val", root=options.root, verify=options.verify)
            if found is not None:
                mine[seed] = found
        outcomes.append(mine)
    return outcomes


def test_outcomes(run_dirs: list[str], options: DataOptions, device: str | None) -> list[Any]:
    """Right/wrong per test image of each final run; None for one that keeps no predictions."""
    found = [image_outcomes(p, "test", root=options.root, verify=options.verify) for p in run_dirs]
    return [f[0] if f is not None else None for f in found]


def expand_stage(
    folder: StudyFolder, plan: Plan, k: int, winners: dict[str, Any], seen: set[str]
) -> tuple[StageState, list[Job]]:
    """Stage k's runs given the winners so far, and the jobs still to train.

    A configuration met in an earlier stage (`seen`) is reused, not trained again,
    unless its run folder vanished since: then this stage trains it.
    """
    stage = plan.study.stages[k]
    jobs: list[Job] = []
    queued: set[str] = set()
    planned_runs = plan.stage_runs(k, winners)
    labels = {p.setting: (p.label, p.value) for p in planned_runs}
    entries: dict[int, list[RunEntry]] = {i: [] for i in labels}
    for planned in planned_runs:
        run_hash = planned.config.run_hash()
        reused = run_hash in seen
        seen.add(run_hash)
        run_dir = folder.run_dir(run_hash)
        entries[planned.setting].append(
            RunEntry(
                seed=planned.seed,
                run_hash=run_hash,
                run_dir=run_dir.relative_to(folder.path).as_posix(),
                reused=reused,
            )
        )
        if run_hash not in queued and needs_training(RunDir(run_dir).status(), reused):
            queued.add(run_hash)
            setting = (
                f"{stage.field}={format_value(planned.value)}"
                if isinstance(stage, Stage)
                else planned.label  # a search stage's label names every field
            )
            label = f"stage {k + 1} {setting} seed {planned.seed}"
            jobs.append(Job(planned.config, run_dir, label))
    published = getattr(stage, "published", {})
    settings = [
        SettingState(value=value, label=label, runs=entries[i], published=published.get(label))
        for i, (label, value) in labels.items()
    ]
    first = labels[0][1]
    stage_state = StageState(
        name=stage.name,
        field=stage.field,
        figure=stage.figure,
        epochs=plan.config(k, first, winners, plan.study.seeds[0]).epochs,
        settings=settings,
        published_winner=getattr(stage, "published_winner", None),
        kind=stage.kind,
    )
    return stage_state, jobs


def refresh(folder: StudyFolder, state: StudyState) -> None:
    """Bring every run's status and each setting's final metrics up to date from the runs."""
    for stage in state.stages:
        for setting in stage.settings:
            finals = []
            for run in setting.runs:
                run_dir = RunDir(folder.path / run.run_dir)
                summary = run_dir.read_summary()
                run.status = run_dir.status()
                run.error = summary.error if summary is not None else None
                if run.status == RunStatus.FINISHED and summary and summary.final:
                    finals.append(summary.final)
            stats = {m: summarise([f[m] for f in finals]) for m in METRICS}
            setting.final = {m: s for m, s in stats.items() if s is not None} or None


def no_usable_run(stage: StageState) -> HpstudyError:
    outcomes = "; ".join(
        f"{s.label} seed {r.seed}: {r.status}" + (f" ({r.error})" if r.error else "")
        for s in stage.settings
        for r in s.runs
    )
    return HpstudyError(
        f"stage {stage.name!r} has no usable run ({outcomes}); fix the cause and rerun to resume"
    )


def final_evaluation(
    folder: StudyFolder, state: StudyState, runner: Executor, options: DataOptions
) -> FinalResult:
    """The winner of the last stage, every finished seed, evaluated on test exactly once."""
    last = state.stages[-1]
    assert last.winner is not None  # run_stages stops on a stage without a winner
    final_setting = last.carried if last.carried is not None else last.winner
    runs = []
    for entry in last.settings[final_setting].runs:
        if entry.status != RunStatus.FINISHED:
            continue
        run_dir = RunDir(folder.path / entry.run_dir)
        ledger = run_dir.read_summary().test_evaluations  # type: ignore[union-attr]
        if ledger:
            test = ledger[0].model_dump()
        else:
            test = runner.call(test_evaluation, str(run_dir.path.resolve()), options)
            ledger = run_dir.read_summary().test_evaluations  # type: ignore[union-attr]
        runs.append(
            FinalRun(
                seed=entry.seed,
                run_hash=entry.run_hash,
                run_dir=entry.run_dir,
                test=SplitScores(**{k: test[k] for k in SplitScores.model_fields}),
                test_evaluations=len(ledger),
            )
        )
    first = RunDir(folder.path / runs[0].run_dir)
    runner.call(export_final, str(first.path.resolve()), options)
    config = first.read_config().model_dump(exclude={"seed"})
    summary = first.read_summary()

    def stat(key: str) -> Stat:
        s = summarise([getattr(r.test, key) for r in runs])
        return s if s is not None else Stat(mean=float("nan"), std=0.0, n=0)

    paths = [str((folder.path / r.run_dir).resolve()) for r in runs]
    correct = runner.call(test_outcomes, paths, options)
    top1 = TestTop1(**stat("top1").model_dump())
    if correct and all(c is not None for c in correct):
        ci95, how = accuracy_interval(correct)
        top1 = top1.model_copy(update={"ci95": list(ci95), "interval": how})
    elif correct:
        top1 = top1.model_copy(update={"interval": "none: a final run keeps no test predictions "
                                                   "(evaluated before hpstudy kept them)"})
    return FinalResult(
        config=config,
        runs=runs,
        test_top1=top1,
        test_top5=stat("top5"),
        test_loss=stat("loss"),
        device=(summary.device_name if summary else None) or "unknown",
    )


def status_text(out: str | Path) -> str:
    folder = StudyFolder(out)
    state = folder.read_state()
    lines = [
        f"{state.name} ({state.budget}): {state.status}",
        f"{'stage':16} {'setting':12} {'seed':>4} {'state':9} {'epoch':>7} {'val_acc':>8}  run",
    ]
    for stage in state.stages:
        for k, setting in enumerate(stage.settings):
            for run in setting.runs:
                run_dir = RunDir(folder.path / run.run_dir)
                rows = run_dir.read_metrics()
                status = run_dir.status()
                if status == RunStatus.PENDING and rows:
                    status = RunStatus.PARTIAL
                epoch = f"{rows[-1]['epoch'] if rows else 0}/{stage.epochs}"
                acc = f"{rows[-1]['val_acc']:.4f}" if rows else "—"
                marks = (" (reused)" if run.reused else "") + (" *" if k == stage.winner else "")
                shown = f"trial {setting.trial}" if setting.trial is not None else setting.label
                lines.append(
                    f"{stage.name[:16]:16} {shown[:12]:12} {run.seed:>4} "
                    f"{status:9} {epoch:>7} {acc:>8}  {run.run_hash}{marks}"
                )
    if any(stage.winner is not None for stage in state.stages):
        lines.append("* winner of its stage")
    if state.final is not None:
        t = state.final.test_top1
        spread = f" ± {t.std:.4f} (n={t.n})" if t.n > 1 else ""
        lines.append(f"final test top-1 {t.mean:.4f}{spread}")
    if state.status != "finished" and (p := folder_progress(folder, state)) is not None:
        left = p.seconds_left
        when = "unknown until an epoch is measured" if left is None else duration(left)
        lines.append(
            f"done: {p.runs_done}/{p.runs} runs, {p.epochs_done:,}/{p.epochs:,} epochs; "
            f"time left at the measured speed: {when}"
        )
    return "\n".join(lines)


def watch_status(out: str | Path, seconds: float) -> None:
    """`status_text` every `seconds` until the study is no longer running: it ended, or no
    `study run` holds its folder any more (stopped: the same command resumes it)."""

    def ended() -> bool:
        return StudyFolder(out).read_state().status != "running" or not is_held(Path(out))

    watch(lambda: status_text(out), ended, seconds)


__all__ = [
    "BUDGETS",
    "FOLLOW",
    "default_out",
    "parse_seeds",
    "run_study",
    "status_text",
    "watch_status",
]
