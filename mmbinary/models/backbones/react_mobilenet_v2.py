# Copyright (c) mmbinary contributors. All rights reserved.
"""MobileNetV2 backbones with the ReActNet / Bi-Real structure for 1-bit
encodings (see :mod:`mmbinary.models.layers.react`)."""
from typing import Optional

from mmbinary.registry import MODELS

from ..layers.react import add_react_structure
from .mbb_mobilenet_v2 import MBBDilatedMobileNetV2, MBBMobileNetV2

#: What ``react_cfg`` may set, with the defaults.
REACT_DEFAULTS = dict(rsign=True, rprelu=True, shortcut='where_allowed')


def check_react_cfg(react_cfg: Optional[dict]) -> dict:
    """``react_cfg`` completed with the defaults; unknown keys refused."""
    react_cfg = dict(react_cfg or {})
    unknown = sorted(set(react_cfg) - set(REACT_DEFAULTS))
    if unknown:
        raise ValueError(f'react_cfg: unknown keys {unknown}; allowed: '
                         f'{sorted(REACT_DEFAULTS)}')
    return dict(REACT_DEFAULTS, **react_cfg)


@MODELS.register_module()
class ReActMBBMobileNetV2(MBBMobileNetV2):
    """:class:`MBBMobileNetV2` whose binary convs have a learned threshold
    (RSign), an RPReLU instead of the ReLU6 after them, and a real-valued
    shortcut where the widths allow it (every expand conv; projections
    whose input width is a multiple of the output's).

    Args:
        react_cfg (dict, optional): ``rsign``, ``rprelu``, ``shortcut``
            (see :func:`~mmbinary.models.layers.react.add_react_structure`);
            all on by default.
        **kwargs: as :class:`MBBMobileNetV2`.
    """

    def __init__(self, *, react_cfg: Optional[dict] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.react_cfg = check_react_cfg(react_cfg)
        add_react_structure(self, **self.react_cfg)
        self._freeze_stages()


@MODELS.register_module()
class ReActMBBDilatedMobileNetV2(MBBDilatedMobileNetV2):
    """:class:`MBBDilatedMobileNetV2` with the structure of
    :class:`ReActMBBMobileNetV2`.

    Args:
        react_cfg (dict, optional): as :class:`ReActMBBMobileNetV2`.
        **kwargs: as :class:`MBBDilatedMobileNetV2`.
    """

    def __init__(self, *, react_cfg: Optional[dict] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.react_cfg = check_react_cfg(react_cfg)
        add_react_structure(self, **self.react_cfg)
        self._freeze_stages()
