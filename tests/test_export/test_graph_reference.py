# Copyright (c) mmbinary contributors. All rights reserved.
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip('safetensors')

from export_models import TinyNet, calibrate  # noqa: E402

from mmbinary.export.exporter import export_packed  # noqa: E402
from mmbinary.export.graph_reference import run_export  # noqa: E402
from mmbinary.export.graph_reference import verify_vectors  # noqa: E402
from mmbinary.ops import quantize_pack  # noqa: E402
from mmbinary.packed_format import activation_levels  # noqa: E402
from mmbinary.packed_format import pack_activation_levels  # noqa: E402

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))


def check_export(model, x, out_dir, atol=1e-4):
    """Vectors equal the NumPy reference bit for bit on every MBB node;
    the whole graph agrees with PyTorch to float32 rounding."""
    export = export_packed(model, [x[:1]], out_dir, vectors=2, seed=3)
    summary = verify_vectors(export)
    assert summary['mbb_nodes'] == sum(
        node['op'].startswith('mbb_') for node in export.nodes) > 0
    outputs = run_export(export, [x.numpy()])
    with torch.no_grad():
        expected = model(x)
    expected = list(expected) if isinstance(expected,
                                            (tuple, list)) else [expected]
    assert len(outputs) == len(expected)
    for out, ref in zip(outputs, expected):
        assert out.dtype == np.float32 and out.shape == tuple(ref.shape)
        np.testing.assert_allclose(out, ref.numpy(), rtol=1e-4, atol=atol)
    return export


@pytest.mark.parametrize('seed', range(6))
def test_random_models_bit_exact_per_layer(seed, tmp_path):
    torch.manual_seed(seed)
    model = calibrate(TinyNet(seed, with_linear=seed % 2 == 1),
                      torch.randn(4, 3, 16, 16))
    check_export(model, torch.randn(2, 3, 16, 16), str(tmp_path))


def test_quantize_and_pack_equal_the_compiled_op():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 70, 5, 3, generator=gen) * 3
    x[0, 1, 0, 0] = 0.5  # a tie: rounds to even
    for a_bits in (1, 2, 5, 8):
        for signed in (False, True):
            for groups in (1, 2):
                expected = quantize_pack(x, a_bits, 1.3, signed, groups)
                q = activation_levels(x.numpy(), a_bits, 1.3, signed)
                words = pack_activation_levels(q, a_bits, groups)
                assert np.array_equal(words, expected.numpy())
    # NaN has level 0 (mbb_quantize_level); packing alone refuses it.
    x[0, 0, 0, 0] = float('nan')
    assert activation_levels(x.numpy(), 2, 1.3, True)[0, 0, 0, 0] == 0
    with pytest.raises((RuntimeError, ValueError), match='holds NaN'):
        quantize_pack(x, 2, 1.3, True)


def test_a_broken_reference_is_caught(tmp_path, monkeypatch):
    from mmbinary.export import graph_reference
    torch.manual_seed(0)
    model = calibrate(TinyNet(2), torch.randn(4, 3, 16, 16))
    export = export_packed(model, [torch.randn(1, 3, 16, 16)],
                           str(tmp_path), vectors=1)
    original = graph_reference.activation_levels

    def off_by_one(x, a_bits, inv_step, signed):  # round half up instead
        q = original(x, a_bits, inv_step, signed)
        return np.minimum(q + 1, 2**a_bits - 1)

    monkeypatch.setattr(graph_reference, 'activation_levels', off_by_one)
    with pytest.raises(AssertionError, match='act_words of the NumPy'):
        verify_vectors(export)


def test_mbb_resnet18_backbone(tmp_path):
    from mmbinary.models.backbones import MBBResNet
    torch.manual_seed(0)
    model = MBBResNet(depth=18, base_channels=8, w_bits=[2, 3, 2, 4],
                      a_bits=2, encode_shortcut=True)
    model = calibrate(model, torch.randn(2, 3, 32, 32))
    # blocks running the packed flow (packed activations between convs)
    flowing = [m for m in model.modules() if 'forward' in m.__dict__]
    export = check_export(model, torch.randn(2, 3, 32, 32), str(tmp_path))
    # traced layer by layer, and the flow given back afterwards
    assert [m for m in model.modules() if 'forward' in m.__dict__] == flowing
    ops = [node['op'] for node in export.nodes]
    assert ops.count('mbb_conv2d') == 19 and ops.count('add') == 8
    assert 'max_pool2d' in ops and len(export.manifest['graph']
                                       ['outputs']) == 4


def test_mbb_mobilenet_v2_backbone(tmp_path):
    from mmbinary.models.backbones import MBBMobileNetV2
    torch.manual_seed(0)
    model = MBBMobileNetV2(widen_factor=0.25, out_indices=(2, 4, 7),
                           act_cfg=dict(type='ReLU6'), w_bits=2, a_bits=3,
                           encode_depthwise=True)
    model = calibrate(model, torch.randn(2, 3, 32, 32))
    export = check_export(model, torch.randn(2, 3, 32, 32), str(tmp_path))
    modes = {export.layers[node['layer']]['attributes']['mode']
             for node in export.nodes if node['op'] == 'mbb_conv2d'}
    assert modes == {'signed', 'unsigned'}
    assert 'relu6' in [node['op'] for node in export.nodes]


def test_reader_and_reference_import_without_torch(tmp_path):
    torch.manual_seed(0)
    model = calibrate(TinyNet(3), torch.randn(4, 3, 16, 16))
    export_packed(model, [torch.randn(1, 3, 16, 16)], str(tmp_path),
                  vectors=1)
    script = f"""
import sys, types
sys.modules['torch'] = None  # importing torch now fails
package = types.ModuleType('mmbinary')
package.__path__ = [{osp.join(REPO, 'mmbinary')!r}]
sys.modules['mmbinary'] = package
from mmbinary.export import read_export, run_export, verify_vectors
export = read_export({str(tmp_path)!r})
print(verify_vectors(export)['mbb_nodes'])
"""
    result = subprocess.run([sys.executable, '-c', script],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) == 4
