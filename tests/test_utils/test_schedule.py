# Copyright (c) mmbinary contributors. All rights reserved.
"""mmbinary.utils.schedule: a schedule scaled to a new length keeps its
shape, and whatever ended at the old length ends at the new one."""
import os.path as osp

import pytest
from mmengine.config import Config

from mmbinary.utils.schedule import scale_schedule

CONFIG_DIR = osp.join(osp.dirname(__file__), '..', '..', 'configs')


def test_cosine_schedule_ends_at_the_new_length():
    cfg = Config.fromfile(
        osp.join(CONFIG_DIR, 'pennfudan', 'retinanet_mnv2_fpn_pennfudan.py'))
    assert cfg.param_scheduler[1].end == 12
    changes = scale_schedule(cfg, 4)
    assert cfg.train_cfg.max_epochs == 4
    assert cfg.max_epochs == 4  # the config's variable follows
    warmup, cosine = cfg.param_scheduler
    assert (cosine.begin, cosine.end) == (0, 4)
    # the warm-up (in iterations) shrinks with the run: 50 * 4 / 12
    assert (warmup.begin, warmup.end) == (0, 17)
    assert cfg.train_cfg.val_interval == 4
    assert cfg.default_hooks.checkpoint.interval == 4
    assert 'param_scheduler.1.end: 12 -> 4' in changes


def test_step_schedule_moves_its_milestones():
    cfg = Config.fromfile(
        osp.join(CONFIG_DIR, 'retinanet_r50_mbb_w2a2_coco.py'))
    warmup, steps = cfg.param_scheduler
    assert list(steps.milestones) == [8, 11] and steps.end == 12
    scale_schedule(cfg, 24)
    warmup, steps = cfg.param_scheduler
    assert cfg.train_cfg.max_epochs == 24
    assert (steps.begin, steps.end) == (0, 24)
    assert list(steps.milestones) == [16, 22]
    assert warmup.end == 1000
    assert cfg.train_cfg.val_interval == 2
    assert cfg.default_hooks.checkpoint.interval == 2
    scale_schedule(cfg, 1)
    steps = cfg.param_scheduler[1]
    assert steps.end == 1 and max(steps.milestones) <= 1
    assert cfg.param_scheduler[0].end >= 1


def test_iteration_schedule():
    cfg = Config.fromfile(
        osp.join(CONFIG_DIR, 'deeplabv3_r50_mbb_w2a2_cityscapes.py'))
    with pytest.raises(ValueError, match='use --iters'):
        scale_schedule(cfg, 4, 'epochs')
    scale_schedule(cfg, 800, 'iters')
    assert cfg.train_cfg.max_iters == 800
    poly = cfg.param_scheduler[0]
    assert poly.end == 800
    assert cfg.train_cfg.val_interval == 80
    assert cfg.default_hooks.checkpoint.interval == 80


def test_bad_length_is_refused():
    cfg = Config(dict(train_cfg=dict(max_epochs=12)))
    for bad in (0, -2, 2.5):
        with pytest.raises(ValueError, match='integer >= 1'):
            scale_schedule(cfg, bad)
    with pytest.raises(ValueError, match='unit'):
        scale_schedule(cfg, 4, 'steps')
