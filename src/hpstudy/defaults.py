"""The `auto` table: what each `auto` execution choice means on a device type, as measured.

The table ships with the package (auto_defaults.json beside this file) and is written by
`benchmarks/gpu_check.py` (or by hand from `benchmarks/device_check.sh`'s grid), never guessed
here: each row says where it was measured, and
a row measured nowhere says so. `$HPSTUDY_AUTO_DEFAULTS` points at another table (one
that gpu_check.py wrote on your GPU) without editing the package.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from hpstudy.errors import HpstudyError
from hpstudy.files import read_model

SHIPPED = Path(__file__).with_name("auto_defaults.json")
ENV = "HPSTUDY_AUTO_DEFAULTS"
DEVICE_TYPES = ("cpu", "cuda")
# torch.compile's modes (torch._inductor.list_mode_options()); `compile = true` is "default"
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
COMPILE_MODES: tuple[str, ...] = get_args(CompileMode)
# the modes that replay CUDA graphs: a step's outputs are overwritten by the next replay
CUDA_GRAPH_MODES = frozenset({"reduce-overhead", "max-autotune"})


def compile_mode(value: bool | str | None) -> str | None:
    """A `compile` value (true, false or a mode) as the mode torch.compile gets; None: eager."""
    if value is None or value is False:
        return None
    return "default" if value is True else value


class AutoRow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    precision: Literal["fp32", "bf16", "fp16"]
    channels_last: bool
    compile: bool | CompileMode  # true: mode default
    eval_batch_size: int = Field(ge=1, le=1 << 20)
    runs_per_device: int = Field(ge=1, le=64)
    # cuDNN times its algorithms for each new input shape and keeps the fastest (CUDA only:
    # a CPU has no cuDNN); off in tables written before the field existed
    cudnn_benchmark: bool = False
    measured_on: str | None  # None: assumed by the design, not measured
    evidence: str = ""


class AutoTable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    about: str = ""
    rows: dict[Literal["cpu", "cuda"], AutoRow]


def table_path() -> Path:
    return Path(os.environ[ENV]) if os.environ.get(ENV) else SHIPPED


@functools.cache
def load_table(path: Path) -> AutoTable:
    table = read_model(path, AutoTable, "auto_defaults")
    missing = [t for t in DEVICE_TYPES if t not in table.rows]
    if missing:
        raise HpstudyError(f"{path}: no row for {', '.join(missing)}")
    return table


def auto_row(device_type: str) -> AutoRow:
    """The `auto` choices for `cpu` or `cuda`."""
    if device_type not in DEVICE_TYPES:
        raise HpstudyError(f"device type {device_type!r}: must be one of {', '.join(DEVICE_TYPES)}")
    return load_table(table_path()).rows[device_type]  # type: ignore[index]
