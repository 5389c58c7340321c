"""Where and how fast a run executes: the device, the precision, the `auto` choices, the model."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hpstudy.config import RunConfig
from hpstudy.defaults import CUDA_GRAPH_MODES, auto_row, compile_mode
from hpstudy.errors import HpstudyError
from hpstudy.models import check_output, create_model
from hpstudy.models.registry import BUILTIN
from hpstudy.run.device_data import data_shape
from hpstudy.sources import BUILTIN_DATASETS

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise HpstudyError(f"device: unknown device {name!r} (use auto, cpu or cuda[:i])") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise HpstudyError(f"device: {name} asked for, but no CUDA GPU is visible")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise HpstudyError(f"device: {name} does not exist ({torch.cuda.device_count()} GPUs)")
    elif device.type != "cpu":
        raise HpstudyError(f"device: {name!r} is not supported (use auto, cpu or cuda[:i])")
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


@dataclass(frozen=True)
class Execution:
    """The resolved `auto` choices of one config on one device."""

    device: torch.device
    precision: str  # fp32 (no autocast), bf16 or fp16
    channels_last: bool
    compile_mode: str | None  # torch.compile's ("default", "reduce-overhead", ...); None: eager
    eval_batch_size: int
    cudnn_benchmark: bool = False  # the `auto` table's choice; only a CUDA device has cuDNN

    @classmethod
    def resolve(cls, config: RunConfig) -> Execution:
        device = resolve_device(config.device)
        cuda = device.type == "cuda"
        precision = config.for_device(device.type).precision
        if precision == "fp16" and not cuda:
            raise HpstudyError("precision: fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
        # `auto` (None) is the device type's row of the measured table (hpstudy.defaults)
        row = auto_row(device.type)
        channels_last = row.channels_last if config.channels_last is None else config.channels_last
        mode = compile_mode(row.compile if config.compile is None else config.compile)
        eval_batch = config.eval_batch_size or row.eval_batch_size
        benchmark = cuda and row.cudnn_benchmark
        return cls(device, precision, channels_last, mode, eval_batch, benchmark)

    @property
    def compile(self) -> bool:
        """Whether the model is compiled (in any mode)."""
        return self.compile_mode is not None

    @property
    def cuda_graphs(self) -> bool:
        """Whether the compiled step replays CUDA graphs (reduce-overhead, max-autotune): its
        outputs live in a pool that the next replay overwrites."""
        return self.compile_mode in CUDA_GRAPH_MODES

    @property
    def dtype(self) -> torch.dtype:
        """The autocast dtype; float32 means no autocast."""
        return DTYPES[self.precision]

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def sync(self) -> None:
        """Wait for the device: timings and reads after this see finished work."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def build_model(
    config: RunConfig, ex: Execution, shape: tuple[int, tuple[int, ...]] | None = None
) -> nn.Module:
    """The config's model, seeded by the run's seed, on the device in its memory format
    (cuDNN's algorithm search switched as the execution says: a process-wide setting).
    `shape`: (classes, image shape) of the data (default: the config's dataset's). The
    user's model is checked to give one logit per class before anything trains."""
    if ex.device.type == "cuda":
        torch.backends.cudnn.benchmark = ex.cudnn_benchmark
    classes, image_shape = data_shape(config) if shape is None else shape
    torch.manual_seed(config.seed)
    model = create_model(config.model, classes, config.width, **config.model_args)
    if config.model not in BUILTIN or config.dataset not in BUILTIN_DATASETS:
        check_output(model, config.model, classes, image_shape)
    return model.to(ex.device, memory_format=ex.memory_format)
