"""The CIFAR MobileNet (v1) of the report's course: stride-1 stem, 13 depthwise-separable blocks."""

from collections import OrderedDict

import torch
from torch import nn

from hpstudy.models.registry import register_model, scaled

# (output channels, stride) of the 13 depthwise-separable blocks.
BLOCKS: list[tuple[int, int]] = [
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
]  # fmt: skip


def conv_bn_relu(
    cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            bn=nn.BatchNorm2d(cout),
            relu=nn.ReLU(inplace=True),
        )
    )


def separable(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            depthwise=conv_bn_relu(cin, cin, 3, stride, groups=cin),
            pointwise=conv_bn_relu(cin, cout, 1),
        )
    )


class MobileNet(nn.Module):
    def __init__(self, num_classes: int = 100, width: float = 1.0) -> None:
        super().__init__()
        cin = scaled(32, width)
        self.stem = conv_bn_relu(3, cin, 3)
        blocks = []
        for cout, stride in BLOCKS:
            blocks.append(separable(cin, scaled(cout, width), stride))
            cin = scaled(cout, width)
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.blocks(self.stem(x)))
        return self.classifier(x.flatten(1))


@register_model("mobilenet")
def mobilenet(num_classes: int = 100, width: float = 1.0) -> MobileNet:
    return MobileNet(num_classes, width)
