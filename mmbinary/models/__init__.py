# Copyright (c) mmbinary contributors. All rights reserved.
"""Registered MBB layers, backbones and necks, and packed inference."""
from . import backbones, heads, necks  # noqa: F401  (registers them)
from .encode import encode_model
from .layers import MBBConv2d, MBBLinear
from .packing import (PackedMBBConv2d, PackedMBBLinear, convert_to_packed,
                      load_packed_checkpoint)

__all__ = [
    'encode_model', 'MBBConv2d', 'MBBLinear', 'PackedMBBConv2d',
    'PackedMBBLinear', 'convert_to_packed', 'load_packed_checkpoint'
]
