"""Model registry (timm-style): build any model by name, with a class count and a width; size it.

A leaf module: the model files import it to register themselves, and it imports no model
until one is built. The built-in names are known without importing their modules (or
torch), so listing models costs nothing: `hpstudy --help` names them. Besides the
built-ins and `register_model`, a name is an entry point of `hpstudy.models` (an
installed package's) or a "module:callable" reference to the user's own builder,
`build(num_classes, width, **model_args) -> nn.Module`. What a builder hands back is
checked: a module, whose output on images of the data's shape is one logit per class.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from hpstudy.constants import IMAGE_SHAPE, NUM_CLASSES
from hpstudy.errors import HpstudyError
from hpstudy.plugins import entry_point_names, first_line, is_reference, load_entry_point
from hpstudy.sources import MODEL_GROUP, check_model_name, load_callable, model_fingerprint

if TYPE_CHECKING:
    from torch import nn

ModelFn = Callable[..., "nn.Module"]  # (num_classes, width, **model_args) -> nn.Module
_MODELS: dict[str, ModelFn] = {}
# the built-in models: name -> the module that registers it, imported when first built
BUILTIN = {
    "mobilenet": "hpstudy.models.mobilenet",
    "mobilenetv2": "hpstudy.models.mobilenetv2",
    "resnet18": "hpstudy.models.resnet",
}


def register_model(name: str) -> Callable[[ModelFn], ModelFn]:
    """Register `fn(num_classes, width, **model_args) -> nn.Module` under `name`."""

    def decorator(fn: ModelFn) -> ModelFn:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = fn
        return fn

    return decorator


def model_builder(name: str) -> ModelFn:
    """The builder `name` names: built-in, registered, an entry point or a reference."""
    check_model_name(name)
    if name not in _MODELS and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    if name in _MODELS:
        return _MODELS[name]
    if is_reference(name):
        return load_callable(name)
    found = load_entry_point(MODEL_GROUP, name)
    if found is None:
        raise HpstudyError(
            f"unknown model {name!r}; known models: {', '.join(list_models())} "
            "(or 'module:callable')"
        )
    if not callable(found):
        raise HpstudyError(
            f"model {name!r}: its entry point is a {type(found).__name__}, not a callable"
        )
    return found


def model_source(name: str) -> str | None:
    """What a run's identity keeps of model `name`'s code (None: a built-in, hpstudy's own)."""
    check_model_name(name)
    builtin = name in BUILTIN
    return model_fingerprint(name, builtin, None if builtin else _MODELS.get(name))


def create_model(
    name: str, num_classes: int = NUM_CLASSES, width: float = 1.0, **model_args: object
) -> nn.Module:
    """A fresh, randomly initialised model `name` with `num_classes` outputs at `width`;
    `model_args` go to its builder as keywords. Anything but a module is one line."""
    from torch import nn

    if not width > 0:  # also rejects NaN
        raise HpstudyError(f"width must be > 0, got {width}")
    if num_classes < 1:
        raise HpstudyError(f"num_classes must be >= 1, got {num_classes}")
    builder = model_builder(name)
    try:
        model = builder(num_classes, width, **model_args)
    except HpstudyError:
        raise
    except Exception as err:  # the user's builder: its own error, in one line
        raise HpstudyError(f"model {name!r}: building it failed ({first_line(err)})") from None
    if not isinstance(model, nn.Module):
        raise HpstudyError(
            f"model {name!r}: its builder returned a {type(model).__name__}, "
            "not a torch.nn.Module"
        )
    return model


def check_output(
    model: nn.Module, name: str, num_classes: int, image_shape: tuple[int, ...] = IMAGE_SHAPE
) -> None:
    """One line, before anything trains, where `model` does not map two images of
    `image_shape` to (2, num_classes) logits. Its modes and the random stream stay as they were."""
    import torch

    param = next(model.parameters(), None)
    if param is None:
        raise HpstudyError(f"model {name!r}: has no parameters to train")
    modes = {m: m.training for m in model.modules()}
    rng = torch.get_rng_state()
    try:
        model.eval()
        with torch.no_grad():
            out = model(torch.zeros(2, *image_shape, device=param.device, dtype=param.dtype))
    except Exception as err:
        raise HpstudyError(
            f"model {name!r}: fails on images of shape {list(image_shape)} ({first_line(err)})"
        ) from None
    finally:
        for m, training in modes.items():
            m.training = training
        torch.set_rng_state(rng)
    shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != [2, num_classes]:
        raise HpstudyError(
            f"model {name!r}: maps 2 images of shape {list(image_shape)} to {shape}, "
            f"not [2, {num_classes}] (one logit per class)"
        )


def list_models() -> list[str]:
    """The model names: the built-ins (imported or not), the registered ones and the entry
    points of hpstudy.models (none imported), sorted."""
    return sorted(set(_MODELS) | set(BUILTIN) | set(entry_point_names(MODEL_GROUP)))


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
