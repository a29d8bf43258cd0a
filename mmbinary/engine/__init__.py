# Copyright (c) mmbinary contributors. All rights reserved.
"""Runner hooks: the progressive-precision schedule, batch-norm
recalibration, oscillation dampening."""
from .hooks import (BatchNormRecalibrationHook, OscillationDampeningHook,
                    ProgressivePrecisionHook, dampening_loss,
                    recalibrate_batch_norms)

__all__ = [
    'BatchNormRecalibrationHook', 'OscillationDampeningHook',
    'ProgressivePrecisionHook', 'dampening_loss', 'recalibrate_batch_norms'
]
