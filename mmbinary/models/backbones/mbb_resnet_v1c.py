# Copyright (c) mmbinary contributors. All rights reserved.
"""``MBBResNetV1c``: mmseg's dilated ResNetV1c with binary-branch blocks."""
from typing import Optional

from mmseg.models.backbones import ResNetV1c

from mmbinary.registry import MODELS

from .resnet_swap import Bits, MBBResNetMixin, PartBits


@MODELS.register_module()
class MBBResNetV1c(MBBResNetMixin, ResNetV1c):
    """mmseg's ResNetV1c (deep stem, dilated stages) with MBB block convs.

    The segmentation counterpart of :class:`MBBResNet`, for DeepLabV3 and
    other mmseg decoders: ``dilations``, ``strides``, ``contract_dilation``
    and ``multi_grid`` work as in mmseg. The three stem convs (the first
    reads signed images, the others post-ReLU features) stay float unless
    ``encode_stem=True``. A float ResNetV1c checkpoint loads unchanged.

    From an mmseg config::

        custom_imports = dict(imports=['mmbinary'],
                              allow_failed_imports=False)
        model = dict(backbone=dict(type='mmbinary.MBBResNetV1c', depth=50,
                                   w_bits=2, a_bits=2))

    Args:
        depth (int): 18, 34, 50, 101 (or 152).
        w_bits (int | Sequence[int]): weight bits M, 1..8, for the whole
            backbone or one per stage. Default: 2.
        a_bits (int | Sequence[int]): activation bits K, likewise.
            Default: 2.
        encode_stem (bool): encode the stem convs, with stage 1's bits.
            Default: False.
        encode_shortcut (bool): encode the 1x1 shortcut convs. Default:
            False.
        stem_bits (int | tuple[int, int], optional): the encoded stem's
            own bits, W=A or (w_bits, a_bits). Default: stage 1's.
        shortcut_bits (int | tuple[int, int], optional): the encoded
            shortcut convs' own bits, e.g. ``8`` in a W1A1 network (up to
            8 bits they run on the packed model's integer kernel at int8
            speed). Default: their stage's.
        mbb_cfg (dict, optional): other MBB layer options (not the bits or
            ``a_mode``).
        **kwargs: the other arguments of mmseg's ``ResNetV1c``.
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
        super().__init__(depth=depth, **kwargs)
        self._swap_convs(w_bits, a_bits, encode_stem, encode_shortcut,
                         mbb_cfg, stem_bits, shortcut_bits)
