# Copyright (c) mmbinary contributors. All rights reserved.
"""Swap one float ``nn.Conv2d``/``nn.Linear`` for its MBB counterpart.

The backbones, necks and heads here call :func:`to_mbb` with the activation
mode that fits each layer's input, after building their float form, so
parameter names (and float checkpoints) stay as they were.
"""
from typing import Optional, Sequence, Tuple, Union

from torch import nn

from mmbinary.quant import check_bits

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


def check_part_bits(bits: Union[None, int, Sequence[int]], name: str,
                    encoded: bool, flag: str,
                    default: Tuple[int, int]) -> Tuple[int, int]:
    """The (weight, activation) bits of one part with its own precision
    (e.g. the stem at 8 bits in a W2A2 backbone).

    Args:
        bits (int | (int, int), optional): W=A bits, or (w_bits, a_bits);
            None: ``default``.
        name (str): the argument, for the error message (``'stem_bits'``).
        encoded (bool): whether the part is encoded at all.
        flag (str): the argument that encodes it (``'encode_stem'``).
        default (tuple[int, int]): the model's (w_bits, a_bits).

    Raises:
        ValueError: ``bits`` set on a part that stays float, or not in 1..8.
    """
    if bits is None:
        return default
    if not encoded:
        raise ValueError(f'{name}={bits!r} needs {flag}=True: the part '
                         'stays float otherwise')
    if isinstance(bits, (tuple, list)):
        if len(bits) != 2:
            raise ValueError(f'{name} must be an int or (w_bits, a_bits), '
                             f'got {bits!r}')
        return (check_bits(bits[0], f'{name}[0]'),
                check_bits(bits[1], f'{name}[1]'))
    bits = check_bits(bits, name)
    return bits, bits


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
