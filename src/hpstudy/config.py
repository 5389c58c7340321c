"""RunConfig: everything that defines one training run, validated, frozen, hashable.

The normalised JSON of a config (fields that only say *where* or *how fast* it
runs left out) gives a short hash: the run's identity and its directory name, so
equal configs meet in one place and a study reuses runs it has already done.
The precision is part of that identity once resolved for a device: a run
trained in fp32 on a CPU and one trained in bf16 on a GPU are different runs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hpstudy.files import parse_model

# Fields that change where or how fast a run executes, not what it computes.
EXECUTION_FIELDS = frozenset({"device", "compile", "eval_batch_size"})
Precision = Literal["auto", "fp32", "bf16", "fp16"]
MAX_SEED = 2**32 - 1  # what every generator the run seeds (torch, numpy) takes


def resolve_precision(precision: str, device_type: str) -> str:
    """`auto` -> what runs best on the device: bf16 on CUDA (fp16 depthwise convolutions
    regressed on Hopper in recent PyTorch), fp32 on a CPU (autocast to bf16 is ~16x slower
    on CPUs without native bf16). An explicit choice is kept."""
    if precision != "auto":
        return precision
    return "bf16" if device_type == "cuda" else "fp32"


class RunConfig(BaseModel):
    # no NaN or infinity anywhere: no field of a run means anything with them
    model_config = ConfigDict(
        extra="forbid", frozen=True, protected_namespaces=(), allow_inf_nan=False
    )

    # what is trained
    model: str = Field("mobilenet", description="the network, one of the registered models")
    width: float = Field(1.0, gt=0, le=8, description="width multiplier of every channel count")
    # optimisation (the report's fixed choices are the defaults)
    epochs: int = Field(15, ge=1, description="passes over the train split")
    batch_size: int = Field(128, ge=1, description="training images per SGD step")
    lr: float = Field(0.05, gt=0, description="peak learning rate of SGD")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    nesterov: bool = Field(False, description="Nesterov momentum")
    weight_decay: float = Field(0.0, ge=0, description="L2 weight decay of SGD")
    schedule: Literal["constant", "cosine"] = Field(
        "constant", description="learning rate after warmup: held, or cosine-annealed to 0"
    )
    warmup_epochs: int = Field(0, ge=0, description="epochs of linear warmup to the peak lr")
    # regularisation
    mixup_alpha: float = Field(0.0, ge=0, description="mixup Beta(a, a) parameter; 0 is off")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="label smoothing of the loss")
    # randomness and data
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of weights, order and augmentation")
    split_seed: int = Field(
        0, ge=0, le=MAX_SEED, description="seed of the train/val split (0: the report's)"
    )
    limit_train: int | None = Field(None, ge=1, description="train on the first N train images")
    limit_val: int | None = Field(None, ge=1, description="validate on the first N val images")
    # execution: auto picks the fastest measured choice for the device
    device: str = Field("auto", description="auto, cpu or cuda[:i]")
    precision: Precision = Field(
        "auto", description="autocast precision; auto: fp32 on CPU, bf16 on CUDA"
    )
    channels_last: bool | None = Field(None, description="channels_last memory layout")
    compile: bool | None = Field(None, description="torch.compile the model")
    eval_batch_size: int | None = Field(
        None, ge=1, description="evaluation batch; auto: 256 on CPU, 1024 on CUDA"
    )

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) must be < epochs ({self.epochs})"
            )
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        return self

    def for_device(self, device_type: str) -> RunConfig:
        """This config with `precision` resolved for a device type (cpu, cuda)."""
        return self.model_copy(
            update={"precision": resolve_precision(self.precision, device_type)}
        )

    def identity(self) -> dict[str, Any]:
        return self.model_dump(exclude=set(EXECUTION_FIELDS))

    def run_hash(self) -> str:
        """Short hash of `identity()`; resolve the precision first (`for_device`), since
        `auto` means fp32 on one machine and bf16 on another."""
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def make_run_config(values: dict[str, Any], where: str = "run config") -> RunConfig:
    return parse_model(RunConfig, values, where)
