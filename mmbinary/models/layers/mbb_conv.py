# Copyright (c) mmbinary contributors. All rights reserved.
"""``MBBConv2d``: a multi-precision binary-branch convolution."""
from typing import Optional, Union

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor, nn

from mmbinary.quant import (ActivationQuantizer, WeightQuantizer, encode,
                            encode_unsigned)


class MBBQuantMixin:
    """Quantizers and the branch decomposition shared by MBB layers."""

    weight: Tensor
    bias: Optional[Tensor]

    def _init_quantizers(self, w_bits: int, a_bits: int, w_mode: str,
                         a_mode: str, a_clip: Union[str, float],
                         w_clip: str = 'stats') -> None:
        self.weight_quantizer = WeightQuantizer(
            w_bits, w_mode, w_clip, channels=self.weight.shape[0])
        self.act_quantizer = ActivationQuantizer(a_bits, a_mode, a_clip)

    @property
    def w_bits(self) -> int:
        return self.weight_quantizer.bits

    @property
    def a_bits(self) -> int:
        return self.act_quantizer.bits

    @property
    def a_mode(self) -> str:
        return self.act_quantizer.mode

    def quantized_weight(self) -> Tensor:
        """Dequantized weight, same shape as ``weight`` (STE gradient)."""
        return self.weight_quantizer(self.weight)

    def _check_input(self, input: Tensor, features: int, dims: str) -> None:
        if not isinstance(input, Tensor):
            raise TypeError(
                f'input must be a Tensor, got {type(input).__name__}')
        if dims == 'NCHW' and (input.dim() != 4
                               or input.shape[1] != features):
            raise ValueError(
                f'input must be (N, {features}, H, W) for '
                f'{type(self).__name__}(in_channels={features}), got shape '
                f'{tuple(input.shape)}')
        if dims == '*C' and (input.dim() < 1 or input.shape[-1] != features):
            raise ValueError(
                f'input must be (*, {features}) for {type(self).__name__}'
                f'(in_features={features}), got shape {tuple(input.shape)}')

    @classmethod
    def _share_float(cls, module: nn.Module, float_type: type,
                     options: dict) -> nn.Module:
        """An MBB layer with ``module``'s hyper-parameters holding its own
        weight and bias parameters (nothing is copied)."""
        if not isinstance(module, float_type):
            raise TypeError(f'module must be an nn.{float_type.__name__}, '
                            f'got {type(module).__name__}')
        args = [
            module.bias is not None if name == 'bias' else getattr(
                module, name) for name in cls.FLOAT_ARGS
        ]
        layer = cls(*args, device='meta', **options)
        layer.weight = module.weight
        layer.bias = module.bias
        return layer.to(module.weight.device)

    def _binary_op(self, a_planes: Tensor, w_planes: Tensor) -> Tensor:
        """One binary product of a {-1,+1} activation and weight plane."""
        raise NotImplementedError

    def _branch_sum(self, input: Tensor, return_branches: bool):
        """Explicit M * K binary branches, see :meth:`forward_branches`."""
        dtype = input.dtype if input.is_floating_point() else torch.float32
        act = self.act_quantizer
        act.initialize_once(input)
        q, a = act.codes(input)
        codes, w_scale = self.weight_quantizer.codes(self.weight)
        w_planes = encode(codes, self.w_bits, dtype)
        if act.is_signed:
            # a = sum_k 2^k s_k, padded inputs are 0 (not a level): the
            # binary convs see zero padding.
            a_planes = encode(a, self.a_bits, dtype)
            pad_value = 0.0
        else:
            # q = 1/2 sum_k 2^k s_k + L/2; padded q = 0 is all signs -1.
            a_planes = encode_unsigned(q, self.a_bits, dtype)
            pad_value = -1.0
        branches = torch.stack([
            torch.stack([
                self._binary_op(self._pad(a_planes[k], pad_value),
                                w_planes[m]) for k in range(self.a_bits)
            ]) for m in range(self.w_bits)
        ])  # (M, K, N, O, *spatial)
        powers = 2.0**torch.arange(
            self.w_bits, dtype=dtype, device=input.device)
        powers = powers[:, None] * (2.0**torch.arange(
            self.a_bits, dtype=dtype, device=input.device))[None, :]
        acc = (branches * powers.view(*powers.shape,
                                      *([1] * (branches.dim() - 2)))).sum(
                                          (0, 1))
        if not act.is_signed:
            # 1/2 from the unsigned code, plus L/2 * (sum of the codes over
            # every tap, padded ones included: they carry q = 0 exactly).
            tap_sum = codes.to(dtype).reshape(codes.shape[0], -1).sum(1)
            acc = 0.5 * acc + 0.5 * act.levels * self._per_output(tap_sum)
        scale = w_scale.to(dtype) * act.step().to(dtype)
        output = acc * self._per_output(scale)
        if self.bias is not None:
            output = output + self._per_output(self.bias.to(dtype))
        return (output, branches) if return_branches else output

    def _pad(self, planes: Tensor, value: float) -> Tensor:
        return planes

    def _per_output(self, values: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_branches(self, input: Tensor, return_branches: bool = False):
        """The layer as the sum of its M * K binary branches (slow; for
        checking and teaching, :meth:`forward` is the same function).

        Args:
            input (Tensor): the layer's input.
            return_branches (bool): also return the raw binary products.

        Returns:
            Tensor | tuple[Tensor, Tensor]: the output, equal to
            ``forward(input)`` up to float rounding, and optionally the
            branches (M, K, *output shape) of the {-1,+1} products before
            their ``2^m * 2^k`` weights.

        Raises:
            ValueError: ``input`` holds NaN (it has no {-1,+1} encoding;
                :meth:`forward` propagates it instead).
        """
        if bool(torch.isnan(input).any()):
            raise ValueError(
                'forward_branches: input holds NaN, which has no {-1,+1} '
                'encoding; forward() propagates NaN to the outputs it '
                'reaches')
        return self._branch_sum(input, return_branches)

    def _quant_repr(self) -> str:
        act = self.act_quantizer
        clip = "'learned'" if act.learn_clip else float(act.clip)
        w_clip = ", w_clip='learned'" if \
            self.weight_quantizer.learn_clip else ''
        return (f'w_bits={self.w_bits}, a_bits={self.a_bits}, '
                f'w_mode={self.weight_quantizer.mode!r}{w_clip}, '
                f'a_mode={act.mode!r}, a_clip={clip}')


@MODELS.register_module('MBBConv')
class MBBConv2d(MBBQuantMixin, nn.Conv2d):
    """``nn.Conv2d`` with M-bit weights and K-bit activations, the sum of
    M * K binary {-1, +1} convolutions.

    Registered in mmengine's root ``MODELS`` as ``'MBBConv'``, so
    ``conv_cfg=dict(type='MBBConv', w_bits=2, a_bits=2)`` works in mmcv's
    ``ConvModule`` from any scope (mmdet, mmseg). ``weight`` and ``bias`` keep
    their names: float checkpoints load unchanged. Training runs one float
    convolution over the quantized input and weight.

    Args:
        in_channels ... dtype: as ``nn.Conv2d`` (``padding_mode='zeros'``
            only: zero padding is what the packed op reproduces).
        w_bits (int): weight bits M, 1..8.
        a_bits (int): activation bits K, 1..8.
        w_mode (str): ``'channel'`` (per-output-channel scale from the
            weights, default) or ``'paper'``; see
            :class:`mmbinary.quant.WeightQuantizer`.
        a_mode (str): ``'auto'`` (default), ``'signed'`` or ``'unsigned'``.
        a_clip (str | float): ``'learned'`` (default) or a fixed clip.
        w_clip (str): ``'stats'`` (default: the weight scale from the
            weights) or ``'learned'`` (times a learned per-channel gain).
    """

    #: ``nn.Conv2d``'s positional arguments, read off a float conv.
    FLOAT_ARGS = ('in_channels', 'out_channels', 'kernel_size', 'stride',
                  'padding', 'dilation', 'groups', 'bias', 'padding_mode')

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size,
                 stride=1,
                 padding=0,
                 dilation=1,
                 groups: int = 1,
                 bias: bool = True,
                 padding_mode: str = 'zeros',
                 device=None,
                 dtype=None,
                 *,
                 w_bits: int = 2,
                 a_bits: int = 2,
                 w_mode: str = 'channel',
                 a_mode: str = 'auto',
                 a_clip: Union[str, float] = 'learned',
                 w_clip: str = 'stats') -> None:
        if padding_mode != 'zeros':
            raise ValueError("MBBConv supports padding_mode='zeros' only, got "
                             f'{padding_mode!r}')
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         padding, dilation, groups, bias, padding_mode,
                         device, dtype)
        self._init_quantizers(w_bits, a_bits, w_mode, a_mode, a_clip,
                              w_clip)

    @classmethod
    def from_float(cls, module: nn.Conv2d, **options) -> 'MBBConv2d':
        """An MBBConv2d sharing ``module``'s weight and bias parameters.

        Args:
            module (nn.Conv2d): a float convolution (trained or not).
            **options: ``w_bits``, ``a_bits``, ``w_mode``, ``a_mode``,
                ``a_clip``, ``w_clip``.
        """
        return cls._share_float(module, nn.Conv2d, options)

    def forward(self, input: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, C_out, H_out, W_out)."""
        self._check_input(input, self.in_channels, 'NCHW')
        return self._conv_forward(
            self.act_quantizer(input), self.quantized_weight(), self.bias)

    def _binary_op(self, a_planes: Tensor, w_planes: Tensor) -> Tensor:
        return F.conv2d(a_planes, w_planes, None, self.stride, 0,
                        self.dilation, self.groups)

    def _pad(self, planes: Tensor, value: float) -> Tensor:
        return F.pad(planes, self._reversed_padding_repeated_twice,
                     value=value)

    def _per_output(self, values: Tensor) -> Tensor:
        return values.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, {self._quant_repr()}'
