# Copyright (c) mmbinary contributors. All rights reserved.
"""tools/model_converters/recalibrate_batch_norms.py: new running
statistics for the batch norms that train, everything else kept; bad
arguments refused before anything is written."""
import importlib.util
import json
import os.path as osp
import sys

import numpy as np
import pytest
import torch

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
TOOL = osp.join(REPO, 'tools', 'model_converters',
                'recalibrate_batch_norms.py')
CONFIG = """
_base_ = {base!r}
model = dict(
    backbone=dict(depth=18, base_channels=8, frozen_stages=1,
                  norm_eval=False),
    neck=dict(in_channels=[8, 16, 32, 64], out_channels=16),
    bbox_head=dict(num_classes=1, in_channels=16, feat_channels=16,
                   stacked_convs=1))
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root={data_root!r},
        ann_file='ann.json',
        metainfo=dict(classes=('person', )),
        data_prefix=dict(img='images/'),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', with_bbox=True),
            dict(type='Resize', scale=(64, 64), keep_ratio=False),
            dict(type='PackDetInputs')
        ]))
"""


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """A tiny RetinaNet R-18 config on four random images and its
    'trained' checkpoint."""
    import cv2
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope

    from mmbinary.utils.scope import register_modules_for
    root = tmp_path_factory.mktemp('recalibrate')
    (root / 'images').mkdir()
    rng = np.random.default_rng(0)
    images, boxes = [], []
    for index in range(4):
        cv2.imwrite(str(root / 'images' / f'{index}.png'),
                    rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
        images.append(dict(id=index + 1, file_name=f'{index}.png', width=64,
                           height=64))
        boxes.append(dict(id=index + 1, image_id=index + 1, category_id=1,
                          bbox=[10, 12, 30, 28], area=840, iscrowd=0))
    (root / 'ann.json').write_text(json.dumps(dict(
        images=images, annotations=boxes,
        categories=[dict(id=1, name='person')])))
    config = root / 'tiny.py'
    config.write_text(CONFIG.format(
        base=osp.join(REPO, 'configs', 'retinanet_r50_mbb_w2a2_coco.py'),
        data_root=str(root) + '/'))
    cfg = Config.fromfile(str(config))
    with DefaultScope.overwrite_default_scope('mmdet'):
        register_modules_for(cfg)
        model = MODELS.build(cfg.model)
    torch.manual_seed(0)
    model.train()  # the learned clips start, as in a trained model
    with torch.no_grad():
        model._forward(torch.randn(2, 3, 64, 64))
    model.eval()
    checkpoint = root / 'trained.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(epoch=3)),
               checkpoint)
    return dict(root=root, config=config, checkpoint=checkpoint,
                model=model)


def run_tool(monkeypatch, *argv):
    spec = importlib.util.spec_from_file_location('recalibrate', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, 'argv', ['recalibrate_batch_norms.py', *argv])
    module.main()


def test_new_statistics_for_the_norms_that_train(tiny, tmp_path,
                                                 monkeypatch):
    out = tmp_path / 'recalibrated.pth'
    run_tool(monkeypatch, str(tiny['config']), str(tiny['checkpoint']),
             str(out), '--num-batches', '1')
    before = torch.load(tiny['checkpoint'], weights_only=False)
    after = torch.load(out, weights_only=False)
    assert after['meta']['epoch'] == 3  # the rest of the checkpoint kept
    assert after['meta']['bn_recalibration']['num_batches'] == 1
    assert before['state_dict'].keys() == after['state_dict'].keys()
    changed = {key for key, value in before['state_dict'].items()
               if not torch.equal(value, after['state_dict'][key])}
    # layer2..4 train; the stem and layer1 are frozen (frozen_stages=1)
    assert 'backbone.layer2.0.bn1.running_mean' in changed
    assert 'backbone.layer4.1.bn2.running_var' in changed
    frozen = [key for key in changed
              if key.startswith(('backbone.bn1.', 'backbone.layer1.'))]
    assert frozen == []
    assert all(key.endswith(('running_mean', 'running_var',
                             'num_batches_tracked')) for key in changed)
    assert int(after['state_dict'][
        'backbone.layer2.0.bn1.num_batches_tracked']) == 1


def test_bad_arguments_are_refused_and_nothing_is_overwritten(
        tiny, tmp_path, monkeypatch):
    from mmbinary.models.packing import (LAYOUT_KEY, convert_to_packed,
                                         packed_layout)
    config, source = str(tiny['config']), str(tiny['checkpoint'])
    before = tiny['checkpoint'].read_bytes()
    with pytest.raises(SystemExit, match='OUT must differ'):
        run_tool(monkeypatch, config, source, source, '--force')
    existing = tmp_path / 'kept.pth'
    existing.write_bytes(b'saved by the user')
    with pytest.raises(SystemExit, match='exists; pass --force'):
        run_tool(monkeypatch, config, source, str(existing))
    assert existing.read_bytes() == b'saved by the user'
    with pytest.raises(SystemExit, match='--num-batches must be'):
        run_tool(monkeypatch, config, source, str(tmp_path / 'a.pth'),
                 '--num-batches', '0')
    model = tiny['model']
    model.eval()
    with torch.no_grad():
        model._forward(torch.randn(1, 3, 64, 64))
    convert_to_packed(model)
    packed = tmp_path / 'packed.pth'
    torch.save(dict(state_dict=model.state_dict(),
                    meta={LAYOUT_KEY: packed_layout(model)}), packed)
    with pytest.raises(SystemExit, match='already packed'):
        run_tool(monkeypatch, config, str(packed), str(tmp_path / 'b.pth'))
    assert tiny['checkpoint'].read_bytes() == before
