"""The usual CIFAR ResNet-18: 3x3 stride-1 stem without max-pool, four stages of BasicBlocks."""

import torch
import torch.nn.functional as F
from torch import nn

from hpstudy.models.registry import register_model, scaled


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 100, width: float = 1.0) -> None:
        super().__init__()
        cin = scaled(64, width)
        self.stem = nn.Sequential(
            nn.Conv2d(3, cin, 3, 1, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU(inplace=True)
        )
        stages = []
        for channels, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            cout = scaled(channels, width)
            stages.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(self.stem(x)))
        return self.classifier(x.flatten(1))


@register_model("resnet18")
def resnet18(num_classes: int = 100, width: float = 1.0) -> ResNet18:
    return ResNet18(num_classes, width)
