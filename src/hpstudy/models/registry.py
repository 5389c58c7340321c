"""Model registry (timm-style): build any model by name, with a class count and a width; size it.

A leaf module: the model files import it to register themselves, and it imports no model
until one is built. The built-in names are known without importing their modules (or
torch), so listing models costs nothing: `hpstudy --help` names them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from hpstudy.constants import NUM_CLASSES
from hpstudy.errors import HpstudyError

if TYPE_CHECKING:
    from torch import nn

ModelFn = Callable[[int, float], "nn.Module"]
_MODELS: dict[str, ModelFn] = {}
# the built-in models: name -> the module that registers it, imported when first built
BUILTIN = {
    "mobilenet": "hpstudy.models.mobilenet",
    "mobilenetv2": "hpstudy.models.mobilenetv2",
    "resnet18": "hpstudy.models.resnet",
}


def register_model(name: str) -> Callable[[ModelFn], ModelFn]:
    """Register `fn(num_classes, width) -> nn.Module` under `name`."""

    def decorator(fn: ModelFn) -> ModelFn:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = fn
        return fn

    return decorator


def create_model(name: str, num_classes: int = NUM_CLASSES, width: float = 1.0) -> nn.Module:
    """A fresh, randomly initialised model `name` with `num_classes` outputs at `width`."""
    if name not in _MODELS and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    if name not in _MODELS:
        raise HpstudyError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    if not width > 0:  # also rejects NaN
        raise HpstudyError(f"width must be > 0, got {width}")
    if num_classes < 1:
        raise HpstudyError(f"num_classes must be >= 1, got {num_classes}")
    return _MODELS[name](num_classes, width)


def list_models() -> list[str]:
    """The registered model names (the built-ins whether imported yet or not), sorted."""
    return sorted(set(_MODELS) | set(BUILTIN))


def scaled(channels: int, width: float) -> int:
    """The width rule shared by every model; never below one channel so tiny widths still build."""
    return max(1, int(channels * width))


def count_parameters(model: nn.Module) -> int:
    """All parameters of `model`, trainable or not."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, ...] = (3, 32, 32)) -> int:
    """Multiply-adds of one forward pass on one image, in eval mode.

    Half of the flops torch's FlopCounterMode counts: it counts matrix products and
    convolutions (depthwise ones by their groups) at 2 flops per multiply-add, and
    ignores biases, BN, activations, pooling and additions.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    # Per-module modes, so a partly frozen model (e.g. BN kept in eval) comes back as it was.
    modes = {m: m.training for m in model.modules()}
    counter = FlopCounterMode(display=False)
    try:
        model.eval()
        with torch.no_grad(), counter:
            model(torch.zeros(1, *input_size, device=device, dtype=dtype))
    finally:
        for m, training in modes.items():
            m.training = training
    return counter.get_total_flops() // 2
