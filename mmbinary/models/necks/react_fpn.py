# Copyright (c) mmbinary contributors. All rights reserved.
"""``ReActMBBFPN``: :class:`MBBFPN` with the ReActNet / Bi-Real structure
for 1-bit encodings (see :mod:`mmbinary.models.layers.react`)."""
from typing import List, Optional

from mmbinary.registry import MODELS

from ..backbones.react_mobilenet_v2 import check_react_cfg
from ..layers.react import add_react_structure
from .mbb_fpn import MBBFPN


@MODELS.register_module()
class ReActMBBFPN(MBBFPN):
    """:class:`MBBFPN` whose binary convs have a learned threshold (RSign)
    and a real-valued shortcut where the widths allow it (the 3x3 output
    convs, laterals whose widths divide each other). The FPN has no
    activation after its convs, so ``rprelu`` changes nothing here.

    Args:
        react_cfg (dict, optional): ``rsign``, ``rprelu``, ``shortcut``.
        **kwargs: as :class:`MBBFPN`.
    """

    def __init__(self, in_channels: List[int], out_channels: int,
                 num_outs: int, *, react_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(in_channels, out_channels, num_outs, **kwargs)
        self.react_cfg = check_react_cfg(react_cfg)
        add_react_structure(self, **self.react_cfg)
