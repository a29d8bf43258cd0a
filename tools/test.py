# Copyright (c) mmbinary contributors. All rights reserved.
"""Test (and evaluate) an mmdet detector or an mmseg segmentor.

The config's ``default_scope`` (``mmdet`` or ``mmseg``) decides which
library's modules are registered. Example::

    python tools/test.py configs/retinanet_r50_mbb_w2a2_coco.py \\
        work_dirs/retinanet_r50_mbb_w2a2_coco/epoch_12.pth
    python tools/test.py configs/retinanet_r50_mbb_w2a2_coco.py \\
        work_dirs/retinanet_r50_mbb_w2a2_coco/packed.pth --packed
"""
import argparse
import os
import os.path as osp
import sys

import torch
from mmengine.config import Config, DictAction
from mmengine.model import is_model_wrapper
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from mmbinary.engine import PackedKernelChoiceHook
from mmbinary.models.packing import (is_packed_checkpoint,
                                     load_packed_checkpoint)
from mmbinary.quant import (ALLOW_BIT_CHANGE_KEY, BitWidthMismatchError,
                            allow_bit_change)
from mmbinary.utils.checkpoint import CheckpointError
from mmbinary.utils.data_check import DatasetNotFoundError, check_datasets
from mmbinary.utils.distributed import setup_cpu_distributed
from mmbinary.utils.scope import load_tool_config, register_modules_for


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Test (and evaluate) an mmdet or mmseg model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='the dir to save the evaluation metrics (default: '
        'work_dirs/<config name>)')
    parser.add_argument(
        '--out',
        type=str,
        help='dump the predictions to this pickle file')
    parser.add_argument(
        '--packed',
        action='store_true',
        help='CHECKPOINT is a packed checkpoint (tools/pack_model.py): run '
        'the packed, bitwise inference path')
    parser.add_argument(
        '--kernels',
        choices=['choose', 'popcount'],
        default='choose',
        help='with --packed: "choose" times every exact CPU kernel on each '
        'packed conv with the first test batch and keeps the fastest '
        '(PackedKernelChoiceHook; the outputs are the same on every '
        'kernel); "popcount" runs them all on the popcount kernel')
    parser.add_argument(
        '--memory-format',
        choices=['choose', 'contiguous', 'channels_last'],
        default='choose',
        help='with --packed: "choose" times a test step of the first batch '
        'with the model\'s conv weights NCHW (contiguous) and channels-last '
        '(then its activations follow) and keeps the faster; or one of '
        'them')
    parser.add_argument(
        '--score-thr',
        type=float,
        help='keep detections scoring at least this (0..1; sets '
        'model.test_cfg.score_thr): 0 gives a metric, and the packed and '
        'unpacked comparison, even for a model trained too briefly to score '
        'above the config\'s threshold')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, as key=value pairs, e.g. '
        'test_dataloader.dataset.data_root=/path/to/coco/')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def dump_metric(cfg: Config, out: str):
    """The evaluator that pickles predictions for ``--out``."""
    if not out.endswith(('.pkl', '.pickle')):
        raise SystemExit(f'--out must be a .pkl or .pickle file, got {out!r}')
    if cfg.get('default_scope', 'mmdet') == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        return DumpDetResults(out_file_path=out)
    from mmengine.evaluator import DumpResults
    return DumpResults(out_file_path=out)


def set_score_threshold(cfg: Config, score_thr: float) -> None:
    """Set the score below which a detector drops its detections (one-
    and two-stage test configs)."""
    if not 0.0 <= score_thr <= 1.0:
        raise SystemExit(f'--score-thr must be in 0..1, got {score_thr}')
    test_cfg = cfg.model.get('test_cfg') or {}
    holders = [test_cfg, test_cfg.get('rcnn')]
    holders = [h for h in holders if isinstance(h, dict) and 'score_thr' in h]
    if not holders:
        raise SystemExit(
            f'--score-thr: {cfg.filename} has no model.test_cfg.score_thr '
            '(nor model.test_cfg.rcnn.score_thr); it is a detector option')
    for holder in holders:
        holder['score_thr'] = score_thr


def explain_empty_results(cfg: Config) -> str:
    """Why a detector's evaluation gave no metric, and what to do."""
    test_cfg = cfg.model.get('test_cfg') or {}
    score_thr = test_cfg.get('score_thr', (test_cfg.get('rcnn') or {}).get(
        'score_thr'))
    return (
        'No metric: the model kept no detection on any test image, so the '
        'evaluator had nothing to score (mmdet logs "The testing results of '
        'the whole dataset is empty"). Detections scoring below '
        f'model.test_cfg.score_thr={score_thr} are dropped, and a model '
        'trained briefly scores low. Train longer, or run again with '
        '--score-thr 0 to get its (low) metric and compare the packed and '
        'unpacked model anyway.')


def main() -> None:
    args = parse_args()
    if not osp.isfile(args.config):
        raise SystemExit(f'config not found: {args.config}')

    cfg = load_tool_config(args.config, args.cfg_options, args.work_dir,
                           args.launcher)
    if args.score_thr is not None:
        set_score_threshold(cfg, args.score_thr)
    # A packed checkpoint is loaded below, once the model has its packed
    # form; the runner loads an ordinary one itself.
    cfg.load_from = None if args.packed else args.checkpoint

    try:
        check_datasets(
            cfg, ['test_dataloader'],
            files={'CHECKPOINT (command line)': args.checkpoint})
    except DatasetNotFoundError as error:
        raise SystemExit(str(error))
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'checkpoint not found: {args.checkpoint}')
    try:
        packed_file = is_packed_checkpoint(args.checkpoint)
    except CheckpointError as error:
        raise SystemExit(str(error))
    if packed_file and not args.packed:
        print(f'notice: {args.checkpoint} is a packed checkpoint (made by '
              'tools/pack_model.py): testing the packed model, as with '
              '--packed', file=sys.stderr)
        args.packed = True
        cfg.load_from = None
    allow_bits = bool(cfg.get(ALLOW_BIT_CHANGE_KEY, False))

    register_modules_for(cfg)
    cpu_distributed = setup_cpu_distributed(cfg)
    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)
    if args.packed:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        try:
            with allow_bit_change(allow_bits):
                load_packed_checkpoint(model, args.checkpoint)
        except ValueError as error:  # not packed, other config or widths
            raise SystemExit(str(error))
        runner.register_hook(
            PackedKernelChoiceHook(memory_format=args.memory_format,
                                   kernels=args.kernels == 'choose'))
    if args.out is not None:
        runner.test_evaluator.metrics.append(dump_metric(cfg, args.out))
    with allow_bit_change(allow_bits):
        metrics = runner.test()
    if not metrics and cfg.get('default_scope', 'mmdet') == 'mmdet':
        print(explain_empty_results(cfg), file=sys.stderr)
    if cpu_distributed:
        # gloo aborts at exit when its process group is left open.
        torch.distributed.destroy_process_group()


if __name__ == '__main__':
    try:
        main()
    except BitWidthMismatchError as error:
        raise SystemExit(str(error))
