# Copyright (c) mmbinary contributors. All rights reserved.
"""A shortened run of the main job, end to end: train, evaluate, pack,
evaluate packed, measure, draw."""
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.mark.slow
def test_quick_demo_runs_and_packed_metrics_agree(demo_data, tmp_path):
    work_dir = tmp_path / 'demo'
    result = subprocess.run([
        sys.executable,
        osp.join(REPO, 'tools', 'demo.py'), '--quick', '--bits', '3',
        '--work-dir',
        str(work_dir), '--data-root', demo_data
    ], capture_output=True, text=True, cwd=REPO)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    summary = (work_dir / 'summary.md').read_text()
    assert 'Packed and unpacked metrics agree (within 0.01): yes' in summary
    rows = dict(re.findall(r'\| (coco/bbox_mAP\S*) \| (.*) \|', summary))
    assert set(rows) == {'coco/bbox_mAP', 'coco/bbox_mAP_50'}
    for row in rows.values():
        unpacked, packed = (float(v) for v in row.split(' | '))
        assert abs(unpacked - packed) <= 0.01
    # --bits reached every encoded layer, and they were all packed.
    packed = torch.load(work_dir / 'packed.pth', weights_only=True)
    layers = packed['meta']['mmbinary_packed']['layers']
    assert len(layers) > 40
    assert {(layer['config']['w_bits'], layer['config']['a_bits'])
            for layer in layers.values()} == {(3, 3)}
    assert 'W3A3' in summary
    # The R-50 backbone + FPN row of the whole-model benchmark, measured.
    assert 'RetinaNet R-50 backbone + FPN, 1x3x96x128, W3A3' in summary
    r50 = dict(re.findall(r'^\| (float32, fastest \(batch norms folded\)|'
                          r'torch int8 \(x86, FX\)|MBB packed) \| '
                          r'([\d.]+|n/a) \|', summary, re.M))
    assert set(r50) == {'float32, fastest (batch norms folded)',
                        'torch int8 (x86, FX)', 'MBB packed'}, summary
    assert float(r50['MBB packed']) > 0
    assert (work_dir / 'detections.jpg').stat().st_size > 0
    # Each step ran with the standard tools.
    for step in ('tools/train.py', 'tools/test.py', 'tools/pack_model.py',
                 '--packed'):
        assert step in output
