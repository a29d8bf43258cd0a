# Copyright (c) mmbinary contributors. All rights reserved.
from .batch_norm_recalibration_hook import (BatchNormRecalibrationHook,
                                            recalibrate_batch_norms)
from .oscillation_dampening_hook import (OscillationDampeningHook,
                                         dampening_loss)
from .packed_kernel_choice_hook import PackedKernelChoiceHook
from .progressive_precision_hook import ProgressivePrecisionHook

__all__ = [
    'BatchNormRecalibrationHook', 'OscillationDampeningHook',
    'PackedKernelChoiceHook', 'ProgressivePrecisionHook', 'dampening_loss',
    'recalibrate_batch_norms'
]
