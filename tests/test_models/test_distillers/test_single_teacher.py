# Copyright (c) mmbinary contributors. All rights reserved.
"""SingleTeacherDistill on the Penn-Fudan RetinaNet and DeepLabV3 configs
(tiny images): the distillation losses are non-zero and decrease, the
checkpoints are the student's, and bad teachers stop the build."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mmbinary.models.distillers import (ChannelWiseDivergence,
                                        FeatureImitationLoss,
                                        SigmoidKLDivergence,
                                        SingleTeacherDistill)

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..', '..'))
CONFIGS = osp.join(REPO, 'configs', 'pennfudan')


def registry(scope: str):
    if scope == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    else:
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    return MODELS


def build(config: str, **model_options):
    cfg = Config.fromfile(osp.join(CONFIGS, config))
    cfg.model.update(model_options)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return registry(cfg.default_scope).build(cfg.model), cfg


def teacher_file(tmp_path, float_config: str) -> str:
    torch.manual_seed(1)
    teacher, _ = build(float_config)
    path = str(tmp_path / 'teacher.pth')
    torch.save(dict(state_dict=teacher.state_dict()), path)
    return path


def det_batch(model):
    from mmdet.testing import demo_mm_inputs
    packed = demo_mm_inputs(batch_size=2, image_shapes=[(3, 64, 64)] * 2,
                            num_items=[2, 1], num_classes=2)
    for sample in packed['data_samples']:  # one class: the person
        sample.gt_instances.labels.zero_()
    return model.data_preprocessor(packed, True)


def seg_batch(model):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    generator = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(2):
        inputs.append(torch.randint(0, 255, (3, 48, 48), generator=generator,
                                    dtype=torch.uint8))
        sample = SegDataSample(metainfo=dict(img_shape=(48, 48),
                                             ori_shape=(48, 48),
                                             pad_shape=(48, 48)))
        sample.gt_sem_seg = PixelData(data=torch.randint(
            0, 2, (1, 48, 48), generator=generator))
        samples.append(sample)
    return model.data_preprocessor(dict(inputs=inputs, data_samples=samples),
                                   True)


CASES = [
    ('retinanet_mnv2_mbb_w2a2_kd_pennfudan.py',
     'retinanet_mnv2_fpn_pennfudan.py', det_batch,
     ['distill_loss_fpn', 'distill_loss_cls']),
    ('deeplabv3_mnv2-d8_mbb_w2a2_kd_pennfudan.py',
     'deeplabv3_mnv2-d8_pennfudan.py', seg_batch, ['distill_loss_cwd']),
    # the backbone's outputs imitated too (twelfth accuracy round)
    ('retinanet_mnv2_mbb_w2a2_plbn_kd_bb_pennfudan.py',
     'retinanet_mnv2_fpn_pennfudan.py', det_batch,
     ['distill_loss_backbone', 'distill_loss_fpn', 'distill_loss_cls']),
    ('deeplabv3_mnv2-d8_mbb_w2a2_kd_bb_pennfudan.py',
     'deeplabv3_mnv2-d8_pennfudan.py', seg_batch,
     ['distill_loss_backbone', 'distill_loss_cwd']),
    # the W1A1 (ReAct) detector with its backbone imitated (fourteenth)
    ('retinanet_mnv2_mbb_w1a1_react_kd_bb_pennfudan.py',
     'retinanet_mnv2_fpn_pennfudan.py', det_batch,
     ['distill_loss_backbone', 'distill_loss_fpn', 'distill_loss_cls']),
]


@pytest.mark.parametrize('config, float_config, batch, names', CASES)
def test_distill_losses_are_nonzero_and_decrease(tmp_path, config,
                                                 float_config, batch, names):
    ckpt = teacher_file(tmp_path, float_config)
    torch.manual_seed(0)
    model, _ = build(config, teacher_ckpt=ckpt)
    assert isinstance(model, SingleTeacherDistill)
    data = batch(model)
    model.train()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for _ in range(4):
        losses = model(**data, mode='loss')
        assert set(names) <= set(losses)
        distill = sum(losses[name] for name in names)
        history.append(float(distill))
        optimizer.zero_grad()
        distill.backward()
        optimizer.step()
    assert history[0] > 0
    assert history[-1] < history[0], history
    # the teacher did not move
    teacher = torch.load(ckpt, weights_only=True)['state_dict']
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(value, teacher[key]), key


def test_checkpoints_are_the_students(tmp_path):
    ckpt = teacher_file(tmp_path, 'retinanet_mnv2_fpn_pennfudan.py')
    model, cfg = build('retinanet_mnv2_mbb_w2a2_kd_pennfudan.py',
                       teacher_ckpt=ckpt)
    student, _ = build('retinanet_mnv2_mbb_w2a2_pennfudan.py')
    state = model.state_dict()
    assert set(state) == set(student.state_dict())
    # a student (or float) checkpoint loads into the distiller strictly
    student.load_state_dict(state, strict=True)
    model.load_state_dict(student.state_dict(), strict=True)
    for key, value in student.state_dict().items():
        assert torch.equal(model.architecture.state_dict()[key], value)


def test_bad_teachers_stop_the_build(tmp_path):
    config = 'retinanet_mnv2_mbb_w2a2_kd_pennfudan.py'
    missing = str(tmp_path / 'nope.pth')
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        build(config, teacher_ckpt=missing)
    # a checkpoint of another model (the segmentor) does not match
    other = teacher_file(tmp_path, 'deeplabv3_mnv2-d8_pennfudan.py')
    with pytest.raises(ValueError, match='teacher.pth does not match .*'
                       'retinanet_mnv2_fpn_pennfudan.py'):
        build(config, teacher_ckpt=other)
    ckpt = teacher_file(tmp_path, 'retinanet_mnv2_fpn_pennfudan.py')
    cfg = Config.fromfile(osp.join(CONFIGS, config))
    cfg.model.teacher_ckpt = ckpt
    cfg.model.distiller.student_recorders.cls.source = 'bbox_head.nope'
    with pytest.raises(ValueError, match="student has no module "
                       "'bbox_head.nope'"):
        with DefaultScope.overwrite_default_scope('mmdet'):
            registry('mmdet').build(cfg.model)


def test_losses_are_zero_for_equal_outputs_and_positive_otherwise():
    torch.manual_seed(0)
    a = [torch.randn(2, 3, 4, 5), torch.randn(2, 3, 2, 3)]
    b = [t + 0.5 * torch.randn_like(t) for t in a]
    for loss in (FeatureImitationLoss(), SigmoidKLDivergence(tau=2.0),
                 ChannelWiseDivergence(tau=1.0)):
        assert float(loss(a, a)) == pytest.approx(0.0, abs=1e-5)
        assert float(loss(b, a)) > 1e-3
    with pytest.raises(ValueError, match='output 0 of the student'):
        FeatureImitationLoss()([a[0][:1]], [a[0]])
