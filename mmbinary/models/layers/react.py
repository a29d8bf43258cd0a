# Copyright (c) mmbinary contributors. All rights reserved.
"""Structure that makes 1-bit networks trainable: ReActNet's learnable
per-channel threshold before the sign (RSign) and shift/slope after the
conv (RPReLU) (Liu et al., ECCV 2020), and Bi-Real Net's real-valued
shortcut around each binary conv (Liu et al., ECCV 2018).

* :class:`ReActMBBConv2d` (``'ReActMBBConv'``): an :class:`MBBConv2d` that
  quantizes ``x - input_shift`` (a learned threshold per input channel; at
  1 bit the sign of ``x - shift``) and, with ``shortcut=True``, adds the
  real-valued input to its output (channels repeated or averaged in groups
  when the widths differ by an integer factor).
* :class:`RPReLU`: ``prelu(x - gamma, beta) + zeta`` per channel, a float
  module placed after the binary conv's norm.
* :class:`PackedReActMBBConv2d`: the packed form. The shift is subtracted
  in float32 before the packed op, exactly as training computes it, so the
  packed codes are the training codes; the shortcut is added after the
  epilogue, scaled by the folded norm's factor.
* :func:`add_react_structure`: give a built model part this structure
  where the architecture allows it.
"""
from typing import Optional, Union

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..packing.convert import PACKED_TYPES
from ..packing.packed_layers import PackedMBBConv2d
from .mbb_conv import MBBConv2d


def _int_tuple(value) -> tuple:
    return (value, value) if isinstance(value, int) else tuple(value)


def shortcut_allowed(in_channels: int, out_channels: int, kernel_size,
                     stride, padding, dilation, groups: int) -> bool:
    """Whether a real-valued shortcut fits around a conv: the output has
    the input's spatial size (stride 1, 'same' padding) and one width is
    an integer multiple of the other."""
    kernel, stride = _int_tuple(kernel_size), _int_tuple(stride)
    dilation = _int_tuple(dilation)
    if isinstance(padding, str):
        same = padding == 'same'
    else:
        padding = _int_tuple(padding)
        same = all(2 * p == (k - 1) * d
                   for k, p, d in zip(kernel, padding, dilation))
    widths = (out_channels % in_channels == 0
              or in_channels % out_channels == 0)
    return all(s == 1 for s in stride) and same and widths


def real_shortcut(input: Tensor, out_channels: int) -> Tensor:
    """(N, C, H, W) -> (N, O, H, W): the input itself (O == C), its
    channels repeated (O = k C) or averaged in groups of k (C = k O)."""
    channels = input.shape[1]
    if out_channels == channels:
        return input
    if out_channels > channels:
        return input.repeat(1, out_channels // channels, 1, 1)
    n, _, h, w = input.shape
    return input.reshape(n, out_channels, channels // out_channels, h,
                         w).mean(2)


@MODELS.register_module('ReActMBBConv')
class ReActMBBConv2d(MBBConv2d):
    """An :class:`MBBConv2d` with a learned per-input-channel threshold
    (RSign) and, optionally, a real-valued shortcut (Bi-Real).

    ``forward(x) = conv(quantize(x - input_shift)) [+ shortcut(x)]``.
    Registered in mmengine's root ``MODELS`` as ``'ReActMBBConv'``, so
    ``conv_cfg=dict(type='ReActMBBConv', w_bits=1, a_bits=1, shortcut=True)``
    works in any ``ConvModule``.

    Args:
        *args: as :class:`MBBConv2d` (``nn.Conv2d``'s arguments).
        rsign (bool): learn ``input_shift`` (C_in,), initialized to 0.
            Default: True.
        shortcut (bool): add the real-valued input to the output; the
            geometry must allow it (:func:`shortcut_allowed`).
            Default: False.
        **kwargs: as :class:`MBBConv2d` (bits, modes, clip).
    """

    def __init__(self, *args, rsign: bool = True, shortcut: bool = False,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rsign = bool(rsign)
        self.shortcut = bool(shortcut)
        if self.rsign:
            self.input_shift = nn.Parameter(
                torch.zeros(self.in_channels, device=self.weight.device))
        else:
            self.register_parameter('input_shift', None)
        if self.shortcut and not shortcut_allowed(
                self.in_channels, self.out_channels, self.kernel_size,
                self.stride, self.padding, self.dilation, self.groups):
            raise ValueError(
                f'shortcut=True needs stride 1, same padding and widths that '
                f'divide each other; got {self.in_channels} -> '
                f'{self.out_channels} channels, kernel_size='
                f'{self.kernel_size}, stride={self.stride}, padding='
                f'{self.padding}, dilation={self.dilation}')

    @classmethod
    def from_mbb(cls, conv: MBBConv2d, rsign: bool = True,
                 shortcut: bool = False) -> 'ReActMBBConv2d':
        """The ReAct form of ``conv``, sharing its parameters and its
        quantizers."""
        if type(conv) is not MBBConv2d:
            raise TypeError(
                f'conv must be an MBBConv2d, got {type(conv).__name__}')
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size,
                    conv.stride, conv.padding, conv.dilation, conv.groups,
                    conv.bias is not None, device='meta', rsign=rsign,
                    shortcut=shortcut)
        layer.weight, layer.bias = conv.weight, conv.bias
        layer.weight_quantizer = conv.weight_quantizer
        layer.act_quantizer = conv.act_quantizer
        if rsign:
            layer.input_shift = nn.Parameter(
                torch.zeros(conv.in_channels, device=conv.weight.device))
        return layer

    def shifted(self, input: Tensor) -> Tensor:
        """``input - input_shift`` per channel (the quantizer's input)."""
        if self.input_shift is None:
            return input
        return input - self.input_shift.view(1, -1, 1, 1).to(input.dtype)

    def forward(self, input: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, C_out, H_out, W_out)."""
        output = super().forward(self.shifted(input))
        if self.shortcut:
            output = output + real_shortcut(input, self.out_channels)
        return output

    def forward_branches(self, input: Tensor, return_branches: bool = False):
        """As :meth:`MBBConv2d.forward_branches`, with the shift and the
        shortcut."""
        result = self._branch_sum(self.shifted(input), return_branches)
        if not self.shortcut:
            return result
        extra = real_shortcut(input, self.out_channels)
        if return_branches:
            return result[0] + extra, result[1]
        return result + extra

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, rsign={self.rsign}, '
                f'shortcut={self.shortcut}')


@MODELS.register_module()
class RPReLU(nn.Module):
    """ReActNet's RPReLU: ``prelu(x - gamma, beta) + zeta`` with learned
    per-channel ``gamma`` (shift in, 0), ``beta`` (slope, 0.25) and
    ``zeta`` (shift out, 0).

    Args:
        num_channels (int): C.
        init_slope (float): the initial negative slope. Default: 0.25.
    """

    def __init__(self, num_channels: int, init_slope: float = 0.25) -> None:
        super().__init__()
        self.num_channels = int(num_channels)
        self.shift_in = nn.Parameter(torch.zeros(num_channels))
        self.slope = nn.Parameter(torch.full((num_channels, ), init_slope))
        self.shift_out = nn.Parameter(torch.zeros(num_channels))

    def forward(self, input: Tensor) -> Tensor:
        """(N, C, *) -> (N, C, *)."""
        shape = (1, -1) + (1, ) * (input.dim() - 2)
        x = input - self.shift_in.view(shape)
        return F.prelu(x, self.slope) + self.shift_out.view(shape)

    def extra_repr(self) -> str:
        return f'{self.num_channels}'


class PackedReActMBBConv2d(PackedMBBConv2d):
    """The packed :class:`ReActMBBConv2d`.

    ``out = packed(x - input_shift) + shortcut(x) * shortcut_scale``: the
    shift is applied in float32 before the packed op (the codes are the
    training codes), ``shortcut_scale`` (O,) is 1, or the factor of the
    norm folded into the epilogue.

    Args:
        *args: as :class:`PackedMBBConv2d`.
        rsign (bool): there is an input shift.
        shortcut (bool): there is a real-valued shortcut.
        **kwargs: as :class:`PackedMBBConv2d`.
    """

    def __init__(self, *args, rsign: bool, shortcut: bool, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rsign = bool(rsign)
        self.shortcut = bool(shortcut)
        self.register_buffer('input_shift', torch.zeros(self.in_channels))
        self.register_buffer('shortcut_scale', torch.ones(self.out_channels))

    @classmethod
    def from_mbb(cls,
                 layer: ReActMBBConv2d,
                 norm: Optional[_BatchNorm] = None) -> 'PackedReActMBBConv2d':
        """Pack ``layer``, folding ``norm`` (applied right after it) into the
        epilogue and the shortcut's scale."""
        if not isinstance(layer, ReActMBBConv2d):
            raise TypeError('layer must be a ReActMBBConv2d, got '
                            f'{type(layer).__name__}')
        packed = cls(layer.in_channels, layer.out_channels,
                     layer.kernel_size, layer.stride, layer.padding,
                     layer.dilation, layer.groups, w_bits=layer.w_bits,
                     a_bits=layer.a_bits,
                     signed=layer.act_quantizer.is_signed,
                     rsign=layer.rsign, shortcut=layer.shortcut)
        packed._fill_from(layer, norm)
        with torch.no_grad():
            if layer.input_shift is not None:
                packed.input_shift.copy_(layer.input_shift.detach().float())
            if norm is not None:
                factor = norm.running_var.double().add(norm.eps).rsqrt()
                if norm.affine:
                    factor = factor * norm.weight.detach().double()
                packed.shortcut_scale.copy_(factor.float())
        return packed

    def forward(self, input: Tensor) -> Tensor:
        """(N, C_in, H, W) float32 -> (N, C_out, H_out, W_out) float32."""
        shifted = input
        if self.rsign:
            shifted = input - self.input_shift.view(1, -1, 1, 1)
        output = super().forward(shifted)
        if self.shortcut:
            output = output + real_shortcut(
                input, self.out_channels) * self.shortcut_scale.view(
                    1, -1, 1, 1)
        return output

    def config(self) -> dict:
        return dict(super().config(), rsign=self.rsign,
                    shortcut=self.shortcut)

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, rsign={self.rsign}, '
                f'shortcut={self.shortcut}')


PACKED_TYPES[ReActMBBConv2d] = PackedReActMBBConv2d


def add_react_structure(module: nn.Module,
                        rsign: bool = True,
                        rprelu: bool = True,
                        shortcut: Union[bool, str] = 'where_allowed') -> int:
    """Give every plain :class:`MBBConv2d` inside mmcv ``ConvModule``s of
    ``module`` the ReAct structure, in place.

    Args:
        module (nn.Module): a built model part (backbone, neck, head).
        rsign (bool): a learned threshold before each binary conv.
        rprelu (bool): replace the activation after each binary conv (and
            its norm) by an :class:`RPReLU`; the next binary conv's input
            is then signed.
        shortcut (bool | str): ``'where_allowed'`` (a real-valued shortcut
            around every conv whose geometry allows one), True (every conv;
            an error where not allowed) or False.

    Returns:
        int: the number of convs changed.
    """
    from mmcv.cnn import ConvModule
    if shortcut not in (True, False, 'where_allowed'):
        raise ValueError("shortcut must be True, False or 'where_allowed', "
                         f'got {shortcut!r}')
    changed = 0
    for conv_module in list(module.modules()):
        if not isinstance(conv_module, ConvModule) or \
                type(conv_module.conv) is not MBBConv2d:
            continue
        conv = conv_module.conv
        use_shortcut = shortcut is True or (
            shortcut == 'where_allowed' and shortcut_allowed(
                conv.in_channels, conv.out_channels, conv.kernel_size,
                conv.stride, conv.padding, conv.dilation, conv.groups))
        conv_module.conv = ReActMBBConv2d.from_mbb(conv, rsign, use_shortcut)
        if rprelu and conv_module.with_activation:
            conv_module.activate = RPReLU(conv.out_channels).to(
                conv.weight.device)
        changed += 1
    return changed
