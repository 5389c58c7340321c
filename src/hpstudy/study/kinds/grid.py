"""The "grid" stage kind: several fields varied jointly, every combination of their values."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from hpstudy.study.kinds import (
    MAX_SETTINGS,
    Scalar,
    StageKind,
    format_value,
    known_field,
    label_of,
    register_kind,
)


@register_kind
class GridStage(StageKind):
    """kind "grid": several fields varied jointly, every combination of their values."""

    kind: Literal["grid"]
    grid: dict[str, list[Scalar]] = Field(min_length=1)

    words: ClassVar[str] = "A joint grid over"

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for name, values in v.items():
            known_field(name)
            if not values:
                raise ValueError(f"{name}: no values")
            if len({json.dumps(x) for x in values}) != len(values):
                raise ValueError(f"{name}: values repeat")
        combinations = math.prod(len(values) for values in v.values())
        if combinations > MAX_SETTINGS:
            sizes = " x ".join(str(len(values)) for values in v.values())
            raise ValueError(
                f"a grid of {sizes} = {combinations:,} combinations; a stage may try at most "
                f"{MAX_SETTINGS:,} settings (MAX_SETTINGS): fewer values, or a random stage"
            )
        return v

    @model_validator(mode="after")
    def _overrides(self) -> GridStage:
        self.check_overrides()
        return self

    def size(self) -> int:
        return math.prod(len(values) for values in self.grid.values())

    def varied(self) -> list[str]:
        return list(self.grid)

    @property
    def field(self) -> str:
        """The varied fields as one name ("lr, weight_decay")."""
        return self.varied_text()

    def settings(self) -> list[tuple[str, Any]]:
        names = list(self.grid)
        picks = itertools.product(*self.grid.values())
        assignments = [dict(zip(names, pick, strict=True)) for pick in picks]
        return [(label_of(a), a) for a in assignments]

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "grid": self.grid, "epochs": self.epochs,
                "overrides": self.overrides}  # fmt: skip

    def describe(self) -> str:
        sizes = " x ".join(str(len(v)) for v in self.grid.values())
        axes = ", ".join(
            f"{name} in [{', '.join(format_value(v) for v in values)}]"
            for name, values in self.grid.items()
        )
        return f"grid of {sizes} = {math.prod(len(v) for v in self.grid.values())}: {axes}"
