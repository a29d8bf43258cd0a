# Copyright (c) mmbinary contributors. All rights reserved.
"""Train an mmdet detector or an mmseg segmentor from a config.

The config's ``default_scope`` (``mmdet`` or ``mmseg``) decides which
library's modules are registered. Examples::

    python tools/train.py configs/retinanet_r50_mbb_w2a2_coco.py
    python tools/train.py configs/retinanet_r50_mbb_w2a2_coco.py \\
        --cfg-options load_from=checkpoints/retinanet_r50_fpn.pth
    bash tools/dist_train.sh configs/retinanet_r50_mbb_w2a2_coco.py 8
"""
import argparse
import os
import os.path as osp

import torch
from mmengine.config import DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from mmbinary.quant import (ALLOW_BIT_CHANGE_KEY, BitWidthMismatchError,
                            allow_bit_change)
from mmbinary.utils.data_check import DatasetNotFoundError, check_datasets
from mmbinary.utils.distributed import setup_cpu_distributed
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
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main() -> None:
    args = parse_args()
    if not osp.isfile(args.config):
        raise SystemExit(f'config not found: {args.config}')

    cfg = load_tool_config(args.config, args.cfg_options, args.work_dir,
                           args.launcher)

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
