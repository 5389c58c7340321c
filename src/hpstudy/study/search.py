"""Search stages: random draws from a space, and Optuna TPE trials kept in a journal file.

A random stage is a fixed list of settings (seeded draws, `hpstudy.study.kinds.space`),
expanded by the plan like any stage. An optuna stage asks its settings one at a time
(`OptunaSearch`, the optuna kind's `Search`): each trial's
parameters give a RunConfig, its hash a run folder (a trial proposed twice
reuses the run), and the trial's result is read back from that folder. The
Optuna study lives in `STUDY/optuna/stage<k>-<winners>.journal` (Optuna's
JournalFileBackend), which worker processes and Ray tasks on a shared
filesystem open themselves to report each epoch's validation metric and ask the
pruner. A kill leaves trials RUNNING in the journal: the next `study run`
finishes them from their run folders' checkpoints, never asking them again.
Each trial is asked with a sampler seeded by (sampler seed, trial count), so a
sequential search asks the same trials whether or not it was interrupted.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from hpstudy.errors import HpstudyError
from hpstudy.executors import Job
from hpstudy.run import MetricRow, RunDir, RunStatus
from hpstudy.run.hooks import HookSpec, RunHook, default_hooks
from hpstudy.study.kinds import label_of
from hpstudy.study.kinds.space import Distribution, corners, draw_random
from hpstudy.study.state import RunEntry, SettingState, StageState, StudyFolder

if TYPE_CHECKING:
    import optuna

    from hpstudy.study.kinds.optuna import OptunaStage
    from hpstudy.study.plan import Plan

JOURNAL_FOLDER = "optuna"
JOURNAL_CAP = 1 << 30  # bytes: an Optuna journal the report reads (10,000 trials: ~50 MB)
# where workers find the trial reporter (a run hook named by reference: no registration)
OPTUNA_HOOK = "hpstudy.study.search:OptunaTrialHook"


# ---------------------------------------------------------------- runs


def needs_training(status: RunStatus, reused: bool) -> bool:
    """A run not done trains; a reused one too if its folder vanished since its stage (a
    reused run that failed there is retried by the next `study run`, like any failed run)."""
    if status.done:
        return False
    return not reused or status in (RunStatus.PENDING, RunStatus.PARTIAL)


# ---------------------------------------------------------------- optuna, where it runs


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise HpstudyError("an optuna stage needs Optuna: pip install 'hpstudy[optuna]'") from None
    return optuna


def open_storage(path: Path) -> optuna.storages.JournalStorage:
    optuna = import_optuna()
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def make_pruner(name: str | None) -> optuna.pruners.BasePruner:
    optuna = import_optuna()
    if name == "median":
        return optuna.pruners.MedianPruner()
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def direction(metric: str) -> str:
    return "maximize" if metric == "val_acc" else "minimize"


class OptunaTrialHook(RunHook):
    """The run hook of a trial's run, in its worker: after each epoch, report `metric` to
    trial `number` of the study `study_name` in `journal` (a file every worker opens) and
    stop the run when the pruner (`median`, `asha` or none) says so."""

    def __init__(
        self, journal: str, study_name: str, number: int, metric: str, pruner: str | None
    ) -> None:
        self.journal, self.study_name, self.number = Path(journal), study_name, number
        self.metric, self.pruner = metric, pruner
        self.trial: Any = None

    @classmethod
    def spec(
        cls, journal: Path, study_name: str, number: int, metric: str, pruner: str | None
    ) -> HookSpec:
        """The hook as plain data, to travel with the trial's job."""
        args = {"journal": str(journal), "study_name": study_name, "number": number,
                "metric": metric, "pruner": pruner}  # fmt: skip
        return HookSpec(OPTUNA_HOOK, args)

    def on_start(self, config: Any, run_dir: Path, start_epoch: int) -> None:
        optuna = import_optuna()
        storage = open_storage(self.journal)
        study = optuna.load_study(
            study_name=self.study_name, storage=storage, pruner=make_pruner(self.pruner)
        )
        study_id = storage.get_study_id_from_name(self.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.number)
        # a told trial whose run folder vanished: the run trains again, the trial is settled
        if storage.get_trial(trial_id).state == optuna.trial.TrialState.RUNNING:
            self.trial = optuna.trial.Trial(study, trial_id)

    def on_epoch(self, epoch: int, row: MetricRow) -> bool:
        if self.trial is None:
            return False
        with warnings.catch_warnings():
            # a resumed run reports its checkpoint's epoch again: Optuna keeps the first
            warnings.simplefilter("ignore")
            self.trial.report(row[self.metric], epoch)
        return bool(self.trial.should_prune())


# ---------------------------------------------------------------- an optuna stage


def sampler_seed(seed: int, count: int) -> int:
    return int(np.random.SeedSequence([seed, count]).generate_state(1)[0])


def winners_key(winners: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(winners, sort_keys=True).encode()).hexdigest()[:8]


def optuna_distributions(space: dict[str, Distribution]) -> dict[str, Any]:
    optuna = import_optuna()
    dists = optuna.distributions
    out: dict[str, Any] = {}
    for name, d in space.items():
        if d.choice is not None:
            out[name] = dists.CategoricalDistribution(d.choice)
        elif d.kind == "int":
            out[name] = dists.IntDistribution(*d.bounds)
        else:
            out[name] = dists.FloatDistribution(*d.bounds, log=d.kind == "log_uniform")
    return out


@dataclass
class Trial:
    """One Optuna trial and its runs, one per seed; the first seed's run is the one pruned."""

    number: int
    params: dict[str, Any]
    entries: list[RunEntry]
    jobs: list[Job]  # per seed, in the study's seed order
    told: bool  # Optuna knows its outcome


class OptunaSearch:
    """Stage `k`, an optuna stage, from the winners so far: its trials asked, run and told."""

    def __init__(
        self, folder: StudyFolder, plan: Plan, k: int, winners: dict[str, Any], seen: set[str]
    ) -> None:
        optuna = import_optuna()
        self.optuna = optuna
        self.folder, self.plan, self.k, self.seen = folder, plan, k, seen
        self.winners = dict(winners)
        # built by the optuna kind for its own stage (kinds.optuna imports this module)
        self.stage = cast("OptunaStage", plan.study.stages[k])
        assert self.stage.kind == "optuna"
        self.metric = plan.study.selection
        self.study_name = f"stage{k + 1}-{winners_key(self.winners)}"
        self.journal = folder.path / JOURNAL_FOLDER / f"{self.study_name}.journal"
        try:
            self.journal.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            reason = err.strerror or err
            raise HpstudyError(f"{self.journal.parent}: cannot create ({reason})") from None
        self.distributions = optuna_distributions(self.stage.space)
        self.study = optuna.create_study(
            storage=open_storage(self.journal),
            study_name=self.study_name,
            direction=direction(self.metric),
            pruner=make_pruner(self.stage.pruner),
            load_if_exists=True,
        )
        self.trials: dict[int, Trial] = {}
        self.queued: set[str] = set()  # run hashes handed to the executor by this search
        running = self.optuna.trial.TrialState.RUNNING
        for t in self.study.get_trials(deepcopy=False):
            self.add(t.number, t.params, told=t.state != running)

    # ------------------------------------------------------------ trials

    def add(self, number: int, params: dict[str, Any], told: bool) -> Trial:
        """Register a trial: its run folders (shared with any earlier equal config)."""
        entries, jobs = [], []
        for seed in self.plan.study.seeds:
            config = self.plan.config(self.k, params, self.winners, seed)
            run_hash = config.run_hash()
            reused = run_hash in self.seen
            self.seen.add(run_hash)
            run_dir = self.folder.run_dir(run_hash)
            relative = run_dir.relative_to(self.folder.path).as_posix()
            entries.append(RunEntry(seed=seed, run_hash=run_hash, run_dir=relative, reused=reused))
            label = f"{self.stage.name} / trial {number} / seed {seed}"
            hooks = default_hooks(label)
            if seed == self.plan.study.seeds[0]:
                # absolute: a worker's working directory may be elsewhere
                hooks += (OptunaTrialHook.spec(self.journal.resolve(), self.study_name, number,
                                               self.metric, self.stage.pruner),)  # fmt: skip
            jobs.append(Job(config, run_dir, label, hooks))
        self.trials[number] = Trial(number, dict(params), entries, jobs, told)
        return self.trials[number]

    def ask(self) -> Trial:
        count = len(self.study.get_trials(deepcopy=False))
        # a fresh sampler per trial, seeded by its count: a resumed search asks what an
        # uninterrupted one would (the history it conditions on is the same)
        self.study.sampler = self.optuna.samplers.TPESampler(
            seed=sampler_seed(self.stage.sampler_seed, count)
        )
        t = self.study.ask(self.distributions)
        return self.add(t.number, t.params, told=False)

    def statuses(self, trial: Trial) -> list[RunStatus]:
        return [RunDir(self.folder.path / e.run_dir).status() for e in trial.entries]

    def settle(self, trial: Trial) -> None:
        """Tell Optuna a trial's outcome once its runs say it. A failed run leaves the trial
        running: the next `study run` retries the run and then tells it."""
        if trial.told:
            return
        statuses = self.statuses(trial)
        state = self.optuna.trial.TrialState
        if statuses[0] == RunStatus.PRUNED:
            self.study.tell(trial.number, state=state.PRUNED)
        elif RunStatus.FAILED in statuses or not all(s.done for s in statuses):
            return
        else:
            values = []
            for entry, status in zip(trial.entries, statuses, strict=True):
                summary = RunDir(self.folder.path / entry.run_dir).read_summary()
                if status == RunStatus.FINISHED and summary is not None and summary.final:
                    values.append(summary.final[self.metric])
            if values:
                self.study.tell(trial.number, float(np.mean(values)))
            else:
                self.study.tell(trial.number, state=state.FAIL)
        trial.told = True

    def ready_job(self, trial: Trial) -> Job | None:
        """The trial's next run to train: the first seed's, then (unless it was pruned or
        diverged) the others'."""
        statuses = self.statuses(trial)
        for i, (entry, job) in enumerate(zip(trial.entries, trial.jobs, strict=True)):
            if i > 0 and statuses[0] != RunStatus.FINISHED:
                return None
            if entry.run_hash in self.queued:
                continue  # running for this or another trial, or failed in this `study run`
            if needs_training(statuses[i], entry.reused):
                self.queued.add(entry.run_hash)
                return job
        return None

    def headline(self) -> str:
        return (
            f"{self.stage.n_trials} Optuna trials ({len(self.trials)} asked before), "
            f"journal {self.journal}"
        )

    def jobs(self) -> Iterator[Job]:
        """The jobs of this round, pulled one by one as workers free up: before each, the
        trials whose runs ended are told, and a new trial is asked only when no known one
        has a run to train."""
        while True:
            self.tell()
            job = next(
                (j for t in self.trials.values() if (j := self.ready_job(t)) is not None), None
            )
            if job is None and len(self.study.get_trials(deepcopy=False)) < self.stage.n_trials:
                job = self.ready_job(self.ask())
                if job is None:
                    continue  # a trial proposed again whose runs are done: told next time
            if job is None:
                return
            yield job

    def tell(self) -> None:
        """Tell Optuna the outcome of every trial whose runs say it."""
        for trial in self.trials.values():
            self.settle(trial)

    def stage_state(self) -> StageState:
        settings = [
            SettingState(
                value=t.params,
                label=f"trial {t.number}: {label_of(t.params)}",
                runs=t.entries,
                published=None,
                trial=t.number,
            )
            for t in sorted(self.trials.values(), key=lambda t: t.number)
        ]
        first = corners(self.stage.space)[0]
        epochs = self.plan.config(self.k, first, self.winners, self.plan.study.seeds[0]).epochs
        return StageState(
            name=self.stage.name,
            field=self.stage.varied_text(),
            figure=self.stage.figure,
            epochs=epochs,
            settings=settings,
            published_winner=None,
            kind=self.stage.kind,
            journal=self.journal.relative_to(self.folder.path).as_posix(),
            optuna_study=self.study_name,
        )


def load_stage_study(study_dir: Path, stage: StageState) -> Any:
    """The Optuna study of a recorded optuna stage, read from its journal (for the report)."""
    optuna = import_optuna()
    if stage.journal is None or not (study_dir / stage.journal).is_file():
        raise HpstudyError(f"stage {stage.name!r}: its Optuna journal is missing")
    journal = study_dir / stage.journal
    if Path(stage.journal).is_absolute() or ".." in Path(stage.journal).parts:
        raise HpstudyError(
            f"stage {stage.name!r}: journal {stage.journal!r} is not in the study folder"
        )
    if journal.stat().st_size > JOURNAL_CAP:
        raise HpstudyError(f"{journal}: larger than an Optuna journal of a study may be")
    storage = open_storage(journal)
    try:
        return optuna.load_study(study_name=stage.optuna_study, storage=storage)
    except (KeyError, ValueError) as err:  # no such study in the journal
        raise HpstudyError(
            f"{journal}: holds no Optuna study {stage.optuna_study!r} (state.json, stage "
            f"{stage.name!r}, optuna_study): {err}"
        ) from None


__all__ = [
    "OPTUNA_HOOK",
    "OptunaSearch",
    "OptunaTrialHook",
    "corners",
    "draw_random",
    "label_of",
    "load_stage_study",
    "needs_training",
    "open_storage",
]
