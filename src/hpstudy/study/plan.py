"""The plan: a study at a budget -> the configurations it trains. The one expansion.

Validation before any training, the runner, `study status` and the cost
benchmark all expand stages through `Plan.config`, so they cannot disagree.
"""

from __future__ import annotations

import itertools
import math
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
from hpstudy.study.spec import StudyConfig

# beyond this many combinations of earlier winners, or this many configurations (those
# combinations times a stage's candidates), a stage is checked linearly: each candidate with
# the first winners, each earlier winner with the first candidate, so validation grows with
# the draws, not with their product
MAX_WINNER_COMBINATIONS = 4096
MAX_CHECKED_CONFIGS = 20_000


def is_count(value: Any) -> bool:
    """A whole number >= 0, written as an int or a float (TOML's 3.0)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and value >= 0 and value == int(value)


@dataclass(frozen=True)
class PlannedRun:
    setting: int  # index into the stage's settings
    label: str
    value: Any  # what the stage's `assignment` takes: a values stage's value, else {field: value}
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
        """Stage `k`'s run of `value` (a setting's value, as the stage's `assignment` takes it)
        for `seed`, starting from the winners so far."""
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
        # one field's value as the file writes it (`lr = -0.1`); several by their labels
        shown = f"{stage.field} = {value!r}" if stage.one_field else stage.setting_text(value)
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
            for i, (label, value) in enumerate(self.study.stages[k].settings())
            for seed in (seeds if seeds is not None else self.study.seeds)
        ]

    def validate(self) -> None:
        """Expand every configuration the study can produce, whichever settings win; a
        search space by each bound and each choice of each field."""
        self.config_for_base()
        stages = self.study.stages
        assignments: list[list[dict[str, Any]]] = []  # each stage's candidates, as fields
        seed = self.study.seeds[0]
        for k in range(len(stages)):
            earlier = assignments[:k]
            candidates = stages[k].candidates()
            combinations = math.prod(len(c) for c in earlier)
            if (combinations <= MAX_WINNER_COMBINATIONS
                    and combinations * len(candidates) <= MAX_CHECKED_CONFIGS):  # fmt: skip
                for pick in itertools.product(*earlier):
                    winners = {key: v for assignment in pick for key, v in assignment.items()}
                    for value in candidates:
                        self.config(k, value, winners, seed)
            else:
                first = {key: v for c in earlier for key, v in c[0].items()}
                for value in candidates:
                    self.config(k, value, first, seed)
                for c in earlier:
                    for assignment in c:
                        self.config(k, candidates[0], {**first, **assignment}, seed)
            assignments.append([stages[k].assignment(v) for v in candidates])

    def cautions(self) -> list[str]:
        """Each stage's valid settings that will not do what they seem to at this budget."""
        return [line for stage in self.study.stages
                for line in stage.cautions(budget_epochs(stage.epochs, self.budget))]  # fmt: skip

    def config_for_base(self) -> RunConfig:
        where = f"{self.study.source}: base"
        config = parse_model(RunConfig, self.study.base, where)
        return config if self.device_type is None else config.for_device(self.device_type)

    def distinct_runs(
        self,
        chosen: dict[int, Any] | None = None,
        tried: dict[int, list[Any]] | None = None,
    ) -> list[RunConfig]:
        """Every run the study trains, once each. Stage k tries `tried[k]` (the settings it
        tried so far) and then the rest of its stand-ins, and carries `chosen[k]` (a value
        its `assignment` takes) to the later stages; by default, its stand-ins and the one
        it assumes wins (the published winner where named, else the first)."""
        return [run for stage in self.distinct_stage_runs(chosen, tried) for run in stage]

    def distinct_stage_runs(
        self,
        chosen: dict[int, Any] | None = None,
        tried: dict[int, list[Any]] | None = None,
    ) -> list[list[RunConfig]]:
        """`distinct_runs` by stage, each run under the first stage that meets it: the runs
        a stage may train at once (its settings times the seeds)."""
        chosen, tried = chosen or {}, tried or {}
        seen: set[str] = set()
        stages: list[list[RunConfig]] = [[] for _ in self.study.stages]
        for seed in self.study.seeds:
            winners: dict[str, Any] = {}
            for k, stage in enumerate(self.study.stages):
                stand_ins = stage.stand_ins()
                done = tried.get(k, [])
                values = done + stand_ins[len(done) :]
                for value in values:
                    config = self.config(k, value, winners, seed)
                    if config.run_hash() not in seen:
                        seen.add(config.run_hash())
                        stages[k].append(config)
                carried = chosen[k] if k in chosen else stand_ins[stage.assumed_winner()]
                winners.update(stage.assignment(carried))
        return stages
