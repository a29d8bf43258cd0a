# Copyright (c) mmbinary contributors. All rights reserved.
"""Runner hooks: the progressive-precision schedule, batch-norm
recalibration, oscillation dampening, packed kernel choice."""
from .hooks import (BatchNormRecalibrationHook, OscillationDampeningHook,
                    PackedKernelChoiceHook, ProgressivePrecisionHook,
                    dampening_loss, recalibrate_batch_norms)

__all__ = [
    'BatchNormRecalibrationHook', 'OscillationDampeningHook',
    'PackedKernelChoiceHook', 'ProgressivePrecisionHook', 'dampening_loss',
    'recalibrate_batch_norms'
]
