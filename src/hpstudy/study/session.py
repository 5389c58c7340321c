"""A study session: one `study run` of a study in its folder, from the data summary to the report.

Nothing is remembered that cannot be derived: each session expands the stages
again from the run folders, so a study killed anywhere resumes where it stopped,
a finished run is never trained twice, and a failed run (or one whose folder
vanished) is trained again.

A stage runs on one of two paths, whichever its kind is: a fixed kind's settings
are listed and trained (grown a seed at a time with --until-decided); an adaptive
kind's search asks its settings as workers free up. Either way the stage is then
judged, written and, without a usable run, stops the study, in one place.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from hpstudy.errors import HpstudyError
from hpstudy.executors import DataOptions, Executor, Job
from hpstudy.progress import StudyDisplay, show_progress, study_display, style
from hpstudy.run import RunDir, RunStatus
from hpstudy.study import remote
from hpstudy.study.compare import ALPHA, accuracy_interval
from hpstudy.study.cost import (
    Speed,
    StudyCost,
    budget_costs,
    can_export,
    cost_block,
    epochs_in,
    pruned_first_seed,
    resumed_plan,
    speed_together,
    study_cost,
)
from hpstudy.study.plan import Plan
from hpstudy.study.search import needs_training
from hpstudy.study.select import SeedScores, judge, select, summarise
from hpstudy.study.spec import StudyConfig
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
    TestTouch,
    setting_hash,
    tested_configs,
)
from hpstudy.study.status import folder_progress

logger = logging.getLogger(__name__)

class StudySession:
    """`study` at `budget` in `folder`, its runs handed to `executor`, the data read as
    `data` says; `follow` whose winners each stage starts from, `until_decided` how many
    seeds an undecided fixed stage may grow to, `remeasure` whether to time the model anew,
    `export` whether the final model is exported at the end. `run()` does the whole study."""

    def __init__(
        self,
        study: StudyConfig,
        budget: str,
        folder: StudyFolder,
        executor: Executor,
        data: DataOptions,
        follow: Follow = "own",
        until_decided: int | None = None,
        remeasure: bool = False,
        export: bool = True,
    ) -> None:
        self.study = study
        self.budget = budget
        self.folder = folder
        self.executor = executor
        self.data = data
        self.follow: Follow = follow
        self.until_decided = until_decided
        self.remeasure = remeasure  # time the model again, whatever the speed cache holds
        self.export = export  # the final model exported by the closing call
        self.plan = Plan(study, budget, executor.device_type())
        self.plan.validate()
        self.winners: dict[str, Any] = {}  # the fields carried forward by the stages so far
        self.seen: set[str] = set()  # run hashes met by the stages so far (reused later)
        self.state: StudyState | None = None  # made once the folder is claimed
        self.cost: StudyCost | None = None  # announced before anything trains

    # ------------------------------------------------------------ the study

    def run(self, record: StudyRecord, write_report: Callable[[Path], Path]) -> StudyState:
        """Claim the folder for `record`, run every stage, evaluate the winner on test once,
        write the state and the report; returns the final state."""
        started = time.perf_counter()
        base = self.plan.config_for_base()
        split_seed = self.study.seeds[0] if self.study.split_follows_seed else base.split_seed
        # with split_follows_seed the data section describes the first seed's split
        # the train images the first run uses (a budget's or the study's limit): Figure 1's
        first = self.study.stages[0]
        used = self.plan.config(0, first.candidates()[0], {}, self.study.seeds[0]).limit_train
        measured = base.model_copy(update={"limit_train": used})
        summary, speed = self.executor.call(
            remote.opening, self.data, split_seed, base.dataset, measured, self.remeasure
        )
        # runs that share a device go slower each: measured with as many at once as train
        slots = self.executor.runs_at_once()
        speed = speed_together(self.executor.call_at_once, slots, measured, speed, self.remeasure)
        cost = self.cost = self.announce_cost(summary, speed)
        # the folder is made only once the data is there (no half-claimed folder), and
        # written by this process alone from study.json to the report
        with self.folder.lock():
            self.folder.claim(record)
            self.state = state = StudyState(
                name=self.study.name,
                budget=self.budget,
                study_hash=record.study_hash,
                seeds=self.study.seeds,
                selection=self.study.selection,
                status="running",
                report=self.study.report,
                data=DataSummary(**summary),
                stages=[],
                final=None,
                environment={},
                follow=self.follow,
                until_decided=self.until_decided,
            )
            left = max(1, cost.epochs - cost.done_epochs)
            display = StudyDisplay(
                cost.runs,
                cost.epochs,
                cost.done_runs,
                cost.done_epochs,
                cost.train_seconds / left if cost.train_seconds else None,
                live=self.executor.in_process,
            )
            with study_display(display):
                for k in range(len(self.study.stages)):
                    self.run_stage(k)
            state.final, environment = self.final_evaluation()
            state.environment = {**environment, "device": state.final.device}
            state.status = "incomplete" if state.failed_runs() else "finished"
            state.wall_seconds_this_invocation = time.perf_counter() - started
            conclude(self.folder, state, write_report)
        return state

    def announce_cost(self, summary: dict[str, Any], speed: Speed) -> StudyCost:
        """Before anything trains: what the study costs here, and what cheaper budgets would,
        at the speed measured where the runs run (a few steps; cached per device and model)."""
        sizes = (summary["train_size"], summary["val_size"], summary["test_size"])
        # a resumed study: the trials and winners its stages have, not the plan's stand-ins
        tried, chosen = resumed_plan(self.folder)
        export = self.export and can_export()
        executor = self.executor
        at_once = {"slots": executor.runs_at_once(), "reuses_compiled": executor.reuses_compiled}
        cost = study_cost(
            self.plan, *sizes, speed, epochs_done=lambda config: epochs_in(self.folder, config),
            tried=tried, chosen=chosen, stopped=pruned_first_seed(self.folder, self.plan),
            export=export, **at_once,
        )  # fmt: skip
        if not self.export:
            cost = dataclasses.replace(cost, no_export="--no-export")
        cheaper = budget_costs(self.plan, *sizes, speed, export, **at_once)
        for line in cost_block(self.study.name, cost, cheaper, speed):
            logger.info(line)
        return cost

    # ------------------------------------------------------------ a stage

    def run_stage(self, k: int) -> StageState:
        """Stage k run on its kind's path and judged, its carried setting chosen and its
        fields carried to the later stages."""
        stage = self.study.stages[k]
        chosen = self.adaptive_stage(k) if stage.adaptive else self.fixed_stage(k)
        published_label = stage.published_label()
        carried = carried_setting(published_index(published_label, chosen), chosen, self.follow)
        chosen = chosen.model_copy(update={"carried": carried})
        self.put(k, chosen)
        self.folder.write_state(self.current)
        self.winners.update(stage.assignment(chosen.settings[carried].value))
        label = chosen.settings[chosen.winner].label  # type: ignore[index]
        published = ""
        if published_label is not None:
            same = published_label == label
            published = " (as published)" if same else f" (published: {published_label})"
        if carried != chosen.winner:
            published += f"; following the published study, {published_label} carries on"
        logger.info(f"stage {stage.name}: winner {label}{published} — {chosen.verdict}")
        return chosen

    def fixed_stage(self, k: int) -> StageState:
        """Stage k's listed settings trained and judged; with --until-decided, grown by a
        seed at a time (for every setting) while no interval decides it."""
        stage = self.study.stages[k]
        seeds = list(self.study.seeds)
        # every look at two seeds or more spends its share of α (none is decided before)
        alpha = ALPHA / planned_looks(len(seeds), self.until_decided)
        looks = 0
        while True:
            # a stage grown by a seed is expanded again: its own runs are not "reused"
            seen_here = set(self.seen)
            plan = self.plan if seeds == self.study.seeds else self.plan.with_seeds(seeds)
            stage_state, jobs = expand_stage(self.folder, plan, k, self.winners, seen_here)
            self.put(k, stage_state)
            self.save()
            runs = sum(len(s.runs) for s in stage_state.settings)
            logger.info(
                f"stage {k + 1}/{len(self.study.stages)} {stage.name}: {runs} runs, "
                f"{len(jobs)} to train",
                **style("bold"),
            )
            self.executor.run(jobs)
            self.count_remote_progress()
            looks += len(seeds) >= 2
            chosen = self.judge(k, alpha, looks)
            grow = self.until_decided is not None and len(seeds) < self.until_decided
            if chosen.decided or not grow:
                break
            seeds.append(max(seeds) + 1)
            logger.info(f"stage {stage.name}: not decided; one more seed ({len(seeds)} seeds)")
        self.seen |= seen_here
        return chosen

    def adaptive_stage(self, k: int) -> StageState:
        """Stage k's settings asked by its kind's search as workers free up, round after
        round until a round starts nothing; the state is written after each round."""
        stage = self.study.stages[k]
        search = stage.search(self.folder, self.plan, k, self.winners, self.seen)
        logger.info(
            f"stage {k + 1}/{len(self.study.stages)} {stage.name}: {search.headline()}",
            **style("bold"),
        )
        self.put(k, search.stage_state())
        self.save()
        while True:
            jobs = Counted(search.jobs())
            self.executor.run(jobs)
            search.tell()
            self.put(k, search.stage_state())
            self.save()
            if not jobs.count:
                break
        self.count_remote_progress()
        return self.judge(k)

    def judge(self, k: int, alpha: float = ALPHA, looks: int | None = None) -> StageState:
        """Stage k's winner chosen, then compared with every other setting at the error rate
        `alpha` of this look (the `looks`-th at two seeds or more), written; a stage without
        a usable run stops the study."""
        self.refresh()
        stage = self.current.stages[k]
        chosen = select(stage, self.study.selection, self.seed_scores(stage))
        if chosen.winner is not None:
            chosen = self.compare(chosen, alpha)
        if looks is None:
            looks = int(any(c.seeds >= 2 for c in chosen.comparisons))
        chosen = chosen.model_copy(update={"looks": looks, "alpha_spent": looks * alpha})
        self.put(k, chosen)
        self.folder.write_state(self.current)
        if chosen.winner is None:
            raise no_usable_run(chosen)
        return chosen

    def seed_scores(self, stage: StageState) -> list[SeedScores]:
        """Each setting's selection metric by finished seed, from its runs' summaries."""
        scores: list[SeedScores] = []
        for setting in stage.settings:
            mine: SeedScores = {}
            for run in setting.runs:
                summary = RunDir(self.folder.path / run.run_dir).read_summary()
                if run.status == RunStatus.FINISHED and summary and summary.final:
                    value = summary.final.get(self.study.selection)
                    if value is not None:
                        mine[run.seed] = value
            scores.append(mine)
        return scores

    def compare(self, stage: StageState, alpha: float = ALPHA) -> StageState:
        """The stage judged on its runs' per-image validation outcomes (read where the data is)."""
        run_dirs = [
            [(r.seed, str((self.folder.path / r.run_dir).resolve())) for r in setting.runs
             if r.status == RunStatus.FINISHED]
            for setting in stage.settings
        ]  # fmt: skip
        if sum(1 for dirs in run_dirs if dirs) < 2:  # the winner alone: nothing to compare,
            outcomes: list[Any] = [{} for _ in run_dirs]  # and no call (on SLURM, no job)
        else:
            outcomes = self.executor.call(remote.validation_outcomes, run_dirs, self.data)
        return judge(stage, outcomes, self.study.selection, alpha)

    # ------------------------------------------------------------ the state

    @property
    def current(self) -> StudyState:
        assert self.state is not None, "the session has not claimed its folder yet"
        return self.state

    def put(self, k: int, stage: StageState) -> None:
        stages = self.current.stages
        if len(stages) > k:
            stages[k] = stage
        else:
            stages.append(stage)

    def refresh(self) -> None:
        refresh(self.folder, self.current)

    def save(self) -> None:
        self.refresh()
        self.folder.write_state(self.current)

    def count_remote_progress(self) -> None:
        """Runs trained elsewhere (worker processes, Ray, SLURM) are counted here, from the
        folder: this process drew no epoch of theirs."""
        if self.executor.in_process:
            return
        try:
            p = folder_progress(self.folder, self.current)
        except HpstudyError:
            return  # the bar is not the study: a folder that cannot say leaves it as it was
        show_progress(p.runs_done, p.epochs_done, p.seconds_per_epoch)

    # ------------------------------------------------------------ the test, once

    def final_evaluation(self) -> tuple[FinalResult, dict[str, str]]:
        """The winner of the last stage, every finished seed, evaluated on test exactly once
        (in one call where the runs run, with the export and the environment); every test
        evaluation, this one's and any earlier one's, recorded in the study's ledger before
        its result is used."""
        folder, options = self.folder, self.data
        last = self.current.stages[-1]
        assert last.winner is not None  # a stage without a winner stopped the study
        final_setting = last.carried if last.carried is not None else last.winner
        entries = [e for e in last.settings[final_setting].runs if e.status == RunStatus.FINISHED]
        paths = [str((folder.path / e.run_dir).resolve()) for e in entries]
        config_hash = setting_hash(RunDir(paths[0]).read_config())
        self.warn_of_other_touches(folder.record_test_touches(self.study.seeds), config_hash)
        # the steps after the last epoch take minutes on a CPU: said, not silent
        if self.cost is not None:
            logger.info(f"final: {self.cost.closing_words()}")
        closed = self.executor.call(remote.closing, paths, options, self.export)
        touches = folder.record_test_touches(self.study.seeds)
        runs = []
        for entry, test in zip(entries, closed["tests"], strict=True):
            ledger = RunDir(folder.path / entry.run_dir).read_summary().test_evaluations  # type: ignore[union-attr]
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

        correct = closed["outcomes"]
        top1 = TestTop1(**stat("top1").model_dump())
        if correct and all(c is not None for c in correct):
            ci95, how = accuracy_interval(correct)
            top1 = top1.model_copy(update={"ci95": list(ci95) if ci95 else None, "interval": how})
        elif correct:
            top1 = top1.model_copy(update={"interval": "none: a final run keeps no test "
                                           "predictions (evaluated before hpstudy kept them)"})
        return FinalResult(
            config=config,
            runs=runs,
            test_top1=top1,
            test_top5=stat("top5"),
            test_loss=stat("loss"),
            device=(summary.device_name if summary else None) or "unknown",
            config_hash=config_hash,
            test_touches=touches,
        ), closed["environment"]

    def warn_of_other_touches(self, touches: list[TestTouch], config_hash: str) -> None:
        """Say, before testing, that the test split has already met another configuration
        (a rerun whose final winner changed): the report will list every one."""
        others = [c for c in tested_configs(touches) if c != config_hash]
        if not others:
            return
        shown = ", ".join(others)
        logger.warning(
            f"the final winner changed (or another run was tested by hand): the test split "
            f"was already evaluated on {len(others)} other configuration"
            f"{'s' if len(others) > 1 else ''} ({shown}); testing the final winner "
            f"({config_hash}) too: the report lists every test touch"
        )


class Counted:
    """An iterable of jobs that counts the jobs pulled from it (a round that starts none
    ends an adaptive stage)."""

    def __init__(self, jobs: Iterable[Job]) -> None:
        self.jobs = jobs
        self.count = 0

    def __iter__(self) -> Iterator[Job]:
        for job in self.jobs:
            self.count += 1
            yield job


def expand_stage(
    folder: StudyFolder, plan: Plan, k: int, winners: dict[str, Any], seen: set[str]
) -> tuple[StageState, list[Job]]:
    """Fixed stage k's runs given the winners so far, and the jobs still to train.

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
            label = f"stage {k + 1} {stage.setting_text(planned.value)} seed {planned.seed}"
            jobs.append(Job(planned.config, run_dir, label))
    settings = [
        SettingState(
            value=value, label=label, runs=entries[i], published=stage.published_of(label)
        )
        for i, (label, value) in labels.items()
    ]
    first = labels[0][1]
    stage_state = StageState(
        name=stage.name,
        field=stage.varied_text(),
        figure=stage.figure,
        epochs=plan.config(k, first, winners, plan.study.seeds[0]).epochs,
        settings=settings,
        published_winner=stage.published_label(),
        kind=stage.kind_name(),
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


def planned_looks(initial_seeds: int, until_decided: int | None) -> int:
    """How often a fixed stage may be judged at two seeds or more: once, or with
    --until-decided N at every seed count from max(initial, 2) to N (α is split evenly
    among them: Bonferroni over the looks, so growing the seeds keeps the error at α)."""
    if until_decided is None:
        return 1
    return max(until_decided - max(initial_seeds, 2) + 1, 1)


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


def no_usable_run(stage: StageState) -> HpstudyError:
    outcomes = "; ".join(
        f"{s.label} seed {r.seed}: {r.status}" + (f" ({r.error})" if r.error else "")
        for s in stage.settings
        for r in s.runs
    )
    return HpstudyError(
        f"stage {stage.name!r} has no usable run ({outcomes}); fix the cause and rerun to resume"
    )


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


__all__ = ["StudySession", "already_done", "expand_stage", "refresh"]
