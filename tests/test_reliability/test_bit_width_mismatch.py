# Copyright (c) mmbinary contributors. All rights reserved.
"""Defect 6: config and checkpoint disagreeing on a layer's bit widths is
an error (a BitWidthMismatchError, a ValueError) naming the layer and both
widths, unless the change is asked for (the progressive-training path)."""
import pytest
import torch
from tiny_detector import W4A4_OPTIONS, build_model, run_tool
from torch import nn

from mmbinary.models import MBBConv2d
from mmbinary.models.packing import (apply_packed_layout, convert_to_packed,
                                     packed_layout)


class Net(nn.Module):

    def __init__(self, w_bits: int, a_bits: int):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = MBBConv2d(8, 8, 3, padding=1, w_bits=w_bits,
                              a_bits=a_bits)

    def forward(self, x):
        return self.body(self.stem(x))


def trained(w_bits: int, a_bits: int) -> Net:
    torch.manual_seed(0)
    net = Net(w_bits, a_bits)
    net(torch.randn(2, 3, 8, 8))
    return net.eval()


@pytest.mark.parametrize('bits, message', [
    ((4, 2), 'body: the config has w_bits=4, the checkpoint w_bits=2'),
    ((2, 4), 'body: the config has a_bits=4, the checkpoint a_bits=2'),
])
def test_unpacked_checkpoint_of_other_bits_is_refused(bits, message):
    state = trained(2, 2).state_dict()
    with pytest.raises(ValueError, match=message):
        Net(*bits).load_state_dict(state)
    # Same bits: loads strictly; old checkpoints without the record load.
    Net(2, 2).load_state_dict(state, strict=True)
    old = {k: v for k, v in state.items() if k != 'body.weight_quantizer.bits'}
    Net(4, 2).load_state_dict(old, strict=True)


def test_asked_for_bit_change_loads_and_refits_the_clip():
    from mmbinary.quant import allow_bit_change
    two = trained(2, 2)
    four = Net(4, 4)
    with allow_bit_change():
        four.load_state_dict(two.state_dict(), strict=True)
    assert torch.equal(four.body.weight, two.body.weight)
    assert not bool(four.body.act_quantizer.initialized)  # fitted again
    # it records its own bits from now on
    assert int(four.state_dict()['body.weight_quantizer.bits']) == 4
    with pytest.raises(ValueError):
        Net(2, 2).load_state_dict(four.state_dict())


def test_packed_checkpoint_of_other_bits_is_refused():
    packed = convert_to_packed(trained(2, 2))
    layout = packed_layout(packed)
    with pytest.raises(ValueError,
                       match=r'body: config W4A4, checkpoint W2A2'):
        apply_packed_layout(Net(4, 4), layout)
    apply_packed_layout(Net(2, 2), layout)
    from mmbinary.quant import allow_bit_change
    with allow_bit_change():
        model = apply_packed_layout(Net(4, 4), layout)
    assert model.body.w_bits == 2  # runs as the checkpoint was packed


def test_unpacked_state_under_a_w4a4_config_is_refused(tiny):
    options = dict(option.split('=') for option in W4A4_OPTIONS)
    model = build_model(str(tiny['config']),
                        {key: int(value) for key, value in options.items()})
    state = torch.load(tiny['checkpoint'], weights_only=True)['state_dict']
    with pytest.raises(ValueError, match='config has w_bits=4, '
                       'the checkpoint w_bits=2'):
        model.load_state_dict(state)


@pytest.mark.slow
def test_test_tool_stops_on_a_packed_w2a2_checkpoint_under_w4a4(tiny):
    result = run_tool('test.py', tiny['config'], tiny['packed'], '--packed',
                      '--work-dir', tiny['root'] / 'w4', '--cfg-options',
                      *W4A4_OPTIONS, cwd=tiny['root'])
    assert result.returncode == 1, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr
    assert 'config W4A4, checkpoint W2A2' in result.stderr


@pytest.mark.slow
def test_export_tool_stops_on_a_checkpoint_of_other_bits(tiny):
    result = run_tool('export_packed.py', tiny['config'], tiny['checkpoint'],
                      tiny['root'] / 'export_w4', '--input-size', 32, 32,
                      '--cfg-options', *W4A4_OPTIONS, cwd=tiny['root'])
    assert result.returncode == 1, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr
    assert 'the config has w_bits=4, the checkpoint w_bits=2' in \
        result.stderr
    assert not (tiny['root'] / 'export_w4').exists()
