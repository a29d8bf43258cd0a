# Copyright (c) mmbinary contributors. All rights reserved.
"""Runner hooks: the progressive-precision schedule, batch-norm
recalibration."""
from .hooks import (BatchNormRecalibrationHook, ProgressivePrecisionHook,
                    recalibrate_batch_norms)

__all__ = [
    'BatchNormRecalibrationHook', 'ProgressivePrecisionHook',
    'recalibrate_batch_norms'
]
