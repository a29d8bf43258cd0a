# Copyright (c) mmbinary contributors. All rights reserved.
"""Packed activations between encoded layers of a packed model.

Layer by layer, every packed MBB layer takes a float tensor, quantizes and
packs it, and writes a float tensor again. Inside a residual block whose
convs are all packed, the tensor between two of them has one consumer,
the next packed conv, so the producer's epilogue (scale, bias, the folded
batch norm, the ReLU) quantizes its output straight into the consumer's
activation words (``torch.ops.mmbinary.mbb_conv2d_words``): no float
tensor, no second pass over it. The block's last conv adds the shortcut
and applies the ReLU in its epilogue too, writing the float output the
next block's shortcut needs and, when the next block flows as well, that
block's first activation words in the same pass.

The words are exactly what the layer-by-layer path packs and the float
values are computed with the same operations in the same order, so the
outputs are identical; :func:`enable_packed_flow` only changes how the
modules run. Handled: mmdet's and mmseg's ResNet ``Bottleneck`` and
``BasicBlock`` (no plugins, DCN or checkpointing) whose convs are packed
with one group and whose norms are folded, and mmcv ``ConvModule`` s
(conv -> folded norm -> ReLU / ReLU6) around such a conv, which apply
their activation in the epilogue and hand words on inside a stage or a
dense head's tower (FPN convs, RetinaNet heads, MobileNetV2 blocks).
Anything else keeps its own forward.
"""
import math
import types
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from mmbinary.ops import ext_loaded

from .convert import FoldedNorm
from .packed_layers import PackedMBBConv2d

#: ModuleLists whose entries run one after the other on one tensor: the
#: stacked convs of mmdet's dense heads (RetinaHead, RPNHead, ...). Other
#: lists (FPN's lateral and output convs) run side by side.
SEQUENTIAL_LISTS = ('cls_convs', 'reg_convs')
#: Attribute of a block's float output holding the next block's words:
#: (consumer block, the output's version counter, words).
_WORDS = '_mmbinary_next_words'


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


def _conv_module_parts(
        module: nn.Module
) -> Optional[Tuple[PackedMBBConv2d, Tuple[float, float]]]:
    """The packed conv and activation clamp of an mmcv ``ConvModule``
    (conv -> folded norm -> ReLU / ReLU6 / none), or None if it can't run
    fused."""
    if type(module).__name__ != 'ConvModule' or not type(
            module).__module__.startswith('mmcv.'):
        return None
    conv = getattr(module, 'conv', None)
    if not _flow_layer(conv) or getattr(module, 'with_explicit_padding',
                                        False):
        return None
    if tuple(getattr(module, 'order', ())) != ('conv', 'norm', 'act'):
        return None
    if module.with_norm and not isinstance(module.norm, FoldedNorm):
        return None
    act = NO_ACTIVATION
    if module.with_activation:
        act = ACTIVATIONS.get(type(module.activate))
        if act is None:
            return None
    return conv, act


def _flow_unit(module: nn.Module) -> Optional[PackedMBBConv2d]:
    """The first packed conv of a block or ConvModule that flows."""
    convs = _block_convs(module)
    if convs is not None:
        return convs[0]
    parts = _conv_module_parts(module)
    return None if parts is None else parts[0]


def _runs_here(x: Tensor) -> bool:
    return (ext_loaded() and x.device.type == 'cpu'
            and x.dtype == torch.float32 and x.dim() == 4
            and not x.requires_grad)


#: Activation clamps (act_min, act_max) of the activations the epilogue
#: applies, by module type.
NO_ACTIVATION = (-math.inf, math.inf)
RELU = (0.0, math.inf)
ACTIVATIONS = {nn.ReLU: RELU, nn.ReLU6: (0.0, 6.0)}


def conv_words(conv: PackedMBBConv2d,
               act_words: Tensor,
               act: Tuple[float, float] = NO_ACTIVATION,
               next_conv: Optional[PackedMBBConv2d] = None,
               float_out: bool = False,
               residual: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """``conv`` on activation words, then (+ residual), (activation).

    Args:
        conv (PackedMBBConv2d): one group.
        act_words (Tensor): (N, H, W, 1, K, Wg) its activation words.
        act (tuple[float, float]): the activation after the epilogue (and
            the residual) as a clamp, e.g. :data:`RELU`.
        next_conv (PackedMBBConv2d, optional): also (or only) quantize the
            output into this layer's activation words.
        float_out (bool): return the float output.
        residual (Tensor, optional): (N, O, Ho, Wo) float32 added before
            the ReLU.

    Returns:
        tuple[Tensor, Tensor]: the float output (N, O, Ho, Wo) (empty if
        not asked for) and ``next_conv``'s words (empty without it).
    """
    return conv.run_words(act_words, act[0], act[1], float_out, next_conv,
                          residual)


def _input_words(block: nn.Module, first: PackedMBBConv2d,
                 x: Tensor) -> Tensor:
    """The first conv's words: left on ``x`` by the block before (if it
    was computed for this block and ``x`` has not changed since), else
    packed here."""
    handed = getattr(x, _WORDS, None)
    if handed is not None and handed[0] is block and handed[1] == x._version:
        return handed[2]
    return torch.ops.mmbinary.mbb_quantize_pack(x, first.a_bits,
                                                float(first.inv_step),
                                                first.signed, 1)


def _hand_on(module: nn.Module, out: Tensor, words: Tensor) -> None:
    """Leave the next unit's words on ``out`` (see :func:`_input_words`)."""
    following = module.__dict__.get('_mmbinary_next_block')
    if following is not None and words.numel():
        setattr(out, _WORDS, (following, out._version, words))


def _next_conv(module: nn.Module) -> Optional[PackedMBBConv2d]:
    following = module.__dict__.get('_mmbinary_next_block')
    return None if following is None else _flow_unit(following)


def _flow_conv_module_forward(self: nn.Module,
                              x: Tensor,
                              activate: bool = True,
                              norm: bool = True) -> Tensor:
    """An mmcv ConvModule's forward with the activation in the packed
    conv's epilogue (same result as the module's own forward)."""
    parts = _conv_module_parts(self)
    if parts is None or not norm or not _runs_here(x):
        return type(self).forward(self, x, activate=activate, norm=norm)
    conv, act = parts
    try:
        words = _input_words(self, conv, x)
    except RuntimeError:
        if bool(torch.isnan(x).any()):  # NaN: the layer-by-layer path
            return type(self).forward(self, x, activate=activate, norm=norm)
        raise
    next_conv = _next_conv(self) if activate else None
    out, next_words = conv_words(conv, words,
                                 act if activate else NO_ACTIVATION,
                                 next_conv=next_conv, float_out=True)
    if next_conv is not None:
        _hand_on(self, out, next_words)
    return out


def _flow_block(block: nn.Module, convs: Sequence[PackedMBBConv2d],
                x: Tensor) -> Tensor:
    words = _input_words(block, convs[0], x)
    for i, conv in enumerate(convs[:-1]):
        _, words = conv_words(conv, words, RELU, next_conv=convs[i + 1])
    identity = x if block.downsample is None else block.downsample(x)
    out, next_words = conv_words(
        convs[-1], words, RELU, next_conv=_next_conv(block), float_out=True,
        residual=identity)
    _hand_on(block, out, next_words)
    return out


def _flow_block_forward(self: nn.Module, x: Tensor) -> Tensor:
    """A ResNet block's forward with packed activations between its convs
    (same result as the block's own, layer-by-layer forward)."""
    convs = _block_convs(self)
    if convs is None or not _runs_here(x):
        return type(self).forward(self, x)
    try:
        return _flow_block(self, convs, x)
    except RuntimeError:
        # Packing refuses NaN (it has no level); the layer-by-layer path
        # propagates it to the outputs it reaches, as float convs do.
        if bool(torch.isnan(x).any()):
            return type(self).forward(self, x)
        raise


def enable_packed_flow(model: nn.Module) -> List[str]:
    """Let every eligible residual block of a packed model pass packed
    activations between its convs, and to the next block of its stage (in
    place; idempotent).

    Args:
        model (nn.Module): after :func:`convert_to_packed` or
            :func:`apply_packed_layout`.

    Returns:
        list[str]: names of the blocks that now flow.
    """
    names = []
    for name, module in model.named_modules():
        if _block_convs(module) is not None:
            forward = _flow_block_forward
        elif _conv_module_parts(module) is not None:
            forward = _flow_conv_module_forward
        else:
            continue
        # An instance attribute: the class's forward stays the fallback.
        module.forward = types.MethodType(forward, module)
        names.append(name)
    # A unit whose successor in a Sequential (a stage) or a head tower
    # flows too hands it its activation words.
    for container_name, module in model.named_modules():
        in_sequence = isinstance(module, nn.Sequential) or (
            isinstance(module, nn.ModuleList)
            and container_name.rpartition('.')[2] in SEQUENTIAL_LISTS)
        if not in_sequence:
            continue
        units = list(module.children())
        for unit, following in zip(units, units[1:]):
            if _flow_unit(unit) is not None and _flow_unit(
                    following) is not None:
                # Not a submodule: a plain reference, kept out of
                # state_dict and module traversal.
                unit.__dict__['_mmbinary_next_block'] = following
    return names


def packed_flow_enabled(model: nn.Module) -> bool:
    """Whether :func:`enable_packed_flow` is in effect on ``model``."""
    return any(
        getattr(module.__dict__.get('forward'), '__func__', None) in (
            _flow_block_forward, _flow_conv_module_forward)
        for module in model.modules())


def disable_packed_flow(model: nn.Module) -> None:
    """Give every block and ConvModule back its layer-by-layer forward."""
    for module in model.modules():
        forward = module.__dict__.get('forward')
        if getattr(forward, '__func__', None) in (_flow_block_forward,
                                                  _flow_conv_module_forward):
            del module.forward
        module.__dict__.pop('_mmbinary_next_block', None)
