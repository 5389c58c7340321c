"""Reading a study folder for the report: the typed state and one typed Run per run folder.

The only place in the report that touches the study folder's inputs, and only
through their owners: `StudyFolder.read_state()` (state.json, typed and checked)
and `RunDir` (config.json, metrics.csv, summary.json, the final run's export.json).
A run that appears in several stages (a reused configuration) is read once. A run folder that does
not exist yet is a run with no rows, its status taken from the state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hpstudy.config import RunConfig
from hpstudy.run import MetricRow, RunDir, RunStatus, Summary
from hpstudy.study.state import RunEntry, SettingState, StudyFolder, StudyState


@dataclass
class Run:
    """One run folder as the report sees it."""

    seed: int
    run_hash: str
    run_dir: Path
    status: RunStatus
    error: str | None
    config: RunConfig | None  # None while the folder has no config.json
    rows: list[MetricRow]
    summary: Summary | None
    stages: list[str] = field(default_factory=list)  # "stage: setting" wherever it appears

    @property
    def finished(self) -> bool:
        return self.status == RunStatus.FINISHED


@dataclass
class Study:
    """The study's state and its distinct runs, keyed by run folder."""

    path: Path
    state: StudyState
    runs: dict[Path, Run]
    export: dict | None = None  # export.json of the final run (its first seed), once exported

    def run(self, entry: RunEntry) -> Run:
        return self.runs[self.path / entry.run_dir]

    def runs_of(self, setting: SettingState) -> list[Run]:
        return [self.run(entry) for entry in setting.runs]


def read_run(study_dir: Path, entry: RunEntry) -> Run:
    folder = RunDir(study_dir / entry.run_dir)
    if not folder.path.is_dir():
        return Run(entry.seed, entry.run_hash, folder.path, entry.status, entry.error,
                   None, [], None)  # fmt: skip
    summary = folder.read_summary()
    # the run folder's own record is fresher than the state of a study still running
    status = folder.status()
    if summary is None and status == RunStatus.PENDING:
        status = entry.status
    return Run(
        seed=entry.seed,
        run_hash=entry.run_hash,
        run_dir=folder.path,
        status=status,
        error=entry.error or (summary.error if summary else None),
        config=folder.read_config() if folder.config_path.is_file() else None,
        rows=folder.read_metrics(),
        summary=summary,
    )


def read_study(study_dir: str | Path) -> Study:
    """The typed state of `study_dir` and each distinct run it names, read once."""
    path = Path(study_dir)
    state = StudyFolder(path).read_state()
    runs: dict[Path, Run] = {}
    for stage in state.stages:
        for setting in stage.settings:
            for entry in setting.runs:
                key = path / entry.run_dir
                if key not in runs:
                    runs[key] = read_run(path, entry)
                runs[key].stages.append(f"{stage.name}: {setting.label}")
    export = None
    if state.final is not None and state.final.runs:
        export = RunDir(path / state.final.runs[0].run_dir).read_export()
    return Study(path, state, runs, export)
