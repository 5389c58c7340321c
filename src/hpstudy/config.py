"""RunConfig: everything that defines one training run, validated, frozen, hashable.

The normalised JSON of a config (fields that only say *where* or *how fast* it
runs left out) gives a short hash: the run's identity and its directory name, so
equal configs meet in one place and a study reuses runs it has already done.
The precision is part of that identity once resolved for a device: a run
trained in fp32 on a CPU and one trained in bf16 on a GPU are different runs; so
is the device type where it changes the random draws (a GPU's generators draw
other numbers than a CPU's from the same seed), so a run never resumes on the
other type with other draws.
A run of the user's own model or data keeps a fingerprint of them in its identity
(`model_source`, `data_source`, filled in when the config is made, see hpstudy.sources):
a changed model module or data file is a new run.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hpstudy.defaults import COMPILE_MODES, CompileMode, auto_row
from hpstudy.files import parse_model

# Fields that change where or how fast a run executes, not what it computes.
EXECUTION_FIELDS = frozenset({"device", "compile", "eval_batch_size"})
# Fields added after run folders existed: left out of the identity at their default, so every
# run folder named before they existed keeps its name.
LATER_FIELDS = frozenset(
    {
        "lr_per_step", "cutmix_alpha", "mix_switch_prob", "ema_decay", "optimizer", "dataset",
        "model_args", "model_source", "data_source", "image_size", "draw_device",
    }
)  # fmt: skip
# Filled in when a config is made or resolved for a device, never by hand: the fingerprint of
# the user's model and data, and the device type whose generators draw the augmentation.
SOURCE_FIELDS = frozenset({"model_source", "data_source", "draw_device"})
MAX_MODEL_ARGS = 64
ModelArg = bool | int | float | str
Precision = Literal["auto", "fp32", "bf16", "fp16"]
MAX_SEED = 2**32 - 1  # what every generator the run seeds (torch, numpy) takes


def resolve_precision(precision: str, device_type: str) -> str:
    """`auto` -> the device type's row of the `auto` table (hpstudy.defaults): fp32 on a CPU
    (autocast to bf16 is ~16x slower on CPUs without native bf16), bf16 on CUDA until a
    measured table says otherwise. An explicit choice is kept."""
    if precision != "auto":
        return precision
    return auto_row(device_type).precision


class RunConfig(BaseModel):
    # no NaN or infinity anywhere: no field of a run means anything with them
    model_config = ConfigDict(
        extra="forbid", frozen=True, protected_namespaces=(), allow_inf_nan=False
    )

    # what is trained
    dataset: str = Field(
        "cifar100",
        max_length=4200,
        description="the dataset: cifar100, cifar10 (no superclasses), npz:PATH, folder:PATH "
        "or a registered name",
    )
    model: str = Field(
        "mobilenet",
        max_length=300,
        description="the network: a registered model, or your own 'module:callable'",
    )
    model_args: dict[str, ModelArg] = Field(
        default_factory=dict, description="keyword arguments of the model's builder"
    )
    image_size: int | None = Field(
        None, ge=1, le=1024, description="side a folder: dataset's images are resized to"
    )
    width: float = Field(1.0, gt=0, le=8, description="width multiplier of every channel count")
    # optimisation (the report's fixed choices are the defaults)
    epochs: int = Field(15, ge=1, description="passes over the train split")
    batch_size: int = Field(128, ge=1, description="training images per optimizer step")
    optimizer: Literal["sgd", "adamw"] = Field(
        "sgd", description="sgd, or adamw (decoupled weight decay; momentum is its beta1)"
    )
    lr: float = Field(0.05, gt=0, description="peak learning rate")
    lr_per_step: bool = Field(
        False, description="set the learning rate every step (warmup, cosine), not every epoch"
    )
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (AdamW: beta1)")
    nesterov: bool = Field(False, description="Nesterov momentum (SGD only)")
    weight_decay: float = Field(
        0.0, ge=0, description="weight decay (SGD: L2 in the gradient; AdamW: decoupled)"
    )
    schedule: Literal["constant", "cosine"] = Field(
        "constant", description="learning rate after warmup: held, or cosine-annealed to 0"
    )
    warmup_epochs: int = Field(0, ge=0, description="epochs of linear warmup to the peak lr")
    # regularisation
    mixup_alpha: float = Field(0.0, ge=0, description="mixup Beta(a, a) parameter; 0 is off")
    cutmix_alpha: float = Field(
        0.0, ge=0, description="CutMix Beta(a, a) parameter, a box per batch; 0 is off"
    )
    mix_switch_prob: float = Field(
        0.5, ge=0, le=1, description="with mixup and CutMix both on: share of CutMix batches"
    )
    ema_decay: float = Field(
        0.0, ge=0, lt=1, description="EMA of the weights, updated each step; 0 is off"
    )
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
    compile: bool | CompileMode | None = Field(
        None,
        description="torch.compile the model: true, false or a mode (reduce-overhead and "
        "max-autotune replay CUDA graphs)",
    )
    eval_batch_size: int | None = Field(
        None, ge=1, description="evaluation batch; auto: 256 on CPU, 1024 on CUDA"
    )
    # the fingerprints of the user's model and data (filled in: see `fill_sources`)
    model_source: str | None = Field(
        None, max_length=500, description="the model's module and its source's sha256 (filled in)"
    )
    data_source: str | None = Field(
        None, max_length=500, description="the data's sha256 (filled in)"
    )
    # a CPU's and a GPU's generators draw different orders, crops and flips from one seed, so
    # the device type is part of a run's identity where it changes the draws: on a GPU. CPU
    # runs (all runs before it existed) leave it unset and keep their names
    draw_device: Literal["cuda"] | None = Field(
        None, description="the device type drawing order and augmentation, if not the CPU "
        "(filled in)"
    )  # fmt: skip

    @model_validator(mode="before")
    @classmethod
    def fill_sources(cls, raw: Any) -> Any:
        """Fingerprint the user's model and data where the raw values name them (a config
        read back from a run folder keeps the fingerprint it was made with). Raises
        HpstudyError (one line, naming the field) for a model or data that cannot be found."""
        if not isinstance(raw, dict):
            return raw
        from hpstudy.sources import check_dataset_name, dataset_fingerprint

        raw = dict(raw)
        model = raw.get("model", "mobilenet")
        if isinstance(model, str) and len(model) <= 300:
            from hpstudy.models.registry import model_source

            held = raw.get("model_source")
            if not (isinstance(held, str) and held.startswith(f"{model} ")):
                raw["model_source"] = model_source(model)
        dataset = raw.get("dataset", "cifar100")
        if isinstance(dataset, str) and len(dataset) <= 4200:
            check_dataset_name(dataset)
            held = raw.get("data_source")
            if not (isinstance(held, str) and held.startswith(f"{dataset} ")):
                found = dataset_fingerprint(dataset)
                raw["data_source"] = None if found is None else f"{dataset} {found}"
        return raw

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_value(cls, value: Any) -> Any:
        """One line naming every allowed value, not pydantic's error per member of the union."""
        if value is None or isinstance(value, bool) or value in COMPILE_MODES:
            return value
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise ValueError(f"must be true, false or one of {', '.join(COMPILE_MODES)} (got {shown})")

    @field_validator("model_args")
    @classmethod
    def _small_args(cls, value: dict[str, ModelArg]) -> dict[str, ModelArg]:
        if len(value) > MAX_MODEL_ARGS:
            raise ValueError(f"at most {MAX_MODEL_ARGS} model arguments (got {len(value)})")
        for key, arg in value.items():
            if not key.isidentifier():
                raise ValueError(f"{key[:40]!r} is not a keyword name")
            if isinstance(arg, str) and len(arg) > 200:
                raise ValueError(f"{key}: a string of at most 200 characters")
        return value

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) must be < epochs ({self.epochs})"
            )
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        if self.image_size is not None and not self.dataset.startswith("folder:"):
            raise ValueError("image_size resizes a folder: dataset's images (leave it unset)")
        if self.nesterov and self.optimizer == "adamw":
            raise ValueError("nesterov is SGD's: adamw has no nesterov (leave it off)")
        return self

    def for_device(self, device_type: str) -> RunConfig:
        """This config with `precision` resolved for a device type (cpu, cuda), and the
        device type that draws its augmentation where it is not the CPU."""
        return self.model_copy(
            update={
                "precision": resolve_precision(self.precision, device_type),
                "draw_device": None if device_type == "cpu" else device_type,
            }
        )

    def identity(self) -> dict[str, Any]:
        fields = type(self).model_fields
        at_default = {
            name
            for name in LATER_FIELDS
            if getattr(self, name) == fields[name].get_default(call_default_factory=True)
        }
        return self.model_dump(exclude=set(EXECUTION_FIELDS) | at_default)

    def run_hash(self) -> str:
        """Short hash of `identity()`; resolve the precision first (`for_device`), since
        `auto` means fp32 on one machine and bf16 on another."""
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def make_run_config(values: dict[str, Any], where: str = "run config") -> RunConfig:
    return parse_model(RunConfig, values, where)
