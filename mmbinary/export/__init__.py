# Copyright (c) mmbinary contributors. All rights reserved.
"""Hand-off to hardware: references that need neither PyTorch nor the
compiled extension."""
from .numpy_reference import mbb_conv2d_accumulate_numpy

__all__ = ['mbb_conv2d_accumulate_numpy']
