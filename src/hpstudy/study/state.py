"""The study folder's own files as typed records: study.json (which study) and state.json.

state.json is the report's input. It is a StudyState: every key is typed, so a
renamed key is an error when it is read, never a silent "—" in a report; a file
written before a key existed is upgraded first (hpstudy.files.MIGRATIONS). The
run folders under `runs/` belong to `hpstudy.run`, the report's files to
`hpstudy.report`. StudyFolder decides which folders a study may use (its own, or an
empty one) and holds the one-writer lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from hpstudy.errors import HpstudyError
from hpstudy.files import read_model, write_model
from hpstudy.run import RunStatus
from hpstudy.run.folder import not_a_folder
from hpstudy.study.lock import LOCK_NAME, check_free, hold
from hpstudy.study.spec import Published, ReportSpec, Selection, StudyConfig, validate_study

METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")
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
    for val_loss); `ci95` its 95 % interval; `prob_better` the probability that the winner
    beats the setting on a new seed (at one seed: on a new draw of the validation images).
    Without per-image predictions every number is None and `test` says why.
    """

    setting: str
    difference: float | None
    ci95: list[float] | None
    p_value: float | None
    prob_better: float | None
    test: str
    seeds: int = 0  # paired seeds the comparison rests on


class StageState(Record):
    name: str
    field: str  # the varied fields, ", "-joined
    figure: int | None
    epochs: int
    settings: list[SettingState]
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
    comparisons: list[Comparison] = []  # the winner against every other usable setting
    decided: bool = False  # every comparison's interval excludes 0
    carried: int | None = None  # the setting later stages start from (None: the winner)


class DataSummary(Record):
    root: str
    dataset: str = "cifar100"  # state.json files written before CIFAR-10 have no key
    split_seed: int
    train_size: int
    val_size: int
    test_size: int
    num_classes: int
    image_shape: list[int] = [3, 32, 32]  # (C, H, W); state.json files before it: CIFAR's
    mean: list[float]
    std: list[float]
    val_indices_sha256: str
    class_proportion_min: float
    class_proportion_max: float
    class_proportion_mean: float
    class_proportions: list[float]


class SplitScores(Record):
    loss: float
    top1: float
    top5: float
    superclass_top1: dict[str, float]


class FinalRun(Record):
    seed: int
    run_hash: str
    run_dir: str
    test: SplitScores
    test_evaluations: int  # how often the ledger says this run met the test split


class TestTop1(Stat):
    """Test top-1 over seeds with its 95 % interval (None where predictions are missing)."""

    ci95: list[float] | None = None
    interval: str | None = None  # how the interval was made (Wilson, two-level bootstrap)


class FinalResult(Record):
    config: dict[str, Any]  # the winning configuration, seed left out
    runs: list[FinalRun]
    test_top1: TestTop1
    test_top5: Stat
    test_loss: Stat
    device: str

    @field_validator("test_top1", mode="before")
    @classmethod
    def _from_stat(cls, value: Any) -> Any:
        """A plain Stat (code written before intervals) is a TestTop1 without one."""
        return value.model_dump() if isinstance(value, Stat) else value


class StudyState(Record):
    name: str
    budget: str
    study_hash: str
    seeds: list[int]
    selection: Selection
    status: StudyStatus
    report: ReportSpec
    data: DataSummary
    stages: list[StageState]
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
        if not self.state_path.is_file():
            raise HpstudyError(f"{self.path}: not a study folder (no state.json)")
        return read_model(self.state_path, StudyState, "state")

    def write_state(self, state: StudyState) -> None:
        write_model(self.state_path, state, "state")

    def drop_report(self) -> None:
        """Remove report.md before the state changes: a report is current only if written
        after the state it shows, so a kill in between leaves a study that is not done."""
        try:
            self.report_path.unlink(missing_ok=True)
        except OSError as err:
            reason = err.strerror or err
            raise HpstudyError(f"{self.report_path}: cannot remove ({reason})") from None
