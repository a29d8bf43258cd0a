# Copyright (c) mmbinary contributors. All rights reserved.
"""Detection heads with binary-branch (MBB) layers.

RetinaHead, and mmseg's ASPPHead and FCNHead, need no subclass: they take
``conv_cfg=dict(type='MBBConv', w_bits=2, a_bits=2)``. ``MBBRetinaHead``
encodes its towers itself and can give them one batch norm per pyramid
level (``per_level_norm``).
"""
from .mbb_bbox_head import MBBShared2FCBBoxHead
from .mbb_retina_head import MBBRetinaHead
from .mbb_rpn_head import MBBRPNHead
from .per_level_norm import (PackedPerLevelMBBConv2d, PerLevelConvModule,
                             PerLevelNormMBBConv2d)

__all__ = [
    'MBBRPNHead', 'MBBRetinaHead', 'MBBShared2FCBBoxHead',
    'PerLevelNormMBBConv2d', 'PackedPerLevelMBBConv2d', 'PerLevelConvModule'
]
