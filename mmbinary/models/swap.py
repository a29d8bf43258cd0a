# Copyright (c) mmbinary contributors. All rights reserved.
"""``swap_to_mbb``: swap the float convs and linears of a model for MBB
layers, in place (module swapping, no graph tracing).

"Encode" keeps its one meaning, splitting values into bit planes
(:func:`mmbinary.quant.encode`); ``encode_model``, the old name of
:func:`swap_to_mbb`, still works and warns once.
"""
import functools
import warnings
from fnmatch import fnmatch
from typing import Callable, Dict, Iterable, Optional

from torch import nn

from .layers import MBBConv2d, MBBLinear

#: Float layer type -> its MBB replacement. Exact types only: subclasses
#: such as weight-standardized or deformable convs are left alone.
SWAPPABLE = {nn.Conv2d: MBBConv2d, nn.Linear: MBBLinear}


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch(name, pattern) for pattern in patterns)


def swap_to_mbb(model: nn.Module,
                w_bits: int = 2,
                a_bits: int = 2,
                *,
                skip: Iterable[str] = (),
                overrides: Optional[Dict[str, dict]] = None,
                **options) -> nn.Module:
    """Replace every ``nn.Conv2d``/``nn.Linear`` of ``model`` by its MBB
    layer, sharing the trained weights.

    Args:
        model (nn.Module): modified in place and returned.
        w_bits (int): weight bits, 1..8.
        a_bits (int): activation bits, 1..8.
        skip (Iterable[str]): fnmatch patterns of module names (as in
            ``named_modules()``) to keep float, e.g. ``('conv1', '*.fc')``.
        overrides (dict[str, dict]): fnmatch pattern -> options for the
            modules it matches (first match wins), e.g.
            ``{'layer4.*': dict(w_bits=4, a_bits=4)}``.
        **options: other MBB layer options for all layers (``w_mode``,
            ``a_mode``, ``a_clip``).

    Returns:
        nn.Module: ``model``.
    """
    if isinstance(skip, str):
        raise TypeError('skip must be a list of patterns, not a string')
    skip = list(skip)
    overrides = dict(overrides or {})
    unused = set(overrides)
    targets = [(name, module) for name, module in model.named_modules()
               if type(module) in SWAPPABLE and not _matches(name, skip)]
    for name, module in targets:
        layer_options = dict(w_bits=w_bits, a_bits=a_bits, **options)
        for pattern, override in overrides.items():
            if fnmatch(name, pattern):
                layer_options.update(override)
                unused.discard(pattern)
                break
        mbb_layer = SWAPPABLE[type(module)].from_float(module,
                                                       **layer_options)
        mbb_layer.train(module.training)
        parent_name, _, child_name = name.rpartition('.')
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child_name, mbb_layer)
    if unused:
        raise ValueError(f'overrides patterns matched no swappable module: '
                         f'{sorted(unused)}')
    return model


def deprecated_alias(function: Callable, old_name: str) -> Callable:
    """``function`` under its old name: it works as before and warns once
    (``DeprecationWarning``), naming the new one."""
    warned = []

    @functools.wraps(function)
    def alias(*args, **kwargs):
        if not warned:
            warned.append(True)
            warnings.warn(
                f'{old_name} is deprecated; use {function.__module__}.'
                f'{function.__name__} (same arguments)',
                DeprecationWarning,
                stacklevel=2)
        return function(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = old_name
    alias.__doc__ = (f'Deprecated name of :func:`{function.__name__}` '
                     '(warns once).')
    return alias


#: The old name of :func:`swap_to_mbb`.
encode_model = deprecated_alias(swap_to_mbb, 'encode_model')
