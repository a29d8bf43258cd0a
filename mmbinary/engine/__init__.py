# Copyright (c) mmbinary contributors. All rights reserved.
"""Runner hooks: the progressive-precision schedule."""
from .hooks import ProgressivePrecisionHook

__all__ = ['ProgressivePrecisionHook']
