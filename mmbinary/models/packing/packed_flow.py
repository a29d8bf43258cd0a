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
dense head's tower (FPN convs, RetinaNet heads).

MobileNetV2's ``InvertedResidual`` blocks (mmdet's and mmseg's; no SE, no
checkpointing) flow as a whole: the packed expand conv takes words and
writes its float output, the float depthwise ConvModule (conv -> batch
norm or folded -> ReLU / ReLU6) runs, its output goes to the packed linear
conv as words, and the linear conv adds the block's input in its epilogue
and hands the next block its words. The depthwise runs as one pass of
``torch.ops.mmbinary.depthwise_pack`` writing the words only where the op
gives torch's floats bit for bit (checked once per block,
:func:`depthwise_pack_exact`), else in torch: the layer-by-layer floats
exactly either way (``fuse_depthwise=True`` forces the op and its floats,
False torch). A large channels-last
block (batch 1) runs in bands of output rows, so that the expand and
depthwise convs' float outputs stay in the cache between the convs (same
values, see :func:`_flow_inverted_residual_in_bands`).
A ResNet's packed stem conv applies the ReLU after it in its epilogue and,
on the integer im2col kernel, the max pool after that too (its rows pooled
as they come, the stem's full output never written, and the pooled rows
quantized into the first block's activation words as well); the ReLU and
max-pool modules then pass the tensor on. In a detector whose mmdet ResNet
feeds an mmdet FPN, each stage's last conv also writes the words of the
lateral conv that reads the stage's output (a second words output of its
epilogue, ``side_words``), and the last stage's those of the extra conv on
it (RetinaNet's P6). Anything else keeps its own forward.
"""
import functools
import math
import os
import types
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmbinary.ops import ext_loaded

from .convert import FoldedNorm
from .norm_folding import is_foldable_norm
from .packed_layers import PackedMBBConv2d, side_words_buffer

#: ModuleLists whose entries run one after the other on one tensor: the
#: stacked convs of mmdet's dense heads (RetinaHead, RPNHead, ...). Other
#: lists (FPN's lateral and output convs) run side by side.
SEQUENTIAL_LISTS = ('cls_convs', 'reg_convs')
#: Attribute of a block's float output holding the next block's words:
#: (consumer block, the output's version counter, words).
_WORDS = '_mmbinary_next_words'
#: The same for a second consumer of a backbone stage's output (an FPN
#: lateral ConvModule), whose words the stage's last conv writes too.
_SIDE_WORDS = '_mmbinary_side_words'
#: Instance attribute of a stage's last block: that second consumer.
_SIDE_UNIT = '_mmbinary_side_unit'


#: A flowing ConvModule's packed conv and activation clamp.
PackedParts = Tuple[PackedMBBConv2d, Tuple[float, float]]
#: A depthwise ConvModule's float parts: the conv, its batch norm (None
#: when absent or already folded into the conv) and the activation clamp.
DepthwiseParts = Tuple[nn.Conv2d, Optional[_BatchNorm], Tuple[float, float]]


class BlockParts(NamedTuple):
    """What an inverted-residual block's flow runs."""
    expand: Optional[PackedParts]  # None without expand conv
    depthwise_module: nn.Module  # the ConvModule (torch's depthwise)
    depthwise: DepthwiseParts  # its parts (the fused op)
    linear: PackedParts
    shortcut: bool  # adds the block's input


def _flow_layer(module: nn.Module) -> bool:
    """A packed conv the flow can chain (plain type, one group)."""
    return type(module) is PackedMBBConv2d and module.groups == 1


def _from_mm(module: nn.Module, name: str, packages: Tuple[str, ...]) -> bool:
    """``module`` is the class ``name`` of one of ``packages``."""
    return type(module).__name__ == name and type(
        module).__module__.startswith(packages)


def _activation(module: nn.Module) -> Optional[Tuple[float, float]]:
    """A ConvModule's activation as a clamp (:data:`NO_ACTIVATION` without
    one), or None where the epilogue cannot apply it."""
    if not module.with_activation:
        return NO_ACTIVATION
    return ACTIVATIONS.get(type(module.activate))


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


def _conv_module_parts(module: nn.Module) -> Optional[PackedParts]:
    """The packed conv and activation clamp of an mmcv ``ConvModule``
    (conv -> folded norm -> ReLU / ReLU6 / none), or None if it can't run
    fused."""
    if not _from_mm(module, 'ConvModule', ('mmcv.', )):
        return None
    conv = getattr(module, 'conv', None)
    if not _flow_layer(conv) or getattr(module, 'with_explicit_padding',
                                        False):
        return None
    if tuple(getattr(module, 'order', ())) != ('conv', 'norm', 'act'):
        return None
    if module.with_norm and not isinstance(module.norm, FoldedNorm):
        return None
    act = _activation(module)
    return None if act is None else (conv, act)


def _depthwise_parts(module: nn.Module) -> Optional[DepthwiseParts]:
    """The parts of an mmcv ``ConvModule`` running a float depthwise conv
    (zero padding) -> batch norm in eval (or folded) -> ReLU / ReLU6 /
    none, or None if :func:`depthwise_pack` can't run it."""
    if not _from_mm(module, 'ConvModule', ('mmcv.', )):
        return None
    conv = getattr(module, 'conv', None)
    if type(conv) is not nn.Conv2d or conv.padding_mode != 'zeros' or \
            isinstance(conv.padding, str):
        return None
    if not (conv.groups == conv.in_channels == conv.out_channels) or \
            conv.weight.dtype != torch.float32:
        return None
    if getattr(module, 'with_explicit_padding', False) or tuple(
            getattr(module, 'order', ())) != ('conv', 'norm', 'act'):
        return None
    if getattr(module, 'efficient_conv_bn_eval_forward', None) is not None:
        return None
    norm = module.norm if module.with_norm else None
    if isinstance(norm, nn.Identity):  # FoldedNorm, or folded into conv
        norm = None
    if norm is not None and not (type(norm) is nn.BatchNorm2d
                                 and is_foldable_norm(norm)
                                 and not norm.training):
        return None
    act = _activation(module)
    return None if act is None else (conv, norm, act)


def _block_conv_modules(
        block: nn.Module
) -> Optional[Tuple[Optional[nn.Module], nn.Module, nn.Module, bool]]:
    """mmdet's or mmseg's ``InvertedResidual`` as ([expand], depthwise,
    linear ConvModule, adds its input), or None for another module or a
    block with SE, checkpointing or a training drop path."""
    if _from_mm(block, 'InvertedResidual', ('mmdet.', )):
        if block.with_se or block.with_cp:
            return None
        if not isinstance(block.drop_path, nn.Identity) and \
                block.drop_path.training:
            return None
        expand = block.expand_conv if block.with_expand_conv else None
        return (expand, block.depthwise_conv, block.linear_conv,
                bool(block.with_res_shortcut))
    if _from_mm(block, 'InvertedResidual', ('mmseg.', )):
        if block.with_cp or len(block.conv) not in (2, 3):
            return None
        expand = block.conv[0] if len(block.conv) == 3 else None
        return (expand, block.conv[-2], block.conv[-1],
                bool(block.use_res_connect))
    return None


def _inverted_residual_parts(block: nn.Module) -> Optional[BlockParts]:
    """The parts of an inverted-residual block that flows: expand (if any)
    and linear ConvModules around a packed conv, a float depthwise one
    :func:`depthwise_pack` runs; None if it can't flow."""
    modules = _block_conv_modules(block)
    if modules is None:
        return None
    expand_module, depthwise_module, linear_module, shortcut = modules
    expand = None
    if expand_module is not None:
        expand = _conv_module_parts(expand_module)
        if expand is None:
            return None
    depthwise = _depthwise_parts(depthwise_module)
    linear = _conv_module_parts(linear_module)
    if depthwise is None or linear is None:
        return None
    if shortcut and linear[1] != NO_ACTIVATION:
        return None  # the shortcut is added after the linear activation
    return BlockParts(expand, depthwise_module, depthwise, linear, shortcut)


def _flow_unit(module: nn.Module) -> Optional[PackedMBBConv2d]:
    """The first packed conv of a block or ConvModule that flows (it takes
    the unit's input as words)."""
    convs = _block_convs(module)
    if convs is not None:
        return convs[0]
    parts = _conv_module_parts(module)
    if parts is not None:
        return parts[0]
    block = _inverted_residual_parts(module)
    if block is not None and block.expand is not None:
        # Without an expand conv the float depthwise reads the input.
        return block.expand[0]
    return None


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
               residual: Optional[Tensor] = None,
               side_conv: Optional[PackedMBBConv2d] = None,
               side_words: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
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
        side_conv, side_words: a second consumer's words of the output,
            filled in place (:meth:`PackedMBBConv2d.run_words`).

    Returns:
        tuple[Tensor, Tensor]: the float output (N, O, Ho, Wo) (empty if
        not asked for) and ``next_conv``'s words (empty without it).
    """
    return conv.run_words(act_words, act[0], act[1], float_out, next_conv,
                          residual, side_conv=side_conv,
                          side_words=side_words)


def conv_input(block: nn.Module,
               first: PackedMBBConv2d,
               x: Tensor,
               act: Tuple[float, float] = NO_ACTIVATION,
               next_conv: Optional[PackedMBBConv2d] = None,
               float_out: bool = False,
               residual: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """``first``, the first conv of ``block``, on the block's input ``x``
    (as :func:`conv_words`): on the words the block before left on ``x``
    (if they were computed for this block and ``x`` has not changed
    since), else on ``x`` itself (``PackedMBBConv2d.run_float``: packed
    here, or quantized straight into the integer kernel's levels)."""
    words = _handed_words(block, x)
    if words is not None:
        return conv_words(first, words, act, next_conv, float_out, residual)
    return first.run_float(x, act[0], act[1], float_out, next_conv, residual)


def _handed_words(block: nn.Module, x: Tensor) -> Optional[Tensor]:
    """The words the block before left on ``x`` for ``block``, or None
    (none left, left for another block, or ``x`` changed since)."""
    for name in (_WORDS, _SIDE_WORDS):
        handed = getattr(x, name, None)
        if handed is not None and handed[0] is block and \
                handed[1] == x._version:
            return handed[2]
    return None


def _hand_on(module: nn.Module, out: Tensor, words: Tensor) -> None:
    """Leave the next unit's words on ``out`` (see :func:`conv_input`)."""
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
    next_conv = _next_conv(self) if activate else None
    try:
        out, next_words = conv_input(self, conv, x,
                                     act if activate else NO_ACTIVATION,
                                     next_conv=next_conv, float_out=True)
    except RuntimeError:
        if bool(torch.isnan(x).any()):  # NaN: the layer-by-layer path
            return type(self).forward(self, x, activate=activate, norm=norm)
        raise
    if next_conv is not None:
        _hand_on(self, out, next_words)
    return out


def _flow_block(block: nn.Module, convs: Sequence[PackedMBBConv2d],
                x: Tensor) -> Tensor:
    _, words = conv_input(block, convs[0], x, RELU, next_conv=convs[1])
    for i, conv in enumerate(convs[1:-1], start=1):
        _, words = conv_words(conv, words, RELU, next_conv=convs[i + 1])
    identity = x if block.downsample is None else block.downsample(x)
    side = block.__dict__.get(_SIDE_UNIT)
    side_conv = None if side is None else _flow_unit(side)
    side_words = None if side_conv is None else side_words_buffer(
        identity.shape, side_conv)
    out, next_words = conv_words(
        convs[-1], words, RELU, next_conv=_next_conv(block), float_out=True,
        residual=identity, side_conv=side_conv, side_words=side_words)
    _hand_on(block, out, next_words)
    if side_conv is not None:
        setattr(out, _SIDE_WORDS, (side, out._version, side_words))
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


def depthwise_epilogue(conv: nn.Conv2d,
                       norm: Optional[_BatchNorm]) -> Tuple[Tensor, Tensor]:
    """Per-channel float32 ``(scale, bias)`` with ``norm(conv(x)) =
    acc * scale + bias`` (in exact arithmetic), ``acc`` the bias-free conv
    sum, read from the modules now (a changed model stays correct).

    Args:
        conv (nn.Conv2d): the depthwise conv (C channels).
        norm (_BatchNorm, optional): its batch norm in eval mode.

    Returns:
        tuple[Tensor, Tensor]: (C,) float32 each.
    """
    channels = conv.out_channels
    weight = conv.weight
    bias = (conv.bias.detach() if conv.bias is not None else
            weight.new_zeros(channels))
    if norm is None:
        return weight.new_ones(channels), bias
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.affine:
        scale = scale * norm.weight.detach()
    shift = (bias - norm.running_mean) * scale
    if norm.affine:
        shift = shift + norm.bias.detach()
    return scale, shift


def depthwise_pack(parts: DepthwiseParts,
                   x: Tensor,
                   next_conv: Optional[PackedMBBConv2d] = None,
                   float_out: bool = False) -> Tuple[Tensor, Tensor]:
    """A depthwise ConvModule (conv -> norm -> activation) in one pass of
    ``torch.ops.mmbinary.depthwise_pack``.

    Its floats are the op's (products and sums in float32 without fused
    multiply-adds, then ``acc * scale + bias``); torch's conv and batch
    norm fuse multiply-adds, so they can differ in the last bit.

    Args:
        parts (DepthwiseParts): from :func:`_depthwise_parts`.
        x (Tensor): (N, C, H, W) float32.
        next_conv (PackedMBBConv2d, optional): quantize the output into
            this layer's activation words.
        float_out (bool): return the float output.

    Returns:
        tuple[Tensor, Tensor]: the float output (N, C, Ho, Wo),
        channels-last (empty if not asked for), and ``next_conv``'s words
        (N, Ho, Wo, 1, K, Wg) (empty without it).
    """
    conv, norm, act = parts
    scale, bias = depthwise_epilogue(conv, norm)
    out_bits, out_inv, out_signed = 0, 1.0, False
    if next_conv is not None:
        out_bits = next_conv.a_bits
        out_inv = float(next_conv.inv_step)
        out_signed = next_conv.signed
    return torch.ops.mmbinary.depthwise_pack(
        x, conv.weight.detach(), scale, bias, list(conv.stride),
        list(conv.padding), list(conv.dilation), act[0], act[1], float_out,
        out_bits, out_inv, out_signed)


def expand_depthwise_pack(expand: PackedParts, act_words: Tensor,
                          depthwise: DepthwiseParts,
                          next_conv: PackedMBBConv2d) -> Optional[Tensor]:
    """An inverted-residual block's expand conv on its activation words and
    the depthwise ConvModule after it in one pass of
    ``torch.ops.mmbinary.mbb_conv2d_int8_depthwise``: each thread computes
    the expand conv's rows into a small ring just before the depthwise conv
    reads them, so its float output is never written whole. The same words
    as :meth:`PackedMBBConv2d.run_words` then :func:`depthwise_pack`.

    Args:
        expand (PackedParts): the expand conv and its activation clamp.
        act_words (Tensor): (N, H, W, 1, K, Wg) its activation words.
        depthwise (DepthwiseParts): from :func:`_depthwise_parts`.
        next_conv (PackedMBBConv2d): the conv whose words it writes.

    Returns:
        Tensor | None: ``next_conv``'s words (N, Ho, Wo, 1, K', Wg'), or
        None where the op does not run these layers (a kernel other than
        the integer one, a conv other than 1x1 / stride 1 / no padding,
        8-bit weights).
    """
    conv, (act_min, act_max) = expand
    op = getattr(torch.ops.mmbinary, 'mbb_conv2d_int8_depthwise', None)
    if op is None or conv.kernel not in ('int8', 'int8-im2col') or \
            conv.groups != 1 or conv.w_bits > 7 or \
            conv.kernel_size != (1, 1) or conv.stride != (1, 1) or \
            tuple(conv.padding) != (0, 0) or conv.dilation != (1, 1):
        return None
    dw_conv, dw_norm, dw_act = depthwise
    dw_scale, dw_bias = depthwise_epilogue(dw_conv, dw_norm)
    weight_int8, weight_sums = conv.int8_weight()
    _, words = op(act_words, conv.weight_words, weight_int8, weight_sums,
                  conv.out_scale, conv.out_bias, conv.in_channels,
                  conv.w_bits, conv.a_bits, conv.signed, act_min, act_max,
                  dw_conv.weight.detach(), dw_scale, dw_bias,
                  list(dw_conv.stride), list(dw_conv.padding),
                  list(dw_conv.dilation), dw_act[0], dw_act[1], False,
                  next_conv.a_bits, float(next_conv.inv_step),
                  next_conv.signed)
    return words


def packing_clamps(act: Tuple[float, float], conv: PackedMBBConv2d) -> bool:
    """Whether packing into ``conv``'s words gives every value the level
    it would have after the activation clamp ``act`` (so the clamp can be
    skipped): unsigned words take level 0 for every value <= 0 and the top
    level for every value whose ``value * inv_step`` (float32) reaches it,
    so a ReLU, or a ReLU6 when ``6 * inv_step`` reaches the top level,
    changes no level."""
    low, high = act
    if conv.signed or low != 0.0:
        return False
    if high == math.inf:
        return True
    top = float((1 << conv.a_bits) - 1)
    scaled = torch.tensor(high, dtype=torch.float32) * conv.inv_step.cpu()
    return bool(scaled >= top)


def _flow_inverted_residual(block: nn.Module, parts: BlockParts,
                            x: Tensor) -> Tensor:
    """expand (words in, float out) -> depthwise -> linear conv (words in,
    + x in its epilogue) -> float out, the next block's words handed on:
    the expand and depthwise convs in one pass where
    :func:`expand_depthwise_pack` runs them, else in bands of rows where
    their outputs are large (:func:`_row_bands`)."""
    fuse = _fuses_depthwise(block, parts, x)
    linear, linear_act = parts.linear
    linear_args = dict(next_conv=_next_conv(block), float_out=True,
                       residual=x if parts.shortcut else None)
    in_words = _handed_words(block, x)
    if fuse and parts.expand is not None and in_words is not None:
        words = expand_depthwise_pack(parts.expand, in_words,
                                      parts.depthwise, linear)
        if words is not None:
            out, next_words = conv_words(linear, words, linear_act,
                                         **linear_args)
            _hand_on(block, out, next_words)
            return out
    bands = _row_bands(parts, x, fuse)
    if bands > 1:
        return _flow_inverted_residual_in_bands(block, parts, x, bands, fuse)
    hidden = x
    if parts.expand is not None:
        conv, act = parts.expand
        hidden, _ = conv_input(block, conv, x, act, float_out=True)
    if fuse:
        _, words = depthwise_pack(parts.depthwise, hidden, next_conv=linear)
        out, next_words = conv_words(linear, words, linear_act,
                                     **linear_args)
    else:  # torch's depthwise, then the linear conv on its float output
        activate = not packing_clamps(parts.depthwise[2], linear)
        out, next_words = linear.run_float(
            parts.depthwise_module(hidden, activate=activate),
            *linear_act, **linear_args)
    _hand_on(block, out, next_words)
    return out


def _row_bands(parts: BlockParts, x: Tensor, fuse: bool = False) -> int:
    """How many bands of output rows the block runs in (1: at once): the
    float outputs of its expand and depthwise convs (the expand conv's
    alone where ``fuse``: the fused depthwise writes words) divided into
    parts of :data:`BAND_BYTES` per torch thread if they have at least
    :data:`MIN_BANDED_BYTES` (batch 1, channels-last)."""
    if x.shape[0] != 1 or \
            not x.is_contiguous(memory_format=torch.channels_last):
        return 1
    hidden = parts.depthwise_module.conv.in_channels
    stride = parts.depthwise_module.conv.stride
    pixels = x[0, 0].numel()
    expand_bytes = 4 * hidden * pixels if parts.expand is not None else 0
    depthwise_bytes = 0 if fuse else \
        4 * hidden * (pixels // (stride[0] * stride[1]))
    hidden_bytes = expand_bytes + depthwise_bytes
    if hidden_bytes < MIN_BANDED_BYTES:
        return 1
    band_bytes = BAND_BYTES * torch.get_num_threads()
    return min(math.ceil(hidden_bytes / band_bytes), x.shape[2])


def _flow_inverted_residual_in_bands(block: nn.Module, parts: BlockParts,
                                     x: Tensor, bands: int,
                                     fuse: bool) -> Tensor:
    """:func:`_flow_inverted_residual` in ``bands`` bands of output rows:
    each band's expand output is read by the depthwise conv while it is
    still in the cache, instead of the whole hidden tensor going to memory
    and back. Every output row is computed by the same operations on the
    same values as at once (the depthwise conv reads its halo rows from
    the expand conv's output of the band; rows it computes against the
    band's zero padding are dropped), so the result is the same."""
    linear, linear_act = parts.linear
    depthwise = parts.depthwise_module.conv
    activate = not packing_clamps(parts.depthwise[2], linear)
    (kernel, _), (stride, _) = depthwise.kernel_size, depthwise.stride
    (pad, _), (dilation, _) = depthwise.padding, depthwise.dilation
    height = x.shape[2]
    out_height = (height + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
    rows = math.ceil(out_height / bands)
    # outputs computed before a band's first one, so that the first kept
    # output reads real rows only
    back = math.ceil(pad / stride)
    in_words = _handed_words(block, x)
    next_conv = _next_conv(block)
    outs, words = [], []
    for first in range(0, out_height, rows):
        end = min(out_height, first + rows)
        start = max(first - back, 0)  # first output computed
        top = start * stride  # its first input row (band padding above)
        bottom = min(height, (end - 1) * stride - pad +
                     dilation * (kernel - 1) + 1)
        hidden = x[:, :, top:bottom]
        if parts.expand is not None:
            expand, expand_act = parts.expand
            if in_words is not None:
                hidden, _ = conv_words(expand, in_words[:, top:bottom],
                                       expand_act, float_out=True)
            else:
                hidden, _ = expand.run_float(hidden, *expand_act,
                                             float_out=True)
        linear_args = dict(
            float_out=True, next_conv=next_conv,
            residual=x[:, :, first:end] if parts.shortcut else None)
        if fuse:
            _, hidden_words = depthwise_pack(
                parts.depthwise, hidden, next_conv=linear)
            out, next_words = conv_words(
                linear, hidden_words[:, first - start:end - start],
                linear_act, **linear_args)
        else:
            hidden = parts.depthwise_module(hidden, activate=activate)
            out, next_words = linear.run_float(
                hidden[:, :, first - start:end - start], *linear_act,
                **linear_args)
        outs.append(out)
        words.append(next_words)
    out = torch.cat(outs, 2)
    _hand_on(block, out,
             torch.cat(words, 1) if next_conv is not None else words[0])
    return out


def _flow_inverted_residual_forward(self: nn.Module, x: Tensor) -> Tensor:
    """An inverted-residual block's forward with packed activations into
    its packed convs and the shortcut in the linear conv's epilogue (see
    :func:`enable_packed_flow` for what it equals)."""
    parts = _inverted_residual_parts(self)
    if parts is None or not _runs_here(x):
        return type(self).forward(self, x)
    try:
        return _flow_inverted_residual(self, parts, x)
    except RuntimeError:
        if bool(torch.isnan(x).any()):  # NaN: the layer-by-layer path
            return type(self).forward(self, x)
        raise


#: Inverted-residual blocks whose expand and depthwise convs write at
#: least this many bytes of float output run in bands of output rows of
#: about ``BAND_BYTES`` of it per thread
#: (:func:`_flow_inverted_residual_in_bands`): in the cache, not in memory,
#: between the expand, depthwise and linear convs. Measured on MobileNetV2
#: at 800x1333, 1 thread: the 102 MB of layer2.0's expand output take 31-34
#: ms at once and 21-24 ms in bands; blocks of 13 MB gain nothing and lose
#: the bands' per-call costs. With 2 threads, 32 MB bands beat 16 MB ones.
BAND_BYTES = 16 << 20
MIN_BANDED_BYTES = 32 << 20


def _resnet_stem(module: nn.Module) -> Optional[Tuple[nn.Module, ...]]:
    """The packed stem conv, its ReLU and the max pool after them of an
    mmdet / mmseg ResNet whose forward is the stock one (conv1 -> folded
    norm1 -> relu -> maxpool), or None."""
    if 'res_layers' not in _stock_forward_stages(module) or getattr(
            module, 'deep_stem', True):
        return None
    conv, relu = getattr(module, 'conv1', None), getattr(module, 'relu', None)
    pool = getattr(module, 'maxpool', None)
    if not _flow_layer(conv) or type(relu) is not nn.ReLU:
        return None
    if not isinstance(getattr(module, 'norm1', None), FoldedNorm):
        return None
    if not isinstance(pool, nn.MaxPool2d):
        return None
    return conv, relu, pool


def _flow_stem_conv_forward(self: PackedMBBConv2d, x: Tensor) -> Tensor:
    """A ResNet stem conv's forward with the ReLU after it in its epilogue
    and, where its kernel can (:meth:`PackedMBBConv2d.run_float_max_pool`),
    the max pool after that too: the output is ``relu(conv(x))`` or
    ``maxpool(relu(conv(x)))``, marked so that the ReLU and the max pool
    pass it on (:func:`_flow_passed_forward`). A pooled output also
    carries the first block's activation words where that block flows."""
    if not _runs_here(x):
        return type(self).forward(self, x)
    (lo, hi), pool = self.__dict__[_FUSED_AFTER]
    next_conv = _next_conv(self)
    try:
        pooled_out = self.run_float_max_pool(x, lo, hi, pool, next_conv)
        pooled = pooled_out is not None
        if pooled:
            out, words = pooled_out
        else:  # the max pool runs after it: no words for the block
            out, _ = self.run_float(x, lo, hi, True, None, None)
            next_conv = None
    except RuntimeError:
        if bool(torch.isnan(x).any()):  # NaN: the layer-by-layer path
            return type(self).forward(self, x)
        raise
    setattr(out, _DONE, (out._version, pooled))
    if next_conv is not None:
        _hand_on(self, out, words)
    return out


def fused_after(module: nn.Module,
                output: Tensor) -> List[Callable[[Tensor], Tensor]]:
    """What ``module`` (a conv) ran after itself in its epilogue to give
    ``output`` while the flow is on, in order (an activation clamp, a max
    pool), as functions of its own output; empty for other modules."""
    fused = module.__dict__.get(_FUSED_AFTER)
    done = getattr(output, _DONE, None)
    if fused is None or done is None:
        return []
    (lo, hi), pool = fused
    steps = [lambda t: t.clamp(lo, hi)]
    if done[1]:
        steps.append(lambda t: type(pool).forward(pool, t))
    return steps


def passes_on(module: nn.Module) -> bool:
    """Whether ``module`` passes on, unchanged, what the conv before it
    did for it while the flow is on (a ResNet stem's ReLU and max pool)."""
    forward = module.__dict__.get('forward')
    return getattr(forward, '__func__', None) is _flow_passed_forward


def _flow_passed_forward(self: nn.Module, x: Tensor) -> Tensor:
    """A module whose work on ``x`` the conv before it did in its epilogue
    (``x`` unchanged since; :func:`_flow_stem_conv_forward`) passes ``x``
    on; anything else goes through it."""
    done = getattr(x, _DONE, None)
    if done is not None and done[0] == x._version and (
            done[1] or not isinstance(self, nn.MaxPool2d)):
        return x
    return type(self).forward(self, x)


#: The flow forwards, as installed on instances.
FLOW_FORWARDS = (_flow_block_forward, _flow_conv_module_forward,
                 _flow_inverted_residual_forward, _flow_stem_conv_forward,
                 _flow_passed_forward)
#: Instance attribute of a conv that runs what follows it in its epilogue
#: (a ResNet stem's): (the activation's clamp, the max pool after it).
_FUSED_AFTER = '_mmbinary_fused_after'
#: Attribute of a tensor that such a conv wrote: (its version then,
#: whether it is max-pooled too).
_DONE = '_mmbinary_done'
#: Instance attribute of an inverted-residual block: run its depthwise
#: ConvModule with the fused op (True), with torch (False), or with the op
#: where it gives torch's floats ('auto'). Kept by
#: :func:`disable_packed_flow`, so enabling again keeps the choice.
_FUSE_DEPTHWISE = '_mmbinary_fuse_depthwise'
#: Instance attribute of an inverted-residual block: whether
#: :func:`depthwise_pack_exact` found the op exact for it (cached).
_DEPTHWISE_EXACT = '_mmbinary_depthwise_exact'
#: How a block's depthwise ConvModule runs unless :func:`enable_packed_flow`
#: is told otherwise: 'auto', as :func:`depthwise_pack` where it gives the
#: ConvModule's floats bit for bit (:func:`depthwise_pack_exact`; torch's
#: channels-last depthwise conv on x86 CPUs sums the taps in the op's order
#: with fused multiply-adds, and a folded norm leaves scale 1 and the bias),
#: else as torch; and only where the op has vector code for this CPU
#: (``torch.ops.mmbinary.depthwise_pack_variant()`` AVX-512 or AVX2: its
#: portable C++ is ~50x slower than torch's conv). So the flow stays equal
#: to the layer-by-layer path either way.
FUSE_DEPTHWISE = 'auto'
#: The values ``fuse_depthwise`` takes.
FUSE_CHOICES = (True, False, 'auto')


def depthwise_pack_exact(parts: BlockParts) -> bool:
    """Whether :func:`depthwise_pack` gives the block's depthwise
    ConvModule's output bit for bit, on a random channels-last probe
    (1, C, 13, 37): rows and columns at both borders and interior strips,
    values beyond the activation's clamp.

    Torch runs a channels-last depthwise conv on x86 CPUs with oneDNN,
    whose order of operations (``acc = 0``, one fused multiply-add per
    valid tap in (ky, kx) order, then ``+ bias``) is the op's when the norm
    is folded (scale 1). A norm that is not folded, a dilation (oneDNN's
    dilated kernel sums in another order) or another build of torch gives
    other floats: then False.
    """
    conv = parts.depthwise_module.conv
    gen = torch.Generator().manual_seed(0)
    probe = 4 * torch.randn(1, conv.in_channels, 13, 37, generator=gen)
    probe = probe.contiguous(memory_format=torch.channels_last)
    try:
        with torch.no_grad():
            reference = parts.depthwise_module(probe)
            out, _ = depthwise_pack(parts.depthwise, probe, float_out=True)
    except RuntimeError:
        return False
    return reference.shape == out.shape and torch.equal(reference, out)


@functools.lru_cache(maxsize=None)
def _depthwise_variant(cpu_kernel: Optional[str]) -> str:
    """``depthwise_pack_variant()`` under this ``MMBINARY_CPU_KERNEL``
    (the op reads it), asked once per value instead of once per block and
    forward."""
    return torch.ops.mmbinary.depthwise_pack_variant()


def _fuses_depthwise(block: nn.Module, parts: BlockParts, x: Tensor) -> bool:
    """Whether this forward runs the block's depthwise ConvModule as
    :func:`depthwise_pack` (see :data:`FUSE_DEPTHWISE`). In 'auto', only
    where the op has vector code for this CPU and torch's depthwise conv
    would read a channels-last input (the expand conv's output is
    channels-last; a block without one reads ``x``), the layout the probe
    checked."""
    setting = block.__dict__.get(_FUSE_DEPTHWISE, FUSE_DEPTHWISE)
    if setting != 'auto':
        return bool(setting)
    if _depthwise_variant(os.environ.get('MMBINARY_CPU_KERNEL')) == \
            'portable':
        return False
    if parts.expand is None and \
            not x.is_contiguous(memory_format=torch.channels_last):
        return False
    exact = block.__dict__.get(_DEPTHWISE_EXACT)
    if exact is None:
        exact = depthwise_pack_exact(parts)
        block.__dict__[_DEPTHWISE_EXACT] = exact
    return exact


def _flow_forward(module: nn.Module):
    """The flow forward ``module`` takes, or None if it can't flow."""
    if _block_convs(module) is not None:
        return _flow_block_forward
    if _conv_module_parts(module) is not None:
        return _flow_conv_module_forward
    if _inverted_residual_parts(module) is not None:
        return _flow_inverted_residual_forward
    return None


def enable_packed_flow(model: nn.Module,
                       fuse_depthwise: Optional[bool] = None) -> List[str]:
    """Let every eligible residual block of a packed model pass packed
    activations between its convs, to the next block of its stage and
    from a backbone stage to the next (in place; idempotent).

    ResNet blocks and ConvModules give exactly their layer-by-layer
    outputs. An inverted-residual block (MobileNetV2) does too with
    ``fuse_depthwise=False`` and with 'auto' (the default: its float
    depthwise ConvModule runs as :func:`depthwise_pack` where that gives
    torch's floats bit for bit, :func:`depthwise_pack_exact`); with
    ``fuse_depthwise=True`` it always does, and the op's floats can differ
    from torch's in the last bit (an unfolded batch norm, a dilation), and
    the linear conv's activation level where that float sits on a level
    boundary. The block then equals the layer-by-layer path with the op's
    depthwise floats, bit for bit.

    Args:
        model (nn.Module): after :func:`convert_to_packed` or
            :func:`apply_packed_layout`.
        fuse_depthwise (bool | str, optional): run inverted-residual
            blocks' depthwise ConvModules with the fused op (True), with
            torch (False), or with the op where it is exact ('auto');
            None: as the block was last set, else :data:`FUSE_DEPTHWISE`.

    Returns:
        list[str]: names of the blocks and ConvModules that now flow.
    """
    if not (fuse_depthwise is None or isinstance(fuse_depthwise, bool)
            or fuse_depthwise == 'auto'):
        raise ValueError('enable_packed_flow: fuse_depthwise must be one of '
                         f'{FUSE_CHOICES} or None, got {fuse_depthwise!r}')
    names = []
    for name, module in model.named_modules():
        forward = _flow_forward(module)
        if forward is None:
            continue
        # An instance attribute: the class's forward stays the fallback.
        module.forward = types.MethodType(forward, module)
        if forward is _flow_inverted_residual_forward and \
                fuse_depthwise is not None:
            module.__dict__[_FUSE_DEPTHWISE] = fuse_depthwise
        names.append(name)
    # ResNet stems: the ReLU (and the max pool) in the stem conv.
    for name, module in model.named_modules():
        stem = _resnet_stem(module)
        if stem is None:
            continue
        conv, relu, pool = stem
        conv.__dict__[_FUSED_AFTER] = (RELU, pool)
        conv.forward = types.MethodType(_flow_stem_conv_forward, conv)
        relu.forward = types.MethodType(_flow_passed_forward, relu)
        pool.forward = types.MethodType(_flow_passed_forward, pool)
        # the pooled output's words for the first block (ReLU and max pool
        # pass the tensor on, so the block finds them on its input)
        first = _edge_unit(getattr(module, module.res_layers[0]), last=False)
        if _flow_unit(first) is not None:
            conv.__dict__['_mmbinary_next_block'] = first
        names.append(f'{name}.conv1' if name else 'conv1')
    # A unit whose successor in a Sequential (a stage) or a head tower
    # takes words hands it its activation words.
    for container_name, module in model.named_modules():
        in_sequence = isinstance(module, nn.Sequential) or (
            isinstance(module, nn.ModuleList)
            and container_name.rpartition('.')[2] in SEQUENTIAL_LISTS)
        if not in_sequence:
            continue
        units = list(module.children())
        for unit, following in zip(units, units[1:]):
            _link(unit, following)
    # ... and across a backbone's stages: a stage's last block hands the
    # next stage's first block its words.
    for stages in _stage_chains(model):
        for stage, following in zip(stages, stages[1:]):
            _link(_edge_unit(stage, last=True),
                  _edge_unit(following, last=False))
    # ... and a detector's FPN lateral convs theirs, from the stages they
    # read (and an extra level's conv on the last input, RetinaNet's P6,
    # where that stage's last block has no next block).
    for producer, lateral, extra in _fpn_links(model):
        if _block_convs(producer) is None:
            continue
        if _flow_unit(lateral) is not None:
            producer.__dict__[_SIDE_UNIT] = lateral
        if extra is not None and \
                '_mmbinary_next_block' not in producer.__dict__:
            _link(producer, extra)
    return names


def _fpn_links(
    model: nn.Module
) -> List[Tuple[nn.Module, nn.Module, Optional[nn.Module]]]:
    """(stage's last block, the FPN lateral ConvModule reading that stage's
    output, the extra level's conv reading it too or None) of every module
    with a ``backbone`` (mmdet's ResNet, stock forward) and a ``neck``
    (mmdet's FPN, stock forward): lateral i reads the backbone output
    ``i + start_level``, the output of stage ``out_indices[i +
    start_level]``; with ``add_extra_convs='on_input'`` the first extra
    conv reads the last of them."""
    from mmdet.models.necks import FPN
    links = []
    for module in model.modules():
        backbone = getattr(module, 'backbone', None)
        neck = getattr(module, 'neck', None)
        if not isinstance(backbone, nn.Module) or \
                not isinstance(neck, nn.Module) or \
                type(neck).forward is not FPN.forward or \
                _stock_forward_stages(backbone) != 'res_layers':
            continue
        stages = [getattr(backbone, name) for name in backbone.res_layers]
        out_indices = list(backbone.out_indices)
        laterals = list(neck.lateral_convs)
        extra = None
        if neck.add_extra_convs == 'on_input' and \
                len(neck.fpn_convs) > len(laterals):
            extra = neck.fpn_convs[len(laterals)]
        for i, lateral in enumerate(laterals):
            level = i + neck.start_level
            if level >= len(out_indices) or out_indices[level] >= len(stages):
                continue
            last_input = level == neck.backbone_end_level - 1
            links.append((_edge_unit(stages[out_indices[level]], last=True),
                          lateral, extra if last_input else None))
    return links


def _stock_forward_stages(module: nn.Module) -> str:
    """'res_layers' for mmdet's and mmseg's ResNets, 'layers' for their
    MobileNetV2s, where ``module``'s forward is the stock one; else ''."""
    from mmdet.models.backbones import MobileNetV2, ResNet
    from mmseg.models.backbones import MobileNetV2 as SegMobileNetV2
    from mmseg.models.backbones import ResNet as SegResNet
    stock = {ResNet.forward: 'res_layers', SegResNet.forward: 'res_layers',
             MobileNetV2.forward: 'layers', SegMobileNetV2.forward: 'layers'}
    return stock.get(type(module).forward, '')


def _stage_chains(model: nn.Module) -> List[List[nn.Module]]:
    """Stages that run one after the other on one tensor: the
    ``res_layers`` of mmdet's and mmseg's ResNets and the ``layers`` of
    their MobileNetV2s, for backbones whose forward is the stock one
    (nothing runs between two stages)."""
    chains = []
    for module in model.modules():
        names = _stock_forward_stages(module)
        if names:
            chains.append([getattr(module, name)
                           for name in getattr(module, names)])
    return chains


def _edge_unit(stage: nn.Module, last: bool) -> nn.Module:
    """The unit a stage starts (or ends) with: its first (last) child,
    for a Sequential stage; the stage itself otherwise."""
    while isinstance(stage, nn.Sequential) and len(stage):
        stage = stage[-1 if last else 0]
    return stage


def _link(unit: nn.Module, following: nn.Module) -> None:
    """``unit`` hands ``following`` its words, if both can."""
    if _flow_forward(unit) is not None and _flow_unit(following) is not None:
        # Not a submodule: a plain reference, kept out of state_dict and
        # module traversal.
        unit.__dict__['_mmbinary_next_block'] = following


def packed_flow_enabled(model: nn.Module) -> bool:
    """Whether :func:`enable_packed_flow` is in effect on ``model``."""
    return any(
        getattr(module.__dict__.get('forward'), '__func__', None) in
        FLOW_FORWARDS for module in model.modules())


def disable_packed_flow(model: nn.Module) -> None:
    """Give every block and ConvModule back its layer-by-layer forward."""
    for module in model.modules():
        forward = module.__dict__.get('forward')
        if getattr(forward, '__func__', None) in FLOW_FORWARDS:
            del module.forward
        module.__dict__.pop('_mmbinary_next_block', None)
        module.__dict__.pop(_SIDE_UNIT, None)
        module.__dict__.pop(_FUSED_AFTER, None)
