# Copyright (c) mmbinary contributors. All rights reserved.
import numpy as np
import pytest
import torch

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')
pytest.importorskip('safetensors')

from export_models import TinyNet, calibrate  # noqa: E402

from mmbinary.export.exporter import export_packed  # noqa: E402
from mmbinary.export.onnx_export import build_onnx, export_onnx  # noqa


def run_plain(export, path, inputs):
    export_onnx(export, path, 'plain')
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    feed = {node['name']: x for node, x in zip(
        [n for n in export.nodes if n['op'] == 'input'], inputs)}
    return session.run(None, feed)


@pytest.mark.parametrize('seed', range(6))
def test_plain_onnx_matches_pytorch(seed, tmp_path):
    torch.manual_seed(seed)
    model = calibrate(TinyNet(seed, with_linear=seed % 2 == 0),
                      torch.randn(4, 3, 16, 16))
    export = export_packed(model, [torch.randn(1, 3, 16, 16)],
                           str(tmp_path / 'export'))
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        expected = model(x)
    expected = expected if isinstance(expected, tuple) else (expected, )
    outputs = run_plain(export, str(tmp_path / 'plain.onnx'), [x.numpy()])
    assert len(outputs) == len(expected)
    for out, ref in zip(outputs, expected):
        np.testing.assert_allclose(out, ref.numpy(), rtol=1e-4, atol=1e-4)


def test_plain_onnx_mbb_layers_are_bit_exact(tmp_path):
    # Only MBB layers, ReLU and add: no float conv rounding anywhere, so
    # onnxruntime must give PyTorch's packed outputs exactly.
    from torch import nn

    from mmbinary.models import MBBConv2d

    class Net(nn.Module):

        def __init__(self):
            super().__init__()
            self.a = MBBConv2d(5, 8, 3, padding=2, dilation=2, w_bits=3,
                               a_bits=2, a_mode='signed')
            self.b = MBBConv2d(8, 8, 3, padding=1, groups=2, w_bits=1,
                               a_bits=4, a_mode='unsigned')
            self.c = MBBConv2d(8, 6, 1, stride=2, w_bits=8, a_bits=8,
                               a_mode='unsigned')

        def forward(self, x):
            y = torch.relu(self.a(x))
            return self.c(torch.relu(y + self.b(y)))

    torch.manual_seed(0)
    model = calibrate(Net(), torch.randn(4, 5, 12, 12))
    export = export_packed(model, [torch.randn(1, 5, 12, 12)],
                           str(tmp_path / 'export'))
    x = torch.randn(2, 5, 12, 12)
    with torch.no_grad():
        expected = model(x)
    out, = run_plain(export, str(tmp_path / 'plain.onnx'), [x.numpy()])
    assert torch.equal(torch.from_numpy(out), expected)


def test_custom_node_graph_passes_the_checker(tmp_path):
    torch.manual_seed(0)
    model = calibrate(TinyNet(4, with_linear=True), torch.randn(4, 3, 16, 16))
    export = export_packed(model, [torch.randn(1, 3, 16, 16)],
                           str(tmp_path))
    model_proto = build_onnx(export, 'custom')
    onnx.checker.check_model(model_proto, full_check=False)
    custom = [node for node in model_proto.graph.node
              if node.domain == 'mmbinary']
    mbb = [node for node in export.nodes if node['op'].startswith('mbb_')]
    assert len(custom) == len(mbb) == 5
    assert {node.op_type for node in custom} == {'MBBConv'}
    assert all(node.domain == '' for node in model_proto.graph.node
               if node not in custom)
    attrs = {a.name: onnx.helper.get_attribute_value(a)
             for a in custom[0].attribute}
    layer = export.layers[mbb[0]['layer']]['attributes']
    assert attrs['w_bits'] == layer['w_bits']
    assert attrs['mode'].decode() == layer['mode']
    assert np.float32(attrs['inv_step']) == np.float32(layer['inv_step'])
    inits = {i.name: i for i in model_proto.graph.initializer}
    words = onnx.numpy_helper.to_array(inits[custom[0].input[1]])
    assert np.array_equal(
        words, export.layer_tensor(mbb[0]['layer'], 'weight_words'))
    imports = {o.domain: o.version for o in model_proto.opset_import}
    assert imports['mmbinary'] == 1


def test_unknown_mode_is_refused(tmp_path):
    torch.manual_seed(0)
    model = calibrate(TinyNet(0), torch.randn(4, 3, 16, 16))
    export = export_packed(model, [torch.randn(1, 3, 16, 16)],
                           str(tmp_path))
    with pytest.raises(ValueError, match="mode must be 'custom' or 'plain'"):
        build_onnx(export, 'other')
