"""The study folder's own files as typed records: study.json (which study) and state.json.

state.json is the report's input. It is a StudyState: every key is typed, so a
renamed key is an error when it is read, never a silent "—" in a report; a file
written before a key existed is upgraded first (hpstudy.files.MIGRATIONS). The
run folders under `runs/` belong to `hpstudy.run`, the report's files to
`hpstudy.report`. StudyFolder decides which folders a study may use (its own, or an
empty one) and holds the one-writer lock.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hpstudy.config import RunConfig
from hpstudy.errors import HpstudyError
from hpstudy.files import TEXT_CAP, parse_model, read_capped, read_model, write_atomic, write_model
from hpstudy.run import RunStatus
from hpstudy.run.folder import RunDir, not_a_folder
from hpstudy.study.lock import LOCK_NAME, check_free, hold
from hpstudy.study.spec import Published, ReportSpec, Selection, StudyConfig, validate_study

METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")
# bounds on what a state.json may hold, so a tampered one cannot make `report` or `status`
# slow: far beyond any study hpstudy writes (MAX_SETTINGS settings a stage, a few seeds)
MAX_STAGES = 100
MAX_STAGE_SETTINGS = 10_000
MAX_SEEDS = 1_000
MAX_CLASSES = 1_000
MAX_LEDGER = 100_000  # test evaluations recorded for one study
Interval = Annotated[list[float], Field(min_length=2, max_length=2)]  # 95 %: [low, high]
StudyStatus = Literal["running", "incomplete", "finished"]
Follow = Literal["own", "published"]


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Stat(Record):
    """Mean and sample std (0 for one value) over seeds, and how many seeds."""

    mean: float
    std: float
    n: int


class RunEntry(Record):
    seed: int
    run_hash: str
    run_dir: str  # relative to the study folder
    reused: bool  # met in an earlier stage: not trained again
    status: RunStatus = RunStatus.PENDING
    error: str | None = None


class SettingState(Record):
    value: Any  # what the stage's `assignment` takes: a values stage's value, else {field: value}
    label: str
    runs: list[RunEntry]
    published: Published | None
    final: dict[str, Stat] | None = None  # METRICS over the finished seeds
    trial: int | None = None  # an optuna stage's trial number


class Comparison(Record):
    """The stage's winner against one other setting, in the selection metric.

    `difference` is winner minus setting (positive favours the winner for val_acc, negative
    for val_loss) over the seeds both finished. Two or more seeds: `ci95` is the paired
    t-interval on the per-seed differences (new seeds, these validation images) and
    `p_value` that paired t-test; `prob_better` the share of seeds the winner wins (ties
    half, a seed the other diverged or failed on a win) with its exact interval. One seed:
    `ci95` is about these validation images and this seed only (seed noise unmeasured) and
    `prob_better` is None. `images_ci95` is a bootstrap over the validation images alone
    (new images for these trained models); `decision_ci` the interval the stage is decided
    on (Bonferroni over the k−1 comparisons and the looks of --until-decided). Without
    per-image predictions every number is None and `test` says why.
    """

    setting: str
    difference: float | None
    ci95: Interval | None
    p_value: float | None
    prob_better: float | None
    test: str
    seeds: int = 0  # paired seeds the comparison rests on
    images_ci95: Interval | None = None
    prob_better_ci95: Interval | None = None
    decision_ci: list[float] | None = None
    setting_lost: int = 0  # seeds the setting diverged or failed on and the winner finished
    winner_lost: int = 0  # seeds the winner diverged or failed on and the setting finished


class StageState(Record):
    name: str
    field: str  # the varied fields, ", "-joined
    figure: int | None
    epochs: int
    settings: list[SettingState] = Field(max_length=MAX_STAGE_SETTINGS)
    published_winner: str | None
    winner: int | None = None
    runner_up: int | None = None
    margin: float | None = None  # winner minus runner-up, in the selection metric's favour
    spread: float | None = None  # largest seed std of the selection metric
    tie: bool = False  # the winner and runner-up have the same mean
    tie_break: str | None = None  # how a tie was broken
    verdict: str | None = None
    kind: str = "values"  # the stage kind's name (hpstudy.study.kinds)
    journal: str | None = None  # an optuna stage's journal, relative to the study folder
    optuna_study: str | None = None  # its study's name in that journal
    comparisons: list[Comparison] = Field([], max_length=MAX_STAGE_SETTINGS)
    # every comparison's decision interval lies on the winner's side (two seeds or more)
    decided: bool = False
    ranked_on: list[int] | None = None  # the seeds the winner was ranked on (every setting's)
    looks: int = 0  # how often --until-decided judged the stage (each look spends α)
    alpha_spent: float = 0.0  # the error rate those looks spent, of ALPHA
    carried: int | None = None  # the setting later stages start from (None: the winner)

    @model_validator(mode="after")
    def _indices(self) -> StageState:
        """winner, runner_up and carried name one of the stage's settings."""
        for key in ("winner", "runner_up", "carried"):
            index = getattr(self, key)
            if index is not None and not 0 <= index < len(self.settings):
                raise ValueError(
                    f"{key} {index} names no setting of stage {self.name!r} "
                    f"({len(self.settings)} settings)"
                )
        if self.kind == "optuna" and (self.journal is None) != (self.optuna_study is None):
            raise ValueError(f"stage {self.name!r}: journal and optuna_study go together")
        return self


class DataSummary(Record):
    root: str
    dataset: str = "cifar100"  # state.json files written before CIFAR-10 have no key
    split_seed: int
    train_size: int
    val_size: int
    test_size: int
    num_classes: int
    image_shape: list[int] = Field([3, 32, 32], max_length=3)  # (C, H, W); before it: CIFAR's
    mean: list[float] = Field(max_length=4)
    std: list[float] = Field(max_length=4)
    val_indices_sha256: str
    class_proportion_min: float
    class_proportion_max: float
    class_proportion_mean: float
    class_proportions: list[float] = Field(max_length=MAX_CLASSES)
    # the first `used_train` train images' class balance, where the runs train on fewer
    used_train: int | None = None
    used_class_proportions: list[float] | None = Field(None, max_length=MAX_CLASSES)


class SplitScores(Record):
    loss: float
    top1: float
    top5: float
    superclass_top1: dict[str, float] = Field(max_length=MAX_CLASSES)


class FinalRun(Record):
    seed: int
    run_hash: str
    run_dir: str
    test: SplitScores
    test_evaluations: int  # how often the ledger says this run met the test split


class TestTouch(Record):
    """One evaluation of the test split made for the study: a line of test_ledger.jsonl."""

    run_hash: str
    run_dir: str  # relative to the study folder
    index: int  # its place in the run's own ledger (summary.json): each is recorded once
    at: str  # when it was evaluated (the run's ledger)
    config_hash: str  # the configuration tested: the run's, seed and split seed left out
    top1: float
    seeds: list[int]  # the seeds of the `study run` that recorded it


def setting_hash(config: RunConfig) -> str:
    """A short hash of the configuration a run tests, its seed and split seed left out: the
    final runs of one setting share it, another setting's differ."""
    identity = {k: v for k, v in config.identity().items() if k not in ("seed", "split_seed")}
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def tested_configs(touches: list[TestTouch]) -> list[str]:
    """The distinct configurations that met the test split, in the order they first did."""
    return list(dict.fromkeys(t.config_hash for t in touches))


class TestTop1(Stat):
    """Test top-1 over seeds with its 95 % interval (None where predictions are missing)."""

    ci95: Interval | None = None
    interval: str | None = None  # how the interval was made (Wilson, t-interval over runs)


class FinalResult(Record):
    config: dict[str, Any]  # the winning configuration, seed left out
    runs: list[FinalRun] = Field(min_length=1, max_length=MAX_SEEDS)
    test_top1: TestTop1
    test_top5: Stat
    test_loss: Stat
    device: str
    config_hash: str | None = None  # `setting_hash` of the configuration reported
    # every test evaluation made for the study (test_ledger.jsonl), this one's and any other's
    test_touches: list[TestTouch] = Field([], max_length=MAX_LEDGER)

    @field_validator("test_top1", mode="before")
    @classmethod
    def _from_stat(cls, value: Any) -> Any:
        """A plain Stat (code written before intervals) is a TestTop1 without one."""
        return value.model_dump() if isinstance(value, Stat) else value


class StudyState(Record):
    name: str
    budget: str
    study_hash: str
    seeds: list[int] = Field(min_length=1, max_length=MAX_SEEDS)
    selection: Selection
    status: StudyStatus
    report: ReportSpec
    data: DataSummary
    stages: list[StageState] = Field(max_length=MAX_STAGES)
    final: FinalResult | None
    environment: dict[str, str]
    wall_seconds_this_invocation: float | None = None
    follow: Follow = "own"  # whose winners each stage starts from
    until_decided: int | None = None  # an undecided stage grows to this many seeds

    def failed_runs(self) -> list[tuple[StageState, SettingState, RunEntry]]:
        return [
            (stage, setting, run)
            for stage in self.stages
            for setting in stage.settings
            for run in setting.runs
            if run.status == RunStatus.FAILED
        ]


class StudyRecord(Record):
    """study.json: which study a folder holds, at which budget, and the study itself.

    `study` is the study as its file holds it (`StudyConfig.as_file`), read back with
    the same parser as the file (`StudyFolder.read_study`); a folder written before it
    was kept has only the identity."""

    name: str
    budget: str
    study_hash: str
    identity: dict[str, Any]
    study: dict[str, Any] | None = None

    @classmethod
    def of(cls, study: StudyConfig, budget: str) -> StudyRecord:
        return cls(
            name=study.name,
            budget=budget,
            study_hash=study.identity_hash(budget),
            identity=study.identity(budget),
            study=study.as_file(),
        )


# what hpstudy may leave in a study folder before its study.json exists
# the lock, study.json on its way, and the slurm executor's job logs (its first job, the
# data summary, runs before study.json is written)
OWN_BEFORE_RECORD = frozenset({LOCK_NAME, "study.json.tmp", "slurm"})
LEDGER_NAME = "test_ledger.jsonl"


class StudyFolder:
    """A study's folder: study.json, state.json and the runs/ that hold its run folders.

    `check` refuses a folder the study may not use before anything is started;
    `lock` makes the folder and holds it for one `study run`; `claim` (under the
    lock) writes study.json. Reading (status, report) needs no lock.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def record_path(self) -> Path:
        return self.path / "study.json"

    @property
    def state_path(self) -> Path:
        return self.path / "state.json"

    @property
    def report_path(self) -> Path:
        return self.path / "report.md"

    @property
    def ledger_path(self) -> Path:
        return self.path / LEDGER_NAME

    def run_dir(self, run_hash: str) -> Path:
        return self.path / "runs" / run_hash

    def read_record(self) -> StudyRecord | None:
        if not self.record_path.exists():
            return None
        return read_model(self.record_path, StudyRecord, "study")

    def check(self, record: StudyRecord) -> None:
        """Refuse, writing nothing, a folder this study cannot use: a file, a folder under a
        file, a folder of files hpstudy did not write, another study's, one in use."""
        self.check_holds(record)
        if self.path.is_dir():
            check_free(self.path)

    def check_holds(self, record: StudyRecord) -> None:
        if problem := not_a_folder(self.path):
            raise HpstudyError(f"{self.path}: {problem}; use another --out")
        held = self.read_record()
        if held is None:
            foreign = self.foreign_files()
            if foreign:
                more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
                raise HpstudyError(
                    f"{self.path}: holds files but no study.json ({foreign[0]!r}{more}), so it "
                    "is not a study folder hpstudy made; use another --out, or an empty folder"
                )
        elif held.study_hash != record.study_hash:
            raise HpstudyError(
                f"{self.path} holds a different study ({held.name}, budget {held.budget}, "
                f"{held.study_hash}); use another --out"
            )

    def foreign_files(self) -> list[str]:
        """Names in a folder without study.json that hpstudy did not put there."""
        if not self.path.is_dir():
            return []
        try:
            return sorted(p.name for p in self.path.iterdir() if p.name not in OWN_BEFORE_RECORD)
        except OSError as err:
            raise HpstudyError(f"{self.path}: cannot read ({err.strerror or err})") from None

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Make the folder and hold its lock for the block: one `study run` writes it at a
        time; a second one gets one line naming the holder. Released when the process ends."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise HpstudyError(f"{self.path}: cannot create ({err.strerror or err})") from None
        with hold(self.path):
            yield

    def claim(self, record: StudyRecord) -> None:
        """Under `lock()`: check the folder again (another run may have claimed it since the
        first check) and write study.json; rewritten where the study changed without
        changing its identity (seeds, names, labels), so it holds the study that runs."""
        self.check_holds(record)
        if self.read_record() != record:
            write_model(self.record_path, record, "study")

    def read_study(self) -> StudyConfig:
        """The study this folder holds, parsed from study.json like a study file (with each
        stage's own kind), or one HpstudyError saying why it cannot be. A folder written
        before study.json kept the study is rebuilt from its identity (stages named by
        their number), which every built-in kind's identity allows."""
        record = self.read_record()
        if record is None:
            raise HpstudyError(f"{self.path}: no study.json")
        where = f"{self.record_path}"
        if record.study is not None:
            raw = record.study
        else:
            identity = record.identity
            raw = {
                "name": record.name,
                "base": identity.get("base", {}),
                "selection": identity.get("selection", "val_acc"),
                "split_follows_seed": identity.get("split_follows_seed", False),
                "final": identity.get("final", {}),
                "stages": [
                    {"name": f"stage {k + 1}", **stage}
                    for k, stage in enumerate(identity.get("stages", []))
                ],
            }
            where += " (its identity: written before study.json kept the study)"
        study = validate_study(raw, where)
        study._source = where
        if study.identity_hash(record.budget) != record.study_hash:
            raise HpstudyError(f"{where}: does not rebuild the study of hash {record.study_hash}")
        return study

    def read_state(self) -> StudyState:
        if not self.state_path.exists():
            raise HpstudyError(f"{self.path}: not a study folder (no state.json)")
        return read_model(self.state_path, StudyState, "state")

    def write_state(self, state: StudyState) -> None:
        write_model(self.state_path, state, "state")

    # ------------------------------------------------------------ the test ledger

    def read_ledger(self) -> list[TestTouch]:
        """test_ledger.jsonl: every test evaluation recorded for the study, oldest first."""
        if not self.ledger_path.exists():
            return []
        path = self.ledger_path
        try:
            lines = read_capped(path, TEXT_CAP).decode("utf-8").splitlines()
        except UnicodeDecodeError as err:
            raise HpstudyError(f"{path}: not UTF-8 text ({err})") from None
        touches = []
        for number, line in enumerate(lines, start=1):
            try:
                raw = json.loads(line)
            except (ValueError, RecursionError) as err:
                raise HpstudyError(f"{path}: line {number} is not JSON ({err})") from None
            touches.append(parse_model(TestTouch, raw, f"{path}: line {number}"))
        return touches

    def record_test_touches(self, seeds: list[int]) -> list[TestTouch]:
        """Append to the ledger every test evaluation a run folder of the study keeps and the
        ledger lacks (whoever made it: a `study run`, `hpstudy evaluate`, an earlier hpstudy),
        `seeds` the invocation's; returns the whole ledger. Called under the lock."""
        ledger = self.read_ledger()
        known = {(t.run_hash, t.index) for t in ledger}
        new = []
        runs = self.path / "runs"
        for path in sorted(runs.iterdir()) if runs.is_dir() else []:
            run = RunDir(path)
            summary = run.read_summary() if run.summary_path.exists() else None
            if summary is None or not summary.test_evaluations:
                continue
            config = setting_hash(run.read_config())
            for index, evaluation in enumerate(summary.test_evaluations):
                if (evaluation.run_hash, index) in known:
                    continue
                new.append(TestTouch(
                    run_hash=evaluation.run_hash,
                    run_dir=path.relative_to(self.path).as_posix(),
                    index=index,
                    at=evaluation.at,
                    config_hash=config,
                    top1=evaluation.top1,
                    seeds=seeds,
                ))  # fmt: skip
        if new:
            ledger += new
            text = "".join(t.model_dump_json() + "\n" for t in ledger)
            write_atomic(self.ledger_path, text.encode())
        return ledger

    def drop_report(self) -> None:
        """Remove report.md before the state changes: a report is current only if written
        after the state it shows, so a kill in between leaves a study that is not done."""
        try:
            self.report_path.unlink(missing_ok=True)
        except OSError as err:
            reason = err.strerror or err
            raise HpstudyError(f"{self.report_path}: cannot remove ({reason})") from None
