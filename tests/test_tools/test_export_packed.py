# Copyright (c) mmbinary contributors. All rights reserved.
"""tools/export_packed.py end to end on a tiny RetinaNet (subprocesses)."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

pytest.importorskip('safetensors')
pytest.importorskip('onnx')

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
TOOL = osp.join(REPO, 'tools', 'export_packed.py')
RETINANET = osp.join(REPO, 'configs', 'retinanet_r50_mbb_w2a2_coco.py')
TINY = """
_base_ = {base!r}
model = dict(
    backbone=dict(depth=18, base_channels=8, w_bits=[2, 2, 3, 4]),
    neck=dict(in_channels=[8, 16, 32, 64], out_channels=16),
    bbox_head=dict(in_channels=16, feat_channels=16, stacked_convs=1))
"""


def run(*args, cwd):
    environ = dict(os.environ, CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, TOOL, *map(str, args)],
                          cwd=str(cwd), env=environ, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A tiny config and a 'trained' checkpoint (quantizers initialized on
    a random batch), plus its packed checkpoint."""
    from mmbinary.models.packing import (LAYOUT_KEY, convert_to_packed,
                                         packed_layout)
    from mmbinary.utils.scope import register_modules_for
    root = tmp_path_factory.mktemp('tool')
    config = root / 'tiny_retinanet.py'
    config.write_text(TINY.format(base=RETINANET))
    cfg = Config.fromfile(str(config))
    with DefaultScope.overwrite_default_scope('mmdet'):
        register_modules_for(cfg)
        from mmengine.registry import MODELS
        model = MODELS.build(cfg.model)
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():
        model._forward(torch.randn(2, 3, 64, 64))
    model.eval()
    checkpoint = root / 'trained.pth'
    torch.save(dict(state_dict=model.state_dict(), meta={}), checkpoint)
    convert_to_packed(model)
    packed = root / 'packed.pth'
    torch.save(dict(state_dict=model.state_dict(),
                    meta={LAYOUT_KEY: packed_layout(model)}), packed)
    return root, config, checkpoint, packed


def test_export_tool_end_to_end(trained):
    from mmbinary.export import read_export, verify_vectors
    root, config, checkpoint, packed = trained
    out = root / 'export'
    result = run(config, checkpoint, out, '--input-size', 32, 32,
                 '--vectors', 2, '--onnx', cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert '| layer1_0_conv1 | W2A2 | unsigned |' in result.stdout
    assert '| layer4_1_conv2 | W4A2 | unsigned |' in result.stdout
    assert 'export written to' in result.stdout
    export = read_export(str(out))
    assert set(export.manifest['files']) == {
        'model', 'resources', 'vectors', 'onnx_custom', 'onnx_plain'
    }
    assert export.manifest['source']['part'] == 'backbone'
    assert export.manifest['inputs'][0]['shape'] == [1, 3, 32, 32]
    assert verify_vectors(export) == dict(mbb_nodes=16, vectors=2)
    assert (out / 'model_plain.onnx').is_file()

    # A packed checkpoint gives the same export, tensor for tensor.
    result = run(config, packed, root / 'from_packed', '--input-size', 32,
                 32, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    again = read_export(str(root / 'from_packed'))
    assert again.manifest['files']['model']['sha256'] == \
        export.manifest['files']['model']['sha256']


def test_export_tool_refuses_to_overwrite(trained):
    root, config, checkpoint, _ = trained
    out = root / 'busy'
    out.mkdir()
    (out / 'notes.txt').write_text('mine')
    result = run(config, checkpoint, out, '--input-size', 32, 32, cwd=root)
    assert result.returncode == 1
    assert 'is not empty; pass --force' in result.stderr
    assert os.listdir(out) == ['notes.txt']

    result = run(config, checkpoint, out, '--input-size', 32, 32, '--force',
                 cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / 'notes.txt').read_text() == 'mine'
    manifest = json.loads((out / 'manifest.json').read_text())
    assert 'vectors' not in manifest['files']


def test_export_tool_argument_errors(trained):
    root, config, checkpoint, _ = trained
    result = run(config, root / 'missing.pth', root / 'e1', cwd=root)
    assert result.returncode == 1
    assert 'CHECKPOINT not found' in result.stderr
    result = run(config, checkpoint, root / 'e2', '--part', 'nothing',
                 '--input-size', 32, 32, cwd=root)
    assert result.returncode == 1
    assert "--part 'nothing' is not a module" in result.stderr
    assert 'backbone' in result.stderr
    result = run(config, checkpoint, root / 'e3', '--vectors', -1, cwd=root)
    assert result.returncode == 2 and '--vectors must be >= 0' in \
        result.stderr
