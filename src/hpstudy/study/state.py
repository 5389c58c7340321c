"""The study folder's own files as typed records: study.json (which study) and state.json.

state.json is the report's input. It is a StudyState: every key is required and
typed, so a missing or renamed key is an error when it is read, never a silent
"—" in a report. The run folders under `runs/` belong to `hpstudy.run`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from hpstudy.errors import HpstudyError
from hpstudy.files import read_model, write_model
from hpstudy.run import RunStatus
from hpstudy.study.spec import Published, ReportSpec, Selection

METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")
StudyStatus = Literal["running", "incomplete", "finished"]


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
    value: Any
    label: str
    runs: list[RunEntry]
    published: Published | None
    final: dict[str, Stat] | None = None  # METRICS over the finished seeds


class StageState(Record):
    name: str
    field: str
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


class DataSummary(Record):
    root: str
    split_seed: int
    train_size: int
    val_size: int
    test_size: int
    num_classes: int
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


class FinalResult(Record):
    config: dict[str, Any]  # the winning configuration, seed left out
    runs: list[FinalRun]
    test_top1: Stat
    test_top5: Stat
    test_loss: Stat
    device: str


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

    def failed_runs(self) -> list[tuple[StageState, SettingState, RunEntry]]:
        return [
            (stage, setting, run)
            for stage in self.stages
            for setting in stage.settings
            for run in setting.runs
            if run.status == RunStatus.FAILED
        ]


class StudyRecord(Record):
    """study.json: which study a folder holds, at which budget."""

    name: str
    budget: str
    study_hash: str
    identity: dict[str, Any]


class StudyFolder:
    """A study's folder: study.json, state.json and the runs/ that hold its run folders."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def record_path(self) -> Path:
        return self.path / "study.json"

    @property
    def state_path(self) -> Path:
        return self.path / "state.json"

    def run_dir(self, run_hash: str) -> Path:
        return self.path / "runs" / run_hash

    def read_record(self) -> StudyRecord | None:
        return read_model(self.record_path, StudyRecord) if self.record_path.exists() else None

    def check(self, record: StudyRecord) -> None:
        """Refuse a folder that holds another study (or another budget of this one)."""
        held = self.read_record()
        if held is not None and held.study_hash != record.study_hash:
            raise HpstudyError(
                f"{self.path} holds a different study ({held.name}, budget {held.budget}, "
                f"{held.study_hash}); use another --out"
            )

    def claim(self, record: StudyRecord) -> None:
        self.check(record)
        if self.record_path.exists():
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise HpstudyError(f"{self.path}: cannot create ({err.strerror or err})") from None
        write_model(self.record_path, record)

    def read_state(self) -> StudyState:
        if not self.state_path.is_file():
            raise HpstudyError(f"{self.path}: not a study folder (no state.json)")
        return read_model(self.state_path, StudyState)

    def write_state(self, state: StudyState) -> None:
        write_model(self.state_path, state)
