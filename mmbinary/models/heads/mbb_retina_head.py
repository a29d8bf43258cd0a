# Copyright (c) mmbinary contributors. All rights reserved.
"""``MBBRetinaHead``: mmdet's RetinaHead with MBB tower convs and an
option for one batch norm per pyramid level."""
import re
from typing import List, Optional, Tuple, Union

from mmdet.models.dense_heads import RetinaHead
from mmdet.models.utils import multi_apply
from torch import Tensor, nn

from mmbinary.quant import check_bits
from mmbinary.registry import MODELS

from ..backbones.layer_swap import check_mbb_cfg, check_part_bits, to_mbb
from ..layers import MBBConv2d
from .per_level_norm import PerLevelConvModule, PerLevelNormMBBConv2d


def to_per_level(convs: nn.ModuleList, num_levels: int,
                 norm_cfg: Optional[dict], owner: str) -> nn.ModuleList:
    """The tower ``convs`` (mmcv ConvModules with MBB convs and no norm) as
    :class:`PerLevelConvModule` stages."""
    stages = []
    for index, conv_module in enumerate(convs):
        if not isinstance(conv_module.conv, MBBConv2d):
            raise ValueError(
                f'{owner}: per_level_norm needs MBB tower convs (tower '
                f'conv {index} is {type(conv_module.conv).__name__})')
        if conv_module.with_norm:
            raise ValueError(
                f'{owner}: per_level_norm replaces the shared norm; build the '
                'head with norm_cfg=None and give the per-level norm as '
                'level_norm_cfg')
        conv = PerLevelNormMBBConv2d.from_mbb(conv_module.conv, num_levels,
                                              norm_cfg)
        activate = conv_module.activate if conv_module.with_activation \
            else None
        stages.append(PerLevelConvModule(conv, activate))
    return nn.ModuleList(stages)


def check_no_level_norms(state_dict: dict, prefix: str, owner: str) -> None:
    """Refuse a per-level checkpoint in a head built without them."""
    keys = [
        key for key in state_dict if key.startswith(prefix)
        and re.search(r'(^|\.)norms\.\d+\.', key[len(prefix):])
    ]
    if keys:
        raise ValueError(
            f'{owner} {prefix.rstrip(".")}: the checkpoint has per-level '
            f'norms ({keys[0]}, ...) but the head was built with '
            'per_level_norm=False; build it with per_level_norm=True and '
            "the checkpoint's num_levels")


@MODELS.register_module()
class MBBRetinaHead(RetinaHead):
    """mmdet's RetinaHead whose tower convs are MBB convs, optionally with
    one batch norm per pyramid level (``per_level_norm=True``, AQD).

    The first conv of each tower reads FPN levels (``'signed'``), later ones
    a ReLU's output (``'unsigned'``); ``retina_cls``/``retina_reg`` stay
    float unless ``encode_cls_reg``. With ``per_level_norm``, every tower
    stage is ``act(norms[level](conv(x)))`` with one conv shared by the
    levels; packing folds each level's norm into that level's epilogue
    (:class:`~mmbinary.models.heads.per_level_norm.PackedPerLevelMBBConv2d`).
    Parameter names are RetinaHead's, so a float checkpoint loads; the
    per-level norms start as the identity on the first batch.

    Args:
        num_classes (int): as RetinaHead.
        in_channels (int): as RetinaHead.
        w_bits (int): weight bits M, 1..8. Default: 2.
        a_bits (int): activation bits K, 1..8. Default: 2.
        encode_cls_reg (bool): encode the two predictors too.
            Default: False.
        cls_reg_bits (int | tuple[int, int], optional): the encoded
            predictors' bits, W=A or (w_bits, a_bits), e.g. 8 in a W2A2
            head. Default: ``w_bits``, ``a_bits``.
        mbb_cfg (dict, optional): other MBB layer options.
        per_level_norm (bool): one norm per level in the towers (the head
            must be built with ``norm_cfg=None``). Default: False.
        num_levels (int): pyramid levels the head is applied to (the
            neck's ``num_outs``). Default: 5.
        level_norm_cfg (dict, optional): the per-level norm. Default: BN.
        **kwargs: as RetinaHead.
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 *,
                 w_bits: int = 2,
                 a_bits: int = 2,
                 encode_cls_reg: bool = False,
                 cls_reg_bits: Union[None, int, Tuple[int, int]] = None,
                 mbb_cfg: Optional[dict] = None,
                 per_level_norm: bool = False,
                 num_levels: int = 5,
                 level_norm_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(num_classes, in_channels, **kwargs)
        self.w_bits = check_bits(w_bits, 'w_bits')
        self.a_bits = check_bits(a_bits, 'a_bits')
        self.encode_cls_reg = encode_cls_reg
        self.cls_reg_bits = check_part_bits(cls_reg_bits, 'cls_reg_bits',
                                            encode_cls_reg, 'encode_cls_reg',
                                            (self.w_bits, self.a_bits))
        mbb_cfg = check_mbb_cfg(mbb_cfg)
        for tower in (self.cls_convs, self.reg_convs):
            for index, conv_module in enumerate(tower):
                a_mode = 'signed' if index == 0 else 'unsigned'
                conv_module.conv = to_mbb(conv_module.conv, w_bits, a_bits,
                                          a_mode, mbb_cfg)
        if encode_cls_reg:
            a_mode = 'unsigned' if self.stacked_convs else 'signed'
            self.retina_cls = to_mbb(self.retina_cls, *self.cls_reg_bits,
                                     a_mode, mbb_cfg)
            self.retina_reg = to_mbb(self.retina_reg, *self.cls_reg_bits,
                                     a_mode, mbb_cfg)
        self.per_level_norm = bool(per_level_norm)
        self.num_levels = num_levels
        if self.per_level_norm:
            owner = type(self).__name__
            self.cls_convs = to_per_level(self.cls_convs, num_levels,
                                          level_norm_cfg, owner)
            self.reg_convs = to_per_level(self.reg_convs, num_levels,
                                          level_norm_cfg, owner)

    def forward(self, x: Tuple[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        """Per level (N, C, H_l, W_l) -> per level scores and boxes."""
        if self.per_level_norm and len(x) != self.num_levels:
            raise ValueError(
                f'{type(self).__name__} has per-level norms for '
                f'{self.num_levels} levels, got {len(x)} feature maps')
        return multi_apply(self.forward_single, x, list(range(len(x))))

    def forward_single(self,
                       x: Tensor,
                       level: Optional[int] = None) -> Tuple[Tensor, Tensor]:
        """One level's features -> (cls_score, bbox_pred)."""
        if not self.per_level_norm:
            return super().forward_single(x)
        cls_feat, reg_feat = x, x
        for stage in self.cls_convs:
            cls_feat = stage(cls_feat, level)
        for stage in self.reg_convs:
            reg_feat = stage(reg_feat, level)
        return self.retina_cls(cls_feat), self.retina_reg(reg_feat)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys,
                              error_msgs):
        if not self.per_level_norm:
            check_no_level_norms(state_dict, prefix, type(self).__name__)
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)
