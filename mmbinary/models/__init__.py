# Copyright (c) mmbinary contributors. All rights reserved.
"""Registered MBB layers, backbones and necks."""
from .encode import encode_model
from .layers import MBBConv2d, MBBLinear

__all__ = ['encode_model', 'MBBConv2d', 'MBBLinear']
