"""The plan: a study at a budget -> the configurations it trains. The one expansion.

Validation before any training, the runner, `study status` and the cost
benchmark all expand stages through `Plan.config`, so they cannot disagree.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hpstudy.config import RunConfig
from hpstudy.errors import HpstudyError
from hpstudy.files import parse_model
from hpstudy.study.budget import (
    BUDGET_LIMITS,
    BUDGETS,
    budget_epochs,
    budget_warmup,
)
from hpstudy.study.search import corners, draw_random, label_of
from hpstudy.study.spec import AnyStage, GridStage, OptunaStage, RandomStage, Stage, StudyConfig

# beyond this many combinations of earlier winners, each is checked on its own
MAX_WINNER_COMBINATIONS = 4096


def is_count(value: Any) -> bool:
    """A whole number >= 0, written as an int or a float (TOML's 3.0)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and value >= 0 and value == int(value)


@dataclass(frozen=True)
class PlannedRun:
    setting: int  # index into the stage's settings
    label: str
    value: Any  # a values stage's value; a search stage's {field: value}
    seed: int
    config: RunConfig


class Plan:
    """`study` at `budget`, its runs' precision resolved for `device_type` (cpu or cuda);
    `None` while the device is not known yet: precision stays as written (`auto`)."""

    def __init__(self, study: StudyConfig, budget: str, device_type: str | None = "cpu") -> None:
        if budget not in BUDGETS:
            raise HpstudyError(f"budget: must be one of {', '.join(BUDGETS)} (got {budget!r})")
        self.study = study
        self.budget = budget
        self.device_type = device_type

    def config(self, k: int, value: Any, winners: dict[str, Any], seed: int) -> RunConfig:
        """Stage `k`'s run of `value` (a search stage's: {field: value}) for `seed`, starting
        from the winners so far."""
        study, stage = self.study, self.study.stages[k]
        values = {**study.base, **winners, **stage.overrides, **stage.assignment(value)}
        for key, limit in BUDGET_LIMITS.get(self.budget, {}).items():
            values[key] = min(limit, values.get(key) or limit)
        if self.budget != "full" and "warmup_epochs" in values:
            warmup = values["warmup_epochs"]
            if is_count(warmup):  # anything else is RunConfig's to refuse in its own words
                values["warmup_epochs"] = budget_warmup(int(warmup), stage.epochs, self.budget)
        values.update(epochs=budget_epochs(stage.epochs, self.budget), seed=seed)
        if study.split_follows_seed:
            values["split_seed"] = seed
        shown = f"{stage.field} = {value!r}" if isinstance(stage, Stage) else label_of(value)
        where = f"{study.source}: stage {k + 1} ({stage.name}), {shown}, budget {self.budget}"
        config = parse_model(RunConfig, values, where)
        if self.device_type is None:
            return config
        if config.precision == "fp16" and self.device_type != "cuda":
            raise HpstudyError(f"{where}: precision fp16 needs a CUDA device")
        return config.for_device(self.device_type)

    def with_seeds(self, seeds: list[int]) -> Plan:
        """The same plan for other seeds (seeds are not part of a study's identity)."""
        return Plan(self.study.model_copy(update={"seeds": seeds}), self.budget, self.device_type)

    def stage_runs(
        self, k: int, winners: dict[str, Any], seeds: list[int] | None = None
    ) -> list[PlannedRun]:
        return [
            PlannedRun(i, label, value, seed, self.config(k, value, winners, seed))
            for i, (label, value) in enumerate(settings(self.study.stages[k]))
            for seed in (seeds if seeds is not None else self.study.seeds)
        ]

    def validate(self) -> None:
        """Expand every configuration the study can produce, whichever settings win; a
        search space by each bound and each choice of each field."""
        self.config_for_base()
        stages = self.study.stages
        for k in range(len(stages)):
            earlier = [[stages[j].assignment(v) for v in candidates(stages[j])] for j in range(k)]
            if math.prod(len(c) for c in earlier) <= MAX_WINNER_COMBINATIONS:
                combos = (
                    {key: v for assignment in pick for key, v in assignment.items()}
                    for pick in itertools.product(*earlier)
                )
            else:
                combos = (assignment for c in earlier for assignment in c)
            for winners in combos:
                for value in candidates(stages[k]):
                    self.config(k, value, winners, self.study.seeds[0])

    def config_for_base(self) -> RunConfig:
        where = f"{self.study.source}: base"
        config = parse_model(RunConfig, self.study.base, where)
        return config if self.device_type is None else config.for_device(self.device_type)

    def distinct_runs(self, pick: Callable[[AnyStage], int] | None = None) -> list[RunConfig]:
        """Every run the study trains, once each, with `pick(stage)` as each stage's winner
        (default: the published winner where named, else the first setting)."""
        pick = pick or published_or_first
        runs: dict[str, RunConfig] = {}
        for seed in self.study.seeds:
            winners: dict[str, Any] = {}
            for k, stage in enumerate(self.study.stages):
                values = stand_ins(stage)
                for value in values:
                    config = self.config(k, value, winners, seed)
                    runs.setdefault(config.run_hash(), config)
                winners.update(stage.assignment(values[pick(stage)]))
        return list(runs.values())


def settings(stage: AnyStage) -> list[tuple[str, Any]]:
    """(label, value) of each setting a values, grid or random stage trains, in order; an
    optuna stage's settings are its trials, known only as they are asked."""
    if isinstance(stage, Stage):
        return [(stage.label(i), value) for i, value in enumerate(stage.values)]
    if isinstance(stage, GridStage):
        names = list(stage.grid)
        assignments = [
            dict(zip(names, pick, strict=True)) for pick in itertools.product(*stage.grid.values())
        ]
    elif isinstance(stage, RandomStage):
        assignments = draw_random(stage.space, stage.n, stage.sampler_seed)
    else:
        raise ValueError(f"stage {stage.name!r}: an optuna stage's settings are its trials")
    return [(label_of(a), a) for a in assignments]


def candidates(stage: AnyStage) -> list[Any]:
    """Values standing for whatever the stage may pick: its settings, and for a search
    stage each bound and each choice of each field (a bad space is refused as written,
    whichever draws it happens to give)."""
    if isinstance(stage, OptunaStage):
        return corners(stage.space)
    found = [value for _, value in settings(stage)]
    return found + corners(stage.space) if isinstance(stage, RandomStage) else found


def stand_ins(stage: AnyStage) -> list[Any]:
    """The settings a stage trains; for an optuna stage, `n_trials` draws of its space (at
    most that many runs: pruning stops some early)."""
    if isinstance(stage, OptunaStage):
        return draw_random(stage.space, stage.n_trials, stage.sampler_seed)
    return [value for _, value in settings(stage)]


def published_or_first(stage: AnyStage) -> int:
    if not isinstance(stage, Stage):
        return 0
    labels = stage.settings()
    return labels.index(stage.published_winner) if stage.published_winner in labels else 0
