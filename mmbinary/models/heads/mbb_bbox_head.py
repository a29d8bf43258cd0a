# Copyright (c) mmbinary contributors. All rights reserved.
"""``MBBShared2FCBBoxHead``: Faster R-CNN's box head with MBB linears."""
from typing import Optional

from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead

from mmbinary.quant import check_bits
from mmbinary.registry import MODELS

from ..backbones.layer_swap import check_mbb_cfg, to_mbb


@MODELS.register_module()
class MBBShared2FCBBoxHead(Shared2FCBBoxHead):
    """mmdet's Shared2FCBBoxHead whose two shared FCs are ``MBBLinear``.

    The first FC reads flattened RoI features of FPN levels (``'signed'``),
    the second the ReLU after the first (``'unsigned'``). The ``fc_cls`` and
    ``fc_reg`` predictors (after a ReLU) stay float unless
    ``encode_cls_reg=True``. Parameter names do not change.

    Args:
        fc_out_channels (int): width of the shared FCs. Default: 1024.
        w_bits (int): weight bits M, 1..8. Default: 2.
        a_bits (int): activation bits K, 1..8. Default: 2.
        encode_cls_reg (bool): encode ``fc_cls`` and ``fc_reg`` too.
            Default: False.
        mbb_cfg (dict, optional): other MBB layer options.
        **kwargs: the arguments of mmdet's ``Shared2FCBBoxHead``.
    """

    def __init__(self,
                 fc_out_channels: int = 1024,
                 *args,
                 w_bits: int = 2,
                 a_bits: int = 2,
                 encode_cls_reg: bool = False,
                 mbb_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(fc_out_channels, *args, **kwargs)
        self.w_bits = check_bits(w_bits, 'w_bits')
        self.a_bits = check_bits(a_bits, 'a_bits')
        self.encode_cls_reg = encode_cls_reg
        mbb_cfg = check_mbb_cfg(mbb_cfg)
        for index, fc in enumerate(self.shared_fcs):
            a_mode = 'signed' if index == 0 else 'unsigned'
            self.shared_fcs[index] = to_mbb(fc, w_bits, a_bits, a_mode,
                                            mbb_cfg)
        if encode_cls_reg:
            for name in ('fc_cls', 'fc_reg'):
                layer = getattr(self, name, None)
                if layer is not None:
                    setattr(self, name,
                            to_mbb(layer, w_bits, a_bits, 'unsigned',
                                   mbb_cfg))
