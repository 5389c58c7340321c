"""The runner: a study at a budget -> its runs trained, winners chosen, the test touched once.

Nothing is remembered that cannot be derived: each `study run` expands the
stages again from the run folders, so a study killed anywhere resumes where it
stopped, a finished run is never trained twice, and a failed run (or one whose
folder vanished) is trained again.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpstudy import __version__, data
from hpstudy.errors import HpstudyError
from hpstudy.executors import DataOptions, Executor, Job, make_executor
from hpstudy.progress import StudyDisplay, duration, log, show_progress, study_display, watch
from hpstudy.run import RunDir, RunStatus, evaluate, load_data
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
from hpstudy.study.select import select, summarise
from hpstudy.study.spec import StudyConfig, format_value, load_study
from hpstudy.study.state import (
    METRICS,
    DataSummary,
    FinalResult,
    FinalRun,
    RunEntry,
    SettingState,
    SplitScores,
    StageState,
    Stat,
    StudyFolder,
    StudyRecord,
    StudyState,
)


def default_out(name: str, budget: str) -> Path:
    return Path("runs") / (name if budget == "full" else f"{name}-{budget}")


def data_summary(options: DataOptions, split_seed: int, device: str | None) -> dict[str, Any]:
    """What the report says of the data; runs where the runs run (the driver may lack it)."""
    info = data.split_info(load_data(options.root, options.verify), split_seed)
    return {"root": str(data.resolve_root(options.root)), **info}


def test_evaluation(run_dir: str, options: DataOptions, device: str | None) -> dict[str, Any]:
    return evaluate(run_dir, "test", root=options.root, verify=options.verify, device=device)


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
    executor: str = "local",
    root: str | None = None,
    verify: bool = True,
    devices: list[int] | None = None,
    address: str | None = None,
    device: str | None = None,
) -> StudyState:
    """Run (or resume) a study; returns its state. Writes the report at the end."""
    # the report is the step after the study: imported here so that importing
    # hpstudy.report never has to import the runner first
    from hpstudy.report import write_report

    study = load_study(spec)
    # a bad study fails before anything is started; the device, and so what `auto`
    # precision means and whether fp16 is possible, is known once the executor is
    Plan(study, budget, device_type=None).validate()
    folder = StudyFolder(Path(out) if out is not None else default_out(study.name, budget))
    record = StudyRecord(
        name=study.name,
        budget=budget,
        study_hash=study.identity_hash(budget),
        identity=study.identity(budget),
    )
    folder.check(record)  # a folder it may not use is refused before anything starts
    if done := already_done(folder, study):
        log(f"{folder.path}: study {study.name} ({budget}) already finished; nothing to do")
        log(report_line(folder))
        return done

    options = DataOptions(root=root, verify=verify)
    runner = make_executor(executor, options, devices=devices, address=address, device=device)
    started = time.perf_counter()
    try:
        plan = Plan(study, budget, runner.device_type())
        plan.validate()
        summary = runner.call(data_summary, options, plan.config_for_base().split_seed)
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
                run_stages(folder, plan, state, runner)
            state.final = final_evaluation(folder, state, runner, options)
            state.environment = {**runner.call(environment), "device": state.final.device}
            failed = state.failed_runs()
            state.status = "incomplete" if failed else "finished"
            state.wall_seconds_this_invocation = time.perf_counter() - started
            conclude(folder, state, write_report)
    finally:
        runner.close()

    t = state.final.test_top1
    log(f"study {study.name} ({budget}) {state.status}: test top-1 {t.mean:.4f}")
    if failed:
        log(
            f"{len(failed)} run(s) failed (the report lists why); run the same command again "
            "to retry them"
        )
    log(report_line(folder))
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
        log(line)
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


def already_done(folder: StudyFolder, study: StudyConfig) -> StudyState | None:
    """The state of a study finished with these seeds and reported; else None."""
    if not folder.state_path.exists():
        return None
    state = folder.read_state()
    finished = state.status == "finished" and folder.report_path.exists()
    return state if finished and state.seeds == study.seeds else None


def report_line(folder: StudyFolder) -> str:
    return f"report: {folder.path / 'report.md'} and {folder.path / 'report.html'}"


def run_stages(folder: StudyFolder, plan: Plan, state: StudyState, runner: Executor) -> None:
    study = plan.study
    winners: dict[str, Any] = {}
    seen: set[str] = set()
    for k, stage in enumerate(study.stages):
        stage_state, jobs = expand_stage(folder, plan, k, winners, seen)
        state.stages.append(stage_state)
        refresh(folder, state)
        folder.write_state(state)
        log(
            f"[bold]stage {k + 1}/{len(study.stages)} {stage.name}[/bold]: "
            f"{len(stage.values) * len(study.seeds)} runs, {len(jobs)} to train"
        )
        runner.run(jobs)
        if not runner.in_process and (p := folder_progress(folder, state)) is not None:
            show_progress(p.runs_done, p.epochs_done)  # runs trained elsewhere: counted here
        refresh(folder, state)
        state.stages[-1] = chosen = select(state.stages[-1], study.selection)
        folder.write_state(state)
        if chosen.winner is None:
            raise no_usable_run(chosen)
        winners[stage.field] = stage.values[chosen.winner]
        label = chosen.settings[chosen.winner].label
        published = ""
        if stage.published_winner is not None:
            same = stage.published_winner == label
            published = " (as published)" if same else f" (published: {stage.published_winner})"
        log(f"stage {stage.name}: winner {label}{published} — {chosen.verdict}")


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
    entries: dict[int, list[RunEntry]] = {i: [] for i in range(len(stage.values))}
    for planned in plan.stage_runs(k, winners):
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
            label = f"stage {k + 1} {stage.field}={format_value(planned.value)} seed {planned.seed}"
            jobs.append(Job(planned.config, run_dir, label))
    settings = [
        SettingState(
            value=value,
            label=stage.label(i),
            runs=entries[i],
            published=stage.published.get(stage.label(i)),
        )
        for i, value in enumerate(stage.values)
    ]
    stage_state = StageState(
        name=stage.name,
        field=stage.field,
        figure=stage.figure,
        epochs=plan.config(k, stage.values[0], winners, plan.study.seeds[0]).epochs,
        settings=settings,
        published_winner=stage.published_winner,
    )
    return stage_state, jobs


def needs_training(status: RunStatus, reused: bool) -> bool:
    """A run not done trains; a reused one too if its folder vanished since its stage (a
    reused run that failed there is retried by the next `study run`, like any failed run)."""
    if status.done:
        return False
    return not reused or status in (RunStatus.PENDING, RunStatus.PARTIAL)


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
    runs = []
    for entry in last.settings[last.winner].runs:
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
    config = first.read_config().model_dump(exclude={"seed"})
    summary = first.read_summary()

    def stat(key: str) -> Stat:
        s = summarise([getattr(r.test, key) for r in runs])
        return s if s is not None else Stat(mean=float("nan"), std=0.0, n=0)

    return FinalResult(
        config=config,
        runs=runs,
        test_top1=stat("top1"),
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
                lines.append(
                    f"{stage.name[:16]:16} {setting.label[:12]:12} {run.seed:>4} "
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


__all__ = ["BUDGETS", "default_out", "run_study", "status_text", "watch_status"]
