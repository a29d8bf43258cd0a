# Copyright (c) mmbinary contributors. All rights reserved.
from .progressive_precision_hook import ProgressivePrecisionHook

__all__ = ['ProgressivePrecisionHook']
