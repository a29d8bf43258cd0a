# Copyright (c) mmbinary contributors. All rights reserved.
"""Train an mmdet detector or an mmseg segmentor from a config.

The config's ``default_scope`` (``mmdet`` or ``mmseg``) decides which
library's modules are registered. Examples::

    python tools/train.py configs/retinanet_r50_mbb_w2a2_coco.py
    python tools/train.py configs/retinanet_r50_mbb_w2a2_coco.py \\
        --cfg-options load_from=checkpoints/retinanet_r50_fpn.pth
    python tools/train.py configs/retinanet_r50_mbb_w2a2_coco.py --epochs 4
    python tools/train.py configs/own_data/retinanet_mnv2_mbb_coco-format.py \\
        --float
    bash tools/dist_train.sh configs/retinanet_r50_mbb_w2a2_coco.py 8

Before anything is built, every file the run opens (datasets, evaluator
annotation files, checkpoints) is checked; the missing ones are reported in
one message with the config keys that set them.
"""
import argparse
import os
import os.path as osp

import torch
from mmengine.config import DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from mmbinary.models.precision import float_model_config
from mmbinary.quant import (ALLOW_BIT_CHANGE_KEY, BitWidthMismatchError,
                            allow_bit_change)
from mmbinary.utils.data_check import (DatasetNotFoundError, check_datasets,
                                       drop_unneeded_pretrained)
from mmbinary.utils.distributed import setup_cpu_distributed
from mmbinary.utils.schedule import scale_schedule
from mmbinary.utils.scope import load_tool_config, register_modules_for


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Train an mmdet or mmseg model (MBB-encoded or not)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--work-dir',
        help='the dir to save logs and models (default: '
        'work_dirs/<config name>)')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from this checkpoint, or, without a path, from the '
        'latest checkpoint in the work dir')
    length = parser.add_mutually_exclusive_group()
    length.add_argument(
        '--epochs',
        type=int,
        help='train this many epochs (an epoch-based config): the LR '
        'schedule, warm-up and checkpoint/validation intervals are scaled '
        'with it')
    length.add_argument(
        '--iters',
        type=int,
        help='the same for an iteration-based config (e.g. Cityscapes)')
    parser.add_argument(
        '--float',
        action='store_true',
        help='train the float twin of the encoded model (same architecture, '
        'float layers): the float start of an encoded run; work dir '
        'work_dirs/<config name>_float by default')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, as key=value pairs, e.g. '
        'model.backbone.w_bits=4 model.backbone.a_bits=4 '
        'load_from=checkpoints/float.pth')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torchrun sets LOCAL_RANK; torch.distributed.launch passes --local-rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    for option in ('epochs', 'iters'):
        value = getattr(args, option)
        if value is not None and value < 1:
            parser.error(f'--{option} must be >= 1, got {value}')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main() -> None:
    args = parse_args()
    if not osp.isfile(args.config):
        raise SystemExit(f'config not found: {args.config}')

    work_dir = args.work_dir
    if args.float and work_dir is None:
        work_dir = osp.join(
            'work_dirs',
            osp.splitext(osp.basename(args.config))[0] + '_float')
    cfg = load_tool_config(args.config, args.cfg_options, work_dir,
                           args.launcher)
    if args.float:
        try:
            cfg.model = float_model_config(cfg.model)
        except ValueError as error:
            raise SystemExit(f'--float: {error}')
        # The float start comes from the pretrained backbone, not from a
        # checkpoint of the encoded model.
        cfg.load_from = None
    for unit in ('epochs', 'iters'):
        if getattr(args, unit) is not None:
            try:
                changes = scale_schedule(cfg, getattr(args, unit), unit)
            except ValueError as error:
                raise SystemExit(f'--{unit}: {error}')
            print('Schedule scaled: ' + '; '.join(changes), flush=True)

    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'

    # resume from a given checkpoint, or (no path) the work dir's latest.
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    for key in drop_unneeded_pretrained(cfg):
        print(f'{key} is not there; not needed: load_from loads the whole '
              'model', flush=True)
    loaders = ['train_dataloader']
    if cfg.get('val_cfg'):
        loaders.append('val_dataloader')
    try:
        check_datasets(cfg, loaders)
    except DatasetNotFoundError as error:
        raise SystemExit(str(error))

    register_modules_for(cfg)
    cpu_distributed = setup_cpu_distributed(cfg)
    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)
    # Loading a checkpoint of other bit widths (load_from, resume) only
    # when the config asks for it (a progressive schedule).
    with allow_bit_change(bool(cfg.get(ALLOW_BIT_CHANGE_KEY, False))):
        runner.train()
    if cpu_distributed:
        # gloo aborts at exit when its process group is left open.
        torch.distributed.destroy_process_group()


if __name__ == '__main__':
    try:
        main()
    except BitWidthMismatchError as error:
        raise SystemExit(str(error))
