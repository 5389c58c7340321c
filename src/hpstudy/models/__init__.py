"""The image classifiers, built by name through one registry: MobileNet, MobileNetV2, ResNet-18.

Importing the package registers every model; `hpstudy.models.registry` holds the registry itself.
"""

from hpstudy.models import mobilenet, mobilenetv2, resnet
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
    "mobilenet",
    "mobilenetv2",
    "register_model",
    "resnet",
    "scaled",
]
