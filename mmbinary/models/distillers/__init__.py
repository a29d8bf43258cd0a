# Copyright (c) mmbinary contributors. All rights reserved.
"""Knowledge distillation from a float teacher: a registered wrapper in
mmrazor's config shape, recorders of named modules and the losses."""
from .losses import (ChannelWiseDivergence, FeatureImitationLoss,
                     SigmoidKLDivergence)
from .recorders import ModuleOutputsRecorder, RecorderManager
from .single_teacher import SingleTeacherDistill

__all__ = [
    'SingleTeacherDistill', 'FeatureImitationLoss', 'SigmoidKLDivergence',
    'ChannelWiseDivergence', 'ModuleOutputsRecorder', 'RecorderManager'
]
