# Copyright (c) mmbinary contributors. All rights reserved.
"""Swap one float ``nn.Conv2d``/``nn.Linear`` for its MBB counterpart.

The backbones, necks and heads here call :func:`to_mbb` with the activation
mode that fits each layer's input, after building their float form, so
parameter names (and float checkpoints) stay as they were.
"""
from typing import Optional

from torch import nn

#: Options the model part sets itself, refused in ``mbb_cfg``.
RESERVED_OPTIONS = ('w_bits', 'a_bits', 'a_mode')


def check_mbb_cfg(mbb_cfg: Optional[dict]) -> dict:
    """Check the extra MBB layer options (``w_mode``, ...) and copy them.

    Args:
        mbb_cfg (dict, optional): keyword options of ``MBBConv2d`` and
            ``MBBLinear`` other than the bits and ``a_mode``.

    Returns:
        dict: a copy (empty for None).
    """
    if mbb_cfg is None:
        return {}
    if not isinstance(mbb_cfg, dict):
        raise TypeError(
            f'mbb_cfg must be a dict or None, got {type(mbb_cfg).__name__}')
    reserved = [key for key in RESERVED_OPTIONS if key in mbb_cfg]
    if reserved:
        raise ValueError(
            f'mbb_cfg must not set {reserved}: the bit widths have their '
            'own arguments and each activation mode follows the layer input')
    return dict(mbb_cfg)


def to_mbb(module: nn.Module, w_bits: int, a_bits: int, a_mode: str,
           mbb_cfg: Optional[dict] = None) -> nn.Module:
    """MBB copy of a plain ``nn.Conv2d``/``nn.Linear``; others unchanged.

    Subclasses (deformable convs, layers already made MBB through
    ``conv_cfg``) are returned as they are.

    Args:
        module (nn.Module): the float layer.
        w_bits (int): weight bits M.
        a_bits (int): activation bits K.
        a_mode (str): ``'signed'``, ``'unsigned'`` or ``'auto'``: what the
            layer's input is.
        mbb_cfg (dict, optional): other MBB layer options.

    Returns:
        nn.Module: an ``MBBConv2d``/``MBBLinear`` sharing nothing with
        ``module`` but its parameter values, or ``module`` itself.
    """
    from ..layers import MBBConv2d, MBBLinear
    options = dict(w_bits=w_bits, a_bits=a_bits, a_mode=a_mode,
                   **(mbb_cfg or {}))
    if type(module) is nn.Conv2d:
        return MBBConv2d.from_float(module, **options)
    if type(module) is nn.Linear:
        return MBBLinear.from_float(module, **options)
    return module
