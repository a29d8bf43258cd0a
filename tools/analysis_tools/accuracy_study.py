# Copyright (c) mmbinary contributors. All rights reserved.
"""The accuracy study: float against W8A8, W4A4, W2A2 and W1A1 on
Penn-Fudan, for detection (RetinaNet) and segmentation (DeepLabV3), each
encoded model fine-tuned with the same budget from the same float start.

    python tools/analysis_tools/accuracy_study.py --data-root data/pennfudan

Steps, all standard tool runs (each command is logged beside its outputs,
so any run can be repeated by hand):

1. train the float model once per task (``--float-epochs``): the start;
2. per seed, fine-tune from it for ``--epochs``: the float model itself
   (the float row gets the same budget), every ``--bits`` pair with the
   project's default quantizers, W2A2 with the paper's quantizer
   (``w_mode='paper'``, fixed clip ``a_clip=1.0``), the paper's
   progressive schedule (W8A8, then W4A4, then W2A2, a third of the budget
   each, in one run with ``ProgressivePrecisionHook``) and the rows with
   their own configs (``ROW_CONFIGS``: W2A2 and W1A1 distilled from the
   float start, or with ``--teacher float`` from the float row of the same
   seed, with per-level head norms, with the ReAct structure);
3. evaluate each with ``tools/test.py`` (mmdet's CocoMetric, mmseg's
   IoUMetric), pack it with ``tools/pack_model.py`` and evaluate the packed
   model through the same pipeline;
4. with ``--bn-recalibration``, beside each row a ``-bnr`` row: the row's
   trained checkpoint with its batch norms estimated again on the training
   data (``tools/model_converters/recalibrate_batch_norms.py``), evaluated
   and packed the same way (the same training, so the pair shows what the
   recalibration alone changes).

Finished runs are kept (``result.json`` in each run's folder) and skipped
when the study is run again, so it can be stopped and resumed. The table
(mean and spread over the seeds) goes to ``<work-dir>/study.md``.
"""
import argparse
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = osp.join(ROOT, 'configs', 'pennfudan')
#: What --data-root must hold.
REQUIRED_FILES = ('images', 'annotations/train.json', 'annotations/val.json',
                  'seg_masks', 'splits/train.txt', 'splits/val.txt')
#: The paper's quantizer: alpha = 1 weights, HTanh/HReLU activations.
PAPER_OPTIONS = dict(w_mode='paper', a_clip=1.0)


@dataclass(frozen=True)
class Task:
    """One task of the study: its configs, encoded parts and metrics."""
    name: str
    float_config: str
    mbb_config: str
    #: metric keys as logged, and how they are shown (points).
    metrics: Dict[str, str]
    #: metric values as logged, times this, are points.
    scale: float
    #: which converted ImageNet MobileNetV2 file the backbone starts from.
    pretrained: str

    def data_options(self, data_root: str) -> List[str]:
        root = data_root.rstrip('/') + '/'
        options = [f'{loader}.dataset.data_root={root}'
                   for loader in ('train_dataloader', 'val_dataloader',
                                  'test_dataloader')]
        if self.name == 'det':
            ann = root + 'annotations/val.json'
            options += [f'val_evaluator.ann_file={ann}',
                        f'test_evaluator.ann_file={ann}']
        return options

    def bits_options(self, bits: int, paper: bool,
                     prefix: str = 'model',
                     layer_options: Optional[dict] = None) -> List[str]:
        """``--cfg-options`` that set every encoded part of the encoded
        config to W``bits``A``bits`` (and the paper's quantizer, or other
        ``layer_options``); ``prefix``: the model's key (a distiller's
        student: ``model.architecture``)."""
        from mmengine.config import Config

        from mmbinary.models.precision import precision_cfg_options
        options = dict(PAPER_OPTIONS if paper else {}, **(layer_options or {}))
        return precision_cfg_options(
            Config.fromfile(self.mbb_config).model, bits, bits,
            options or None, prefix=prefix)


TASKS = {
    'det':
    Task(
        name='det',
        float_config=osp.join(CONFIGS, 'retinanet_mnv2_fpn_pennfudan.py'),
        mbb_config=osp.join(CONFIGS, 'retinanet_mnv2_mbb_w2a2_pennfudan.py'),
        metrics={
            'coco/bbox_mAP': 'bbox mAP',
            'coco/bbox_mAP_50': 'AP50'
        },
        scale=100.0,
        pretrained='mobilenet_v2_mmdet.pth'),
    'seg':
    Task(
        name='seg',
        float_config=osp.join(CONFIGS, 'deeplabv3_mnv2-d8_pennfudan.py'),
        mbb_config=osp.join(CONFIGS,
                            'deeplabv3_mnv2-d8_mbb_w2a2_pennfudan.py'),
        metrics={'mIoU': 'mIoU'},
        scale=1.0,
        pretrained='mobilenet_v2_mmseg.pth'),
}

#: Rows trained with their own config: task -> row -> (train config, the
#: config that tests and packs the result, model key of the student).
ROW_CONFIGS = {
    'det': {
        'w2a2-kd': ('retinanet_mnv2_mbb_w2a2_kd_pennfudan.py',
                    'retinanet_mnv2_mbb_w2a2_pennfudan.py'),
        'w2a2-kd-plbn': ('retinanet_mnv2_mbb_w2a2_plbn_kd_pennfudan.py',
                         'retinanet_mnv2_mbb_w2a2_plbn_pennfudan.py'),
        # the same with the backbone's outputs imitated too
        'w2a2-kd-plbn-bb': (
            'retinanet_mnv2_mbb_w2a2_plbn_kd_bb_pennfudan.py',
            'retinanet_mnv2_mbb_w2a2_plbn_pennfudan.py'),
        # the same with only the expand convs' inputs at 4 bits (mixed)
        'w2a2-ea4-kd-plbn-bb': (
            'retinanet_mnv2_mbb_w2a2_ea4_plbn_kd_bb_pennfudan.py',
            'retinanet_mnv2_mbb_w2a2_ea4_plbn_pennfudan.py'),
        # the same with the backbone's activations at 4 bits (mixed)
        'w2a2-bb-a4-kd-plbn': (
            'retinanet_mnv2_mbb_w2a2_bb-a4_plbn_kd_pennfudan.py',
            'retinanet_mnv2_mbb_w2a2_bb-a4_plbn_pennfudan.py'),
        # the same with a learned threshold per input channel before the
        # backbone's 2-bit quantizers (RSign at 2 bits)
        'w2a2-rsign-kd-plbn': (
            'retinanet_mnv2_mbb_w2a2_rsign_plbn_kd_pennfudan.py',
            'retinanet_mnv2_mbb_w2a2_rsign_plbn_pennfudan.py'),
        # the same with a moving average of the weights (EMAHook)
        'w2a2-kd-plbn-ema': (
            'retinanet_mnv2_mbb_w2a2_plbn_kd_ema_pennfudan.py',
            'retinanet_mnv2_mbb_w2a2_plbn_pennfudan.py'),
        # the same with OscillationDampeningHook
        'w2a2-kd-plbn-damp': (
            'retinanet_mnv2_mbb_w2a2_plbn_kd_damp_pennfudan.py',
            'retinanet_mnv2_mbb_w2a2_plbn_pennfudan.py'),
        'w1a1-react-kd': ('retinanet_mnv2_mbb_w1a1_react_kd_pennfudan.py',
                          'retinanet_mnv2_mbb_w1a1_react_pennfudan.py'),
        # the same with the backbone's outputs imitated too
        'w1a1-react-kd-bb': (
            'retinanet_mnv2_mbb_w1a1_react_kd_bb_pennfudan.py',
            'retinanet_mnv2_mbb_w1a1_react_pennfudan.py'),
        # the W2A2 distilled config with every encoded part set to W4A4
        'w4a4-kd': ('retinanet_mnv2_mbb_w2a2_kd_pennfudan.py',
                    'retinanet_mnv2_mbb_w2a2_pennfudan.py'),
        'progressive': ('retinanet_mnv2_mbb_w2a2_progressive_pennfudan.py',
                        'retinanet_mnv2_mbb_w2a2_pennfudan.py'),
        'w2a2-8bit-ends': ('retinanet_mnv2_mbb_w2a2_8bit_ends_pennfudan.py',
                           'retinanet_mnv2_mbb_w2a2_8bit_ends_pennfudan.py'),
    },
    'seg': {
        'w2a2-kd': ('deeplabv3_mnv2-d8_mbb_w2a2_kd_pennfudan.py',
                    'deeplabv3_mnv2-d8_mbb_w2a2_pennfudan.py'),
        'w2a2-kd-damp': ('deeplabv3_mnv2-d8_mbb_w2a2_kd_damp_pennfudan.py',
                         'deeplabv3_mnv2-d8_mbb_w2a2_pennfudan.py'),
        # the backbone's activations at 4 bits (mixed)
        'w2a2-bb-a4-kd': ('deeplabv3_mnv2-d8_mbb_w2a2_bb-a4_kd_pennfudan.py',
                          'deeplabv3_mnv2-d8_mbb_w2a2_bb-a4_pennfudan.py'),
        # the same with the backbone's outputs imitated too
        'w2a2-kd-bb': ('deeplabv3_mnv2-d8_mbb_w2a2_kd_bb_pennfudan.py',
                       'deeplabv3_mnv2-d8_mbb_w2a2_pennfudan.py'),
        # only the expand convs' inputs at 4 bits (mixed)
        'w2a2-ea4-kd': ('deeplabv3_mnv2-d8_mbb_w2a2_ea4_kd_pennfudan.py',
                        'deeplabv3_mnv2-d8_mbb_w2a2_ea4_pennfudan.py'),
        'w1a1-react-kd': ('deeplabv3_mnv2-d8_mbb_w1a1_react_kd_pennfudan.py',
                          'deeplabv3_mnv2-d8_mbb_w1a1_react_pennfudan.py'),
        'w4a4-kd': ('deeplabv3_mnv2-d8_mbb_w2a2_kd_pennfudan.py',
                    'deeplabv3_mnv2-d8_mbb_w2a2_pennfudan.py'),
        'progressive': ('deeplabv3_mnv2-d8_mbb_w2a2_progressive_pennfudan.py',
                        'deeplabv3_mnv2-d8_mbb_w2a2_pennfudan.py'),
    },
}
#: The rows of ROW_CONFIGS, in table order (``progressive`` is the
#: ProgressivePrecisionHook row, W8A8 -> W4A4 -> W2A2 in one run).
CONFIG_ROWS = ('w2a2-kd', 'w2a2-kd-plbn', 'w1a1-react-kd', 'w4a4-kd')
#: Distilled rows planned only when asked for (``--kd-rows``): the
#: oscillation-dampening rows (OscillationDampeningHook), the models with
#: their backbone's outputs imitated (W2A2, and the W1A1 detector of the
#: fourteenth round), the mixed-precision models (2-bit weights, 4-bit
#: backbone activations) of the twelfth and thirteenth rounds and the W2A2
#: detector with learned thresholds before its backbone's quantizers
#: (fifteenth round), the W2A2 detector whose checkpoint holds a moving
#: average of its weights (sixteenth round) and the one whose expand convs
#: read 4-bit inputs, distilled with its backbone imitated (seventeenth),
#: and its segmentation twin without the imitation (eighteenth).
OPTIONAL_CONFIG_ROWS = ('w2a2-kd-plbn-damp', 'w2a2-kd-damp',
                        'w2a2-kd-plbn-ema', 'w2a2-ea4-kd-plbn-bb',
                        'w2a2-ea4-kd',
                        'w2a2-kd-plbn-bb', 'w2a2-kd-bb', 'w1a1-react-kd-bb',
                        'w2a2-bb-a4-kd-plbn', 'w2a2-bb-a4-kd',
                        'w2a2-rsign-kd-plbn')
#: Distilled rows trained at other widths than their config's: row -> bits.
RETARGETED_ROWS = {'w4a4-kd': 4}
#: Rows of the encoded config with other MBB layer options on every
#: encoded part: row -> (bits, options). ``w2a2-lsqw``: the weight scales
#: times a learned per-channel gain (LSQ gradient).
LAYER_OPTION_ROWS = {'w2a2-lsqw': (2, dict(w_clip='learned'))}
#: Choices of ``--teacher``; the rows distilled from the float row carry
#: this suffix.
TEACHERS = ('start', 'float')
FLOAT_TEACHER_SUFFIX = '-tfloat'
#: Rows whose trained checkpoint had its batch norms estimated again
#: (``--bn-recalibration``): the row's name with this suffix.
RECALIBRATED_SUFFIX = '-bnr'
#: Rows of ROW_CONFIGS trained without a teacher: W2A2 with the stem and
#: the predictors at W8A8 instead of float.
PLAIN_CONFIG_ROWS = ('w2a2-8bit-ends', )


@dataclass
class Stage:
    """One training run: ``bits`` None is float. A stage with its own
    ``config`` (a distilled or progressive row) trains with it as it is
    (no bits options unless ``set_bits``) and is tested and packed with
    ``eval_config``."""
    bits: Optional[int]
    epochs: int
    paper: bool = False
    config: Optional[str] = None
    eval_config: Optional[str] = None
    #: the key of the model to train in ``config`` (a distiller's student
    #: is ``model.architecture``).
    model_prefix: str = 'model'
    #: more ``--cfg-options`` for training.
    options: Tuple[str, ...] = ()
    #: a ``config`` row whose student widths are set to ``bits`` on the
    #: command line (training, test and packing alike).
    set_bits: bool = False
    #: other MBB layer options of every encoded part (a row of
    #: ``LAYER_OPTION_ROWS``).
    layer_options: Optional[dict] = None


#: One lock per run folder: a float row is trained once even when it is
#: also the teacher of distilled rows running at the same time.
_RUN_LOCKS: Dict[str, threading.Lock] = {}
_RUN_LOCKS_GUARD = threading.Lock()


def _run_lock(work_dir: str) -> threading.Lock:
    with _RUN_LOCKS_GUARD:
        return _RUN_LOCKS.setdefault(work_dir, threading.Lock())


@dataclass
class Run:
    """A row entry: one variant, one seed, one or more training stages."""
    task: Task
    variant: str
    seed: int
    stages: List[Stage]
    work_dir: str
    start: str = ''  # the float start checkpoint
    #: a distilled row's teacher: the float row of the same seed (its
    #: run, trained first when missing), or None for the float start.
    teacher: Optional['Run'] = None
    #: a ``-bnr`` row: the run whose trained checkpoint it recalibrates
    #: (trained first when missing) instead of training.
    recalibrates: Optional['Run'] = None
    commands: List[str] = field(default_factory=list)

    @property
    def checkpoint(self) -> str:
        """The checkpoint of the last stage (once trained), or of a
        ``-bnr`` row the recalibrated one."""
        if self.recalibrates is not None:
            return osp.join(self.work_dir, 'recalibrated.pth')
        stage = self.stages[-1]
        return osp.join(self.work_dir, f'stage{len(self.stages) - 1}',
                        f'epoch_{stage.epochs}.pth')

    @property
    def label(self) -> str:
        return f'{self.task.name} {self.variant} seed {self.seed}'

    @property
    def needs(self) -> List['Run']:
        """The runs this one needs done first (teacher, recalibrated)."""
        return [r for r in (self.teacher, self.recalibrates) if r is not None]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data-root', default=osp.join('data', 'pennfudan'),
                        help='Penn-Fudan in COCO and mmseg layout')
    parser.add_argument('--work-dir',
                        default=osp.join('work_dirs', 'accuracy_study'))
    parser.add_argument('--demo-data', default=osp.join(ROOT, 'data', 'demo'),
                        help='where the embedded demo data and the ImageNet '
                        'MobileNetV2 weights are (built if missing)')
    parser.add_argument('--tasks', nargs='+', default=['det', 'seg'],
                        choices=sorted(TASKS))
    parser.add_argument('--bits', nargs='+', type=int, default=[8, 4, 2, 1],
                        help='W=A bit widths of the main rows (1..8)')
    parser.add_argument('--seeds', nargs='*', type=int, default=[0, 1],
                        help='seeds of the fine-tuned rows; none: only the '
                        'float starts')
    parser.add_argument('--float-epochs', type=int, default=12,
                        help='epochs of the float start')
    parser.add_argument('--epochs', type=int, default=6,
                        help='fine-tuning epochs of every row')
    parser.add_argument('--no-paper', action='store_true',
                        help='skip the paper-quantizer W2A2 row')
    parser.add_argument('--no-progressive', action='store_true',
                        help='skip the progressive 8-4-2 row')
    parser.add_argument('--kd-rows', nargs='*', default=list(CONFIG_ROWS),
                        choices=CONFIG_ROWS + OPTIONAL_CONFIG_ROWS,
                        help='distilled rows (teacher: the float start); '
                        'none: skip them. Default: '
                        f'{" ".join(CONFIG_ROWS)}; also '
                        f'{" ".join(OPTIONAL_CONFIG_ROWS)} (oscillation '
                        'dampening; the backbone imitated)')
    parser.add_argument('--teacher', choices=TEACHERS, default='start',
                        help="the distilled rows' teacher: the float start "
                        "(default) or the float row of the same seed "
                        "(trained as long as every row; the rows are named "
                        "with a '-tfloat' suffix)")
    parser.add_argument(
        '--bn-recalibration', action='store_true',
        help="add a '-bnr' row beside each planned row: its trained "
        'checkpoint with the batch norms estimated again on the training '
        'data (tools/model_converters/recalibrate_batch_norms.py), tested '
        'and packed; the row itself is trained first when missing')
    parser.add_argument('--rows', nargs='*', default=None,
                        help='run only these rows (names as in the table, '
                        'e.g. float w2a2 w2a2-kd); default: all planned')
    parser.add_argument('--jobs', type=int, default=2,
                        help='runs at once; the CPU threads are shared')
    parser.add_argument('--threads', type=int, default=None,
                        help='CPU threads per run (default: cores / jobs)')
    parser.add_argument('--quick', action='store_true',
                        help='a smoke run: 8 training images, 4 val images')
    args = parser.parse_args()
    bad_bits = [b for b in args.bits if not 1 <= b <= 8]
    if bad_bits:
        parser.error(f'--bits must be integers in 1..8, got {bad_bits}')
    for name in ('float_epochs', 'epochs', 'jobs', 'threads'):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1, got '
                         f'{getattr(args, name)}')
    if not args.no_progressive and args.epochs < 3:
        parser.error('--epochs must be >= 3 for the progressive row (three '
                     'stages), or pass --no-progressive')
    return args


def plan(args, task: Task) -> List[Run]:
    """The runs of one task, seed by seed (the float start excluded)."""
    runs = []
    third = args.epochs // 3
    row_configs = {
        row: (osp.join(CONFIGS, train), osp.join(CONFIGS, test))
        for row, (train, test) in ROW_CONFIGS.get(task.name, {}).items()
    }
    # one run, one optimizer and one cosine schedule; the hook lowers the
    # widths at the thirds of the budget
    schedule = f'[[0,8,8],[{third},4,4],[{2 * third},2,2]]'
    progressive = [
        Stage(2, args.epochs, config=row_configs['progressive'][0],
              eval_config=row_configs['progressive'][1],
              options=(f'custom_hooks.0.schedule={schedule}', ))
    ]
    for seed in args.seeds:
        variants = [('float', [Stage(None, args.epochs)])]
        variants += [(f'w{b}a{b}', [Stage(b, args.epochs)])
                     for b in args.bits]
        if not args.no_paper:
            variants.append(('w2a2-paper', [Stage(2, args.epochs, True)]))
        for row, (bits, layer_options) in LAYER_OPTION_ROWS.items():
            variants.append((row, [
                Stage(bits, args.epochs, layer_options=layer_options)
            ]))
        if not args.no_progressive:
            variants.append(('w8-w4-w2a2', progressive))
        float_teacher = getattr(args, 'teacher', 'start') == 'float'
        distilled = set()
        for row in getattr(args, 'kd_rows', CONFIG_ROWS):
            if row in row_configs:
                train, test = row_configs[row]
                bits = 1 if row.startswith('w1a1') else 2
                bits = RETARGETED_ROWS.get(row, bits)
                name = row + (FLOAT_TEACHER_SUFFIX if float_teacher else '')
                distilled.add(name)
                variants.append((name, [
                    Stage(bits, args.epochs, config=train, eval_config=test,
                          model_prefix='model.architecture',
                          set_bits=row in RETARGETED_ROWS)
                ]))
        for row in PLAIN_CONFIG_ROWS:
            if row in row_configs:
                train, test = row_configs[row]
                variants.append(
                    (row,
                     [Stage(2, args.epochs, config=train, eval_config=test)]))
        rows = getattr(args, 'rows', None)
        recalibrate = getattr(args, 'bn_recalibration', False)
        float_row = None
        for variant, stages in variants:
            work_dir = osp.join(args.work_dir, task.name,
                                f'{variant}_seed{seed}')
            run = Run(task, variant, seed, stages, work_dir)
            if variant == 'float':
                float_row = run
            if float_teacher and variant in distilled:
                run.teacher = float_row
            if rows is not None and variant not in rows:
                continue
            runs.append(run)
            if recalibrate:
                name = variant + RECALIBRATED_SUFFIX
                runs.append(
                    Run(task, name, seed, stages,
                        osp.join(args.work_dir, task.name,
                                 f'{name}_seed{seed}'), recalibrates=run))
    return runs


def execute(run: Run, step: str, command: List[str], log_file: str,
            threads: int) -> None:
    """Run one tool with its output in ``log_file``; stop on failure."""
    line = ' '.join(command)
    run.commands.append(line)
    print(f'[{run.label}] {step}\n  $ {line}', flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    os.makedirs(osp.dirname(log_file), exist_ok=True)
    with open(log_file, 'w', encoding='utf-8') as log:
        log.write(f'$ {line}\n')
        log.flush()
        result = subprocess.run(command, cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f'[{run.label}] {step} failed (exit code '
                           f'{result.returncode}); see {log_file}')


def train_config(run: Run, stage: Stage) -> str:
    """The config a stage trains with: its own, or the task's float or
    encoded one."""
    return stage.config or (run.task.float_config if stage.bits is None else
                            run.task.mbb_config)


def stage_options(run: Run, stage: Stage, load_from: Optional[str],
                  args, evaluate: bool = False) -> List[str]:
    """``--cfg-options`` of a stage's training, or (``evaluate``) of the
    test and pack steps with its ``eval_config``."""
    epochs = stage.epochs
    model = 'model' if evaluate else stage.model_prefix
    options = run.task.data_options(args.data_root) + [
        f'{model}.backbone.init_cfg.checkpoint=' +
        osp.join(args.demo_data, 'pretrained', run.task.pretrained),
        f'randomness.seed={run.seed}',
        f'train_cfg.max_epochs={epochs}',
        # evaluation is its own step
        f'train_cfg.val_interval={epochs + 1}',
        f'default_hooks.checkpoint.interval={epochs}',
        f'param_scheduler.1.end={epochs}',
    ]
    if load_from:
        options.append(f'load_from={load_from}')
    if args.quick:
        options += [
            'train_dataloader.dataset.indices=8',
            'val_dataloader.dataset.indices=4',
            'test_dataloader.dataset.indices=4', 'param_scheduler.0.end=2'
        ]
    if stage.config is not None:
        if stage.set_bits:
            options += run.task.bits_options(stage.bits, False, model)
        if not evaluate:
            options += list(stage.options)
            if stage.model_prefix != 'model':  # a distiller
                teacher = run.start if run.teacher is None else \
                    run.teacher.checkpoint
                options.append(f'model.teacher_ckpt={teacher}')
    elif stage.bits is not None:
        options += run.task.bits_options(stage.bits, stage.paper,
                                         layer_options=stage.layer_options)
    return options


def train_and_evaluate(run: Run, args, threads: int) -> dict:
    """Train every stage of ``run`` (its float-row teacher first, if it
    has one), evaluate it unpacked and packed; a finished run is read back
    from its ``result.json``."""
    for needed in run.needs:  # a teacher, a row to recalibrate: first
        train_and_evaluate(needed, args, threads)
    with _run_lock(run.work_dir):
        return _train_and_evaluate(run, args, threads)


def _train_and_evaluate(run: Run, args, threads: int) -> dict:
    """:func:`train_and_evaluate` of ``run`` itself, under its lock."""
    from mmbinary.utils.atomic_write import atomic_open
    from mmbinary.utils.logged_metrics import read_test_metrics
    result_file = osp.join(run.work_dir, 'result.json')
    if osp.isfile(result_file):
        with open(result_file, encoding='utf-8') as f:
            return json.load(f)
    python = sys.executable
    begin = time.time()
    checkpoint = run.start or None
    options = []
    for index, stage in enumerate(
            run.stages if run.recalibrates is None else []):
        config = train_config(run, stage)
        stage_dir = osp.join(run.work_dir, f'stage{index}')
        options = stage_options(run, stage, checkpoint, args)
        bits = 'float' if stage.bits is None else f'W{stage.bits}A{stage.bits}'
        # a later stage of a progressive schedule starts from a checkpoint
        # of other bit widths, on purpose
        allow_bits = ['allow_bit_change=True'] if index else []
        command = [
            python, 'tools/train.py', config, '--work-dir', stage_dir,
            '--cfg-options', *options, *allow_bits
        ]
        if osp.isfile(osp.join(stage_dir, f'epoch_{stage.epochs}.pth')):
            # trained before the study was stopped: kept
            run.commands.append(' '.join(command))
        else:
            execute(run, f'train {bits}, {stage.epochs} epochs', command,
                    osp.join(stage_dir, 'train.log'), threads)
        checkpoint = osp.join(stage_dir, f'epoch_{stage.epochs}.pth')
    stage = run.stages[-1]
    if run.recalibrates is not None:
        checkpoint = recalibrate(run, args, threads)
        config = train_config(run, stage)
        options = stage_options(run, stage, checkpoint, args)
    if stage.config is not None:
        # (a distiller's checkpoint holds the student alone)
        config = stage.eval_config
        options = stage_options(run, stage, checkpoint, args, evaluate=True)
    keys = list(run.task.metrics)
    test_dir = osp.join(run.work_dir, 'test_unpacked')
    execute(run, 'evaluate', [
        python, 'tools/test.py', config, checkpoint, '--work-dir', test_dir,
        '--cfg-options', *options
    ], osp.join(test_dir, 'test.log'), threads)
    result = dict(
        task=run.task.name,
        variant=run.variant,
        seed=run.seed,
        checkpoint=checkpoint,
        unpacked=read_test_metrics(test_dir, keys))
    if run.stages[-1].bits is not None:
        packed = osp.join(run.work_dir, 'packed.pth')
        execute(run, 'pack', [
            python, 'tools/pack_model.py', config, checkpoint, packed,
            '--force', '--cfg-options', *options
        ], osp.join(run.work_dir, 'pack.log'), threads)
        test_dir = osp.join(run.work_dir, 'test_packed')
        execute(run, 'evaluate packed', [
            python, 'tools/test.py', config, packed, '--packed',
            '--work-dir', test_dir, '--cfg-options', *options
        ], osp.join(test_dir, 'test.log'), threads)
        result['packed'] = read_test_metrics(test_dir, keys)
    result['minutes'] = round((time.time() - begin) / 60, 1)
    result['commands'] = run.commands
    with atomic_open(result_file, 'w', encoding='utf-8') as f:
        json.dump(result, f, indent=2)
    print(f'[{run.label}] done: {result["unpacked"]}', flush=True)
    return result


def recalibrate(run: Run, args, threads: int) -> str:
    """Write the batch-norm recalibration of the trained checkpoint of
    ``run.recalibrates`` into ``run``'s folder; return its path."""
    source = run.recalibrates.checkpoint
    if not osp.isfile(source):
        raise RuntimeError(
            f'[{run.label}] {source} is gone (the row was read back from its '
            'result.json); delete that folder to train the row again')
    stage = run.stages[-1]
    config = stage.eval_config or train_config(run, stage)
    options = stage_options(run, stage, None, args,
                            evaluate=stage.config is not None)
    execute(run, 'recalibrate batch norms', [
        sys.executable, 'tools/model_converters/recalibrate_batch_norms.py',
        config, source, run.checkpoint, '--force', '--cfg-options', *options
    ], osp.join(run.work_dir, 'recalibrate.log'), threads)
    return run.checkpoint


def spread(values: Sequence[float]) -> str:
    """``mean ± half range`` of per-seed values, and the values."""
    mean = statistics.fmean(values)
    half = (max(values) - min(values)) / 2
    each = ' / '.join(f'{v:.1f}' for v in values)
    return f'{mean:.1f} ± {half:.1f} ({each})'


def table(task: Task, results: List[dict]) -> List[str]:
    """Markdown rows: per variant, each metric unpacked and packed, and the
    difference of the unpacked means to float."""
    names = list(task.metrics.values())
    header = ['variant'] + [f'{n} (unpacked)' for n in names] + [
        f'{n} (packed)' for n in names
    ] + [f'{n} − float' for n in names]
    lines = [
        '| ' + ' | '.join(header) + ' |',
        '|' + '---|' * len(header)
    ]
    by_variant: Dict[str, List[dict]] = {}
    for result in results:
        by_variant.setdefault(result['variant'], []).append(result)

    def mean(rows: List[dict], key: str) -> float:
        return statistics.fmean(r['unpacked'][key] * task.scale
                                for r in rows)

    for variant, rows in by_variant.items():
        cells = [variant]
        for form in ('unpacked', 'packed'):
            for key in task.metrics:
                values = [r[form][key] * task.scale for r in rows
                          if form in r]
                cells.append(spread(values) if values else '—')
        floats = by_variant.get('float')
        for key in task.metrics:
            cells.append('' if variant == 'float' or not floats else
                         f'{mean(rows, key) - mean(floats, key):+.1f}')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


def main() -> int:
    args = parse_args()
    args.work_dir = osp.abspath(args.work_dir)
    args.data_root = osp.abspath(args.data_root)
    args.demo_data = osp.abspath(args.demo_data)
    tasks = [TASKS[name] for name in args.tasks]
    missing = [
        path for path in REQUIRED_FILES
        if not osp.exists(osp.join(args.data_root, path))
    ]
    if missing:
        raise SystemExit(
            f'--data-root {args.data_root} lacks {missing}: it must hold '
            'Penn-Fudan as images/*.jpg, annotations/{train,val}.json '
            '(COCO), seg_masks/*.png (0 background, 1 person) and '
            'splits/{train,val}.txt')
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    print('=== Pretrained MobileNetV2 (a no-op once it is there)', flush=True)
    subprocess.run([
        sys.executable, 'tools/dataset_converters/prepare_demo_data.py',
        '--out', args.demo_data
    ], cwd=ROOT, check=True)

    starts = [
        Run(task, 'float-start', 0, [Stage(None, args.float_epochs)],
            osp.join(args.work_dir, task.name, 'float_start'))
        for task in tasks
    ]
    runs = interleave([plan(args, task) for task in tasks])
    results: List[dict] = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        start_results = list(
            pool.map(lambda r: train_and_evaluate(r, args, threads),
                     starts))
        for run, start in zip(starts, start_results):
            for other in runs:
                if other.task is run.task:
                    other.start = start['checkpoint']
                    for needed in other.needs:
                        needed.start = start['checkpoint']
        results = list(
            pool.map(lambda r: train_and_evaluate(r, args, threads),
                     runs))

    lines = [
        '# Accuracy study on Penn-Fudan', '',
        f'Float start: {args.float_epochs} epochs; every row: {args.epochs} '
        f'epochs from it; seeds {args.seeds}; values are mean ± half range '
        '(per seed).', ''
    ]
    for task, start in zip(tasks, start_results):
        first = list(task.metrics)[0]
        lines += [
            f'## {task.name}: {osp.basename(task.mbb_config)}', '',
            f'Float start: {task.metrics[first]} '
            f'{start["unpacked"][first] * task.scale:.1f}', ''
        ]
        lines += table(task, [r for r in results if r['task'] == task.name])
        lines.append('')
    summary = '\n'.join(lines)
    from mmbinary.utils.atomic_write import atomic_open
    with atomic_open(osp.join(args.work_dir, 'study.md'), 'w',
                     encoding='utf-8') as f:
        f.write(summary)
    with atomic_open(osp.join(args.work_dir, 'results.json'), 'w',
                     encoding='utf-8') as f:
        json.dump(start_results + results, f, indent=2)
    print('\n' + summary)
    return 0


def interleave(plans: List[List[Run]]) -> List[Run]:
    """One run of each task in turn (each plan is already seed by seed),
    so that every task has its first seed done early."""
    runs = []
    for index in range(max(len(plan) for plan in plans)):
        runs += [plan[index] for plan in plans if index < len(plan)]
    return runs


if __name__ == '__main__':
    sys.exit(main())
