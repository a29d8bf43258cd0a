# Copyright (c) mmbinary contributors. All rights reserved.
"""``MBBRPNHead``: mmdet's RPNHead with a binary-branch shared conv."""
from typing import Optional

from mmdet.models.dense_heads import RPNHead
from torch import nn

from mmbinary.quant import check_bits
from mmbinary.registry import MODELS

from ..backbones.layer_swap import check_mbb_cfg, to_mbb


@MODELS.register_module()
class MBBRPNHead(RPNHead):
    """mmdet's RPNHead whose shared 3x3 conv(s) are MBB convs.

    mmdet's RPNHead builds ``rpn_conv`` without ``conv_cfg``, hence this
    head. The first conv reads FPN levels (``'signed'``), later ones (with
    ``num_convs > 1``) a ReLU's output (``'unsigned'``). The 1x1
    ``rpn_cls``/``rpn_reg`` predictors, which read the ReLU after
    ``rpn_conv``, stay float unless ``encode_cls_reg=True``.

    Args:
        w_bits (int): weight bits M, 1..8. Default: 2.
        a_bits (int): activation bits K, 1..8. Default: 2.
        encode_cls_reg (bool): encode ``rpn_cls`` and ``rpn_reg`` too.
            Default: False.
        mbb_cfg (dict, optional): other MBB layer options.
        **kwargs: the arguments of mmdet's ``RPNHead``.
    """

    def __init__(self,
                 *args,
                 w_bits: int = 2,
                 a_bits: int = 2,
                 encode_cls_reg: bool = False,
                 mbb_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.w_bits = check_bits(w_bits, 'w_bits')
        self.a_bits = check_bits(a_bits, 'a_bits')
        self.encode_cls_reg = encode_cls_reg
        mbb_cfg = check_mbb_cfg(mbb_cfg)
        if isinstance(self.rpn_conv, nn.Sequential):
            for index, conv_module in enumerate(self.rpn_conv):
                a_mode = 'signed' if index == 0 else 'unsigned'
                conv_module.conv = to_mbb(conv_module.conv, w_bits, a_bits,
                                          a_mode, mbb_cfg)
        else:
            self.rpn_conv = to_mbb(self.rpn_conv, w_bits, a_bits, 'signed',
                                   mbb_cfg)
        if encode_cls_reg:
            self.rpn_cls = to_mbb(self.rpn_cls, w_bits, a_bits, 'unsigned',
                                  mbb_cfg)
            self.rpn_reg = to_mbb(self.rpn_reg, w_bits, a_bits, 'unsigned',
                                  mbb_cfg)
