# Copyright (c) mmbinary contributors. All rights reserved.
"""``MBBRPNHead``: mmdet's RPNHead with a binary-branch shared conv."""
from typing import List, Optional, Tuple

import torch.nn.functional as F
from mmdet.models.dense_heads import RPNHead
from mmdet.models.utils import multi_apply
from torch import Tensor, nn

from mmbinary.quant import check_bits
from mmbinary.registry import MODELS

from ..backbones.layer_swap import check_mbb_cfg, to_mbb
from .mbb_retina_head import check_no_level_norms
from .per_level_norm import PerLevelNormMBBConv2d


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
        per_level_norm (bool): follow the (single) ``rpn_conv`` by one batch
            norm per pyramid level (AQD), folded per level when packed.
            Default: False.
        num_levels (int): pyramid levels (the neck's ``num_outs``).
            Default: 5.
        level_norm_cfg (dict, optional): the per-level norm. Default: BN.
        **kwargs: the arguments of mmdet's ``RPNHead``.
    """

    def __init__(self,
                 *args,
                 w_bits: int = 2,
                 a_bits: int = 2,
                 encode_cls_reg: bool = False,
                 mbb_cfg: Optional[dict] = None,
                 per_level_norm: bool = False,
                 num_levels: int = 5,
                 level_norm_cfg: Optional[dict] = None,
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
        self.per_level_norm = bool(per_level_norm)
        self.num_levels = num_levels
        if self.per_level_norm:
            if isinstance(self.rpn_conv, nn.Sequential):
                raise ValueError('MBBRPNHead: per_level_norm needs '
                                 'num_convs=1')
            self.rpn_conv = PerLevelNormMBBConv2d.from_mbb(
                self.rpn_conv, num_levels, level_norm_cfg)

    def forward(self, x: Tuple[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        """Per level (N, C, H_l, W_l) -> per level scores and boxes."""
        if self.per_level_norm and len(x) != self.num_levels:
            raise ValueError(
                f'MBBRPNHead has per-level norms for {self.num_levels} '
                f'levels, got {len(x)} feature maps')
        return multi_apply(self.forward_single, x, list(range(len(x))))

    def forward_single(self,
                       x: Tensor,
                       level: Optional[int] = None) -> Tuple[Tensor, Tensor]:
        """One level's features -> (rpn_cls_score, rpn_bbox_pred)."""
        if not self.per_level_norm:
            return super().forward_single(x)
        x = F.relu(self.rpn_conv(x, level))
        return self.rpn_cls(x), self.rpn_reg(x)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys,
                              error_msgs):
        if not self.per_level_norm:
            check_no_level_norms(state_dict, prefix, type(self).__name__)
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)
