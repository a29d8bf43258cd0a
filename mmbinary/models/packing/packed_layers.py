# Copyright (c) mmbinary contributors. All rights reserved.
"""Inference-only packed MBB layers: bit-packed weights, a per-channel
epilogue, no float weight.

``out[n, o] = float32(acc[n, o]) * out_scale[o] + out_bias[o]`` where
``acc`` is the exact integer accumulator of the packed op
(:func:`mmbinary.ops.mbb_conv2d`); ``out_scale`` carries the weight scale,
the activation step and a folded batch norm, ``out_bias`` the bias and the
folded norm's shift.
"""
import math
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmbinary.ops import build_info, ext_loaded, mbb_conv2d, pack_weight_codes
from mmbinary.packed_format import num_group_words
from mmbinary.packed_format import pair as _pair
from mmbinary.quant import check_bits

from ..layers import MBBConv2d, MBBLinear
from .norm_folding import fold_norm

_CONFIG_KEYS = ('in_channels', 'out_channels', 'kernel_size', 'stride',
                'padding', 'dilation', 'groups', 'w_bits', 'a_bits', 'signed')


def _compiled_op_runs(input: Tensor) -> bool:
    """Whether ``torch.ops.mmbinary.mbb_conv2d`` runs on ``input`` (a
    float32 tensor on the CPU, or on CUDA in a CUDA build)."""
    if not ext_loaded() or not isinstance(input, Tensor):
        return False
    if input.dtype != torch.float32 or input.dim() != 4:
        return False  # the wrapper gives the better message
    if input.device.type == 'cuda':
        return bool(build_info()['with_cuda'])
    return input.device.type == 'cpu'


#: The exact CPU kernels a packed conv can run (bit-identical results):
#: ``'popcount'``, AND + popcount over bit planes (every CPU);
#: ``'int8'``, an integer dot product of the same codes (AVX-512 VNNI, on
#: AMX tiles where the CPU has them; wins where M * K is large or few
#: channels waste the 64-bit words, and everywhere on AMX); and
#: ``'int8-im2col'``, the integer kernel with the conv's taps folded into
#: the channels (each output pixel's kh * kw * C patch is one pixel of a
#: 1x1 conv), for layers with few input channels, such as a network's
#: stem (3 channels padded to a 64-byte pixel waste 95 % of every tap). It
#: folds a float input; on activation words it runs as ``'int8'``.
KERNELS = ('popcount', 'int8', 'int8-im2col')

#: Input channels from which ``'int8-im2col'`` is not offered: the taps of
#: such a layer already fill most of the integer kernel's 64-byte pixels,
#: and its patches would multiply the level buffer by kh * kw.
IM2COL_MAX_CHANNELS = 32


def int8_kernel_available() -> bool:
    """Whether this build and CPU run the integer (VNNI) kernel."""
    ops = torch.ops.mmbinary
    return (ext_loaded() and hasattr(ops, 'mbb_int8_supported')
            and bool(ops.mbb_int8_supported()))


def im2col_weight(weight_int8: Tensor, in_channels: int) -> Tensor:
    """The integer kernel's weight layout of a conv -> that of the 1x1
    conv over its patches (``'int8-im2col'``): input channel
    ``(ky * kw + kx) * C + c`` of the patch holds tap ``(ky, kx)``'s
    channel ``c``.

    Args:
        weight_int8 (Tensor): (OB, kh * kw, C4, 16, 4) int8, from
            ``mbb_int8_prepare_weight``.
        in_channels (int): C.

    Returns:
        Tensor: (OB, 1, C4', 16, 4) int8 with C4' = 16 * ceil(kh * kw * C
        / 64), zero past the patch.
    """
    blocks, taps, quads, lanes, quad = weight_int8.shape
    channels = weight_int8.permute(0, 1, 2, 4, 3).reshape(
        blocks, taps, quads * quad, lanes)[:, :, :in_channels]
    patch = taps * in_channels
    patch_quads = 16 * math.ceil(patch / 64)
    flat = nn.functional.pad(
        channels.reshape(blocks, patch, lanes),
        (0, 0, 0, patch_quads * quad - patch))
    return flat.reshape(blocks, patch_quads, quad, lanes).permute(
        0, 1, 3, 2).unsqueeze(1).contiguous()


def _next_quantizer(next_conv: Optional['PackedMBBConv2d']
                    ) -> Tuple[int, float, bool]:
    """(a_bits, inv_step, signed) of the layer whose words an epilogue
    writes, or (0, 1.0, False) for none."""
    if next_conv is None:
        return 0, 1.0, False
    return next_conv.a_bits, float(next_conv.inv_step), next_conv.signed


def side_words_buffer(output_shape: Sequence[int],
                      side_conv: 'PackedMBBConv2d') -> Tensor:
    """An uninitialized (N, Ho, Wo, 1, K, Wg) int64 buffer for
    ``side_conv``'s words of an (N, O, Ho, Wo) output
    (:meth:`PackedMBBConv2d.run_words`'s ``side_words``)."""
    n, channels, height, width = output_shape
    return torch.empty((n, height, width, 1, side_conv.a_bits,
                        num_group_words(channels)),
                       dtype=torch.int64)


#: The string paddings ``nn.Conv2d`` takes.
PADDING_MODES = ('same', 'valid')


def _cache_holds(cache: Optional[tuple], words: Tensor) -> bool:
    """A derived-weight cache ``(words, version, value)`` is of ``words``
    as they are now (the same tensor, not changed in place since)."""
    return (cache is not None and cache[0] is words
            and cache[1] == words._version)


def _numeric_padding(padding, kernel_size: Tuple[int, int],
                     stride: Tuple[int, int],
                     dilation: Tuple[int, int]) -> Tuple[int, int]:
    """``(pad_h, pad_w)`` of a numeric, ``'valid'`` or ``'same'`` padding
    (the packed op pads both sides of a dimension alike)."""
    if not isinstance(padding, str):
        return _pair(padding)
    if padding not in PADDING_MODES:
        raise ValueError(f'padding must be a number, a pair or one of '
                         f'{PADDING_MODES}, got {padding!r}')
    if padding == 'valid':
        return (0, 0)
    if stride != (1, 1):
        raise ValueError(f"padding='same' needs stride 1, got stride="
                         f'{stride}')
    totals = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
    if any(total % 2 for total in totals):
        raise ValueError(
            f"padding='same' pads unevenly for kernel_size={kernel_size}, "
            f'dilation={dilation} (total padding {tuple(totals)}); the '
            'packed op needs symmetric padding')
    return (totals[0] // 2, totals[1] // 2)


class PackedMBBConv2d(nn.Module):
    """A packed MBB convolution (inference only, zero padding).

    Buffers: ``weight_words`` (int64, the layout of
    :func:`mmbinary.ops.pack_weight_codes`),
    ``out_scale`` and ``out_bias`` (O,) float32, ``inv_step`` 0-dim float32.
    The layer's geometry and bit widths are saved in the state dict too
    (``_extra_state``), so a packed checkpoint describes itself.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation,
            groups: as ``nn.Conv2d``; ``padding='same'`` (stride 1, an even
            total padding) and ``'valid'`` are turned into numbers.
        w_bits (int): M, 1..8.
        a_bits (int): K, 1..8.
        signed (bool): the activation mode.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size,
                 stride=1, padding=0, dilation=1, groups: int = 1, *,
                 w_bits: int, a_bits: int, signed: bool) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.dilation = _pair(dilation)
        self.padding = _numeric_padding(padding, self.kernel_size,
                                        self.stride, self.dilation)
        self.groups = int(groups)
        self.w_bits = check_bits(w_bits, 'w_bits')
        self.a_bits = check_bits(a_bits, 'a_bits')
        self.signed = bool(signed)
        # Words of an all-(+1) weight: the packed shape, by construction.
        ones = torch.ones(self.out_channels, self.in_channels // self.groups,
                          *self.kernel_size, dtype=torch.int32)
        self.register_buffer(
            'weight_words',
            torch.zeros_like(
                pack_weight_codes(ones, self.w_bits, self.groups)))
        self.register_buffer('out_scale', torch.zeros(self.out_channels))
        self.register_buffer('out_bias', torch.zeros(self.out_channels))
        self.register_buffer('inv_step', torch.tensor(1.0))
        #: The CPU kernel :meth:`run_words` uses (see :data:`KERNELS`);
        #: picked per machine by :func:`~.kernel_choice.choose_kernels`,
        #: not saved with the weights.
        self.kernel = 'popcount'
        #: What the choice measured: ms per kernel on the layer's input.
        self.kernel_ms: Dict[str, float] = {}
        self._int8_cache: Optional[tuple] = None
        self._im2col_weight: Optional[Tensor] = None
        self._lane_cache: Optional[tuple] = None

    @classmethod
    def from_mbb(cls,
                 layer: MBBConv2d,
                 norm: Optional[_BatchNorm] = None) -> 'PackedMBBConv2d':
        """Pack a trained :class:`MBBConv2d`, folding ``norm`` (applied
        right after it) when given."""
        if not isinstance(layer, MBBConv2d):
            raise TypeError(
                f'layer must be an MBBConv2d, got {type(layer).__name__}')
        padding = layer.padding
        if isinstance(padding, str):  # 'same' / 'valid'
            left, right, top, bottom = layer._reversed_padding_repeated_twice
            if left != right or top != bottom:
                raise ValueError(
                    f"padding={layer.padding!r} pads unevenly for this "
                    'kernel; the packed op needs symmetric padding')
            padding = (top, left)
        packed = cls(layer.in_channels, layer.out_channels,
                     layer.kernel_size, layer.stride, padding,
                     layer.dilation, layer.groups, w_bits=layer.w_bits,
                     a_bits=layer.a_bits,
                     signed=layer.act_quantizer.is_signed)
        packed._fill_from(layer, norm)
        return packed

    @torch.no_grad()
    def _fill_from(self, layer, norm: Optional[_BatchNorm]) -> None:
        codes, w_scale = layer.weight_quantizer.codes(layer.weight)
        if codes.dim() == 2:  # a linear layer: (O, C) -> (O, C, 1, 1)
            codes = codes[:, :, None, None]
        step = layer.act_quantizer.step()
        scale = w_scale.double() * step.double()
        bias = (layer.bias.detach().double() if layer.bias is not None else
                torch.zeros_like(scale))
        if norm is not None:
            scale, bias = fold_norm(scale, bias, norm)
        device = self.weight_words.device
        self.weight_words.copy_(
            pack_weight_codes(codes, self.w_bits, self.groups).to(device))
        self.out_scale.copy_(scale.float())
        self.out_bias.copy_(bias.float())
        self.inv_step.copy_(layer.act_quantizer.inv_step())

    def int8_unsupported(self) -> Optional[str]:
        """Why the integer kernel cannot run this layer here, or None."""
        if not int8_kernel_available():
            return 'this CPU or build has no AVX-512 VNNI'
        if self.groups != 1:
            return f'groups={self.groups} (the integer kernel needs 1)'
        return None

    def im2col_unsupported(self) -> Optional[str]:
        """Why ``'int8-im2col'`` is not offered for this layer, or None."""
        reason = self.int8_unsupported()
        if reason is not None:
            return reason
        if self.kernel_size == (1, 1):
            return 'a 1x1 kernel has no taps to fold into the channels'
        if self.in_channels >= IM2COL_MAX_CHANNELS:
            return (f'{self.in_channels} input channels (folding the taps '
                    f'helps below {IM2COL_MAX_CHANNELS})')
        return None

    def set_kernel(self, kernel: str) -> None:
        """Run on ``kernel`` (one of :data:`KERNELS`); same results."""
        if kernel not in KERNELS:
            raise ValueError(f'kernel must be one of {KERNELS}, got '
                             f'{kernel!r}')
        reason = {'popcount': None,
                  'int8': self.int8_unsupported,
                  'int8-im2col': self.im2col_unsupported}[kernel]
        if reason is not None and reason() is not None:
            raise ValueError(f'kernel={kernel!r} cannot run this layer: '
                             f'{reason()}')
        self.kernel = kernel

    def int8_weight(self) -> Tuple[Tensor, Tensor]:
        """The integer kernel's weight layout, built on first use and again
        only when ``weight_words`` changes (not saved: it is derived)."""
        words = self.weight_words
        if not _cache_holds(self._int8_cache, words):
            weight = torch.ops.mmbinary.mbb_int8_prepare_weight(
                words, self.in_channels, self.w_bits, list(self.kernel_size))
            self._int8_cache = (words, words._version, weight)
            self._im2col_weight = None
        return self._int8_cache[2]

    def _int8_im2col_weight(self) -> Tuple[Tensor, Tensor]:
        """``'int8-im2col'``'s weight layout (:func:`im2col_weight`) and
        the kernel's weight sums, derived and cached as
        :meth:`int8_weight`."""
        weight_int8, weight_sums = self.int8_weight()
        if self._im2col_weight is None:
            self._im2col_weight = im2col_weight(weight_int8,
                                                self.in_channels)
        return self._im2col_weight, weight_sums

    def _lane_weight(self) -> Tensor:
        """The popcount kernel's weight layout (empty where its channel-lane
        kernel does not run), built on first use and again only when
        ``weight_words`` changes (not saved: it is derived)."""
        words = self.weight_words
        if not _cache_holds(self._lane_cache, words):
            lanes = torch.ops.mmbinary.mbb_lane_prepare_weight(
                words, self.in_channels, self.w_bits, list(self.kernel_size))
            self._lane_cache = (words, words._version, lanes)
        return self._lane_cache[2]

    def run_words(self,
                  act_words: Tensor,
                  act_min: float = -math.inf,
                  act_max: float = math.inf,
                  float_out: bool = True,
                  next_conv: Optional['PackedMBBConv2d'] = None,
                  residual: Optional[Tensor] = None,
                  epilogue: Optional[Tuple[Tensor, Tensor]] = None,
                  side_conv: Optional['PackedMBBConv2d'] = None,
                  side_words: Optional[Tensor] = None
                  ) -> Tuple[Tensor, Tensor]:
        """This conv on its activation words (CPU, one group) with the
        chosen kernel (``'int8-im2col'`` runs as ``'int8'`` here: it folds
        float inputs): ``clamp(acc * scale + bias (+ residual), act_min,
        act_max)``.

        Args:
            act_words (Tensor): (N, H, W, 1, K, Wg) int64.
            act_min, act_max (float): the activation as a clamp.
            float_out (bool): return the float output.
            next_conv (PackedMBBConv2d, optional): also quantize the output
                into this layer's activation words.
            residual (Tensor, optional): (N, O, Ho, Wo) float32, added
                before the clamp.
            epilogue (tuple[Tensor, Tensor], optional): (scale, bias),
                (O,) float32 contiguous, instead of ``out_scale`` and
                ``out_bias`` (a per-level head's level).
            side_conv (PackedMBBConv2d, optional): a second consumer of the
                output (an FPN lateral conv reading a backbone stage's
                output), whose words go to ``side_words``.
            side_words (Tensor, optional): (N, Ho, Wo, 1, K', Wg) int64
                (:func:`side_words_buffer`), filled in place with
                ``side_conv``'s words of the output (in the epilogue on the
                integer kernel; packed from the float output after the
                popcount kernel, which needs ``float_out``).

        Returns:
            tuple[Tensor, Tensor]: the float output (N, O, Ho, Wo),
            channels-last (empty without ``float_out``), and
            ``next_conv``'s words (empty without it).
        """
        if (side_conv is None) != (side_words is None):
            raise ValueError('run_words: side_conv and side_words go '
                             'together')
        scale, bias = epilogue or (self.out_scale, self.out_bias)
        out_bits, out_inv, out_signed = _next_quantizer(next_conv)
        side = () if side_conv is None else (
            side_words, float(side_conv.inv_step), side_conv.signed)
        geometry = (self.in_channels, self.w_bits, self.a_bits, self.signed,
                    self.kernel_size, self.stride, self.padding,
                    self.dilation)
        ops = torch.ops.mmbinary
        if self.kernel in ('int8', 'int8-im2col'):
            w8, wsum = self.int8_weight()
            return ops.mbb_conv2d_int8_words(
                act_words, self.weight_words, w8, wsum, scale, bias,
                *geometry, residual, act_min, act_max, float_out, out_bits,
                out_inv, out_signed, False, *side)
        if side and not float_out:
            raise ValueError('run_words: side_words on the popcount kernel '
                             'need float_out=True')
        lanes = self._lane_weight() if self.groups == 1 else None
        out = ops.mbb_conv2d_words(act_words, self.weight_words, scale, bias,
                                   *geometry, self.groups, residual, act_min,
                                   act_max, float_out, out_bits, out_inv,
                                   out_signed, lanes)
        if side:  # packed from the float output
            side_words.copy_(
                ops.mbb_quantize_pack(out[0], side_conv.a_bits, *side[1:]))
        return out

    def run_float(self,
                  input: Tensor,
                  act_min: float = -math.inf,
                  act_max: float = math.inf,
                  float_out: bool = True,
                  next_conv: Optional['PackedMBBConv2d'] = None,
                  residual: Optional[Tensor] = None,
                  epilogue: Optional[Tuple[Tensor, Tensor]] = None
                  ) -> Tuple[Tensor, Tensor]:
        """:meth:`run_words` on a float input (CPU, one group): the
        integer kernel quantizes it straight into its levels
        (``mbb_conv2d_int8``; ``'int8-im2col'``: into the patches of
        ``mbb_conv2d_int8_im2col``), the popcount kernel packs it first
        (``mbb_quantize_pack``); the same outputs either way.

        Args:
            input (Tensor): (N, C_in, H, W) float32.
            others: as :meth:`run_words`.

        Returns:
            tuple[Tensor, Tensor]: as :meth:`run_words`.

        Raises:
            RuntimeError: ``input`` holds NaN (it has no activation level),
                as ``mbb_quantize_pack`` does.
        """
        if self.kernel == 'popcount':
            words = torch.ops.mmbinary.mbb_quantize_pack(
                input, self.a_bits, float(self.inv_step), self.signed, 1)
            return self.run_words(words, act_min, act_max, float_out,
                                  next_conv, residual, epilogue)
        scale, bias = epilogue or (self.out_scale, self.out_bias)
        out_bits, out_inv, out_signed = _next_quantizer(next_conv)
        if self.kernel == 'int8-im2col':
            w8, wsum = self._int8_im2col_weight()
            op = torch.ops.mmbinary.mbb_conv2d_int8_im2col
        else:
            w8, wsum = self.int8_weight()
            op = torch.ops.mmbinary.mbb_conv2d_int8
        return op(
            input, self.weight_words, w8, wsum, scale, bias,
            self.in_channels, self.w_bits, self.a_bits,
            float(self.inv_step), self.signed, self.kernel_size, self.stride,
            self.padding, self.dilation, residual, act_min, act_max,
            float_out, out_bits, out_inv, out_signed)

    def run_float_max_pool(
            self,
            input: Tensor,
            act_min: float,
            act_max: float,
            pool: nn.MaxPool2d,
            next_conv: Optional['PackedMBBConv2d'] = None
    ) -> Optional[Tuple[Tensor, Tensor]]:
        """``pool(clamp(this conv(input), act_min, act_max))`` in one op
        (``mbb_conv2d_int8_im2col_max_pool``: the conv's rows go to a small
        buffer and are pooled there, never written whole), or None where
        that op does not run it: a kernel other than ``'int8-im2col'``, a
        pool with dilation, ``ceil_mode`` or indices.

        Args:
            input (Tensor): (N, C_in, H, W) float32 on the CPU.
            act_min, act_max (float): the activation as a clamp.
            pool (nn.MaxPool2d): the max pool after the activation.
            next_conv (PackedMBBConv2d, optional): also quantize the pooled
                output into this layer's activation words, row by row.

        Returns:
            tuple[Tensor, Tensor] | None: the pooled output (N, C_out, Hp,
            Wp) float32, channels-last, and ``next_conv``'s words (N, Hp,
            Wp, 1, K, Wg) (empty without it).
        """
        op = getattr(torch.ops.mmbinary, 'mbb_conv2d_int8_im2col_max_pool',
                     None)
        if op is None or self.kernel != 'int8-im2col' or self.groups != 1:
            return None
        if pool.ceil_mode or pool.return_indices or _pair(
                pool.dilation) != (1, 1):
            return None
        w8, wsum = self._int8_im2col_weight()
        stride = pool.stride if pool.stride else pool.kernel_size
        return op(input, self.weight_words, w8, wsum, self.out_scale,
                  self.out_bias, self.in_channels, self.w_bits, self.a_bits,
                  float(self.inv_step), self.signed, self.kernel_size,
                  self.stride, self.padding, self.dilation, act_min, act_max,
                  _pair(pool.kernel_size), _pair(stride), _pair(pool.padding),
                  *_next_quantizer(next_conv))

    def forward(self, input: Tensor) -> Tensor:
        """(N, C_in, H, W) float32 -> (N, C_out, H_out, W_out) float32.

        On the CPU with AVX-512 the output is channels-last in memory (the
        kernel writes it so); any layout of the input is accepted.
        """
        return self.forward_with_epilogue(input, self.out_scale,
                                          self.out_bias)

    def forward_with_epilogue(self, input: Tensor, scale: Tensor,
                              bias: Tensor) -> Tensor:
        """:meth:`forward` with ``acc * scale + bias`` ((O,) float32
        contiguous) as the epilogue (a per-level head's level): on the
        chosen integer kernel for a float32 CPU input, else on the popcount
        op (which also propagates NaN, where the integer kernel refuses
        it)."""
        if (self.kernel != 'popcount' and _compiled_op_runs(input)
                and input.device.type == 'cpu'):
            try:
                return self.run_float(input, epilogue=(scale, bias))[0]
            except RuntimeError:
                if not bool(torch.isnan(input).any()):
                    raise
                # NaN: the popcount op propagates it
        if _compiled_op_runs(input):
            # The op checks its arguments (and names them) in C++.
            return torch.ops.mmbinary.mbb_conv2d(
                input, self.weight_words, scale, bias, self.in_channels,
                self.w_bits, self.a_bits, float(self.inv_step), self.signed,
                self.kernel_size, self.stride, self.padding, self.dilation,
                self.groups)
        return mbb_conv2d(
            input,
            self.weight_words,
            scale,
            bias,
            in_channels=self.in_channels,
            w_bits=self.w_bits,
            a_bits=self.a_bits,
            inv_step=float(self.inv_step),
            signed=self.signed,
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups)

    def config(self) -> dict:
        """Geometry and bit widths (what ``__init__`` takes)."""
        return {key: getattr(self, key) for key in _CONFIG_KEYS}

    def get_extra_state(self) -> dict:
        return self.config()

    def set_extra_state(self, state: dict) -> None:
        expected = self.config()
        saved = {key: tuple(value) if isinstance(value, list) else value
                 for key, value in dict(state).items()}
        if saved != expected:
            raise ValueError(
                f'packed layer mismatch: the checkpoint has {saved}, the '
                f'model has {expected}')

    def packed_bytes(self) -> int:
        """Bytes of the packed weights plus the float32 epilogue."""
        return sum(buffer.numel() * buffer.element_size()
                   for buffer in self.buffers())

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, '
                f'kernel_size={self.kernel_size}, stride={self.stride}, '
                f'padding={self.padding}, dilation={self.dilation}, '
                f'groups={self.groups}, w_bits={self.w_bits}, '
                f'a_bits={self.a_bits}, signed={self.signed}' +
                ('' if self.kernel == 'popcount' else
                 f', kernel={self.kernel!r}'))


class PackedMBBLinear(PackedMBBConv2d):
    """A packed MBB linear layer, run as a 1x1 packed convolution.

    Args:
        in_features (int): C.
        out_features (int): O.
        w_bits, a_bits, signed: as :class:`PackedMBBConv2d`.
    """

    def __init__(self, in_features: int, out_features: int, *, w_bits: int,
                 a_bits: int, signed: bool) -> None:
        super().__init__(in_features, out_features, 1, w_bits=w_bits,
                         a_bits=a_bits, signed=signed)

    @classmethod
    def from_mbb(cls,
                 layer: MBBLinear,
                 norm: Optional[_BatchNorm] = None) -> 'PackedMBBLinear':
        """Pack a trained :class:`MBBLinear` (``norm``: a BatchNorm1d)."""
        if not isinstance(layer, MBBLinear):
            raise TypeError(
                f'layer must be an MBBLinear, got {type(layer).__name__}')
        packed = cls(layer.in_features, layer.out_features,
                     w_bits=layer.w_bits, a_bits=layer.a_bits,
                     signed=layer.act_quantizer.is_signed)
        packed._fill_from(layer, norm)
        return packed

    def forward(self, input: Tensor) -> Tensor:
        """(*, in_features) float32 -> (*, out_features) float32."""
        if input.dim() < 1 or input.shape[-1] != self.in_channels:
            raise ValueError(f'input must be (*, {self.in_channels}), got '
                             f'shape {tuple(input.shape)}')
        lead = input.shape[:-1]
        flat = input.reshape(-1, self.in_channels, 1, 1)
        return super().forward(flat).reshape(*lead, self.out_channels)

    def config(self) -> dict:
        return dict(in_features=self.in_channels,
                    out_features=self.out_channels, w_bits=self.w_bits,
                    a_bits=self.a_bits, signed=self.signed)

    def extra_repr(self) -> str:
        return (f'in_features={self.in_channels}, '
                f'out_features={self.out_channels}, w_bits={self.w_bits}, '
                f'a_bits={self.a_bits}, signed={self.signed}')
