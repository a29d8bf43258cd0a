# Copyright (c) mmbinary contributors. All rights reserved.
"""tools/train.py, tools/test.py and tools/dist_train.sh as users run them
(subprocesses, CPU only)."""
import json
import os
import os.path as osp
import socket
import subprocess
import sys

import numpy as np
import pytest

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
RETINANET = osp.join(REPO, 'configs', 'retinanet_r50_mbb_w2a2_coco.py')
DEEPLAB = osp.join(REPO, 'configs', 'deeplabv3_r50_mbb_w2a2_cityscapes.py')


def run(args, cwd, timeout=300, **env):
    """Run a command on CPUs; return the completed process."""
    environ = dict(os.environ, CUDA_VISIBLE_DEVICES='', **env)
    return subprocess.run(
        args,
        cwd=str(cwd),
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout)


def test_train_with_missing_dataset_stops_with_layout(tmp_path):
    missing = tmp_path / 'missing' / 'coco'
    config = tmp_path / 'missing_data.py'
    config.write_text(
        f'_base_ = {RETINANET!r}\n'
        f'train_dataloader = dict(dataset=dict(data_root={str(missing)!r}))\n'
        f'val_dataloader = dict(dataset=dict(data_root={str(missing)!r}))\n')
    work_dir = tmp_path / 'work_dir'
    result = run([
        sys.executable,
        osp.join(REPO, 'tools', 'train.py'),
        str(config), '--work-dir',
        str(work_dir)
    ], tmp_path)
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    message = result.stderr
    assert 'Files missing, nothing was run' in message
    assert str(missing) in message
    for entry in ('annotations/instances_train2017.json', 'train2017/',
                  'val2017/', 'cocodataset.org',
                  'train_dataloader.dataset.data_root'):
        assert entry in message
    assert not work_dir.exists()


def test_train_names_every_missing_path_and_its_key_at_once(tmp_path):
    """A config whose training data is there but whose annotation file,
    evaluator file and float checkpoint are not: one message, no
    traceback, nothing run."""
    make_tiny_coco(tmp_path / 'data')
    config = tmp_path / 'partly_missing.py'
    config.write_text(
        TINY_RETINANET.format(
            base=RETINANET, data_root=str(tmp_path / 'data') + '/') +
        'val_cfg = dict(type="ValLoop")\n'
        'val_dataloader = dict(batch_size=1, num_workers=0, '
        'sampler=dict(type="DefaultSampler", shuffle=False), '
        'dataset=dict(type="CocoDataset", data_root={root!r}, '
        'ann_file="val.json", data_prefix=dict(img="images/"), '
        'pipeline=pipeline))\n'
        'val_evaluator = dict(type="CocoMetric", ann_file={root!r} + '
        '"val.json")\n'
        'load_from = "float.pth"\n'.format(root=str(tmp_path / 'data') + '/'))
    work_dir = tmp_path / 'work_dir'
    result = run([
        sys.executable,
        osp.join(REPO, 'tools', 'train.py'),
        str(config), '--work-dir',
        str(work_dir)
    ], tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    message = result.stderr
    assert 'Traceback' not in message
    for key in ('set: val_dataloader.dataset.ann_file, val_evaluator.ann_file',
                'set: load_from', 'float.pth'):
        assert key in message
    assert message.count('set: ') == 2
    # not a COCO 2017 set: no download hint
    assert 'cocodataset.org' not in message
    assert not work_dir.exists()


def test_test_tool_with_missing_dataset_or_checkpoint(tmp_path):
    # The relative data root 'data/cityscapes/' does not exist in tmp_path.
    result = run([
        sys.executable,
        osp.join(REPO, 'tools', 'test.py'), DEEPLAB, 'no_checkpoint.pth'
    ], tmp_path)
    assert result.returncode == 1
    assert 'data/cityscapes/' in result.stderr
    assert 'leftImg8bit/val/' in result.stderr
    assert 'test_dataloader' in result.stderr

    data = tmp_path / 'data' / 'cityscapes'
    for folder in ('leftImg8bit/val', 'gtFine/val'):
        (data / folder).mkdir(parents=True)
    result = run([
        sys.executable,
        osp.join(REPO, 'tools', 'test.py'), DEEPLAB, 'no_checkpoint.pth',
        '--packed'
    ], tmp_path)
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert 'no_checkpoint.pth' in result.stderr
    assert 'set: CHECKPOINT (command line)' in result.stderr


def make_tiny_coco(root) -> None:
    """Two 64x64 images with one box each, in COCO format."""
    import cv2
    rng = np.random.default_rng(0)
    (root / 'images').mkdir(parents=True)
    images, annotations = [], []
    for index in range(2):
        image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        cv2.imwrite(str(root / 'images' / f'{index}.png'), image)
        images.append(
            dict(id=index + 1, file_name=f'{index}.png', width=64,
                 height=64))
        annotations.append(
            dict(
                id=index + 1,
                image_id=index + 1,
                category_id=1,
                bbox=[10, 12, 30, 28],
                area=840,
                iscrowd=0))
    (root / 'ann.json').write_text(
        json.dumps(
            dict(
                images=images,
                annotations=annotations,
                categories=[dict(id=1, name='person')])))


TINY_RETINANET = """
_base_ = {base!r}
model = dict(
    backbone=dict(depth=18, base_channels=8),
    neck=dict(in_channels=[8, 16, 32, 64], out_channels=16),
    bbox_head=dict(in_channels=16, feat_channels=16, stacked_convs=1))
pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(64, 64), keep_ratio=False),
    dict(type='PackDetInputs')
]
train_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root={data_root!r},
        ann_file='ann.json',
        data_prefix=dict(img='images/'),
        pipeline=pipeline))
train_cfg = dict(max_epochs=2, val_interval=100)
val_cfg = None
val_dataloader = None
val_evaluator = None
default_hooks = dict(logger=dict(interval=1))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_training_saves_and_resumes(tmp_path):
    make_tiny_coco(tmp_path / 'data')
    config = tmp_path / 'tiny_retinanet.py'
    config.write_text(
        TINY_RETINANET.format(
            base=RETINANET, data_root=str(tmp_path / 'data') + '/'))
    work_dir = tmp_path / 'work_dir'
    command = [
        'bash',
        osp.join(REPO, 'tools', 'dist_train.sh'),
        str(config), '2', '--work-dir',
        str(work_dir)
    ]

    result = run(command, tmp_path, PYTHON=sys.executable,
                 PORT=str(free_port()))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (work_dir / 'epoch_2.pth').is_file()
    log = result.stdout + result.stderr
    assert 'Distributed training: True' in log
    # two images shared by two processes: one iteration per epoch each
    assert 'Epoch(train) [2][1/1]' in log

    result = run(
        command + ['--resume', '--cfg-options', 'train_cfg.max_epochs=3'],
        tmp_path,
        PYTHON=sys.executable,
        PORT=str(free_port()))
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert 'resumed epoch: 2' in log
    assert 'Epoch(train) [3]' in log
    assert (work_dir / 'epoch_3.pth').is_file()


def load_test_tool():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'test_tool', osp.join(REPO, 'tools', 'test.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_score_threshold_option_sets_one_and_two_stage_detectors():
    from mmengine.config import Config
    tool = load_test_tool()
    one_stage = Config(dict(model=dict(test_cfg=dict(score_thr=0.05))))
    tool.set_score_threshold(one_stage, 0.0)
    assert one_stage.model.test_cfg.score_thr == 0.0
    two_stage = Config(
        dict(model=dict(test_cfg=dict(rpn=dict(nms_pre=1000),
                                      rcnn=dict(score_thr=0.05)))))
    tool.set_score_threshold(two_stage, 0.01)
    assert two_stage.model.test_cfg.rcnn.score_thr == 0.01
    segmentor = Config(dict(model=dict(test_cfg=dict(mode='whole'))))
    with pytest.raises(SystemExit, match='detector option'):
        tool.set_score_threshold(segmentor, 0.0)
    with pytest.raises(SystemExit, match='in 0..1'):
        tool.set_score_threshold(one_stage, 1.5)
    # the explanation names the threshold and the way out
    note = tool.explain_empty_results(
        Config(dict(model=dict(test_cfg=dict(score_thr=0.05)))))
    assert 'score_thr=0.05' in note and '--score-thr 0' in note
