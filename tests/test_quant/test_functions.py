# Copyright (c) mmbinary contributors. All rights reserved.
import math

import numpy as np
import pytest
import torch

from mmbinary.quant import (GAUSSIAN_OPTIMAL_CLIP, ActivationQuantizeSTE,
                            activation_codes, quantize_activation,
                            quantize_weight, weight_codes)


@pytest.mark.parametrize('bits', range(1, 9))
def test_paper_weight_quantizer_hits_the_odd_ladder(bits):
    levels = 2**bits - 1
    w = torch.linspace(-1.5, 1.5, 2001, dtype=torch.float64)
    wq = quantize_weight(w, torch.ones(1, dtype=torch.float64), bits)
    expected_levels = torch.arange(-levels, levels + 1, 2).double() / levels
    torch.testing.assert_close(wq.unique(), expected_levels, rtol=0,
                               atol=1e-12)
    # The paper's formula: 2 * (round(H (x + 1) / 2) / H - 1/2), x clipped.
    x = w.clamp(-1, 1)
    paper = 2 * (torch.round(levels * (x + 1) / 2) / levels - 0.5)
    torch.testing.assert_close(wq, paper, rtol=0, atol=1e-12)


def test_weight_codes_scale_and_clip_per_channel():
    w = torch.tensor([[0.1, -0.1, 0.31, 5.0], [1.0, -1.0, 0.0, -7.0]])
    alpha = torch.tensor([[0.3], [3.0]])
    codes = weight_codes(w, 1 / alpha, 2)
    # u = w / alpha -> n = round((u + 1) * 1.5) -> 2n - 3.
    assert codes.tolist() == [[1, -1, 3, 3], [1, -1, 1, -3]]
    wq = quantize_weight(w, alpha, 2)
    torch.testing.assert_close(wq, codes.float() * alpha / 3)


@pytest.mark.parametrize('bits', range(1, 9))
@pytest.mark.parametrize('signed', [False, True])
def test_activation_levels_are_exactly_the_documented_ones(bits, signed):
    levels = 2**bits - 1
    beta = torch.tensor(2.0)
    x = torch.linspace(-3, 3, 4001)
    xq = quantize_activation(x, beta, bits, signed)
    step = 2.0 / levels
    codes = (torch.arange(-levels, levels + 1, 2)
             if signed else torch.arange(0, levels + 1))
    assert set(xq.unique().tolist()) == set((codes * step).tolist())
    q, a = activation_codes(x, levels / beta, bits, signed)
    assert q.min() >= 0 and q.max() <= levels
    assert torch.equal(a, 2 * q - levels if signed else q)
    torch.testing.assert_close(xq, a.float() * step)


def test_unsigned_zero_is_exact_and_ties_round_to_even():
    beta = torch.tensor(3.0)  # step 1 at 2 bits
    x = torch.tensor([0.0, 0.5, 1.5, 2.5, -0.7, 9.0])
    q, _ = activation_codes(x, 3 / beta, 2, signed=False)
    assert q.tolist() == [0, 0, 2, 2, 0, 3]
    assert quantize_activation(x, beta, 2, False)[0] == 0


def test_signed_codes_follow_the_offset_formula():
    beta = torch.tensor(3.0)  # step 1 at 2 bits: levels -3, -1, 1, 3
    x = torch.tensor([0.0, 0.9, 1.1, -2.5, 2.0, 8.0, -8.0])
    q, a = activation_codes(x, 3 / beta, 2, signed=True)
    # q = round((t + 3) / 2): 1.5->2, 1.95->2, 2.05->2, 0.25->0, 2.5->2
    assert q.tolist() == [2, 2, 2, 0, 2, 3, 0]
    assert a.tolist() == [1, 1, 1, -3, 1, 3, -3]


def _surrogate_at(x0, beta0, bits, signed):
    """The straight-through surrogate around ``(x0, beta0)``: a smooth
    function whose codes and clip mask are frozen at that point, so its
    exact gradient there is the STE gradient the docs state."""
    levels = 2**bits - 1
    _, a0 = activation_codes(x0, levels / beta0.detach().float(), bits,
                             signed)
    t0 = (x0 * levels / beta0).detach()
    low, high = (-levels, levels) if signed else (0, levels)
    inside = ((t0 >= low) & (t0 <= high)).to(x0.dtype)
    a0 = a0.to(x0.dtype)

    def surrogate(x, beta):
        return (a0 + inside * (x * levels / beta - t0)) * beta / levels

    return surrogate


@pytest.mark.parametrize('signed', [False, True])
@pytest.mark.parametrize('bits', [1, 2, 4, 8])
def test_activation_ste_gradients_match_the_surrogate(signed, bits):
    gen = torch.Generator().manual_seed(bits)
    x = (torch.randn(64, generator=gen, dtype=torch.float64) *
         2).requires_grad_()
    beta = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(64, generator=gen, dtype=torch.float64)
    surrogate = _surrogate_at(x, beta, bits, signed)
    out = ActivationQuantizeSTE.apply(x, beta, bits, signed, 1.0)
    gx, gb = torch.autograd.grad((out * weight).sum(), (x, beta))
    sx, sb = torch.autograd.grad((surrogate(x, beta) * weight).sum(),
                                 (x, beta))
    torch.testing.assert_close(out, surrogate(x, beta))
    torch.testing.assert_close(gx, sx)
    torch.testing.assert_close(gb, sb, rtol=1e-5, atol=1e-6)
    # Zero outside the clip range, identity inside.
    low = -1.3 if signed else 0.0
    outside = (x.detach() < low) | (x.detach() > 1.3)
    assert outside.any() and (~outside).any()
    assert torch.equal(gx[outside], torch.zeros_like(gx[outside]))
    assert torch.equal(gx[~outside], weight[~outside])


@pytest.mark.parametrize('signed', [False, True])
def test_surrogate_passes_gradcheck(signed):
    x = (torch.rand(16, dtype=torch.float64) * 3 - 1.5).requires_grad_()
    beta = torch.tensor(1.1, dtype=torch.float64, requires_grad=True)
    surrogate = _surrogate_at(x, beta, 2, signed)
    assert torch.autograd.gradcheck(surrogate, (x, beta))


def test_weight_ste_gradient_is_identity_inside_the_clip():
    w = torch.tensor([-2.0, -0.5, 0.0, 0.7, 1.0, 1.2], dtype=torch.float64,
                     requires_grad=True)
    out = quantize_weight(w, torch.ones(1, dtype=torch.float64), 2)
    grad, = torch.autograd.grad(out.sum() * 3, w)
    assert grad.tolist() == [0.0, 3.0, 3.0, 3.0, 3.0, 0.0]
    # The clip it stands for has the same gradient (bounds included).
    ref, = torch.autograd.grad(w.clamp(-1, 1).sum() * 3, w)
    assert torch.equal(grad, ref)


def test_lsq_gradient_scale_multiplies_the_beta_gradient():
    x = torch.randn(32, dtype=torch.float64)
    beta = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    g1, = torch.autograd.grad(
        ActivationQuantizeSTE.apply(x, beta, 2, True, 1.0).sum(), beta)
    g2, = torch.autograd.grad(
        ActivationQuantizeSTE.apply(x, beta, 2, True, 0.25).sum(), beta)
    torch.testing.assert_close(g2, g1 * 0.25)


def test_gaussian_optimal_clips_are_the_mse_minimizers():
    z = np.linspace(-12, 12, 200001)
    p = np.exp(-z * z / 2)
    p /= p.sum()

    def mse(clip, bits):
        levels = 2**bits - 1
        n = np.round((np.clip(z / clip, -1, 1) + 1) * levels * 0.5)
        return float(((z - (2 * n - levels) * clip / levels)**2 * p).sum())

    assert GAUSSIAN_OPTIMAL_CLIP[1] == pytest.approx(math.sqrt(2 / math.pi),
                                                     abs=1e-4)
    for bits in range(1, 9):
        clip = GAUSSIAN_OPTIMAL_CLIP[bits]
        best = mse(clip, bits)
        assert best <= mse(clip * 0.98, bits)
        assert best <= mse(clip * 1.02, bits)


def test_bad_arguments_are_refused():
    x = torch.randn(4)
    with pytest.raises(ValueError, match='a_bits'):
        quantize_activation(x, torch.tensor(1.0), 9, True)
    with pytest.raises(ValueError, match='beta must be > 0'):
        quantize_activation(x, torch.tensor(0.0), 2, True)
    with pytest.raises(ValueError, match='0-dim'):
        quantize_activation(x, torch.ones(2), 2, True)
    with pytest.raises(ValueError, match='w_bits'):
        quantize_weight(x, torch.ones(1), 0)
    with pytest.raises(ValueError, match='alpha must be > 0'):
        quantize_weight(x, -torch.ones(1), 2)
