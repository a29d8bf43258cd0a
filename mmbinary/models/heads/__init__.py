# Copyright (c) mmbinary contributors. All rights reserved.
"""Detection heads with binary-branch (MBB) layers.

RetinaHead, and mmseg's ASPPHead and FCNHead, need no subclass: they take
``conv_cfg=dict(type='MBBConv', w_bits=2, a_bits=2)``.
"""
from .mbb_bbox_head import MBBShared2FCBBoxHead
from .mbb_rpn_head import MBBRPNHead

__all__ = ['MBBRPNHead', 'MBBShared2FCBBoxHead']
