# Copyright (c) mmbinary contributors. All rights reserved.
"""Helpers of the reliability tests: a tiny RetinaNet config with a
two-image COCO set, building its model, and running the tools as users do
(subprocesses, CPU only)."""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
RETINANET = osp.join(REPO, 'configs', 'retinanet_r50_mbb_w2a2_coco.py')
TINY_CONFIG = """
_base_ = {base!r}
model = dict(
    backbone=dict(depth=18, base_channels=8),
    neck=dict(in_channels=[8, 16, 32, 64], out_channels=16),
    bbox_head=dict(num_classes=1, in_channels=16, feat_channels=16,
                   stacked_convs=1))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(64, 64), keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor'))
]
test_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root={data_root!r},
        ann_file='ann.json',
        metainfo=dict(classes=('person', )),
        data_prefix=dict(img='images/'),
        pipeline=test_pipeline))
test_evaluator = dict(ann_file={ann_file!r})
"""
#: Options that build the tiny model at W4A4 everywhere.
W4A4_OPTIONS = [
    'model.backbone.w_bits=4', 'model.backbone.a_bits=4',
    'model.neck.w_bits=4', 'model.neck.a_bits=4',
    'model.bbox_head.conv_cfg.w_bits=4', 'model.bbox_head.conv_cfg.a_bits=4'
]


def make_tiny_coco(root) -> None:
    """Two 64x64 images with one box each, in COCO format."""
    import cv2
    rng = np.random.default_rng(0)
    (root / 'images').mkdir(parents=True)
    images, annotations = [], []
    for index in range(2):
        image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        cv2.imwrite(str(root / 'images' / f'{index}.png'), image)
        images.append(dict(id=index + 1, file_name=f'{index}.png', width=64,
                           height=64))
        annotations.append(dict(id=index + 1, image_id=index + 1,
                                category_id=1, bbox=[10, 12, 30, 28],
                                area=840, iscrowd=0))
    (root / 'ann.json').write_text(json.dumps(dict(
        images=images, annotations=annotations,
        categories=[dict(id=1, name='person')])))


def build_model(config: str, cfg_options=None):
    """The config's model, built as the tools build it."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope

    from mmbinary.utils.scope import register_modules_for
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    with DefaultScope.overwrite_default_scope('mmdet'):
        register_modules_for(cfg)
        return MODELS.build(cfg.model)


def run_tool(tool: str, *args, cwd, timeout: int = 300):
    """Run ``tools/<tool>`` with ``args`` on CPUs; the completed process."""
    # (PYTHONPATH: mmbinary from this tree, installed or not)
    environ = dict(os.environ, CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1',
                   PYTHONPATH=os.pathsep.join(
                       [REPO] + [os.environ.get('PYTHONPATH', '')]))
    return subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', tool), *map(str, args)],
        cwd=str(cwd), env=environ, capture_output=True, text=True,
        timeout=timeout)
