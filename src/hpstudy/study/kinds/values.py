"""The "values" stage kind (the default): one field, a list of values, published numbers.

The published study is made of these: each stage varies one hyperparameter, and may
carry the values and the winner the published report printed for its settings.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hpstudy.study.kinds import Scalar, StageKind, format_value, known_field, register_kind


class Published(BaseModel):
    """A setting's values as the published study printed them."""

    model_config = ConfigDict(extra="forbid")
    train_loss: float | None = None
    train_acc: float | None = None
    val_loss: float | None = None
    val_acc: float | None = None


@register_kind
class ValuesStage(StageKind):
    """kind "values" (the default): one field, a list of values."""

    kind: Literal["values"] = "values"
    field: str
    values: list[Scalar] = Field(min_length=1)
    labels: list[str] | None = None
    published: dict[str, Published] = Field(default_factory=dict)
    published_winner: str | None = None

    one_field: ClassVar[bool] = True
    words: ClassVar[str] = "Varies"

    @field_validator("field")
    @classmethod
    def _known_field(cls, v: str) -> str:
        return known_field(v)

    @model_validator(mode="after")
    def _consistent(self) -> ValuesStage:
        if self.labels is not None and len(self.labels) != len(self.values):
            raise ValueError(f"{len(self.labels)} labels for {len(self.values)} values")
        if len({json.dumps(v, sort_keys=True) for v in self.values}) != len(self.values):
            raise ValueError("values repeat")
        labels = self.labels_shown()
        if len(set(labels)) != len(self.values):
            raise ValueError("two values have the same label")
        unknown = sorted(set(self.published) - set(labels))
        if unknown:
            raise ValueError(f"published values for unknown settings {unknown}")
        if self.published_winner is not None and self.published_winner not in labels:
            raise ValueError(f"published_winner {self.published_winner!r} is not a setting")
        self.check_overrides()
        return self

    def size(self) -> int:
        return len(self.values)

    def varied(self) -> list[str]:
        return [self.field]

    def assignment(self, value: Any) -> dict[str, Any]:
        return {self.field: value}

    def label(self, i: int) -> str:
        return self.labels[i] if self.labels else format_value(self.values[i])

    def labels_shown(self) -> list[str]:
        return [self.label(i) for i in range(len(self.values))]

    def settings(self) -> list[tuple[str, Any]]:
        return [(self.label(i), value) for i, value in enumerate(self.values)]

    def identity(self) -> dict[str, Any]:
        # exactly the identity of a stage before stage kinds existed: old folders stay valid
        return {
            "field": self.field,
            "values": self.values,
            "epochs": self.epochs,
            "overrides": self.overrides,
        }

    def describe(self) -> str:
        return f"{self.field} in [{', '.join(self.labels_shown())}]"

    def assumed_winner(self) -> int:
        labels = self.labels_shown()
        return labels.index(self.published_winner) if self.published_winner in labels else 0

    def published_label(self) -> str | None:
        return self.published_winner

    def published_of(self, label: str) -> Published | None:
        return self.published.get(label)
