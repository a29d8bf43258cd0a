# Copyright (c) mmbinary contributors. All rights reserved.
"""Packed activations between encoded layers of a packed model.

Layer by layer, every packed MBB layer takes a float tensor, quantizes and
packs it, and writes a float tensor again. Inside a residual block whose
convs are all packed, the float tensor between two of them has one
consumer, the next packed conv, so the producer's epilogue (scale, bias,
the folded batch norm, the ReLU) quantizes its output straight into the
consumer's activation words (``torch.ops.mmbinary.mbb_conv2d_words``):
no float tensor, no second pass over it. Float is materialised where a
float consumer needs it: the block's output (residual add and ReLU).

The words are exactly what the layer-by-layer path packs, so the outputs
are identical; :func:`enable_packed_flow` only changes how the blocks run.
Handled: mmdet's and mmseg's ResNet ``Bottleneck`` and ``BasicBlock``
(no plugins, DCN or checkpointing) whose convs are packed with one group
and whose norms are folded. Anything else keeps its own forward.
"""
import types
from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn

from mmbinary.ops import ext_loaded

from .convert import FoldedNorm
from .packed_layers import PackedMBBConv2d

def _flow_layer(module: nn.Module) -> bool:
    """A packed conv the flow can chain (plain type, one group)."""
    return type(module) is PackedMBBConv2d and module.groups == 1


def _block_convs(block: nn.Module) -> Optional[List[PackedMBBConv2d]]:
    """The chained convs of a ResNet block, or None if it can't flow."""
    name = type(block).__name__
    if name not in ('Bottleneck', 'BasicBlock') or not type(
            block).__module__.startswith(('mmdet.', 'mmseg.')):
        return None
    if getattr(block, 'with_plugins', False) or getattr(
            block, 'with_cp', False) or getattr(block, 'with_dcn', False):
        return None
    count = 3 if name == 'Bottleneck' else 2
    convs = [getattr(block, f'conv{i}', None) for i in range(1, count + 1)]
    norms = [getattr(block, f'norm{i}', None) for i in range(1, count + 1)]
    if not all(_flow_layer(conv) for conv in convs):
        return None
    if not all(isinstance(norm, FoldedNorm) for norm in norms):
        return None
    if type(getattr(block, 'relu', None)) is not nn.ReLU:
        return None
    return convs


def _runs_here(x: Tensor) -> bool:
    return (ext_loaded() and x.device.type == 'cpu'
            and x.dtype == torch.float32 and x.dim() == 4
            and not x.requires_grad)


def _words(conv: PackedMBBConv2d, act_words: Tensor, relu: bool,
           next_conv: Optional[PackedMBBConv2d]) -> Tensor:
    """``conv`` on activation words: the next conv's words, or float."""
    out_bits, out_inv, out_signed = 0, 1.0, False
    if next_conv is not None:
        out_bits = next_conv.a_bits
        out_inv = float(next_conv.inv_step)
        out_signed = next_conv.signed
    return torch.ops.mmbinary.mbb_conv2d_words(
        act_words, conv.weight_words, conv.out_scale, conv.out_bias,
        conv.in_channels, conv.w_bits, conv.a_bits, conv.signed,
        conv.kernel_size, conv.stride, conv.padding, conv.dilation,
        conv.groups, relu, out_bits, out_inv, out_signed)


def chain_forward(convs: Sequence[PackedMBBConv2d], x: Tensor) -> Tensor:
    """Run ``convs`` as conv -> (folded norm) -> ReLU -> conv ..., the last
    without ReLU, with packed activations in between.

    Args:
        convs (Sequence[PackedMBBConv2d]): one group each.
        x (Tensor): (N, C, H, W) float32 input of the first.

    Returns:
        Tensor: (N, O, Ho, Wo) float32 output of the last (before any
        activation), channels-last in memory on AVX-512 CPUs.
    """
    first = convs[0]
    words = torch.ops.mmbinary.mbb_quantize_pack(x, first.a_bits,
                                                 float(first.inv_step),
                                                 first.signed, 1)
    for i, conv in enumerate(convs):
        last = i == len(convs) - 1
        words = _words(conv, words, not last, None if last else convs[i + 1])
    return words


def _flow_block_forward(self: nn.Module, x: Tensor) -> Tensor:
    """A ResNet block's forward with packed activations between its convs
    (same result as the block's own, layer-by-layer forward)."""
    convs = _block_convs(self)
    if convs is None or not _runs_here(x):
        return type(self).forward(self, x)
    try:
        out = chain_forward(convs, x)
    except RuntimeError:
        # Packing refuses NaN (it has no level); the layer-by-layer path
        # propagates it to the outputs it reaches, as float convs do.
        if bool(torch.isnan(x).any()):
            return type(self).forward(self, x)
        raise
    identity = x if self.downsample is None else self.downsample(x)
    return self.relu(out + identity)


def enable_packed_flow(model: nn.Module) -> List[str]:
    """Let every eligible residual block of a packed model pass packed
    activations between its convs (in place; idempotent).

    Args:
        model (nn.Module): after :func:`convert_to_packed` or
            :func:`apply_packed_layout`.

    Returns:
        list[str]: names of the blocks that now flow.
    """
    names = []
    for name, module in model.named_modules():
        if _block_convs(module) is None:
            continue
        # An instance attribute: the class's forward stays the fallback.
        module.forward = types.MethodType(_flow_block_forward, module)
        names.append(name)
    return names


def disable_packed_flow(model: nn.Module) -> None:
    """Give every block back its layer-by-layer forward."""
    for module in model.modules():
        forward = module.__dict__.get('forward')
        if getattr(forward, '__func__', None) is _flow_block_forward:
            del module.forward
