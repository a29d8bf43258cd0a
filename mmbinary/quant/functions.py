# Copyright (c) mmbinary contributors. All rights reserved.
"""Quantizer math and its straight-through (STE) autograd functions.

Weights (M bits, ``H = 2^M - 1``), with a per-output-channel scale
``alpha`` (``alpha = 1`` is the paper's quantizer)::

    u    = w * (1 / alpha)                       # clip range [-1, 1]
    n    = clamp(round((u + 1) * H * 0.5), 0, H) # offset-binary bits
    code = 2 * n - H                             # odd, in [-H, H]
    w_q  = code * (alpha / H)

    d w_q / d w = 1 where |u| <= 1, else 0       # STE through HTanh

Activations (K bits, ``L = 2^K - 1``, clip value ``beta > 0``,
``step = beta / L``, ``inv_step = L / beta``), all in float32, rounding half
to even (``torch.round``)::

    t = x * inv_step
    unsigned:  q = clamp(round(t), 0, L);              a = q
    signed:    q = clamp(round((t + L) * 0.5), 0, L);  a = 2 * q - L
    x_q = a * step

    d x_q / d x    = 1 inside the clip range, else 0          # STE
    d x_q / d beta = (a - t * inside) / L                     # LSQ / PACT

``q`` is the unsigned K-bit code whose bits the packed op stores; ``a`` is
the integer the convolution accumulates. The compiled op repeats this
arithmetic operation by operation, so the codes agree bit for bit.
"""
import math
from typing import Tuple

import torch
from torch import Tensor
from torch.autograd import Function

from .encoding import check_bits, num_levels

#: Clip value, in units of the standard deviation, that minimizes the mean
#: squared error of the odd-level M-bit quantizer on a Gaussian (index M;
#: M = 1 is ``E|z| = sqrt(2 / pi)``). Recomputed in the tests.
GAUSSIAN_OPTIMAL_CLIP = (None, 0.7979, 1.4935, 2.0511, 2.5140, 2.9162,
                         3.2780, 3.6111, 3.9222)


def _check_scale(scale: Tensor, name: str) -> None:
    if not isinstance(scale, Tensor):
        raise TypeError(f'{name} must be a Tensor, got {type(scale).__name__}')
    if not bool((scale > 0).all()):
        raise ValueError(f'{name} must be > 0 everywhere')


def weight_codes(weight: Tensor, inv_alpha: Tensor, bits: int) -> Tensor:
    """Odd integer codes of ``weight`` (no gradient).

    Args:
        weight (Tensor): (O, ...) float weights.
        inv_alpha (Tensor): ``1 / alpha``, broadcastable to ``weight``.
        bits (int): M, 1..8.

    Returns:
        Tensor: int32 odd codes in ``[-(2^M-1), 2^M-1]``, ``weight``'s shape.
    """
    levels = num_levels(check_bits(bits, 'w_bits'))
    u = weight.detach() * inv_alpha
    n = torch.clamp(torch.round((u + 1) * levels * 0.5), 0, levels)
    return (2 * n - levels).to(torch.int32)


def activation_codes(input: Tensor, inv_step: Tensor, bits: int,
                     signed: bool) -> Tuple[Tensor, Tensor]:
    """Quantization codes of an activation tensor (no gradient).

    Args:
        input (Tensor): (*) activations; computed in float32.
        inv_step (Tensor): 0-dim float32 ``(2^K - 1) / beta``.
        bits (int): K, 1..8.
        signed (bool): signed (HTanh) or unsigned (HReLU) levels.

    Returns:
        tuple[Tensor, Tensor]: ``q`` (unsigned K-bit codes, int32) and ``a``
        (the integers the convolution sums: ``q`` or ``2q - L``, int32).
    """
    levels = num_levels(check_bits(bits, 'a_bits'))
    t = input.detach().float() * inv_step.float()
    if signed:
        q = torch.clamp(torch.round((t + levels) * 0.5), 0, levels)
        a = 2 * q - levels
    else:
        q = torch.clamp(torch.round(t), 0, levels)
        a = q
    return q.to(torch.int32), a.to(torch.int32)


class WeightQuantizeSTE(Function):
    """``w -> code * alpha / H`` with a straight-through gradient for ``w``.

    ``alpha`` is treated as a constant (it is computed from the detached
    weights or fixed).
    """

    @staticmethod
    def forward(ctx, weight: Tensor, alpha: Tensor, bits: int) -> Tensor:
        levels = num_levels(check_bits(bits, 'w_bits'))
        # The ops of weight_codes, in place on one buffer.
        u = weight * (1.0 / alpha)
        ctx.save_for_backward(u.abs() <= 1)
        codes = u.add_(1).mul_(levels * 0.5).round_().clamp_(0, levels)
        codes.mul_(2).sub_(levels)  # exact: small odd integers
        return codes.mul_((alpha / levels).to(weight.dtype))

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        inside, = ctx.saved_tensors
        grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_weight = grad_output * inside.to(grad_output.dtype)
        return grad_weight, None, None


def _fake_quantize_activation(input: Tensor, inv_step: Tensor, step: Tensor,
                              levels: int, signed: bool) -> Tensor:
    """``a * step`` in ``input``'s dtype, the codes computed in float32 with
    the ops of :func:`activation_codes`, in place on one buffer (same
    values, fewer passes over memory)."""
    out = input.float() * inv_step
    if signed:
        out.add_(levels).mul_(0.5)
    out.round_().clamp_(0, levels)
    if signed:
        out.mul_(2).sub_(levels)  # exact: small integers
    return out.to(input.dtype).mul_(step.to(input.dtype))


class ActivationQuantizeSTE(Function):
    """``x -> a * step`` with STE for ``x`` and the LSQ gradient for ``beta``.

    The gradient of ``beta`` is multiplied by ``grad_scale`` (LSQ uses
    ``1 / sqrt(features * L)`` to balance it against the weight gradients).
    The backward pass needs no codes: with ``v = a * step`` saved,
    ``sum(g * a) = <g, v> / step`` and
    ``sum(g * t * inside) = inv_step * <grad_x, x>``.
    """

    @staticmethod
    def forward(ctx, input: Tensor, beta: Tensor, bits: int, signed: bool,
                grad_scale: float) -> Tensor:
        levels = num_levels(check_bits(bits, 'a_bits'))
        beta32 = beta.detach().float()
        step = beta32 / levels
        output = _fake_quantize_activation(input, levels / beta32, step,
                                           levels, signed)
        ctx.save_for_backward(input, output, beta32)
        ctx.config = (levels, signed, grad_scale)
        return output

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        input, output, beta32 = ctx.saved_tensors
        levels, signed, grad_scale = ctx.config
        # Inside the clip range: -beta < x < beta (signed), 0 < x < beta.
        low = -float(beta32) if signed else 0.0
        grad_input = torch.ops.aten.hardtanh_backward(
            grad_output, input, low, float(beta32))
        grad_beta = None
        if ctx.needs_input_grad[1]:
            step = beta32 / levels
            g_dot_a = torch.vdot(grad_output.reshape(-1).float(),
                                 output.reshape(-1).float()) / step
            g_dot_t = torch.vdot(grad_input.reshape(-1).float(),
                                 input.reshape(-1).float()) / step
            grad_beta = (g_dot_a - g_dot_t) / levels * grad_scale
            grad_beta = grad_beta.reshape(beta32.shape)
        if not ctx.needs_input_grad[0]:
            grad_input = None
        return grad_input, grad_beta, None, None, None


def quantize_weight(weight: Tensor, alpha: Tensor, bits: int) -> Tensor:
    """Dequantized M-bit weights with STE (see the module docstring).

    Args:
        weight (Tensor): (O, ...) float weights.
        alpha (Tensor): > 0 clip value, broadcastable to ``weight``
            (for example (O, 1, 1, 1)); treated as a constant.
        bits (int): M, 1..8.
    """
    check_bits(bits, 'w_bits')
    _check_scale(alpha, 'alpha')
    return WeightQuantizeSTE.apply(weight, alpha.detach(), bits)


class WeightQuantizeLSQ(Function):
    """``w -> code * alpha / H`` with STE for ``w`` and the LSQ gradient
    for a per-output-channel ``alpha`` (O,)::

        d w_q / d alpha = code / H - u * inside      (u = w / alpha)

    summed over each channel's weights and multiplied by ``grad_scale``.
    """

    @staticmethod
    def forward(ctx, weight: Tensor, alpha: Tensor, bits: int,
                grad_scale: float) -> Tensor:
        levels = num_levels(check_bits(bits, 'w_bits'))
        shape = (-1, ) + (1, ) * (weight.dim() - 1)
        alpha_b = alpha.detach().reshape(shape)
        codes = weight_codes(weight, 1.0 / alpha_b, bits).to(weight.dtype)
        ctx.save_for_backward(weight, codes, alpha_b)
        ctx.config = (levels, grad_scale)
        return codes * (alpha_b / levels)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        weight, codes, alpha_b = ctx.saved_tensors
        levels, grad_scale = ctx.config
        u = weight / alpha_b
        inside = u.abs() <= 1
        grad_weight = grad_output * inside
        grad_alpha = None
        if ctx.needs_input_grad[1]:
            local = codes / levels - u * inside
            grad_alpha = (grad_output * local).reshape(
                weight.shape[0], -1).sum(1) * grad_scale
        return grad_weight, grad_alpha, None, None


def quantize_weight_learned(weight: Tensor, alpha: Tensor, bits: int,
                            grad_scale: float) -> Tensor:
    """Dequantized M-bit weights with STE and the LSQ gradient of a
    per-output-channel ``alpha``.

    Args:
        weight (Tensor): (O, ...) float weights.
        alpha (Tensor): (O,) clip values, > 0, in the autograd graph.
        bits (int): M, 1..8.
        grad_scale (float): multiplier of alpha's gradient.
    """
    check_bits(bits, 'w_bits')
    _check_scale(alpha, 'alpha')
    if alpha.shape != weight.shape[:1]:
        raise ValueError(f'alpha must have shape ({weight.shape[0]},), got '
                         f'{tuple(alpha.shape)}')
    return WeightQuantizeLSQ.apply(weight, alpha, bits, grad_scale)


def quantize_activation(input: Tensor,
                        beta: Tensor,
                        bits: int,
                        signed: bool,
                        grad_scale: float = 1.0) -> Tensor:
    """Dequantized K-bit activations with STE and the LSQ gradient of beta.

    Args:
        input (Tensor): (*) activations.
        beta (Tensor): 0-dim clip value, > 0 (a parameter when learned).
        bits (int): K, 1..8.
        signed (bool): signed (HTanh) or unsigned (HReLU) levels.
        grad_scale (float): multiplier of beta's gradient.
    """
    check_bits(bits, 'a_bits')
    _check_scale(beta, 'beta')
    if beta.dim() != 0:
        raise ValueError(f'beta must be a 0-dim tensor, got shape '
                         f'{tuple(beta.shape)}')
    return ActivationQuantizeSTE.apply(input, beta, bits, bool(signed),
                                       float(grad_scale))


def lsq_grad_scale(features: int, bits: int) -> float:
    """LSQ's step-gradient scale ``1 / sqrt(features * (2^K - 1))``."""
    return 1.0 / math.sqrt(max(features, 1) * num_levels(bits))
