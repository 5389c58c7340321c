"""The runner: the API that runs a study. A study and where to run it in, a typed result out.

`run` (exported as `hpstudy.run_study`) takes the study as a StudyConfig, a dict
as the study file would hold it, a TOML file or a built-in name; the executor as a
name (built here, with its options) or any object with the Executor protocol; the
data as a root folder or DataOptions. It checks everything it can before anything
starts, refuses a folder the study may not use, and hands the rest to a
`StudySession`. `run_study` is the same, returning the state alone (as it always did).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpstudy.errors import HpstudyError
from hpstudy.executors import DataOptions, Executor, make_executor
from hpstudy.study.analysis import Analysis, analyse
from hpstudy.study.plan import BUDGETS, Plan
from hpstudy.study.session import StudySession, already_done
from hpstudy.study.spec import StudyConfig, study_from, validate_study
from hpstudy.study.state import Follow, StudyFolder, StudyRecord, StudyState
from hpstudy.study.status import status_text, watch_status

FOLLOW = ("own", "published")
MAX_SEEDS = 1000  # --seeds N and --until-decided N: a study of runs, not of a lifetime
EXECUTOR_METHODS = ("device_type", "run", "call", "close")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyResult:
    """What `run` returns: the study's final state, its folder and its report."""

    state: StudyState  # state.json: stages, winners, verdicts, the final test result
    folder: Path  # the study folder: study.json, state.json, runs/, the report
    report: Path  # report.md (report.html, tables/ and figures/ beside it)
    # every number and verdict of the report, typed (what `study status --json` prints)
    analysis: Analysis

    @property
    def status(self) -> str:
        """finished, or incomplete (some runs failed; running `run` again retries them)."""
        return self.state.status

    def summary(self) -> str:
        """The study's outcome in one line."""
        state = self.state
        line = f"study {state.name} ({state.budget}) {state.status}"
        if state.final is not None:
            t = state.final.test_top1
            within = f" (95 % interval [{t.ci95[0]:.4f}, {t.ci95[1]:.4f}])" if t.ci95 else ""
            line += f": test top-1 {t.mean:.4f}{within}"
        return line


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


def seed_list(seeds: int | Sequence[int] | None) -> list[int] | None:
    """`seeds=3` -> seeds 0, 1, 2 (a count, as `--seeds 3`); a sequence -> those seeds."""
    if seeds is None:
        return None
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        return parse_seeds(str(seeds))
    if isinstance(seeds, str | bytes) or not isinstance(seeds, Sequence):
        raise HpstudyError(f"seeds: a count or a list of seeds (got {seeds!r})")
    return list(seeds)


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


def data_options(
    data: str | Path | DataOptions | None, root: str | None, verify: bool | None
) -> DataOptions:
    """Where the data is: `data` (a root folder or DataOptions), or `root` and `verify`."""
    if isinstance(data, DataOptions):
        if root is not None or verify is not None:
            raise HpstudyError("data: give DataOptions, or root= and verify=, not both")
        return data
    if data is not None and root is not None:
        raise HpstudyError(f"data: give data= or root=, not both (got {data!r} and {root!r})")
    if data is not None and not isinstance(data, str | Path):
        raise HpstudyError(f"data: a data folder or DataOptions (got {type(data).__name__})")
    where = str(data) if data is not None else root
    return DataOptions(root=where, verify=True if verify is None else verify)


def executor_for(
    executor: str | Executor, options: DataOptions, device: str | None, named: dict[str, Any]
) -> tuple[Executor, bool]:
    """The executor to run on, and whether this study made it (and so closes it): a name
    is built by the executor registry with its own options `named` (local: devices,
    runs_per_device; ray: address; slurm: slurm=SlurmOptions or slurm_time, ...); an
    object with the Executor protocol is used as it is, and stays open."""
    if isinstance(executor, str):
        return make_executor(executor, options, device=device, **named), True
    missing = [m for m in EXECUTOR_METHODS if not callable(getattr(executor, m, None))]
    if missing or not hasattr(executor, "in_process"):
        lacks = ", ".join(missing) or "in_process"
        raise HpstudyError(
            f"executor: a name (local, ray, slurm) or an Executor (got a "
            f"{type(executor).__name__}, which has no {lacks})"
        )
    if given := sorted(k for k, v in named.items() if v is not None):
        raise HpstudyError(
            f"executor: {', '.join(given)} configure a named executor, not the "
            f"{type(executor).__name__} given"
        )
    if device is not None:
        raise HpstudyError(
            f"executor: device= configures a named executor; the {type(executor).__name__} "
            "given has its own"
        )
    return executor, False


def run(
    study: StudyConfig | dict[str, Any] | str | Path,
    *,
    out: str | Path | None = None,
    budget: str = "full",
    executor: str | Executor = "local",
    data: str | Path | DataOptions | None = None,
    seeds: int | Sequence[int] | None = None,
    until_decided: int | None = None,
    follow: Follow = "own",
    split_follows_seed: bool | None = None,
    root: str | None = None,
    verify: bool | None = None,
    device: str | None = None,
    remeasure: bool = False,
    export: bool = True,
    **executor_options: Any,
) -> StudyResult:
    """Run (or resume) a study; returns its result. Writes the report at the end.

    `seeds` replace the study's (a count or a list; not its identity: only new runs
    train); `until_decided` gives an undecided stage one more seed at a time, up to that
    many, before the next starts; `follow="published"` starts each stage from the
    published winners before it; `split_follows_seed` draws each run's split from its
    seed (part of the identity); `remeasure` times the model anew instead of trusting the
    speed cache; `export=False` leaves out the final model's export (`hpstudy export
    RUN_DIR` makes it later). `device` and `executor_options` configure an executor
    given by name (local: devices, runs_per_device; ray: address; slurm: slurm=
    SlurmOptions(...) or slurm_time=..., as its command-line options' dests); the study
    opens it on its folder (`Executor.open`, where it has one) and closes it at the end."""
    # the report is the step after the study: imported here so that importing
    # hpstudy.report never has to import the runner first
    from hpstudy.report import write_report

    if follow not in FOLLOW:
        raise HpstudyError(f"--follow: must be own or published (got {follow!r})")
    if until_decided is not None and not 1 <= until_decided <= MAX_SEEDS:
        raise HpstudyError(f"--until-decided: must be 1..{MAX_SEEDS} seeds (got {until_decided})")
    config = with_options(study_from(study), seed_list(seeds), split_follows_seed)
    if follow == "published" and not any(s.published_label() for s in config.stages):
        raise HpstudyError(
            f"{config.source}: --follow published needs published winners (published_winner), "
            "and no stage names one"
        )
    # a bad study fails before anything is started; the device, and so what `auto`
    # precision means and whether fp16 is possible, is known once the executor is
    plan = Plan(config, budget, device_type=None)
    plan.validate()
    for caution in plan.cautions():  # valid, but not what it seems: one line each
        logger.warning(caution)
    folder = StudyFolder(Path(out) if out is not None else default_out(config.name, budget, follow))
    record = StudyRecord.of(config, budget)
    folder.check(record)  # a folder it may not use is refused before anything starts
    if done := already_done(folder, config, follow, until_decided):
        logger.info(
            f"{folder.path}: study {config.name} ({budget}) already finished; nothing to do"
        )
        logger.info(report_line(folder))
        return StudyResult(done, folder.path, folder.report_path, analyse(folder.path))

    options = data_options(data, root, verify)
    runner, owned = executor_for(executor, options, device, executor_options)
    try:
        if callable(opened := getattr(runner, "open", None)):
            opened(folder.path)  # where it keeps files of its own (slurm: its job logs)
        session = StudySession(
            config, budget, folder, runner, options, follow, until_decided, remeasure, export
        )
        state = session.run(record, write_report)
    finally:
        if owned:
            runner.close()

    result = StudyResult(state, folder.path, folder.report_path, analyse(folder.path))
    logger.info(result.summary())
    if failed := state.failed_runs():
        logger.warning(
            f"{len(failed)} run(s) failed (the report lists why); run the same command again "
            "to retry them"
        )
    logger.info(report_line(folder))
    return result


def run_study(
    spec: StudyConfig | dict[str, Any] | str | Path, **options: Any
) -> StudyState:
    """`run` returning the state alone (what `hpstudy.study.run_study` always returned)."""
    return run(spec, **options).state


def report_line(folder: StudyFolder) -> str:
    return f"report: {folder.path / 'report.md'} and {folder.path / 'report.html'}"


__all__ = [
    "BUDGETS",
    "FOLLOW",
    "StudyResult",
    "default_out",
    "parse_seeds",
    "run",
    "run_study",
    "status_text",
    "watch_status",
]
