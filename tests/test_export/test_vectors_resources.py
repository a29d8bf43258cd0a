# Copyright (c) mmbinary contributors. All rights reserved.
import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip('safetensors')

from export_models import calibrate  # noqa: E402, I100

from mmbinary.export.exporter import export_packed  # noqa: E402
from mmbinary.export.format import read_export  # noqa: E402
from mmbinary.export.resources import resource_table  # noqa: E402
from mmbinary.export.resources import signed_bits  # noqa: E402
from mmbinary.models import MBBConv2d  # noqa: E402


def one_conv(tmp_path, vectors=0, **options):
    torch.manual_seed(0)
    model = calibrate(nn.Sequential(MBBConv2d(**options)),
                      torch.randn(4, options['in_channels'], 9, 7))
    x = torch.randn(1, options['in_channels'], 9, 7)
    return model, export_packed(model, [x], str(tmp_path), vectors=vectors,
                                seed=5)


def test_vectors_hold_the_compiled_op_layer_by_layer(tmp_path):
    from mmbinary.ops import mbb_conv2d_accumulate, quantize_pack
    options = dict(in_channels=70, out_channels=3, kernel_size=3, padding=1,
                   w_bits=3, a_bits=2, a_mode='signed')
    model, export = one_conv(tmp_path, vectors=3, **options)
    vectors = export.load_vectors()
    section = export.manifest['vectors']
    assert section['count'] == 3 and section['seed'] == 5
    assert set(section['tensors']) == set(vectors)
    x = vectors['input.0']
    assert x.shape == (3, 70, 9, 7)
    rng = np.random.default_rng(5)  # documented generator
    assert np.array_equal(x, rng.standard_normal(x.shape, dtype=np.float32))
    conv = model[0]
    words = quantize_pack(torch.from_numpy(x), 2, float(conv.inv_step), True)
    acc = mbb_conv2d_accumulate(words, conv.weight_words, in_channels=70,
                                out_channels=3, w_bits=3, a_bits=2,
                                signed=True, kernel_size=3, padding=1)
    name, = [node['name'] for node in export.nodes
             if node['op'] == 'mbb_conv2d']
    assert np.array_equal(vectors[f'{name}.input'], x)
    assert np.array_equal(vectors[f'{name}.act_words'], words.numpy())
    assert np.array_equal(vectors[f'{name}.acc'], acc.numpy())
    with torch.no_grad():
        assert np.array_equal(vectors['output.0'],
                              model(torch.from_numpy(x)).numpy())


def test_resource_counts_of_one_conv(tmp_path):
    options = dict(in_channels=70, out_channels=3, kernel_size=3, padding=1,
                   stride=2, w_bits=3, a_bits=2, a_mode='unsigned')
    _, export = one_conv(tmp_path, **options)
    row, = export.manifest['resources']['layers']
    # output 5x4 of a 9x7 input; valid taps per axis: rows 2+3+3+3+2
    # (the first and last windows overhang), columns 2+3+3+2
    taps = (2 + 3 * 3 + 2) * (2 + 3 * 2 + 2)
    assert row['binary_macs'] == taps * 3 * 70 * 3 * 2
    assert row['and_popcounts'] == taps * 3 * 2 * 3 * 2  # 2 words of 64
    assert row['act_popcounts'] == 9 * 7 * 2 * 2
    bound = 70 * 9 * 7 * 3
    assert row['acc_bound'] == bound and row['acc_bits'] == 15
    assert signed_bits(bound) == 15 and 2**13 < bound < 2**14
    assert row['weight_bits'] == 3 * 3 * 9 * 2 * 64
    assert row['bits_per_word'] == 64
    table = resource_table(export.manifest['resources'])
    assert f"| {row['node']} | W3A2 | unsigned |" in table
    assert (tmp_path / 'resources.md').read_text().strip() == table.strip()
    assert read_export(str(tmp_path)).manifest['resources'] == \
        export.manifest['resources']


def test_accumulator_bound_is_reached(tmp_path):
    # Every weight and activation at the top code: |acc| equals the bound,
    # and acc_bits is the smallest two's complement width holding it.
    from mmbinary.ops import (mbb_conv2d_accumulate, pack_weight_codes,
                              quantize_pack)
    codes = torch.full((1, 5, 3, 3), 7, dtype=torch.int32)
    words = pack_weight_codes(codes, 3)
    act = quantize_pack(torch.full((1, 5, 3, 3), 100.0), 2, 1.0, True)
    acc = mbb_conv2d_accumulate(act, words, in_channels=5, out_channels=1,
                                w_bits=3, a_bits=2, signed=True,
                                kernel_size=3)
    bound = 5 * 9 * 7 * 3
    assert int(acc) == bound
    assert -2**(signed_bits(bound) - 1) <= -bound
    assert bound >= 2**(signed_bits(bound) - 2)
