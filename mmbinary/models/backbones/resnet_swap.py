# Copyright (c) mmbinary contributors. All rights reserved.
"""Swap the convs of a built ResNet (mmdet's or mmseg's) for binary-branch
(MBB) convs.

mmdet's and mmseg's ResNets share one layout (``conv1`` or a deep ``stem``,
then ``layer1..layer4`` of blocks with ``conv1..conv3`` and an optional
``downsample``), so one function swaps both. Keys do not change: a float
ResNet state dict still loads.

Activation modes follow the data each conv sees:

* the stem's first conv reads normalized images: ``'signed'``;
* every other conv reads the output of a ReLU (the previous block's, the
  stem's, or its own block's after ``norm1``/``norm2``): ``'unsigned'``;
  a conv behind a block plugin sees the plugin's output: ``'auto'``.
"""
from typing import Optional, Sequence, Tuple, Union

from torch import nn

from mmbinary.quant import check_bits

from ..swap import deprecated_alias
from .layer_swap import check_mbb_cfg, check_part_bits, to_mbb

Bits = Union[int, Sequence[int]]
#: One part's own precision: W=A bits or (w_bits, a_bits); None: its stage's.
PartBits = Union[None, int, Tuple[int, int]]


def per_stage(bits: Bits, num_stages: int, name: str) -> Tuple[int, ...]:
    """Expand ``bits`` to one bit width per stage and check each.

    Args:
        bits (int | Sequence[int]): one width for all stages, or one each.
        num_stages (int): number of ResNet stages.
        name (str): argument name for error messages (``'w_bits'``).

    Returns:
        tuple[int]: ``num_stages`` bit widths in 1..8.
    """
    if isinstance(bits, Sequence) and not isinstance(bits, str):
        if len(bits) != num_stages:
            raise ValueError(
                f'{name} must be an int or a list of {num_stages} ints (one '
                f'per stage), got {list(bits)!r}')
        return tuple(
            check_bits(b, f'{name}[{i}]') for i, b in enumerate(bits))
    return (check_bits(bits, name), ) * num_stages


def _swap_stem(resnet: nn.Module, w_bits: int, a_bits: int,
               mbb_cfg: dict) -> None:
    if getattr(resnet, 'deep_stem', False):
        a_mode = 'signed'
        for index, module in enumerate(resnet.stem):
            if isinstance(module, nn.Conv2d):
                resnet.stem[index] = to_mbb(module, w_bits, a_bits, a_mode,
                                            mbb_cfg)
                a_mode = 'unsigned'
    else:
        resnet.conv1 = to_mbb(resnet.conv1, w_bits, a_bits, 'signed',
                              mbb_cfg)


def _swap_block(block: nn.Module, w_bits: int, a_bits: int,
                shortcut_bits: Optional[Tuple[int, int]],
                mbb_cfg: dict) -> None:
    modes = dict(conv1='unsigned', conv2='unsigned', conv3='unsigned')
    # mmdet's Bottleneck may run plugins between a ReLU and the next conv.
    if getattr(block, 'after_conv1_plugin_names', None):
        modes['conv2'] = 'auto'
    if getattr(block, 'after_conv2_plugin_names', None):
        modes['conv3'] = 'auto'
    for name, a_mode in modes.items():
        conv = getattr(block, name, None)
        if conv is not None:
            setattr(block, name, to_mbb(conv, w_bits, a_bits, a_mode,
                                        mbb_cfg))
    if shortcut_bits is not None and block.downsample is not None:
        for index, module in enumerate(block.downsample):
            block.downsample[index] = to_mbb(module, *shortcut_bits,
                                             'unsigned', mbb_cfg)


def swap_resnet_convs(resnet: nn.Module,
                      w_bits: Bits = 2,
                      a_bits: Bits = 2,
                      *,
                      encode_stem: bool = False,
                      encode_shortcut: bool = False,
                      mbb_cfg: Optional[dict] = None,
                      stem_bits: PartBits = None,
                      shortcut_bits: PartBits = None
                      ) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """Replace a built ResNet's convs by MBB convs, in place.

    Args:
        resnet (nn.Module): an mmdet or mmseg ``ResNet`` (or subclass).
        w_bits (int | Sequence[int]): weight bits, for all stages or one
            per stage.
        a_bits (int | Sequence[int]): activation bits, likewise.
        encode_stem (bool): also swap the stem conv(s), with stage 1's
            bits. Default: False (the stem stays float).
        encode_shortcut (bool): also swap the 1x1 downsample convs, with
            their stage's bits. Default: False.
        mbb_cfg (dict, optional): other MBB layer options, e.g.
            ``dict(w_mode='paper')``.
        stem_bits (int | tuple[int, int], optional): the encoded stem's
            own bits, W=A or (w_bits, a_bits), e.g. ``8`` in a W1A1
            network. Default: stage 1's.
        shortcut_bits (int | tuple[int, int], optional): the encoded
            shortcut convs' own bits, likewise. Default: their stage's.

    Returns:
        tuple: per-stage weight bits and per-stage activation bits.
    """
    num_stages = len(resnet.res_layers)
    stage_w_bits = per_stage(w_bits, num_stages, 'w_bits')
    stage_a_bits = per_stage(a_bits, num_stages, 'a_bits')
    mbb_cfg = check_mbb_cfg(mbb_cfg)
    stem = check_part_bits(stem_bits, 'stem_bits', encode_stem,
                           'encode_stem', (stage_w_bits[0], stage_a_bits[0]))
    if encode_stem:
        _swap_stem(resnet, *stem, mbb_cfg)
    for layer_name, w, a in zip(resnet.res_layers, stage_w_bits,
                                stage_a_bits):
        shortcut = check_part_bits(shortcut_bits, 'shortcut_bits',
                                   encode_shortcut, 'encode_shortcut', (w, a))
        for block in getattr(resnet, layer_name):
            _swap_block(block, w, a, shortcut if encode_shortcut else None,
                        mbb_cfg)
    return stage_w_bits, stage_a_bits


class MBBResNetMixin:
    """What ``MBBResNet`` and ``MBBResNetV1c`` do after building the float
    ResNet: swap its convs for MBB convs and freeze the new ones as the old
    were."""

    def _swap_convs(self,
                    w_bits: Bits,
                    a_bits: Bits,
                    encode_stem: bool,
                    encode_shortcut: bool,
                    mbb_cfg: Optional[dict],
                    stem_bits: PartBits = None,
                    shortcut_bits: PartBits = None) -> None:
        self.encode_stem = encode_stem
        self.encode_shortcut = encode_shortcut
        self.w_bits, self.a_bits = swap_resnet_convs(
            self,
            w_bits,
            a_bits,
            encode_stem=encode_stem,
            encode_shortcut=encode_shortcut,
            mbb_cfg=mbb_cfg,
            stem_bits=stem_bits,
            shortcut_bits=shortcut_bits)
        # The MBB convs are new modules: freeze them as the float ones were.
        self._freeze_stages()


#: The old name of :func:`swap_resnet_convs`.
encode_resnet = deprecated_alias(swap_resnet_convs, 'encode_resnet')
