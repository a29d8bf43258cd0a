# Copyright (c) mmbinary contributors. All rights reserved.
from .mbb_conv import MBBConv2d
from .mbb_linear import MBBLinear

__all__ = ['MBBConv2d', 'MBBLinear']
