# Copyright (c) mmbinary contributors. All rights reserved.
import pytest
import torch

from mmbinary.quant import (GAUSSIAN_OPTIMAL_CLIP, ActivationQuantizer,
                            BitWidthMismatchError, WeightQuantizer,
                            allow_bit_change)


def test_channel_scale_is_mean_abs_at_one_bit_and_gaussian_rule_above():
    weight = torch.randn(4, 3, 3, 3)
    flat = weight.reshape(4, -1)
    alpha1 = WeightQuantizer(1).alpha(weight).reshape(-1)
    torch.testing.assert_close(alpha1, flat.abs().mean(1))
    alpha3 = WeightQuantizer(3).alpha(weight).reshape(-1)
    torch.testing.assert_close(
        alpha3, GAUSSIAN_OPTIMAL_CLIP[3] * flat.pow(2).mean(1).sqrt())
    assert torch.equal(WeightQuantizer(3, 'paper').alpha(weight),
                       torch.ones(4, 1, 1, 1))


def test_one_bit_channel_mode_is_sign_times_mean_abs():
    weight = torch.randn(5, 7)
    out = WeightQuantizer(1)(weight)
    expected = weight.sign() * weight.abs().mean(1, keepdim=True)
    torch.testing.assert_close(out, expected)


def test_weight_codes_and_scale_rebuild_the_quantized_weight():
    weight = torch.randn(6, 2, 3, 3)
    quantizer = WeightQuantizer(4)
    codes, scale = quantizer.codes(weight)
    assert codes.dtype == torch.int32 and scale.shape == (6, )
    assert bool((codes % 2 != 0).all()) and codes.abs().max() <= 15
    torch.testing.assert_close(quantizer(weight),
                               codes.float() * scale.view(-1, 1, 1, 1))


def test_auto_mode_is_decided_by_the_first_batch():
    relu_input = torch.rand(2, 3, 4, 4)
    unsigned = ActivationQuantizer(2)
    with pytest.raises(RuntimeError, match='first forward'):
        unsigned.is_signed
    unsigned(relu_input)
    assert not unsigned.is_signed and int(unsigned.signed) == 0
    signed = ActivationQuantizer(2)
    signed(torch.randn(2, 3, 4, 4))
    assert signed.is_signed
    # Later batches do not change the decision.
    signed(relu_input)
    assert signed.is_signed


def test_data_initialization_picks_the_mse_best_clip():
    torch.manual_seed(0)
    x = torch.randn(4096).relu()
    quantizer = ActivationQuantizer(2, 'unsigned')
    quantizer(x)
    beta = float(quantizer.clip.detach())
    assert 0 < beta < float(x.max())

    def error(clip):
        fixed = ActivationQuantizer(2, 'unsigned', clip=clip)
        return float((fixed(x) - x).pow(2).sum())

    assert error(beta) <= error(float(x.max()))
    assert error(beta) <= error(beta * 0.5)
    assert bool(quantizer.initialized)


def test_fixed_clip_is_the_papers_hard_tanh():
    quantizer = ActivationQuantizer(1, 'signed', clip=1.0)
    x = torch.tensor([-3.0, -0.2, 0.3, 2.0])
    assert quantizer(x).tolist() == [-1.0, -1.0, 1.0, 1.0]
    assert not quantizer.learn_clip
    assert 'clip=1.0' in repr(quantizer)


def test_state_round_trip_and_float_checkpoints():
    quantizer = ActivationQuantizer(3)
    quantizer(torch.rand(10))
    state = quantizer.state_dict()
    fresh = ActivationQuantizer(3)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.clip, quantizer.clip)
    assert not fresh.is_signed and bool(fresh.initialized)
    # A state dict without the quantizer keys (a float checkpoint) leaves
    # the data-driven initialization pending.
    other = ActivationQuantizer(3)
    result = other.load_state_dict({}, strict=True)
    assert not result.missing_keys
    assert not bool(other.initialized)


def test_step_and_inv_step_are_float32_and_reciprocal():
    quantizer = ActivationQuantizer(4, 'unsigned', clip=3.0)
    assert quantizer.step().dtype == torch.float32
    assert float(quantizer.step()) == pytest.approx(0.2)
    assert float(quantizer.inv_step()) == pytest.approx(5.0)
    q, a = quantizer.codes(torch.tensor([0.1, 0.3, 10.0]))
    assert q.tolist() == [0, 2, 15] and torch.equal(q, a)


def test_a_checkpoint_of_another_precision_refits_the_clip():
    torch.manual_seed(0)
    x = torch.randn(4096).abs() * 3
    eight = ActivationQuantizer(8, 'auto')
    eight(x)
    two = ActivationQuantizer(2, 'auto')
    with pytest.raises(BitWidthMismatchError, match='a_bits=2, the '
                       'checkpoint a_bits=8'):
        two.load_state_dict(eight.state_dict(), strict=True)
    assert not bool(two.initialized) and int(two.signed) == -1  # untouched
    with allow_bit_change():  # the progressive path asks for it
        two.load_state_dict(eight.state_dict(), strict=True)
    # the sign decision is kept, the 8-bit clip is not used at 2 bits
    assert int(two.signed) == int(eight.signed)
    assert not bool(two.initialized)
    assert int(two.clip_bits) == 2
    two(x)
    fresh = ActivationQuantizer(2, 'auto')
    fresh(x)
    assert torch.equal(two.clip.detach(), fresh.clip.detach())
    assert not torch.equal(two.clip.detach(), eight.clip.detach())


def test_a_checkpoint_saved_before_clip_bits_keeps_its_clip():
    quantizer = ActivationQuantizer(2, 'auto')
    quantizer(torch.rand(256))
    old_state = {key: value for key, value in quantizer.state_dict().items()
                 if key != 'clip_bits'}
    loaded = ActivationQuantizer(2, 'auto')
    loaded.load_state_dict(old_state, strict=True)
    assert bool(loaded.initialized)
    assert torch.equal(loaded.clip.detach(), quantizer.clip.detach())
    assert int(loaded.clip_bits) == 2


def test_weight_bits_are_saved_as_in_use_and_checked_on_load():
    quantizer = WeightQuantizer(2)
    assert int(quantizer.state_dict()['bits']) == 2
    quantizer.bits = 3  # (as a schedule changing bits in place would)
    assert int(quantizer.state_dict()['bits']) == 3
    with pytest.raises(BitWidthMismatchError, match='w_bits=2, the '
                       'checkpoint w_bits=3'):
        WeightQuantizer(2).load_state_dict(quantizer.state_dict())
    with allow_bit_change():
        WeightQuantizer(2).load_state_dict(quantizer.state_dict())
    WeightQuantizer(2).load_state_dict({}, strict=True)  # older checkpoints
