# Copyright (c) mmbinary contributors. All rights reserved.
import importlib.util
import json
import math
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmbinary.models.backbones  # noqa: F401
import mmbinary.models.heads  # noqa: F401
import mmbinary.models.necks  # noqa: F401

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
TOOL = osp.join(REPO, 'tools', 'analysis_tools', 'model_report.py')
RETINANET = osp.join(REPO, 'configs', 'retinanet_r50_mbb_w2a2_coco.py')
DEEPLAB = osp.join(REPO, 'configs', 'deeplabv3_r50_mbb_w2a2_cityscapes.py')


@pytest.fixture(scope='module')
def model_report():
    spec = importlib.util.spec_from_file_location('model_report', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def report(model_report, config: str, shape=(64, 64)):
    cfg = Config.fromfile(config)
    # the tool sets the default scope: leave other tests' scope unchanged
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        scope = model_report.register_modules_for(cfg)
        model = model_report.build_model(cfg)
        return model_report.layer_report(
            model, model_report.dummy_inputs(scope, shape))


def test_retinanet_report_rows_and_totals(model_report):
    rows, totals = report(model_report, RETINANET)
    by_name = {row.name: row for row in rows}
    assert all(row.ran for row in rows)
    assert totals['mbb_layers'] == 64 and totals['float_layers'] == 7

    for row in rows:
        if row.w_bits is None:
            assert row.bops == 0 and row.float_macs == row.macs
            assert row.packed_bytes == row.float_bytes
        else:
            assert (row.w_bits, row.a_bits) == (2, 2)
            assert row.bops == row.macs * 4 and row.float_macs == 0
            assert row.packed_bytes < row.float_bytes
    for key in ('macs', 'bops', 'float_macs', 'float_bytes',
                'packed_bytes'):
        assert totals[key] == sum(getattr(row, key) for row in rows), key
    assert totals['macs'] == totals['float_macs'] + sum(
        row.macs for row in rows if row.w_bits is not None)

    # stem: 7x7, 3 -> 64, output 32x32 for a 64x64 image, float
    stem = by_name['backbone.conv1']
    assert stem.macs == 32 * 32 * 64 * 3 * 49
    assert stem.float_bytes == 64 * 3 * 49 * 4
    # a 3x3 64 -> 64 block conv at 16x16, W2: 64 input channels fill one
    # 64-bit word; float32 extras: 64 scales and the activation clip
    conv = by_name['backbone.layer1.0.conv2']
    assert conv.macs == 16 * 16 * 64 * 64 * 9
    assert conv.packed_bytes == 64 * 64 * 9 * 2 / 8 + (64 + 1) * 4
    # a 1x1 1024 -> 512 conv: 1024 input channels fill 16 words
    conv = by_name['backbone.layer4.0.conv1']
    assert conv.packed_bytes == 512 * math.ceil(1024 / 64) * 64 * 2 / 8 + (
        512 + 1) * 4
    # the head's convs run on every pyramid level (8, 4, 2, 1, 1 pixels)
    cls = by_name['bbox_head.retina_cls']
    pixels = 8 * 8 + 4 * 4 + 2 * 2 + 1 + 1
    assert cls.macs == pixels * 720 * 256 * 9
    assert totals['other_param_bytes'] > 0


def test_segmentor_report_skips_the_auxiliary_head(model_report):
    rows, totals = report(model_report, DEEPLAB)
    skipped = sorted(row.name for row in rows if not row.ran)
    assert skipped == [
        'auxiliary_head.conv_seg', 'auxiliary_head.convs.0.conv'
    ]
    assert totals['skipped_layers'] == 2
    assert totals['packed_bytes'] == sum(row.packed_bytes for row in rows
                                         if row.ran)
    assert totals['mbb_layers'] == 48 + 6


def test_command_line(tmp_path):
    out = tmp_path / 'report.json'
    result = subprocess.run([
        sys.executable, TOOL, RETINANET, '--shape', '64', '64', '--out',
        str(out)
    ],
                            capture_output=True,
                            text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'backbone.layer1.0.conv2' in result.stdout
    assert 'BOPs:' in result.stdout and 'packed' in result.stdout
    saved = json.loads(out.read_text())
    assert saved['shape'] == [64, 64]
    assert len(saved['layers']) == 71
    assert saved['totals']['bops'] == sum(
        layer['bops'] for layer in saved['layers'])
    assert f'{saved["totals"]["bops"] / 1e9:.3f} G' in result.stdout
