# Copyright (c) mmbinary contributors. All rights reserved.
"""Backbones with binary-branch (MBB) convs, for mmdet and mmseg."""
from .mbb_mobilenet_v2 import MBBDilatedMobileNetV2, MBBMobileNetV2
from .mbb_resnet import MBBResNet
from .mbb_resnet_v1c import MBBResNetV1c
from .resnet_swap import encode_resnet, swap_resnet_convs

__all__ = [
    'MBBDilatedMobileNetV2', 'MBBMobileNetV2', 'MBBResNet', 'MBBResNetV1c',
    'swap_resnet_convs', 'encode_resnet'
]
