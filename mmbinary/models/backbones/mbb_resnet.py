# Copyright (c) mmbinary contributors. All rights reserved.
"""``MBBResNet``: mmdet's ResNet with binary-branch residual blocks."""
from typing import Optional

from mmdet.models.backbones import ResNet

from mmbinary.registry import MODELS

from .resnet_swap import Bits, MBBResNetMixin, PartBits


@MODELS.register_module()
class MBBResNet(MBBResNetMixin, ResNet):
    """mmdet's ResNet whose residual-block convs are MBB convs.

    Built as the float ResNet, then each block's ``conv1..conv3`` become
    :class:`~mmbinary.models.layers.MBBConv2d` with the activation mode of
    their input (all post-ReLU: unsigned). The stem and the shortcut
    (downsample) convs stay float unless asked for. Parameter names do not
    change, so a float ResNet checkpoint (mmdet/torchvision layout) loads
    unchanged, e.g. ``init_cfg=dict(type='Pretrained', checkpoint=PATH)``.

    From an mmdet config::

        custom_imports = dict(imports=['mmbinary'],
                              allow_failed_imports=False)
        model = dict(backbone=dict(type='mmbinary.MBBResNet', depth=50,
                                   w_bits=2, a_bits=2))

    Args:
        depth (int): 18, 34, 50, 101 (or 152).
        w_bits (int | Sequence[int]): weight bits M, 1..8, for the whole
            backbone or one per stage (mixed precision). Default: 2.
        a_bits (int | Sequence[int]): activation bits K, likewise.
            Default: 2.
        encode_stem (bool): encode the stem conv too (input images, signed
            mode), with stage 1's bits. Default: False.
        encode_shortcut (bool): encode the 1x1 shortcut convs, with their
            stage's bits. Default: False.
        stem_bits (int | tuple[int, int], optional): the encoded stem's
            own bits, W=A or (w_bits, a_bits). Default: stage 1's.
        shortcut_bits (int | tuple[int, int], optional): the encoded
            shortcut convs' own bits, e.g. ``8`` in a W1A1 network (up to
            8 bits they run on the packed model's integer kernel at int8
            speed). Default: their stage's.
        mbb_cfg (dict, optional): other MBB layer options, e.g.
            ``dict(w_mode='paper')``; not the bits or ``a_mode``.
        **kwargs: the other arguments of mmdet's ``ResNet``
            (``frozen_stages``, ``norm_eval``, ``out_indices``, ...).

    Example:
        >>> import torch
        >>> from mmbinary.models.backbones import MBBResNet
        >>> self = MBBResNet(depth=18, w_bits=[4, 2, 2, 4], a_bits=2)
        >>> self.eval()
        >>> outs = self(torch.rand(1, 3, 32, 32))
        >>> [tuple(out.shape) for out in outs]
        [(1, 64, 8, 8), (1, 128, 4, 4), (1, 256, 2, 2), (1, 512, 1, 1)]
    """

    def __init__(self,
                 depth: int,
                 *,
                 w_bits: Bits = 2,
                 a_bits: Bits = 2,
                 encode_stem: bool = False,
                 encode_shortcut: bool = False,
                 stem_bits: PartBits = None,
                 shortcut_bits: PartBits = None,
                 mbb_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(depth, **kwargs)
        self._swap_convs(w_bits, a_bits, encode_stem, encode_shortcut,
                         mbb_cfg, stem_bits, shortcut_bits)
