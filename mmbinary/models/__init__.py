# Copyright (c) mmbinary contributors. All rights reserved.
"""Registered MBB layers, backbones and necks, and packed inference."""
from . import backbones, heads, necks  # noqa: F401  (registers them)
from .layers import MBBConv2d, MBBLinear
from .packing import (PackedMBBConv2d, PackedMBBLinear, convert_to_packed,
                      load_packed_checkpoint)
from .swap import encode_model, swap_to_mbb

__all__ = [
    'swap_to_mbb', 'encode_model', 'MBBConv2d', 'MBBLinear',
    'PackedMBBConv2d', 'PackedMBBLinear', 'convert_to_packed',
    'load_packed_checkpoint'
]
