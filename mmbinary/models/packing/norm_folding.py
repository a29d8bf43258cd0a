# Copyright (c) mmbinary contributors. All rights reserved.
"""Find the batch norms that directly follow an MBB layer, so that packing
can fold them into the layer's per-channel epilogue.

Folding is only done where the model's code is known to apply the norm to
the layer's output and to nothing else: mmcv's ``ConvModule`` (order conv,
norm, act), ``nn.Sequential`` (a norm right after the layer), and the
ResNet blocks and stems of mmdet and mmseg (``conv{i}`` then
``norm{i}``). Any other norm is left in place, which is still correct.
"""
from typing import List, Tuple

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


def _resnet_parts() -> tuple:
    """mmdet's and mmseg's ResNet blocks and backbones (those installed)."""
    parts = []
    try:
        from mmdet.models.backbones import resnet as mmdet_resnet
        parts += [mmdet_resnet.BasicBlock, mmdet_resnet.Bottleneck,
                  mmdet_resnet.ResNet]
    except ImportError:  # pragma: no cover - mmdet is a requirement
        pass
    try:
        from mmseg.models.backbones import resnet as mmseg_resnet
        parts += [mmseg_resnet.BasicBlock, mmseg_resnet.Bottleneck,
                  mmseg_resnet.ResNet]
    except ImportError:  # pragma: no cover - mmseg is a requirement
        pass
    return tuple(parts)


def is_foldable_norm(module: nn.Module) -> bool:
    """A batch norm that normalizes with fixed statistics at inference."""
    return (isinstance(module, _BatchNorm) and module.track_running_stats
            and module.running_mean is not None)


def _join(prefix: str, name: str) -> str:
    return f'{prefix}.{name}' if prefix else name


def find_layer_norm_pairs(model: nn.Module,
                          layer_types: tuple) -> List[Tuple[str, str]]:
    """Names of ``(layer, norm)`` pairs where ``norm`` directly follows
    ``layer`` (an instance of ``layer_types``) in the forward pass.

    Args:
        model (nn.Module): the model to search.
        layer_types (tuple): the layer classes whose norms may be folded.

    Returns:
        list[tuple[str, str]]: module names as in ``named_modules()``.
    """
    resnet_parts = _resnet_parts()
    pairs = []
    for prefix, parent in model.named_modules():
        candidates = []
        if _is_conv_module(parent):
            order = parent.order
            if parent.with_norm and order.index('norm') == order.index(
                    'conv') + 1:
                candidates.append(('conv', parent.norm_name))
        elif isinstance(parent, nn.Sequential):
            names = [name for name, _ in parent.named_children()]
            candidates += list(zip(names[:-1], names[1:]))
        elif isinstance(parent, resnet_parts):
            for index in (1, 2, 3):
                norm_name = getattr(parent, f'norm{index}_name', None)
                if norm_name and hasattr(parent, f'conv{index}'):
                    candidates.append((f'conv{index}', norm_name))
        for layer_name, norm_name in candidates:
            layer = getattr(parent, layer_name, None)
            norm = getattr(parent, norm_name, None)
            if isinstance(layer, layer_types) and norm is not None and \
                    is_foldable_norm(norm):
                pairs.append((_join(prefix, layer_name),
                              _join(prefix, norm_name)))
    return pairs


def _is_conv_module(module: nn.Module) -> bool:
    from mmcv.cnn import ConvModule
    return isinstance(module, ConvModule)


def fold_norm(scale: Tensor, bias: Tensor,
              norm: _BatchNorm) -> Tuple[Tensor, Tensor]:
    """Fold ``norm`` into ``y = acc * scale + bias``.

    Args:
        scale (Tensor): (O, ) per-channel output scale.
        bias (Tensor): (O, ) per-channel output bias.
        norm (_BatchNorm): a batch norm over the O channels, applied with its
            running statistics.

    Returns:
        tuple[Tensor, Tensor]: the folded (O, ) float64 scale and bias.
    """
    mean = norm.running_mean.double()
    inv_std = torch.rsqrt(norm.running_var.double() + norm.eps)
    gamma = norm.weight.detach().double() if norm.affine else torch.ones_like(
        mean)
    beta = norm.bias.detach().double() if norm.affine else torch.zeros_like(
        mean)
    factor = gamma * inv_std
    return scale.double() * factor, (bias.double() - mean) * factor + beta
