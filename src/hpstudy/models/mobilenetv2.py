"""The common CIFAR MobileNetV2 (kuangliu/pytorch-cifar): stride-1 stem and second stage.

Kept as in that code, which differs from the ImageNet paper in two ways: the expansion 1x1 conv is
present even when t = 1, and a stride-1 block whose channels change gets a 1x1 conv + BN shortcut.
"""

import torch
import torch.nn.functional as F
from torch import nn

from hpstudy.models.registry import register_model, scaled

# (expansion t, output channels c, repeats n, first stride s)
CONFIG: list[tuple[int, int, int, int]] = [
    (1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
]  # fmt: skip


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.stride = stride
        self.expand = nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden))
        self.depthwise = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
        )
        self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = nn.Sequential()
        if stride == 1 and cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(F.relu(self.depthwise(F.relu(self.expand(x)))))
        return out + self.shortcut(x) if self.stride == 1 else out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 100, width: float = 1.0) -> None:
        super().__init__()
        cin = scaled(32, width)
        self.stem = nn.Sequential(
            nn.Conv2d(3, cin, 3, 1, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU(inplace=True)
        )
        blocks = []
        for t, c, n, s in CONFIG:
            for i in range(n):
                blocks.append(InvertedResidual(cin, scaled(c, width), t, s if i == 0 else 1))
                cin = scaled(c, width)
        self.blocks = nn.Sequential(*blocks)
        cout = scaled(1280, width)
        self.head = nn.Sequential(
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cout, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.head(self.blocks(self.stem(x))))
        return self.classifier(x.flatten(1))


@register_model("mobilenetv2")
def mobilenetv2(num_classes: int = 100, width: float = 1.0) -> MobileNetV2:
    return MobileNetV2(num_classes, width)
