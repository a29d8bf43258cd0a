# Copyright (c) mmbinary contributors. All rights reserved.
from .batch_norm_recalibration_hook import (BatchNormRecalibrationHook,
                                             recalibrate_batch_norms)
from .progressive_precision_hook import ProgressivePrecisionHook

__all__ = [
    'BatchNormRecalibrationHook', 'ProgressivePrecisionHook',
    'recalibrate_batch_norms'
]
