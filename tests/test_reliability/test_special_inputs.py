# Copyright (c) mmbinary contributors. All rights reserved.
"""Property tests of the unpacked MBB layers on special inputs: empty
batches, NaN and infinities (the packed op's NaN behaviour is checked in
test_nan.py)."""
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mmbinary.models import MBBConv2d, MBBLinear
from mmbinary.quant import ActivationQuantizer

SPECIALS = dict(nan=float('nan'), inf=float('inf'), ninf=float('-inf'))


@st.composite
def conv_cases(draw):
    groups = draw(st.sampled_from([1, 1, 2]))
    kernel = draw(st.sampled_from([1, 3]))
    dilation = draw(st.integers(1, 2))
    options = dict(
        in_channels=groups * draw(st.integers(1, 3)),
        out_channels=groups * draw(st.integers(1, 3)),
        kernel_size=kernel,
        stride=draw(st.integers(1, 2)),
        padding=draw(st.integers(0, 2)),
        dilation=dilation,
        groups=groups,
        bias=draw(st.booleans()),
        w_bits=draw(st.integers(1, 4)),
        a_bits=draw(st.integers(1, 4)),
        a_mode=draw(st.sampled_from(['signed', 'unsigned'])),
    )
    size = (kernel - 1) * dilation + draw(st.integers(1, 6))
    # special values: kind and (flat) positions
    kind = draw(st.sampled_from(sorted(SPECIALS) + ['mixed', 'empty']))
    count = draw(st.integers(1, 3))
    positions = draw(st.lists(st.integers(0, 10**6), min_size=count,
                              max_size=count))
    return options, size, kind, positions, draw(st.integers(0, 2**16))


def with_specials(x, kind, positions, generator_seed):
    x = x.clone()
    flat = x.view(-1)
    names = sorted(SPECIALS)
    for index, position in enumerate(positions):
        name = names[(generator_seed + index) % 3] if kind == 'mixed' else kind
        flat[position % flat.numel()] = SPECIALS[name]
    return x


def calibrated_conv(options, size, seed):
    torch.manual_seed(seed)
    conv = MBBConv2d(**options)
    conv(torch.randn(2, options['in_channels'], size, size))
    return conv.eval()


def receptive_nan_mask(conv, x):
    """Outputs whose receptive field holds a NaN input."""
    weight = torch.ones(conv.out_channels,
                        conv.in_channels // conv.groups, *conv.kernel_size)
    hits = F.conv2d(torch.isnan(x).float(), weight, None, conv.stride,
                    conv.padding, conv.dilation, conv.groups)
    return hits > 0


@settings(max_examples=60, deadline=None)
@given(conv_cases())
def test_mbb_conv_on_empty_nan_and_inf_inputs(case):
    options, size, kind, positions, seed = case
    conv = calibrated_conv(options, size, seed)
    clip = float(conv.act_quantizer.clip.detach())
    state = {k: v.clone() for k, v in conv.state_dict().items()}
    batch = 0 if kind == 'empty' else 2
    x = torch.randn(batch, options['in_channels'], size, size)
    with torch.no_grad():
        reference = conv(x)
        if kind == 'empty':
            assert reference.shape[0] == 0 and reference.shape[1] == \
                options['out_channels']
            return
        special = with_specials(x, kind, positions, seed)
        out = conv(special)
        # NaN reaches exactly the outputs that see it, as in a float conv
        mask = receptive_nan_mask(conv, special)
        assert torch.equal(torch.isnan(out), mask)
        # an infinity is the largest (smallest) level: as a value past the
        # clip; every other output is what it would be without specials
        clamped = torch.nan_to_num(special, nan=0.0, posinf=2 * clip + 1,
                                   neginf=-2 * clip - 1)
        expected = conv(clamped)
        assert torch.isfinite(out[~mask]).all()
        torch.testing.assert_close(out[~mask], expected[~mask])
    # and nothing of the layer's state moved
    for key, value in conv.state_dict().items():
        assert torch.equal(value, state[key]), key


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 16), st.integers(1, 4),
       st.sampled_from(sorted(SPECIALS) + ['mixed']),
       st.lists(st.integers(0, 10**6), min_size=1, max_size=3),
       st.integers(0, 2**16))
def test_mbb_linear_on_nan_and_inf_inputs(features, a_bits, kind, positions,
                                          seed):
    torch.manual_seed(seed)
    layer = MBBLinear(features, 3, a_bits=a_bits)
    layer(torch.randn(4, features))
    layer.eval()
    clip = float(layer.act_quantizer.clip.detach())
    x = torch.randn(3, features)
    special = with_specials(x, kind, positions, seed)
    with torch.no_grad():
        out = layer(special)
        rows = torch.isnan(special).any(1)
        assert torch.equal(torch.isnan(out), rows[:, None].expand_as(out))
        clamped = torch.nan_to_num(special, nan=0.0, posinf=2 * clip + 1,
                                   neginf=-2 * clip - 1)
        torch.testing.assert_close(out[~rows], layer(clamped)[~rows])
        assert layer(torch.randn(0, features)).shape == (0, 3)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(sorted(SPECIALS) + ['mixed']),
       st.lists(st.integers(0, 10**6), min_size=1, max_size=20),
       st.integers(1, 8), st.integers(0, 2**16))
def test_the_first_batch_fits_the_clip_on_its_finite_values(
        kind, positions, bits, seed):
    torch.manual_seed(seed)
    x = torch.randn(64) * 3
    special = with_specials(x, kind, positions, seed)
    fitted = ActivationQuantizer(bits)
    fitted(special)
    finite = special[torch.isfinite(special)]
    reference = ActivationQuantizer(bits)
    reference(finite)
    assert bool(fitted.initialized)
    assert torch.equal(fitted.clip.detach(), reference.clip.detach())
    # the sign comes from the non-NaN values (-inf is negative)
    not_nan = special[~torch.isnan(special)]
    assert fitted.is_signed == bool(not_nan.min() < 0)


def test_nan_only_first_batch_decides_nothing():
    quantizer = ActivationQuantizer(2)
    out = quantizer(torch.full((2, 5), float('nan')))
    assert torch.isnan(out).all()
    assert not bool(quantizer.initialized) and int(quantizer.signed) == -1
