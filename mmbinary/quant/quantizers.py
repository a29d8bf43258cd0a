# Copyright (c) mmbinary contributors. All rights reserved.
"""Weight and activation quantizer modules (state, options, defaults).

``WeightQuantizer(mode='channel')`` (default) scales each output channel by
``alpha_o`` computed from its weights: ``mean|w_o|`` at 1 bit (the
MSE-optimal binary scale, as XNOR-Net) and ``c_M * rms(w_o)`` above, with
``c_M`` the MSE-optimal clip of the M-bit odd-level quantizer on a Gaussian.
It follows the weights as they move away from a float checkpoint, adds no
state, and its scale folds into the output, so the branches stay exactly
``{-1, +1}``. ``mode='paper'`` is the paper's quantizer: ``alpha = 1``
(HTanh clip to [-1, 1]); trained float weights are mostly far inside
[-1, 1], so it collapses most of them onto the two innermost levels.

``ActivationQuantizer(clip='learned')`` (default) learns ``beta`` with the
LSQ gradient, initialized on the first batch by the MSE-optimal ``beta``;
``clip=<float>`` fixes it (``clip=1.0, mode='signed'`` is the paper's HTanh,
``mode='unsigned'`` its HReLU). ``mode='auto'`` decides on the first batch:
unsigned when the input is non-negative (after a ReLU), signed otherwise.
A learned clip adapts to each layer's range instead of assuming [-1, 1].
The clip is fitted on the finite values of the first batch that has some:
an empty batch, NaN and infinities leave it (and the mode) undecided.

Checkpoints record the bit widths (``weight_quantizer.bits``, written at
save time, and ``act_quantizer.clip_bits``); loading one saved at other bit
widths than the model's raises :class:`BitWidthMismatchError` naming the
layer, unless the change is asked for with :func:`allow_bit_change` (a
progressive 8 -> 4 -> 2 schedule; tools read ``allow_bit_change=True`` from
the config). Checkpoints saved before the weights' bits were recorded are
not checked.
"""
import contextlib
import math
from typing import Iterator, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .encoding import check_bits, num_levels
from .functions import (GAUSSIAN_OPTIMAL_CLIP, activation_codes,
                        lsq_grad_scale, quantize_activation, quantize_weight,
                        quantize_weight_learned, weight_codes)

WEIGHT_MODES = ('channel', 'paper')
#: ``w_clip``: the scale from the weights alone, or times a learned gain.
WEIGHT_CLIPS = ('stats', 'learned')
#: Smallest learned weight gain (the gain is a parameter; a step that
#: would make it 0 or negative leaves the clip at this fraction).
_MIN_WEIGHT_GAIN = 1e-3
ACTIVATION_MODES = ('auto', 'signed', 'unsigned')
# Values of the ``signed`` buffer.
_UNDECIDED, _UNSIGNED, _SIGNED = -1, 0, 1
# Candidate clips, as fractions of the batch's largest magnitude, for the
# data-driven initialization of beta; at most this many samples are used.
_INIT_FRACTIONS = torch.linspace(0.025, 1.0, 40)
_INIT_MAX_SAMPLES = 1 << 20


#: The config key the tools read to allow loading other bit widths.
ALLOW_BIT_CHANGE_KEY = 'allow_bit_change'
_bit_change_allowed = False


class BitWidthMismatchError(ValueError):
    """A checkpoint saved at other bit widths than the model has."""


@contextlib.contextmanager
def allow_bit_change(enabled: bool = True) -> Iterator[None]:
    """Within the block, let checkpoints saved at other bit widths load
    into MBB layers (the progressive-training path): the weights are
    quantized at the model's M and learned clips are fitted again, for the
    model's K, on the next batch.

    Args:
        enabled (bool): allow (True) or refuse (False, the default outside
            the block) such checkpoints.
    """
    global _bit_change_allowed
    previous, _bit_change_allowed = _bit_change_allowed, bool(enabled)
    try:
        yield
    finally:
        _bit_change_allowed = previous


def bit_change_allowed() -> bool:
    """Whether :func:`allow_bit_change` is in effect."""
    return _bit_change_allowed


def _check_saved_bits(prefix: str, role: str, name: str, saved: int,
                      bits: int) -> None:
    """Refuse ``saved`` bits that differ from ``bits`` unless allowed."""
    if saved == bits or _bit_change_allowed:
        return
    layer = prefix[:-len(role) - 1] if prefix.endswith(f'{role}.') else \
        prefix
    layer = layer.rstrip('.') or '(the model itself)'
    raise BitWidthMismatchError(
        f'{layer}: the config has {name}={bits}, the checkpoint {name}='
        f'{saved}. Use the config the checkpoint was trained with; to change '
        f'the bit widths on purpose (progressive training), set '
        f'{ALLOW_BIT_CHANGE_KEY}=True in the config or load inside '
        'mmbinary.quant.allow_bit_change()')


def _check_choice(value, name: str, allowed: tuple) -> str:
    if value not in allowed:
        raise ValueError(f'{name} must be one of {allowed}, got {value!r}')
    return value


class WeightQuantizer(nn.Module):
    """M-bit weight quantizer with a per-output-channel scale.

    With ``clip='learned'`` (``mode='channel'`` only) each channel's
    scale is the one from its weights times a learned gain (``gain``, (O,),
    1 at the start, so a float checkpoint starts from the ``'stats'``
    scale), trained with the LSQ gradient; the gain folds into the output
    scale like the rest of ``alpha``, so packing is unchanged.

    Args:
        bits (int): M, 1..8.
        mode (str): ``'channel'`` (scale from the weights) or ``'paper'``
            (``alpha = 1``).
        clip (str): ``'stats'`` (default) or ``'learned'``.
        channels (int, optional): output channels O; needed by
            ``clip='learned'``.
    """

    def __init__(self,
                 bits: int = 2,
                 mode: str = 'channel',
                 clip: str = 'stats',
                 channels: Optional[int] = None) -> None:
        super().__init__()
        self.bits = check_bits(bits, 'w_bits')
        self.mode = _check_choice(mode, 'w_mode', WEIGHT_MODES)
        self.learn_clip = _check_choice(clip, 'w_clip',
                                        WEIGHT_CLIPS) == 'learned'
        if self.learn_clip:
            if self.mode != 'channel':
                raise ValueError("w_clip='learned' needs w_mode='channel', "
                                 f'got w_mode={mode!r}')
            if isinstance(channels, bool) or not isinstance(
                    channels, int) or channels < 1:
                raise ValueError("w_clip='learned' needs channels, the "
                                 f'output channels (>= 1), got {channels!r}')
            self.gain = nn.Parameter(torch.ones(channels))

    def _stats_alpha(self, weight: Tensor) -> Tensor:
        """(O,) the scale from the weights, detached, > 0."""
        flat = weight.detach().reshape(weight.shape[0], -1)
        if self.bits == 1:
            alpha = flat.abs().mean(1)
        else:
            rms = flat.pow(2).mean(1).sqrt()
            alpha = GAUSSIAN_OPTIMAL_CLIP[self.bits] * rms
        return alpha.clamp_min(torch.finfo(alpha.dtype).tiny)

    def _learned_alpha(self, weight: Tensor) -> Tensor:
        """(O,) the scale from the weights times the gain (in the graph)."""
        return self._stats_alpha(weight) * self.gain.clamp_min(
            _MIN_WEIGHT_GAIN).to(weight.dtype)

    def alpha(self, weight: Tensor) -> Tensor:
        """Clip values ``alpha``: (O, 1, ..., 1), detached, > 0."""
        shape = (weight.shape[0], ) + (1, ) * (weight.dim() - 1)
        if self.mode == 'paper':
            return weight.new_ones(shape)
        if self.learn_clip:
            return self._learned_alpha(weight).detach().reshape(shape)
        return self._stats_alpha(weight).reshape(shape)

    def forward(self, weight: Tensor) -> Tensor:
        """Dequantized weights (same shape), with a straight-through grad
        (and the LSQ gradient of the gain with ``clip='learned'``)."""
        if self.learn_clip:
            per_channel = weight[0].numel()
            return quantize_weight_learned(
                weight, self._learned_alpha(weight), self.bits,
                lsq_grad_scale(per_channel, self.bits))
        return quantize_weight(weight, self.alpha(weight), self.bits)

    def codes(self, weight: Tensor) -> Tuple[Tensor, Tensor]:
        """Integer form: ``w_q = codes * scale``.

        Returns:
            tuple[Tensor, Tensor]: int32 odd codes (``weight``'s shape) and
            ``scale = alpha / (2^M - 1)`` of shape (O, ), in the weight's
            dtype.
        """
        alpha = self.alpha(weight)
        scale = (alpha / num_levels(self.bits)).reshape(-1)
        return weight_codes(weight, 1.0 / alpha, self.bits), scale

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        # The M in use when saved (no buffer: it follows ``self.bits``).
        destination[prefix + 'bits'] = torch.tensor(self.bits,
                                                    dtype=torch.int8)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + 'bits'
        saved = state_dict.get(key)
        if saved is not None:  # (absent: a float or an older checkpoint)
            _check_saved_bits(prefix, 'weight_quantizer', 'w_bits',
                              int(saved), self.bits)
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if key in unexpected_keys:
            unexpected_keys.remove(key)
        gain = prefix + 'gain'
        if self.learn_clip and saved is None and gain in missing_keys:
            # A float checkpoint: the gain starts at 1.
            missing_keys.remove(gain)

    def extra_repr(self) -> str:
        clip = ", clip='learned'" if self.learn_clip else ''
        return f'bits={self.bits}, mode={self.mode!r}{clip}'


class ActivationQuantizer(nn.Module):
    """K-bit activation quantizer with a learned or fixed clip ``beta``.

    State (saved in checkpoints): ``clip`` (a parameter when learned),
    ``signed`` (-1 undecided, 0 unsigned, 1 signed), ``initialized`` and
    ``clip_bits`` (the K the clip was fitted for). A state dict without
    these keys (a float checkpoint) loads without complaint and leaves them
    to the data-driven initialization; one saved at another K raises
    :class:`BitWidthMismatchError`, unless within :func:`allow_bit_change`
    (a step of a progressive 8 -> 4 -> 2 schedule): then it keeps its sign
    and has its learned clip fitted again, for this K, on the first batch.

    Args:
        bits (int): K, 1..8.
        mode (str): ``'auto'``, ``'signed'`` or ``'unsigned'``.
        clip (str | float): ``'learned'`` or a fixed ``beta > 0``.
    """

    def __init__(self,
                 bits: int = 2,
                 mode: str = 'auto',
                 clip: Union[str, float] = 'learned') -> None:
        super().__init__()
        self.bits = check_bits(bits, 'a_bits')
        self.mode = _check_choice(mode, 'a_mode', ACTIVATION_MODES)
        if isinstance(clip, str):
            _check_choice(clip, 'a_clip', ('learned', ))
            self.learn_clip = True
            self.clip = nn.Parameter(torch.tensor(1.0))
        else:
            if isinstance(clip, bool) or not isinstance(
                    clip, (int, float)) or not clip > 0:
                raise ValueError("a_clip must be 'learned' or a number > 0, "
                                 f'got {clip!r}')
            self.learn_clip = False
            self.register_buffer('clip', torch.tensor(float(clip)))
        decided = dict(auto=_UNDECIDED, signed=_SIGNED, unsigned=_UNSIGNED)
        self.register_buffer('signed',
                             torch.tensor(decided[mode], dtype=torch.int8))
        self.register_buffer('initialized', torch.tensor(not self.learn_clip))
        self.register_buffer('clip_bits',
                             torch.tensor(self.bits, dtype=torch.int8))

    @property
    def is_signed(self) -> bool:
        """Whether the levels are signed; raises while still undecided."""
        value = int(self.signed)
        if value == _UNDECIDED:
            raise RuntimeError(
                "a_mode='auto' is decided on the first forward; run one "
                'batch through the layer (or load a checkpoint) first')
        return value == _SIGNED

    @property
    def levels(self) -> int:
        """``L = 2^K - 1``."""
        return num_levels(self.bits)

    def step(self) -> Tensor:
        """0-dim float32 ``beta / L``: the value of one code step."""
        return self.clip.detach().float() / self.levels

    def inv_step(self) -> Tensor:
        """0-dim float32 ``L / beta``, the multiplier the codes use."""
        return self.levels / self.clip.detach().float()

    def initialize_once(self, input: Tensor) -> None:
        """Decide the mode and the clip from ``input`` unless done (or
        loaded) before. An empty batch, or one without finite values,
        decides nothing."""
        if not bool(self.initialized) or int(self.signed) == _UNDECIDED:
            self._initialize(input)

    @torch.no_grad()
    def _initialize(self, input: Tensor) -> None:
        x = input.detach().float().reshape(-1)
        x = x[~torch.isnan(x)]  # NaN says nothing about range or sign
        if int(self.signed) == _UNDECIDED and x.numel():
            is_signed = bool(x.min() < 0)
            self.signed.fill_(_SIGNED if is_signed else _UNSIGNED)
        fitted = False
        if self.learn_clip:
            x = x[torch.isfinite(x)]
            if x.numel():
                self.clip.fill_(self._best_clip(x))
                fitted = True
        fitted = self._agree_across_processes(fitted)
        if fitted or not self.learn_clip:
            self.initialized.fill_(True)

    def _best_clip(self, x: Tensor) -> float:
        """The MSE-best clip for the finite values ``x`` (1-D, not empty)."""
        if x.numel() > _INIT_MAX_SAMPLES:
            stride = x.numel() // _INIT_MAX_SAMPLES
            x = x[::stride][:_INIT_MAX_SAMPLES]
        largest = float(x.abs().max())
        best, best_error = 1.0, float('inf')
        if largest > 0:
            for fraction in _INIT_FRACTIONS.tolist():
                beta = torch.tensor(largest * fraction)
                error = float((self._quantize(x, beta) - x).pow(2).sum())
                if error < best_error:
                    best, best_error = largest * fraction, error
        return best

    def _agree_across_processes(self, fitted: bool) -> bool:
        """Under torch.distributed, every process saw another first batch:
        take signed levels if any process saw a negative input, and the
        mean of the initial clips of the processes that fitted one, so
        that all replicas start the same.

        Returns:
            bool: whether any process fitted a clip.
        """
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return fitted
        signed = self.signed.to(torch.int32)
        dist.all_reduce(signed, op=dist.ReduceOp.MAX)
        self.signed.copy_(signed)
        if self.learn_clip:
            clip = self.clip.detach()
            total = torch.stack([clip, torch.ones_like(clip)]) * fitted
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
            if float(total[1]) > 0:
                self.clip.copy_(total[0] / total[1])
                return True
        return fitted

    def _quantize(self, input: Tensor, beta: Tensor,
                  signed: Union[bool, None] = None) -> Tensor:
        # features per sample; math.prod also covers an empty batch
        grad_scale = lsq_grad_scale(math.prod(input.shape[1:]), self.bits)
        return quantize_activation(
            input, beta, self.bits,
            self.is_signed if signed is None else signed, grad_scale)

    def forward(self, input: Tensor) -> Tensor:
        """Dequantized activations (same shape and dtype as ``input``).

        An empty batch gives an empty output; NaN inputs give NaN outputs.
        """
        self.initialize_once(input)
        signed = int(self.signed)
        if signed == _UNDECIDED:
            # Nothing to decide on yet (empty, or NaN only): the output is
            # the input's empty or NaN tensor, the clip stays in the graph.
            return input * self.clip.to(input.dtype)
        beta = self.clip.clamp_min(torch.finfo(torch.float32).eps)
        return self._quantize(input, beta, signed == _SIGNED)

    def codes(self, input: Tensor) -> Tuple[Tensor, Tensor]:
        """``(q, a)`` int32 codes of ``input``, see
        :func:`mmbinary.quant.activation_codes`."""
        return activation_codes(input, self.inv_step(), self.bits,
                                self.is_signed)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys,
                              error_msgs):
        own = [prefix + name for name in ('clip', 'signed', 'initialized')]
        if not any(key in state_dict for key in own):
            # A float checkpoint: keep the data-driven initialization.
            return
        bits_key = prefix + 'clip_bits'
        saved_bits = state_dict.get(bits_key)
        if saved_bits is not None:
            _check_saved_bits(prefix, 'act_quantizer', 'a_bits',
                              int(saved_bits), self.bits)
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if saved_bits is None:
            # Saved before clip_bits existed: fitted for this K.
            if bits_key in missing_keys:
                missing_keys.remove(bits_key)
            self.clip_bits.fill_(self.bits)
        elif int(saved_bits) != self.bits:
            # (allowed: checked above) the clip is fitted again for this K
            self.clip_bits.fill_(self.bits)
            if self.learn_clip:
                self.initialized.fill_(False)

    def extra_repr(self) -> str:
        clip = 'learned' if self.learn_clip else float(self.clip)
        return f'bits={self.bits}, mode={self.mode!r}, clip={clip}'
