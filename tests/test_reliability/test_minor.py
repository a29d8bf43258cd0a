# Copyright (c) mmbinary contributors. All rights reserved.
"""Defect 9: string paddings of the packed conv, re-packing a packed
checkpoint, and a config path that does not exist."""
import pytest
import torch
from tiny_detector import run_tool

from mmbinary.models import MBBConv2d
from mmbinary.models.packing import PackedMBBConv2d


def packed_args(**kwargs):
    return dict(w_bits=2, a_bits=2, signed=True, **kwargs)


def test_packed_conv_takes_same_and_valid_padding():
    same = PackedMBBConv2d(4, 4, 3, padding='same', **packed_args())
    assert same.padding == (1, 1)
    dilated = PackedMBBConv2d(4, 4, (3, 5), padding='same', dilation=2,
                              **packed_args())
    assert dilated.padding == (2, 4)
    assert PackedMBBConv2d(4, 4, 3, padding='valid',
                           **packed_args()).padding == (0, 0)
    # its config rebuilds it (numbers, as the checkpoint layout stores)
    assert PackedMBBConv2d(**same.config()).config() == same.config()


@pytest.mark.parametrize('kwargs, message', [
    (dict(padding='full'), r"one of \('same', 'valid'\), got 'full'"),
    (dict(padding='same', stride=2), 'needs stride 1'),
    (dict(kernel_size=4, padding='same'), 'pads unevenly'),
])
def test_packed_conv_refuses_other_string_padding(kwargs, message):
    options = {'kernel_size': 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        PackedMBBConv2d(4, 4, **options, **packed_args())


@pytest.mark.ext
def test_same_padding_packed_conv_equals_the_mbb_conv():
    torch.manual_seed(0)
    conv = MBBConv2d(4, 4, 3, padding='same', a_mode='signed')
    x = torch.randn(1, 4, 6, 6)
    conv(x)
    conv.eval()
    packed = PackedMBBConv2d.from_mbb(conv)
    rebuilt = PackedMBBConv2d(4, 4, 3, padding='same', **packed_args())
    rebuilt.load_state_dict(packed.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), conv(x), rtol=1e-4,
                                   atol=1e-5)


@pytest.mark.slow
def test_repacking_a_packed_checkpoint_says_already_packed(tiny):
    out = tiny['root'] / 'repacked.pth'
    result = run_tool('pack_model.py', tiny['config'], tiny['packed'], out,
                      cwd=tiny['root'])
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert f"{tiny['packed']} is already packed" in result.stderr
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize('tool, args', [
    ('train.py', []),
    ('test.py', ['checkpoint.pth']),
    ('pack_model.py', ['checkpoint.pth', 'out.pth']),
])
def test_a_missing_config_is_one_line(tool, args, tmp_path):
    result = run_tool(tool, 'no_such_config.py', *args, cwd=tmp_path)
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == \
        'config not found: no_such_config.py'
