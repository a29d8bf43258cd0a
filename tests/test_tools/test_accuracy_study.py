# Copyright (c) mmbinary contributors. All rights reserved.
"""The accuracy study script: its plan, that its options reach the layers,
and a shortened run on Penn-Fudan (skipped where the data is absent)."""
import argparse
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config, DictAction
from mmengine.registry import DefaultScope

from mmbinary.models import MBBConv2d

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
TOOL = osp.join(REPO, 'tools', 'analysis_tools', 'accuracy_study.py')


@pytest.fixture(scope='module')
def study():
    spec = importlib.util.spec_from_file_location('accuracy_study', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def study_args(**overrides) -> argparse.Namespace:
    args = dict(bits=[8, 4, 2, 1], seeds=[0, 1], epochs=6, no_paper=False,
                no_progressive=False, work_dir='study', quick=False,
                data_root='pennfudan', demo_data='demo',
                kd_rows=['w2a2-kd', 'w2a2-kd-plbn', 'w1a1-react-kd'],
                rows=None)
    args.update(overrides)
    return argparse.Namespace(**args)


def test_plan_has_every_row_with_the_same_budget(study):
    runs = study.plan(study_args(), study.TASKS['det'])
    names = [(run.variant, run.seed) for run in runs]
    variants = ['float', 'w8a8', 'w4a4', 'w2a2', 'w1a1', 'w2a2-paper',
                'w2a2-lsqw', 'w8-w4-w2a2', 'w2a2-kd', 'w2a2-kd-plbn',
                'w1a1-react-kd', 'w2a2-8bit-ends']
    assert names == [(v, s) for s in (0, 1) for v in variants]
    for run in runs:
        assert sum(stage.epochs for stage in run.stages) == 6
        assert run.teacher is None  # distilled from the float start
    lsqw, = runs[6].stages
    assert lsqw.bits == 2 and lsqw.layer_options == dict(w_clip='learned')
    # one run with the hook, a third of the budget per width
    progressive, = runs[7].stages
    assert progressive.config.endswith('progressive_pennfudan.py')
    assert progressive.options == (
        'custom_hooks.0.schedule=[[0,8,8],[2,4,4],[4,2,2]]', )
    assert runs[5].stages[0].paper and not runs[3].stages[0].paper
    assert runs[0].stages[0].bits is None
    kd, = runs[8].stages
    assert kd.model_prefix == 'model.architecture'
    assert kd.eval_config.endswith('retinanet_mnv2_mbb_w2a2_pennfudan.py')
    ends, = runs[11].stages
    assert ends.model_prefix == 'model' and ends.bits == 2
    assert ends.config == ends.eval_config
    assert len({run.work_dir for run in runs}) == len(runs)
    few = study.plan(study_args(seeds=[3], bits=[2], no_paper=True,
                                no_progressive=True, kd_rows=[]),
                     study.TASKS['seg'])
    assert [(run.variant, run.seed) for run in few] == [
        ('float', 3), ('w2a2', 3), ('w2a2-lsqw', 3)]
    chosen = study.plan(study_args(seeds=[0], rows=['w2a2-kd', 'float']),
                        study.TASKS['seg'])
    assert [run.variant for run in chosen] == ['float', 'w2a2-kd']


def test_row_options_reach_the_distiller_and_the_hook(study, tmp_path):
    task = study.TASKS['det']
    runs = {run.variant: run for run in study.plan(
        study_args(seeds=[0], bits=[2]), task)}
    args = study_args()
    for variant in ('w2a2-kd', 'w2a2-kd-plbn', 'w1a1-react-kd'):
        run = runs[variant]
        run.start = 'float.pth'
        stage = run.stages[0]
        train = study.stage_options(run, stage, 'float.pth', args)
        assert 'model.teacher_ckpt=float.pth' in train
        assert any(option.startswith(
            'model.architecture.backbone.init_cfg.checkpoint=')
                   for option in train)
        test = study.stage_options(run, stage, 'x.pth', args, evaluate=True)
        assert not any('teacher' in option or 'architecture' in option
                       for option in test)
        cfg = Config.fromfile(stage.config)
        assert cfg.model.type == 'mmbinary.SingleTeacherDistill'
    run = runs['w8-w4-w2a2']
    options = study.stage_options(run, run.stages[0], 'float.pth', args)
    cfg = Config.fromfile(run.stages[0].config)
    parsed = {}
    for option in options:
        key, value = option.split('=', 1)
        parsed[key] = DictAction._parse_iterable(value)
    cfg.merge_from_dict(parsed)
    from mmbinary.engine import ProgressivePrecisionHook
    hook = ProgressivePrecisionHook(**{
        k: v
        for k, v in cfg.custom_hooks[0].items() if k != 'type'
    })
    assert hook.schedule == {0: (8, 8), 2: (4, 4), 4: (2, 2)}


def build_model(config: str, options: list):
    cfg = Config.fromfile(config)
    parsed = {}
    for option in options:
        key, value = option.split('=', 1)
        parsed[key] = DictAction._parse_iterable(value)
    cfg.merge_from_dict(parsed)
    scope = cfg.default_scope
    if scope == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    else:
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(cfg.model)


# det: MobileNetV2 16 expand + 17 projection + 1 last conv, FPN 3 lateral +
# 5 output convs, head 2 x 2 tower convs; seg: the same backbone without
# the last conv, ASPP 4 branches + image pool + bottleneck.
@pytest.mark.parametrize('task_name, encoded', [('det', 46), ('seg', 39)])
@pytest.mark.parametrize('paper', [False, True])
def test_bits_and_paper_options_reach_every_encoded_layer(
        study, task_name, encoded, paper):
    task = study.TASKS[task_name]
    model = build_model(task.mbb_config, task.bits_options(3, paper))
    layers = [m for m in model.modules() if isinstance(m, MBBConv2d)]
    assert len(layers) == encoded
    assert {(m.w_bits, m.a_bits) for m in layers} == {(3, 3)}
    w_modes = {m.weight_quantizer.mode for m in layers}
    clips = {m.act_quantizer.learn_clip for m in layers}
    if paper:
        assert w_modes == {'paper'} and clips == {False}
        assert {float(m.act_quantizer.clip) for m in layers} == {1.0}
    else:
        assert w_modes == {'channel'} and clips == {True}


@pytest.mark.parametrize('task_name', ['det', 'seg'])
def test_learned_weight_clip_row_reaches_every_encoded_layer(
        study, task_name):
    task = study.TASKS[task_name]
    run, = study.plan(study_args(seeds=[0], rows=['w2a2-lsqw']), task)
    stage, = run.stages
    for evaluate in (False, True):  # training, and testing and packing
        options = study.stage_options(run, stage, 'start.pth', study_args(),
                                      evaluate=evaluate)
        model = build_model(task.mbb_config, [
            option for option in options if option.startswith('model.')
            and 'init_cfg' not in option
        ])
        layers = [m for m in model.modules() if isinstance(m, MBBConv2d)]
        assert layers and all(m.weight_quantizer.learn_clip for m in layers)
        assert {(m.w_bits, m.a_bits) for m in layers} == {(2, 2)}


def test_float_row_teacher_is_the_float_row_of_the_same_seed(study):
    task = study.TASKS['det']
    args = study_args(seeds=[0, 1], teacher='float', kd_rows=['w2a2-kd'],
                      rows=['w2a2-kd-tfloat'])
    runs = study.plan(args, task)
    assert [(run.variant, run.seed) for run in runs] == [
        ('w2a2-kd-tfloat', 0), ('w2a2-kd-tfloat', 1)]
    for run in runs:
        teacher = run.teacher
        assert teacher.variant == 'float' and teacher.seed == run.seed
        assert teacher.checkpoint == osp.join(
            'study', 'det', f'float_seed{run.seed}', 'stage0', 'epoch_6.pth')
        options = study.stage_options(run, run.stages[0], 'start.pth', args)
        assert f'model.teacher_ckpt={teacher.checkpoint}' in options
        assert 'load_from=start.pth' in options


def test_recalibrated_rows_recalibrate_the_row_they_follow(
        study, monkeypatch, tmp_path):
    task = study.TASKS['det']
    args = study_args(seeds=[0], bits=[2], no_paper=True,
                      no_progressive=True, kd_rows=['w2a2-kd'],
                      rows=['float', 'w2a2', 'w2a2-kd'],
                      bn_recalibration=True, work_dir=str(tmp_path))
    runs = study.plan(args, task)
    assert [run.variant for run in runs] == [
        'float', 'float-bnr', 'w2a2', 'w2a2-bnr', 'w2a2-kd', 'w2a2-kd-bnr']
    for base, bnr in zip(runs[::2], runs[1::2]):
        assert bnr.recalibrates is base and bnr.needs == [base]
        assert bnr.stages == base.stages and bnr.work_dir != base.work_dir
        assert bnr.checkpoint == osp.join(bnr.work_dir, 'recalibrated.pth')
    commands = []
    monkeypatch.setattr(study, 'execute',
                        lambda run, step, command, *rest: commands.append(
                            command))
    for bnr in runs[1::2]:
        source = bnr.recalibrates.checkpoint
        with pytest.raises(RuntimeError, match='is gone'):
            study.recalibrate(bnr, args, 1)
        os.makedirs(osp.dirname(source), exist_ok=True)
        open(source, 'wb').close()
        assert study.recalibrate(bnr, args, 1) == bnr.checkpoint
        command = commands[-1]
        assert command[1].endswith('recalibrate_batch_norms.py')
        assert command[3:6] == [source, bnr.checkpoint, '--force']
        options = command[7:]
        stage = bnr.stages[0]
        if bnr.variant == 'float-bnr':
            assert command[2] == task.float_config
            assert not any('bits' in option for option in options)
        elif bnr.variant == 'w2a2-bnr':  # the row's bits reach the model
            assert command[2] == task.mbb_config
            assert 'model.backbone.w_bits=2' in options
        else:  # the distilled row: its student alone, no teacher
            assert command[2] == stage.eval_config
            assert not any('teacher' in option for option in options)
        assert 'randomness.seed=0' in options


def test_float_configs_have_no_encoded_layer(study):
    for task in study.TASKS.values():
        model = build_model(task.float_config, [])
        assert not any(isinstance(m, MBBConv2d) for m in model.modules())


def test_missing_data_and_bad_arguments_are_refused(tmp_path):
    def run(*argv):
        return subprocess.run([sys.executable, TOOL, *argv],
                              capture_output=True, text=True, cwd=REPO)

    result = run('--data-root', str(tmp_path))
    assert result.returncode != 0
    assert 'lacks' in result.stderr and 'annotations/train.json' in \
        result.stderr
    result = run('--bits', '9')
    assert result.returncode == 2 and '--bits must be integers in 1..8' in \
        result.stderr
    result = run('--epochs', '2')
    assert result.returncode == 2 and 'progressive' in result.stderr


@pytest.mark.slow
def test_quick_study_trains_evaluates_packs_and_resumes(
        pennfudan, demo_data, tmp_path):
    work_dir = tmp_path / 'study'
    command = [
        sys.executable, TOOL, '--quick', '--data-root', pennfudan,
        '--demo-data', demo_data, '--work-dir',
        str(work_dir), '--bits', '2', '--seeds', '0', '--no-paper',
        '--no-progressive', '--kd-rows', 'w2a2-kd', '--rows', 'float',
        'w2a2', 'w2a2-kd', '--float-epochs', '1', '--epochs', '1', '--jobs',
        '1'
    ]
    result = subprocess.run(command, capture_output=True, text=True,
                            cwd=REPO)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    results = json.loads((work_dir / 'results.json').read_text())
    assert {(r['task'], r['variant']) for r in results} == {
        (task, variant)
        for task in ('det', 'seg')
        for variant in ('float-start', 'float', 'w2a2', 'w2a2-kd')
    }
    for r in results:
        if r['variant'] in ('w2a2', 'w2a2-kd'):
            # packed and unpacked evaluated through the same pipeline agree
            tolerance = 0.01 if r['task'] == 'det' else 1.0
            for key, value in r['unpacked'].items():
                assert abs(value - r['packed'][key]) <= tolerance, r
        else:
            assert 'packed' not in r
    study_md = (work_dir / 'study.md').read_text()
    assert '| w2a2 |' in study_md and '| float |' in study_md
    assert '| w2a2-kd |' in study_md
    assert 'mIoU' in study_md and 'bbox mAP' in study_md
    # Run again: every result is kept, nothing is trained.
    again = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert '] train' not in again.stdout
    assert (work_dir / 'study.md').read_text() == study_md


@pytest.mark.parametrize('task_name', ['det', 'seg'])
def test_row_configs_build_their_students(study, task_name):
    from mmbinary.models.heads import PerLevelNormMBBConv2d
    from mmbinary.models.layers.react import ReActMBBConv2d, RPReLU
    for row, (_, test_config) in study.ROW_CONFIGS[task_name].items():
        model = build_model(osp.join(study.CONFIGS, test_config), [])
        layers = [m for m in model.modules() if isinstance(m, MBBConv2d)]
        bits = {(m.w_bits, m.a_bits) for m in layers}
        main = (1, 1) if row.startswith('w1a1') else (2, 2)
        if row.endswith('8bit-ends'):  # the stem and the two predictors
            eight = [m for m in layers if m.w_bits == 8]
            assert len(eight) == 3 and bits == {main, (8, 8)}, row
            assert model.backbone.conv1.conv in eight
            assert model.bbox_head.retina_cls in eight
        elif '-bb-a4' in row:  # 4-bit activations in the backbone alone
            backbone = {(m.w_bits, m.a_bits)
                        for m in model.backbone.modules()
                        if isinstance(m, MBBConv2d)}
            assert backbone == {(2, 4)} and bits == {main, (2, 4)}, row
        elif '-ea4' in row:  # 4-bit inputs: the convs that read a
            # block's signed output (expand convs: mmdet's expand_conv,
            # mmseg's conv.0; mmdet's last 1x1 conv)
            four = {name for name, m in model.backbone.named_modules()
                    if isinstance(m, MBBConv2d) and m.a_bits == 4}
            assert four and all(
                name.endswith(('expand_conv.conv', 'conv.0.conv'))
                or name == 'conv2.conv' for name in four), row
            assert all(m.a_mode == 'signed' for name, m in
                       model.backbone.named_modules() if name in four), row
            assert bits == {main, (2, 4)}, row
        else:
            assert bits == {main}, row
        react = [m for m in layers if isinstance(m, ReActMBBConv2d)]
        if 'react' in row:
            assert len(react) == len(layers)
            assert any(isinstance(m, RPReLU) for m in model.modules())
            assert any(m.shortcut for m in react)
        elif 'rsign' in row:  # learned thresholds in the backbone alone
            backbone = [m for m in model.backbone.modules()
                        if isinstance(m, MBBConv2d)]
            assert react == backbone, row
            assert all(m.input_shift is not None and not m.shortcut
                       for m in react), row
            assert not any(isinstance(m, RPReLU) for m in model.modules())
        else:
            assert not react
        per_level = [m for m in layers
                     if isinstance(m, PerLevelNormMBBConv2d)]
        assert len(per_level) == (4 if 'plbn' in row else 0), row


def test_dampening_rows_train_with_the_hook_and_test_plainly(study):
    """The oscillation-dampening rows (asked for by --kd-rows) train the
    distilled config with OscillationDampeningHook and are tested and
    packed with the plain W2A2 config."""
    expected = {'det': ('w2a2-kd-plbn-damp',
                        'retinanet_mnv2_mbb_w2a2_plbn_pennfudan.py'),
                'seg': ('w2a2-kd-damp',
                        'deeplabv3_mnv2-d8_mbb_w2a2_pennfudan.py')}
    for task, (row, test_config) in expected.items():
        runs = study.plan(
            study_args(seeds=[0], bits=[2], no_paper=True,
                       no_progressive=True, kd_rows=[row]),
            study.TASKS[task])
        runs = {run.variant: run for run in runs}
        assert row in runs
        stage, = runs[row].stages
        assert stage.bits == 2 and stage.model_prefix == 'model.architecture'
        assert stage.eval_config.endswith(test_config)
        cfg = Config.fromfile(stage.config)
        assert cfg.model.type == 'mmbinary.SingleTeacherDistill'
        assert [hook.type for hook in cfg.custom_hooks] == [
            'mmbinary.OscillationDampeningHook']
    # not in the default plan
    assert not any(row.endswith('-damp') for row in study.CONFIG_ROWS)


def test_ema_row_averages_the_weights_and_tests_plainly(study):
    """The sixteenth round's row (asked for by --kd-rows) trains the
    distilled per-level-norm W2A2 detector with mmengine's EMAHook and is
    tested and packed with the plain per-level-norm config (the
    checkpoint's state_dict is the average)."""
    row = 'w2a2-kd-plbn-ema'
    runs = study.plan(
        study_args(seeds=[0], bits=[2], no_paper=True, no_progressive=True,
                   kd_rows=[row]), study.TASKS['det'])
    stage, = {run.variant: run for run in runs}[row].stages
    assert stage.bits == 2 and stage.model_prefix == 'model.architecture'
    assert stage.eval_config.endswith(
        'retinanet_mnv2_mbb_w2a2_plbn_pennfudan.py')
    cfg = Config.fromfile(stage.config)
    assert cfg.model.type == 'mmbinary.SingleTeacherDistill'
    hook, = cfg.custom_hooks
    assert hook.type == 'EMAHook' and 0 < hook.momentum <= 0.05
    assert row not in study.CONFIG_ROWS


@pytest.mark.parametrize('task, row, test_config, other_losses', [
    ('det', 'w2a2-kd-plbn-bb', 'retinanet_mnv2_mbb_w2a2_plbn_pennfudan.py',
     {'loss_fpn', 'loss_cls'}),
    ('seg', 'w2a2-kd-bb', 'deeplabv3_mnv2-d8_mbb_w2a2_pennfudan.py',
     {'loss_cwd'}),
    ('det', 'w1a1-react-kd-bb', 'retinanet_mnv2_mbb_w1a1_react_pennfudan.py',
     {'loss_fpn', 'loss_cls'}),
])
def test_backbone_imitation_rows_distill_the_backbone_and_test_plainly(
        study, task, row, test_config, other_losses):
    """The twelfth (detection) and thirteenth (segmentation) rounds' rows,
    asked for by --kd-rows, add feature imitation of the backbone's
    outputs to the distiller, keep its other terms, are planned for their
    task alone and are tested and packed with the plain W2A2 config."""
    runs = study.plan(
        study_args(seeds=[0], bits=[2], no_paper=True, no_progressive=True,
                   kd_rows=[row]), study.TASKS[task])
    runs = {run.variant: run for run in runs}
    stage, = runs[row].stages
    assert stage.eval_config.endswith(test_config)
    assert stage.bits == (1 if row.startswith('w1a1') else 2)
    distiller = Config.fromfile(stage.config).model.distiller
    assert distiller.student_recorders.backbone.source == 'backbone'
    assert distiller.teacher_recorders.backbone.source == 'backbone'
    assert distiller.distill_losses.loss_backbone.type == \
        'mmbinary.FeatureImitationLoss'
    assert other_losses <= set(distiller.distill_losses)
    other_task = {'det': 'seg', 'seg': 'det'}[task]
    other = study.plan(
        study_args(seeds=[0], bits=[2], no_paper=True, no_progressive=True,
                   kd_rows=[row]), study.TASKS[other_task])
    assert row not in {run.variant for run in other}
    assert row not in study.CONFIG_ROWS  # not in the default plan


@pytest.mark.parametrize('task, row, test_config', [
    ('det', 'w2a2-bb-a4-kd-plbn',
     'retinanet_mnv2_mbb_w2a2_bb-a4_plbn_pennfudan.py'),
    ('seg', 'w2a2-bb-a4-kd', 'deeplabv3_mnv2-d8_mbb_w2a2_bb-a4_pennfudan.py'),
])
def test_mixed_precision_rows_keep_their_bits(study, task, row,
                                              test_config):
    """The mixed-precision rows (2-bit weights, 4-bit backbone activations)
    train their distilled config and test with the mixed config, and no
    bits option flattens them to W2A2."""
    runs = study.plan(
        study_args(seeds=[0], bits=[2], no_paper=True, no_progressive=True,
                   kd_rows=[row]), study.TASKS[task])
    runs = {run.variant: run for run in runs}
    stage, = runs[row].stages
    assert stage.eval_config.endswith(test_config)
    assert not stage.set_bits
    student = Config.fromfile(stage.config).model.architecture
    assert (student.backbone.w_bits, student.backbone.a_bits) == (2, 4)
    assert row not in study.CONFIG_ROWS


def test_rsign_row_learns_thresholds_before_the_2_bit_backbone(study):
    """The fifteenth round's row (--kd-rows w2a2-rsign-kd-plbn): the
    distilled per-level-norm W2A2 detector whose backbone quantizers read
    ``x - shift`` (RSign only: no RPReLU, no real-valued shortcuts), tested
    and packed with its own plain config; detection only, not default."""
    row = 'w2a2-rsign-kd-plbn'
    runs = study.plan(
        study_args(seeds=[0], bits=[2], no_paper=True, no_progressive=True,
                   kd_rows=[row]), study.TASKS['det'])
    stage, = {run.variant: run for run in runs}[row].stages
    assert stage.eval_config.endswith(
        'retinanet_mnv2_mbb_w2a2_rsign_plbn_pennfudan.py')
    student = Config.fromfile(stage.config).model.architecture
    assert student.backbone.type == 'mmbinary.ReActMBBMobileNetV2'
    assert dict(student.backbone.react_cfg) == dict(
        rsign=True, rprelu=False, shortcut=False)
    assert (student.backbone.w_bits, student.backbone.a_bits) == (2, 2)
    assert student.bbox_head.per_level_norm
    seg = study.plan(
        study_args(seeds=[0], bits=[2], no_paper=True, no_progressive=True,
                   kd_rows=[row]), study.TASKS['seg'])
    assert row not in {run.variant for run in seg}
    assert row not in study.CONFIG_ROWS
