# Copyright (c) mmbinary contributors. All rights reserved.
"""MobileNetV2 with binary-branch convs: mmdet's (``MBBMobileNetV2``) and
mmseg's dilated one (``MBBDilatedMobileNetV2``)."""
from typing import Callable, List, Optional, Tuple, Union

from mmcv.cnn import ConvModule
from mmdet.models.backbones import MobileNetV2
from mmdet.models.layers import InvertedResidual
from mmseg.models.backbones import MobileNetV2 as SegMobileNetV2
from mmseg.models.utils import InvertedResidual as SegInvertedResidual
from torch import nn

from mmbinary.quant import check_bits
from mmbinary.registry import MODELS

from .layer_swap import check_mbb_cfg, check_part_bits, to_mbb

#: One inverted-residual block's ConvModules: [expand], depthwise, projection.
BlockConvs = Tuple[List[ConvModule], ConvModule, ConvModule]


def _mmdet_block_convs(block: nn.Module) -> Optional[BlockConvs]:
    if not isinstance(block, InvertedResidual):
        return None
    expand = [block.expand_conv] if block.with_expand_conv else []
    return expand, block.depthwise_conv, block.linear_conv


def _mmseg_block_convs(block: nn.Module) -> Optional[BlockConvs]:
    if not isinstance(block, SegInvertedResidual):
        return None
    *expand, depthwise, linear = block.conv
    return expand, depthwise, linear


def swap_mobilenet_v2_convs(backbone: nn.Module,
                            block_convs: Callable[[nn.Module],
                                                  Optional[BlockConvs]],
                            w_bits: int, a_bits: int, encode_stem: bool,
                            encode_depthwise: bool,
                            mbb_cfg: Optional[dict],
                            stem_bits: Optional[Tuple[int, int]] = None,
                            expand_a_bits: Optional[int] = None
                            ) -> None:
    """Swap the convs of a built MobileNetV2 for MBB convs, in place.

    Activation modes follow each conv's input: expand 1x1 convs and the
    final 1x1 conv read a linear projection (signed); depthwise and
    projection convs read ReLU6 outputs (unsigned); the stem reads images
    (signed).

    Args:
        backbone (nn.Module): mmdet's or mmseg's ``MobileNetV2``.
        block_convs (callable): module -> its :data:`BlockConvs`, or None
            when the module is not an inverted-residual block.
        w_bits, a_bits (int): checked bit widths.
        encode_stem, encode_depthwise (bool): also swap those convs.
        mbb_cfg (dict, optional): other MBB layer options.
        stem_bits (tuple[int, int], optional): the stem's (w_bits, a_bits)
            when encoded; default: ``w_bits``, ``a_bits``.
        expand_a_bits (int, optional): the activation bits of the convs
            that read a block input (expand convs, the final 1x1 conv);
            default: ``a_bits``.
    """
    options = check_mbb_cfg(mbb_cfg)

    def swap(conv_module: ConvModule, a_mode: str,
             bits: Tuple[int, int] = (w_bits, a_bits)) -> None:
        conv_module.conv = to_mbb(conv_module.conv, *bits, a_mode, options)

    signed_bits = (w_bits, a_bits if expand_a_bits is None else
                   expand_a_bits)
    if encode_stem:
        swap(backbone.conv1, 'signed', stem_bits or (w_bits, a_bits))
    for module in backbone.modules():
        convs = block_convs(module)
        if convs is None:
            continue
        expand, depthwise, linear = convs
        for expand_conv in expand:
            swap(expand_conv, 'signed', signed_bits)
        if encode_depthwise:
            swap(depthwise, 'unsigned')
        swap(linear, 'unsigned')
    if hasattr(backbone, 'conv2'):  # mmdet's final 1x1 conv
        swap(backbone.conv2, 'signed', signed_bits)


@MODELS.register_module()
class MBBMobileNetV2(MobileNetV2):
    """mmdet's MobileNetV2 whose inverted-residual convs are MBB convs.

    Activation modes follow each conv's input: the expand 1x1 conv reads the
    block input (a linear projection, signed); the depthwise and the
    projection convs read ReLU6 outputs (unsigned); the final 1x1 conv reads
    the last block (signed). The stem stays float unless ``encode_stem``,
    and the 3x3 depthwise convs unless ``encode_depthwise``: packing runs
    along the input channels of a group, so a depthwise conv uses one bit of
    each 64-bit word, while it holds only about 6% of the network's MACs.
    Parameter names are mmdet's, so an mmdet-layout float checkpoint loads
    unchanged (``init_cfg=dict(type='Pretrained', checkpoint=PATH)``).

    Args:
        w_bits (int): weight bits M, 1..8. Default: 2.
        a_bits (int): activation bits K, 1..8. Default: 2.
        encode_stem (bool): encode the stem conv (image input, signed).
        stem_bits (int | tuple[int, int], optional): the encoded stem's
            bits, W=A or (w_bits, a_bits), e.g. 8 in a W2A2 backbone.
            Default: ``w_bits``, ``a_bits``.
        expand_a_bits (int, optional): activation bits of the convs that
            read a block input (signed: the expand convs and the final 1x1
            conv), e.g. 4 in a W2A2 backbone. Default: ``a_bits``.
        encode_depthwise (bool): encode the depthwise convs (unsigned).
        mbb_cfg (dict, optional): other MBB layer options (``w_mode``, ...).
        **kwargs: the arguments of mmdet's ``MobileNetV2``.
    """

    def __init__(self,
                 *,
                 w_bits: int = 2,
                 a_bits: int = 2,
                 encode_stem: bool = False,
                 stem_bits: Union[None, int, Tuple[int, int]] = None,
                 expand_a_bits: Optional[int] = None,
                 encode_depthwise: bool = False,
                 mbb_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.w_bits = check_bits(w_bits, 'w_bits')
        self.a_bits = check_bits(a_bits, 'a_bits')
        self.stem_bits = check_part_bits(stem_bits, 'stem_bits',
                                         encode_stem, 'encode_stem',
                                         (self.w_bits, self.a_bits))
        self.expand_a_bits = (self.a_bits if expand_a_bits is None else
                              check_bits(expand_a_bits, 'expand_a_bits'))
        swap_mobilenet_v2_convs(self, _mmdet_block_convs, self.w_bits,
                                self.a_bits, encode_stem, encode_depthwise,
                                mbb_cfg, self.stem_bits, self.expand_a_bits)
        self._freeze_stages()


@MODELS.register_module()
class MBBDilatedMobileNetV2(SegMobileNetV2):
    """mmseg's MobileNetV2 (dilated layers for segmentation, e.g. output
    stride 8) whose inverted-residual convs are MBB convs.

    The same MBB convs as :class:`MBBMobileNetV2`: expand 1x1 convs read the
    block input (signed), depthwise and projection convs read ReLU6 outputs
    (unsigned); the stem and the depthwise convs stay float by default.
    Parameter names are mmseg's, so an mmseg-layout float checkpoint loads
    unchanged. ``strides``, ``dilations`` and ``out_indices`` work as in
    mmseg, e.g. the DeepLabV3 setting ``strides=(1, 2, 2, 1, 1, 1, 1),
    dilations=(1, 1, 1, 2, 2, 4, 4)``.

    Args:
        w_bits (int): weight bits M, 1..8. Default: 2.
        a_bits (int): activation bits K, 1..8. Default: 2.
        encode_stem (bool): encode the stem conv (image input, signed).
        stem_bits (int | tuple[int, int], optional): the encoded stem's
            bits, W=A or (w_bits, a_bits), e.g. 8 in a W2A2 backbone.
            Default: ``w_bits``, ``a_bits``.
        expand_a_bits (int, optional): activation bits of the convs that
            read a block input (signed: the expand convs and the final 1x1
            conv), e.g. 4 in a W2A2 backbone. Default: ``a_bits``.
        encode_depthwise (bool): encode the depthwise convs (unsigned).
        mbb_cfg (dict, optional): other MBB layer options (``w_mode``, ...).
        **kwargs: the arguments of mmseg's ``MobileNetV2``.
    """

    def __init__(self,
                 *,
                 w_bits: int = 2,
                 a_bits: int = 2,
                 encode_stem: bool = False,
                 stem_bits: Union[None, int, Tuple[int, int]] = None,
                 expand_a_bits: Optional[int] = None,
                 encode_depthwise: bool = False,
                 mbb_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.w_bits = check_bits(w_bits, 'w_bits')
        self.a_bits = check_bits(a_bits, 'a_bits')
        self.stem_bits = check_part_bits(stem_bits, 'stem_bits',
                                         encode_stem, 'encode_stem',
                                         (self.w_bits, self.a_bits))
        self.expand_a_bits = (self.a_bits if expand_a_bits is None else
                              check_bits(expand_a_bits, 'expand_a_bits'))
        swap_mobilenet_v2_convs(self, _mmseg_block_convs, self.w_bits,
                                self.a_bits, encode_stem, encode_depthwise,
                                mbb_cfg, self.stem_bits, self.expand_a_bits)
        self._freeze_stages()
