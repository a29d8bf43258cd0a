# Copyright (c) mmbinary contributors. All rights reserved.
"""Small packed models for the export tests."""
import random

import torch
from torch import nn

from mmbinary.models import MBBConv2d, MBBLinear
from mmbinary.models.packing import convert_to_packed


class TinyNet(nn.Module):
    """A float stem, random MBB convs (each with a batch norm, some with a
    ReLU, one residual add), a max pool, a float conv head and, optionally,
    an MBB linear layer on the pooled features."""

    def __init__(self, seed: int, with_linear: bool = False) -> None:
        super().__init__()
        rng = random.Random(seed)
        width = rng.choice([4, 8, 66])
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.stem_bn = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        blocks = []
        channels, size = width, 16  # for 16x16 inputs
        for index in range(3):
            groups = rng.choice([1, 1, 2]) if channels % 2 == 0 else 1
            out = groups * rng.choice([2, 3, 5])
            kernel = rng.choice([1, 3])
            dilation = rng.choice([1, 2])
            stride = rng.choice([1, 2])
            padding = rng.choice([0, 1, 2])
            size = (size + 2 * padding - dilation * (kernel - 1) -
                    1) // stride + 1
            conv = MBBConv2d(
                channels, out, kernel, stride=stride,
                padding=padding, dilation=dilation,
                groups=groups, bias=rng.random() < 0.5,
                w_bits=rng.randint(1, 8), a_bits=rng.randint(1, 8),
                a_mode=rng.choice(['signed', 'unsigned']))
            layers = [conv, nn.BatchNorm2d(out)]
            if rng.random() < 0.7:
                layers.append(nn.ReLU())
            blocks.append(nn.Sequential(*layers))
            channels = out
        self.blocks = nn.Sequential(*blocks)
        # a 'same' MBB conv with a residual add
        self.same = MBBConv2d(channels, channels, 3, padding=1,
                              w_bits=rng.randint(1, 8),
                              a_bits=rng.randint(1, 8), a_mode='signed')
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.head = nn.Conv2d(channels, 4, 1)
        size = (size - 1) // 2 + 1
        self.linear = MBBLinear(4 * size * size, 3, w_bits=3, a_bits=2) \
            if with_linear else None

    def forward(self, x):
        x = self.relu(self.stem_bn(self.stem(x)))
        x = self.blocks(x)
        x = x + self.same(x)
        x = self.head(self.pool(x))
        if self.linear is None:
            return x
        return x, self.linear(torch.flatten(x, 1))


def calibrate(model: nn.Module, x: torch.Tensor, steps: int = 2):
    """Initialize the activation clips and the norms' statistics, then
    pack."""
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(x)
    model.eval()
    return convert_to_packed(model)
