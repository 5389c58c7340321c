"""The study's work that runs where its runs run, handed to `Executor.call`.

The driver may have neither the data nor a GPU: the data summary, per-image
outcomes, the final test evaluation, the export of the final model and the
environment are read or computed by these functions in the executor's process (a
worker, a Ray task, a SLURM job). Each takes picklable arguments and, last, the
device the executor gives it.

A study makes three kinds of call: `opening` before anything trains,
`validation_outcomes` once per stage with two or more settings to compare, `closing` once
at the end. Each call may be a job of its own (on SLURM one waits in the queue and starts
a Python of its own), so the work of one moment goes in one call, not one per step.
"""

from __future__ import annotations

import logging
import platform
from typing import Any

from hpstudy import __version__, data
from hpstudy.config import RunConfig
from hpstudy.errors import HpstudyError
from hpstudy.executors import DataOptions
from hpstudy.progress import bar
from hpstudy.run import RunDir, evaluate, image_outcomes, load_data
from hpstudy.sources import BUILTIN_DATASETS
from hpstudy.study.cost import Speed, measure_speed
from hpstudy.study.select import SeedOutcomes

logger = logging.getLogger(__name__)


def data_summary(
    options: DataOptions,
    split_seed: int,
    dataset: str,
    device: str | None,
    limit_train: int | None = None,
    image_size: int | None = None,
) -> dict[str, Any]:
    """What the report says of the data (with the class balance of the first `limit_train`
    train images the runs use); runs where the runs run (the driver may lack the data)."""
    loaded = load_data(options.root, options.verify, dataset, image_size)
    info = data.split_info(loaded, split_seed, limit_train)
    # the user's data is not under ROOT: its source says where it is
    root = str(data.resolve_root(options.root)) if dataset in BUILTIN_DATASETS else dataset
    return {"root": root, **info}


def opening(
    options: DataOptions,
    split_seed: int,
    dataset: str,
    config: RunConfig,
    remeasure: bool,
    device: str | None,
) -> tuple[dict[str, Any], Speed]:
    """Before anything trains: the data summary (for the train images `config` is limited
    to) and the study's model timed on the device (read from the speed cache where
    measured before and trusted, unless `remeasure`)."""
    summary = data_summary(
        options, split_seed, dataset, device, config.limit_train, config.image_size
    )
    return summary, measure_speed(config, device, remeasure)


def closing(
    final_dirs: list[str], options: DataOptions, export: bool, device: str | None
) -> dict[str, Any]:
    """At the end: each final run's test scores (evaluated here where the run has not met
    test yet; else the first evaluation its ledger keeps, so test is read once), their
    right/wrong per test image, the first run exported (with `export`), and the
    environment."""
    tests = []
    # each step its own bar where someone watches: the test evaluations, the export, the
    # per-image outcomes (minutes on a CPU, after the last epoch's display has closed)
    with bar("final: test evaluation", len(final_dirs)) as advance:
        for path in final_dirs:
            summary = RunDir(path).read_summary()
            ledger = summary.test_evaluations if summary is not None else []
            tests.append(ledger[0].model_dump() if ledger
                         else test_evaluation(path, options, device))  # fmt: skip
            advance(1)
    if export:
        with bar("final: export (files, check, latency timings)", 1) as advance:
            export_final(final_dirs[0], options, device)
            advance(1)
    with bar("final: per-image test outcomes", 1) as advance:
        outcomes = test_outcomes(final_dirs, options, device)
        advance(1)
    return {"tests": tests, "outcomes": outcomes, "environment": environment(device)}


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


__all__ = [
    "closing",
    "data_summary",
    "environment",
    "export_final",
    "opening",
    "test_evaluation",
    "test_outcomes",
    "validation_outcomes",
]
