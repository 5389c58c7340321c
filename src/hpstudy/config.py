"""RunConfig: everything that defines one training run, validated, frozen, hashable.

The normalised JSON of a config (fields that only say *where* or *how fast* it
runs left out) gives a short hash: the run's identity and its directory name, so
equal configs meet in one place and a study reuses runs it has already done.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hpstudy.errors import HpstudyError

# Fields that change where or how fast a run executes, not what it computes.
EXECUTION_FIELDS = frozenset({"device", "compile", "eval_batch_size"})


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    # what is trained
    model: str = "mobilenet"
    width: float = Field(1.0, gt=0, le=8)
    # optimisation (the report's fixed choices are the defaults)
    epochs: int = Field(15, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_epochs: int = Field(0, ge=0)
    # regularisation
    mixup_alpha: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    # randomness and data
    seed: int = Field(0, ge=0)
    split_seed: int = Field(0, ge=0)
    limit_train: int | None = Field(None, ge=1)
    limit_val: int | None = Field(None, ge=1)
    # execution: auto picks the fastest measured choice for the device
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool | None = None
    compile: bool | None = None
    eval_batch_size: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) must be < epochs ({self.epochs})"
            )
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        return self

    def identity(self) -> dict[str, Any]:
        return self.model_dump(exclude=set(EXECUTION_FIELDS))

    def run_hash(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def format_validation_error(err: ValidationError, where: str) -> str:
    """One line naming every bad field, e.g. `study.toml: lr: must be > 0 (got -1)`."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "config"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in e and e["type"] != "missing":
            msg = f"{msg} (got {e['input']!r})"
        parts.append(f"{loc}: {msg}")
    return f"{where}: " + "; ".join(parts)


def make_run_config(values: dict[str, Any], where: str = "run config") -> RunConfig:
    try:
        return RunConfig(**values)
    except ValidationError as err:
        raise HpstudyError(format_validation_error(err, where)) from None
