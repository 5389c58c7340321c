"""Model registry (timm-style): every model is built by name, with a class count and a width."""

from collections.abc import Callable

import torch
from torch import nn

from hpstudy.errors import HpstudyError

ModelFn = Callable[[int, float], nn.Module]
_MODELS: dict[str, ModelFn] = {}


def register_model(name: str) -> Callable[[ModelFn], ModelFn]:
    """Register `fn(num_classes, width) -> nn.Module` under `name`."""

    def decorator(fn: ModelFn) -> ModelFn:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = fn
        return fn

    return decorator


def create_model(name: str, num_classes: int = 100, width: float = 1.0) -> nn.Module:
    if name not in _MODELS:
        raise HpstudyError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    if not width > 0:  # also rejects NaN
        raise HpstudyError(f"width must be > 0, got {width}")
    if num_classes < 1:
        raise HpstudyError(f"num_classes must be >= 1, got {num_classes}")
    return _MODELS[name](num_classes, width)


def list_models() -> list[str]:
    return sorted(_MODELS)


def scaled(channels: int, width: float) -> int:
    """The width rule shared by every model; never below one channel so tiny widths still build."""
    return max(1, int(channels * width))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32)) -> int:
    """Multiply-adds of the Conv2d and Linear layers for one image (BN, ReLU, pooling ignored)."""
    macs = 0

    def conv_hook(m: nn.Conv2d, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal macs
        kh, kw = m.kernel_size
        macs += out.numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal macs
        macs += out.numel() * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    # Per-module modes, so a partly frozen model (e.g. BN kept in eval) comes back as it was.
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_size, device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
    return macs


# Imported last: each module registers itself through `register_model` above.
from hpstudy.models import mobilenet, mobilenetv2, resnet  # noqa: E402, F401
