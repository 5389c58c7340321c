"""The image classifiers, built by name through one registry: MobileNet, MobileNetV2, ResNet-18.

`hpstudy.models.registry` holds the registry; a built-in model's module (mobilenet,
mobilenetv2, resnet) is imported when that model is first built, so importing the package
imports no torch.
"""

from hpstudy.models.registry import (
    ModelFn,
    count_macs,
    count_parameters,
    create_model,
    list_models,
    register_model,
    scaled,
)

__all__ = [
    "ModelFn",
    "count_macs",
    "count_parameters",
    "create_model",
    "list_models",
    "register_model",
    "scaled",
]
