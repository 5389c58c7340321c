"""The image classifiers, built by name through one registry: MobileNet, MobileNetV2, ResNet-18,
and the user's own (registered, entry points, "module:callable").

`hpstudy.models.registry` holds the registry; a built-in model's module (mobilenet,
mobilenetv2, resnet) is imported when that model is first built, so importing the package
imports no torch.
"""

from hpstudy.models.registry import (
    ModelFn,
    check_output,
    count_macs,
    count_parameters,
    create_model,
    list_models,
    model_builder,
    model_source,
    register_model,
    scaled,
)

__all__ = [
    "ModelFn",
    "check_output",
    "count_macs",
    "count_parameters",
    "create_model",
    "list_models",
    "model_builder",
    "model_source",
    "register_model",
    "scaled",
]
