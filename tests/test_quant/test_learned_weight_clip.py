# Copyright (c) mmbinary contributors. All rights reserved.
"""``w_clip='learned'``: the weight scale from the weights times a learned
per-channel gain (LSQ gradient), packed like any other scale."""
import pytest
import torch

from mmbinary.models import MBBConv2d, MBBLinear
from mmbinary.models.packing import PackedMBBConv2d, PackedMBBLinear
from mmbinary.quant import WeightQuantizer, num_levels
from mmbinary.quant.functions import lsq_grad_scale


def calibrated(layer, x):
    layer.train()
    layer(x)
    return layer.eval()


@pytest.mark.parametrize('bits', [1, 2, 4])
def test_gain_starts_at_the_stats_scale(bits):
    torch.manual_seed(bits)
    weight = torch.randn(6, 5, 3, 3)
    stats = WeightQuantizer(bits)
    learned = WeightQuantizer(bits, clip='learned', channels=6)
    assert torch.equal(learned.gain, torch.ones(6))
    assert torch.equal(learned(weight), stats(weight))
    assert torch.equal(learned.alpha(weight), stats.alpha(weight))


@pytest.mark.parametrize('bits', [1, 2, 3])
def test_gain_gradient_is_the_lsq_gradient(bits):
    torch.manual_seed(10 + bits)
    weight = torch.randn(4, 3, 3, 3, requires_grad=True)
    quantizer = WeightQuantizer(bits, clip='learned', channels=4)
    with torch.no_grad():
        quantizer.gain.copy_(torch.tensor([0.5, 0.9, 1.3, 2.0]))
    grad_out = torch.randn(4, 3, 3, 3)
    (quantizer(weight) * grad_out).sum().backward()
    levels = num_levels(bits)
    flat = weight.detach().reshape(4, -1)
    stats = (flat.abs().mean(1) if bits == 1 else
             quantizer._stats_alpha(weight.detach()))
    alpha = (stats * quantizer.gain.detach()).view(4, 1, 1, 1)
    u = weight.detach() / alpha
    inside = (u.abs() <= 1).float()
    codes = torch.clamp(torch.round((u + 1) * levels * 0.5), 0,
                        levels) * 2 - levels
    local = codes / levels - u * inside
    expected_alpha = (grad_out * local).reshape(4, -1).sum(1) * \
        lsq_grad_scale(27, bits)
    torch.testing.assert_close(quantizer.gain.grad, expected_alpha * stats)
    torch.testing.assert_close(weight.grad, grad_out * inside)


def test_learned_gain_is_packed_exactly():
    torch.manual_seed(0)
    conv = MBBConv2d(33, 7, 3, padding=1, w_bits=2, a_bits=2,
                     w_clip='learned')
    with torch.no_grad():
        conv.weight_quantizer.gain.uniform_(0.4, 1.6)
    x = torch.randn(2, 33, 9, 10)
    calibrated(conv, x)
    stats_codes, _ = WeightQuantizer(2).codes(conv.weight)
    codes, _ = conv.weight_quantizer.codes(conv.weight)
    assert not torch.equal(codes, stats_codes)  # the gain changed codes
    packed = PackedMBBConv2d.from_mbb(conv)
    with torch.no_grad():
        reference = conv(x)
    tolerance = 1e-5 * reference.abs().max().item() + 1e-6
    torch.testing.assert_close(packed(x), reference, rtol=1e-4,
                               atol=tolerance)
    linear = MBBLinear(40, 5, w_bits=3, a_bits=2, w_clip='learned')
    with torch.no_grad():
        linear.weight_quantizer.gain.uniform_(0.5, 1.5)
    y = torch.randn(3, 40)
    calibrated(linear, y)
    with torch.no_grad():
        torch.testing.assert_close(
            PackedMBBLinear.from_mbb(linear)(y), linear(y), rtol=1e-4,
            atol=1e-5)


def test_a_training_step_moves_the_gain():
    torch.manual_seed(1)
    conv = MBBConv2d(8, 4, 3, padding=1, w_bits=2, a_bits=2,
                     w_clip='learned')
    optimizer = torch.optim.SGD(conv.parameters(), lr=0.1)
    x, target = torch.randn(2, 8, 6, 6), torch.randn(2, 4, 6, 6)
    (conv(x) - target).square().mean().backward()
    assert bool((conv.weight_quantizer.gain.grad != 0).any())
    optimizer.step()
    assert not torch.equal(conv.weight_quantizer.gain, torch.ones(4))


def test_float_checkpoints_load_and_gains_need_a_learned_model():
    float_conv = torch.nn.Conv2d(8, 4, 3)
    conv = MBBConv2d(8, 4, 3, w_clip='learned')
    conv.load_state_dict(float_conv.state_dict(), strict=False)
    result = conv.load_state_dict(
        dict(float_conv.state_dict(), **{
            k: v
            for k, v in conv.state_dict().items() if 'act_quantizer' in k
        }),
        strict=True)
    assert not result.missing_keys
    assert torch.equal(conv.weight_quantizer.gain, torch.ones(4))
    with pytest.raises(RuntimeError, match='weight_quantizer.gain'):
        MBBConv2d(8, 4, 3).load_state_dict(conv.state_dict(), strict=True)


def test_bad_w_clip_is_refused():
    with pytest.raises(ValueError, match='w_clip must be one of'):
        MBBConv2d(8, 4, 3, w_clip='mse')
    with pytest.raises(ValueError, match="needs w_mode='channel'"):
        MBBConv2d(8, 4, 3, w_mode='paper', w_clip='learned')
    with pytest.raises(ValueError, match='needs channels'):
        WeightQuantizer(2, clip='learned')
