"""3D ResNet-50 (Hara et al., Kinetics-400, shortcut type B): the FID-VID feature network.

Parameter names follow the published `resnet-50-kinetics.pth` (after its `module.` prefix is
dropped), so that file loads strictly. No library ships this network, hence its definition here.
The features are the 2048 channels of the last block averaged over time and space (the network's
average pool at 16 x 112 x 112 input); the final 400-class layer `fc` is loaded but not applied.
"""

from __future__ import annotations

import torch
from torch import nn

# Kinetics clip statistics the network was trained with (0-255 scale, RGB); inputs are not divided by a std.
KINETICS_MEAN = (114.7748, 107.7354, 99.4750)
INPUT_SIZE = 112
FEATURE_DIM = 2048


class Bottleneck3d(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv3d(in_channels, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        return self.relu(x + shortcut)


class ResNet3d50(nn.Module):
    """The 3D ResNet-50; `forward` returns (B, 2048) clip features from (B, 3, T, H, W) inputs."""

    def __init__(self, num_classes: int = 400, blocks: tuple[int, ...] = (3, 4, 6, 3)):
        super().__init__()
        self.conv1 = nn.Conv3d(3, 64, kernel_size=7, stride=(1, 2, 2), padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        channels = 64
        for index, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks)):
            stride = 1 if index == 0 else 2
            layer, channels = self._layer(channels, planes, count, stride)
            setattr(self, f"layer{index + 1}", layer)
        self.fc = nn.Linear(512 * Bottleneck3d.expansion, num_classes)

    @staticmethod
    def _layer(in_channels: int, planes: int, count: int, stride: int) -> tuple[nn.Sequential, int]:
        out_channels = planes * Bottleneck3d.expansion
        downsample = None
        if stride != 1 or in_channels != out_channels:  # shortcut type B: a projection
            downsample = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm3d(out_channels),
            )
        blocks = [Bottleneck3d(in_channels, planes, stride, downsample)]
        blocks += [Bottleneck3d(out_channels, planes) for _ in range(1, count)]
        return nn.Sequential(*blocks), out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3, 4))
