"""Search spaces, shared by the random and optuna kinds: distributions, seeded draws, corners.

A space maps RunConfig fields to distributions (choice, uniform, log_uniform, int).
`draw_random` is the random kind's settings and the optuna kind's stand-ins;
`corners` reach every bound and choice, so validation sees every edge of a space.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from hpstudy.config import MAX_SEED
from hpstudy.study.kinds import MAX_SETTINGS, Scalar, StageKind, format_value, known_field

if TYPE_CHECKING:
    import numpy as np

MAX_DRAWS = MAX_SETTINGS  # settings of one random or optuna stage
MAX_INT_BOUND = 2**62  # an int distribution's bounds: numpy's integers stay in int64
DISTRIBUTIONS = ("choice", "uniform", "log_uniform", "int")


def number(v: Any) -> float:
    """A bound of a distribution: a finite int or float as TOML wrote it, never a string."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"bounds must be finite numbers (got {v!r})")
    return v


Bound = Annotated[Any, AfterValidator(number)]


def attr(kind: str) -> str:
    return "int_" if kind == "int" else kind


class Distribution(BaseModel):
    """One field's distribution in a search space: exactly one of choice, uniform,
    log_uniform (bounds > 0) or int (integer bounds, both included)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    choice: list[Scalar] | None = Field(None, min_length=1)
    uniform: tuple[Bound, Bound] | None = None
    log_uniform: tuple[Bound, Bound] | None = None
    int_: tuple[Bound, Bound] | None = Field(None, alias="int")

    @model_validator(mode="after")
    def _one_kind(self) -> Distribution:
        given = [k for k in DISTRIBUTIONS if getattr(self, attr(k)) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(DISTRIBUTIONS)}")
        if self.choice is not None:
            if len({json.dumps(v) for v in self.choice}) != len(self.choice):
                raise ValueError("choices repeat")
            return self
        lo, hi = getattr(self, attr(given[0]))
        if self.int_ is not None:
            if not (isinstance(lo, int) and isinstance(hi, int)):
                raise ValueError(f"int bounds must be integers (got {lo!r}, {hi!r})")
            if lo > hi:
                raise ValueError(f"int bounds reversed ({lo} > {hi})")
            if max(abs(lo), abs(hi)) > MAX_INT_BOUND:
                raise ValueError(f"int bounds must lie within ±2**62 (got {lo}, {hi})")
        elif not lo < hi:
            raise ValueError(f"{given[0]} bounds must be increasing (got {lo!r}, {hi!r})")
        elif not math.isfinite(hi - lo):  # checked before any draw: numpy would overflow
            raise ValueError(f"{given[0]} span {lo!r}..{hi!r} is wider than a float can hold")
        if self.log_uniform is not None and lo <= 0:
            raise ValueError(f"log_uniform bounds must be > 0 (got {lo!r})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in DISTRIBUTIONS if getattr(self, attr(k)) is not None)

    @property
    def bounds(self) -> tuple[Any, Any]:
        return getattr(self, attr(self.kind))

    def extremes(self) -> list[Any]:
        """The values a draw can reach at the edges: every choice, or both bounds."""
        return list(self.choice) if self.choice is not None else list(self.bounds)

    def spec(self) -> dict[str, Any]:
        """As the study file writes it: {"log_uniform": [0.01, 0.3]}."""
        value = self.choice if self.choice is not None else list(self.bounds)
        return {self.kind: value}

    def describe(self) -> str:
        if self.choice is not None:
            return "choice(" + ", ".join(format_value(v) for v in self.choice) + ")"
        lo, hi = self.bounds
        return f"{self.kind}({format_value(lo)}, {format_value(hi)})"


def draw(d: Distribution, rng: np.random.Generator) -> Any:
    if d.choice is not None:
        return d.choice[int(rng.integers(len(d.choice)))]
    lo, hi = d.bounds
    if d.kind == "int":
        return int(rng.integers(lo, hi + 1))
    if d.kind == "log_uniform":
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return float(rng.uniform(lo, hi))


def draw_random(space: dict[str, Distribution], n: int, seed: int) -> list[dict[str, Any]]:
    """`n` draws from `space` with numpy's generator seeded by `seed`; a draw equal to an
    earlier one is dropped (it would be the same run)."""
    import numpy as np  # here: loading a study file needs no numpy

    rng = np.random.default_rng([seed])
    drawn: dict[str, dict[str, Any]] = {}
    for _ in range(n):
        assignment = {name: draw(d, rng) for name, d in space.items()}
        drawn.setdefault(json.dumps(assignment, sort_keys=True), assignment)
    return list(drawn.values())


def corners(space: dict[str, Distribution]) -> list[dict[str, Any]]:
    """Settings that together reach every bound and every choice of every field."""
    first = {name: d.extremes()[0] for name, d in space.items()}
    found = {json.dumps(first, sort_keys=True): first}
    for name, d in space.items():
        for value in d.extremes():
            assignment = {**first, name: value}
            found.setdefault(json.dumps(assignment, sort_keys=True), assignment)
    return list(found.values())


class SearchStage(StageKind):
    """What the random and optuna kinds share: a space of distributions and a sampler seed."""

    space: dict[str, Distribution] = Field(min_length=1)
    sampler_seed: int = Field(0, ge=0, le=MAX_SEED)

    @field_validator("space")
    @classmethod
    def _space(cls, v: dict[str, Distribution]) -> dict[str, Distribution]:
        for name in v:
            known_field(name)
        return v

    @model_validator(mode="after")
    def _overrides(self) -> SearchStage:
        self.check_overrides()
        return self

    def varied(self) -> list[str]:
        return list(self.space)

    @property
    def field(self) -> str:
        """The varied fields as one name ("lr, weight_decay")."""
        return self.varied_text()

    def space_identity(self) -> dict[str, Any]:
        return {name: d.spec() for name, d in self.space.items()}

    def space_text(self) -> str:
        return ", ".join(f"{name} ~ {d.describe()}" for name, d in self.space.items())


__all__ = [
    "DISTRIBUTIONS",
    "MAX_DRAWS",
    "Distribution",
    "SearchStage",
    "corners",
    "draw",
    "draw_random",
]
