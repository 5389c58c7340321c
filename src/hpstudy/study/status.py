"""Where a study folder stands: `study status` (once, or refreshed with --watch) and progress.

Status reads only what the folder holds: state.json (stages, settings, winners),
the run folders (each run's epochs so far) and study.json (the study itself, parsed
with the study file's parser and its stage kinds, to plan what is left). A folder
whose study.json cannot be read still shows its runs; only the line saying how much
is left is missing, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpstudy.config import RunConfig
from hpstudy.errors import HpstudyError
from hpstudy.progress import duration, watch
from hpstudy.run import RunDir, RunStatus
from hpstudy.study.cost import epochs_in
from hpstudy.study.lock import held_since, is_held
from hpstudy.study.plan import Plan
from hpstudy.study.state import StudyFolder, StudyState, tested_configs


@dataclass(frozen=True)
class Progress:
    """Where a study folder stands: runs and epochs done of the plan's, and time left."""

    runs_done: int
    runs: int
    epochs_done: int
    epochs: int
    seconds_per_epoch: float | None  # measured in the run folders (None: no epoch yet)

    @property
    def seconds_left(self) -> float | None:
        if self.seconds_per_epoch is None:
            return None
        return (self.epochs - self.epochs_done) * self.seconds_per_epoch


def folder_progress(folder: StudyFolder, state: StudyState) -> Progress:
    """The plan of the study in `folder` (study.json, with its stage kinds) from the settings
    each stage tried and carried so far, and each run folder's epochs: what is done and
    what is left. An HpstudyError where study.json cannot say."""
    study = folder.read_study().model_copy(update={"seeds": state.seeds})
    budget = state.budget
    seconds: list[float] = []
    existing = set()
    for run_dir in sorted((folder.path / "runs").glob("*")):
        existing.add(run_dir.name)
        seconds += [row["seconds"] for row in RunDir(run_dir).read_metrics()]
    tried: dict[int, list[Any]] = {}
    chosen: dict[int, Any] = {}
    for k, stage in enumerate(state.stages):
        tried[k] = [setting.value for setting in stage.settings]
        carried = stage.carried if stage.carried is not None else stage.winner
        if carried is not None:
            chosen[k] = stage.settings[carried].value

    def planned(device_type: str) -> list[RunConfig]:
        try:
            return Plan(study, budget, device_type).distinct_runs(chosen, tried)
        except HpstudyError:  # fp16 on a CPU: the study ran on the other device
            return []

    # `auto` precision names runs differently on a CPU and a GPU: the device is the one
    # whose run names the folder holds
    runs = max(
        (planned(d) for d in ("cpu", "cuda")),
        key=lambda rs: sum(r.run_hash() in existing for r in rs),
    )
    if not runs:
        raise HpstudyError(f"{folder.path}: its study plans no run on a CPU or a GPU")
    done = [epochs_in(folder, run) for run in runs]
    return Progress(
        runs_done=sum(d >= r.epochs for r, d in zip(runs, done, strict=True)),
        runs=len(runs),
        epochs_done=sum(done),
        epochs=sum(r.epochs for r in runs),
        seconds_per_epoch=sum(seconds) / len(seconds) if seconds else None,
    )


def run_state(run_dir: RunDir, rows: list[Any], since: float | None) -> str:
    """A run's state as status shows it: `running` for one the `study run` holding the folder
    (since `since`) has started or resumed and not ended, else its folder's status."""
    status = run_dir.status()
    if status == RunStatus.PENDING and rows:
        status = RunStatus.PARTIAL
    if since is None or status not in (RunStatus.PENDING, RunStatus.PARTIAL):
        return str(status)
    touched = [p.stat().st_mtime for p in (run_dir.config_path, run_dir.checkpoint_path)
               if p.is_file()]  # fmt: skip
    return "running" if touched and max(touched) >= since else str(status)


def ledger_line(folder: StudyFolder, state: StudyState) -> str | None:
    """How often, and on which configurations, the test split was evaluated (the ledger)."""
    try:
        touches = folder.read_ledger()
    except HpstudyError as err:
        return f"test split: the ledger cannot be read ({err})"
    if not touches:
        return None
    reported = state.final.config_hash if state.final is not None else None
    configs = tested_configs(touches)
    shown = ", ".join(c + (" (reported)" if c == reported else "") for c in configs)
    times = "once" if len(touches) == 1 else f"{len(touches)} times"
    many = "configuration" if len(configs) == 1 else "distinct configurations"
    return f"test split: evaluated {times} on {len(configs)} {many}: {shown}"


def status_text(out: str | Path) -> str:
    folder = StudyFolder(out)
    state = folder.read_state()
    since = held_since(folder.path) if state.status == "running" else None
    lines = [
        f"{state.name} ({state.budget}): {state.status}",
        f"{'stage':16} {'setting':12} {'seed':>4} {'state':9} {'epoch':>7} {'val_acc':>8}  run",
    ]
    for stage in state.stages:
        for k, setting in enumerate(stage.settings):
            for run in setting.runs:
                run_dir = RunDir(folder.path / run.run_dir)
                rows = run_dir.read_metrics()
                status = run_state(run_dir, rows, since)
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
    if touched := ledger_line(folder, state):
        lines.append(touched)
    if state.status != "finished":
        lines.append(progress_line(folder, state))
    return "\n".join(lines)


def progress_line(folder: StudyFolder, state: StudyState) -> str:
    try:
        p = folder_progress(folder, state)
    except HpstudyError as err:
        return f"done: not known ({err})"
    left = p.seconds_left
    when = "unknown until an epoch is measured" if left is None else duration(left)
    return (
        f"done: {p.runs_done}/{p.runs} runs, {p.epochs_done:,}/{p.epochs:,} epochs; "
        f"time left at the measured speed: {when}"
    )


def watch_status(out: str | Path, seconds: float) -> None:
    """`status_text` every `seconds` until the study is no longer running: it ended, or no
    `study run` holds its folder any more (stopped: the same command resumes it)."""

    def ended() -> bool:
        return StudyFolder(out).read_state().status != "running" or not is_held(Path(out))

    watch(lambda: status_text(out), ended, seconds)


__all__ = ["Progress", "folder_progress", "status_text", "watch_status"]
