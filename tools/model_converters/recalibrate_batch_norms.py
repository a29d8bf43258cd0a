# Copyright (c) mmbinary contributors. All rights reserved.
"""Estimate a trained model's batch-norm statistics again, with its final
weights, on the training data of its config, and write a new checkpoint.

    python tools/model_converters/recalibrate_batch_norms.py \
        CONFIG CHECKPOINT OUT [--num-batches N] [--force]

What ``BatchNormRecalibrationHook`` does at the end of training, for a
checkpoint trained without it. Only the running means and variances of the
batch norms that train change (not those of frozen stages or with
``norm_eval``); everything else in the checkpoint is kept. Pack and test
OUT as usual (``tools/pack_model.py``, ``tools/test.py``). OUT is written
beside itself and renamed into place when complete; it must differ from
CHECKPOINT.
"""
import argparse
import os.path as osp

import torch
from mmengine.config import DictAction
from mmengine.runner import Runner, set_random_seed

from mmbinary.engine import recalibrate_batch_norms
from mmbinary.models.packing import load_trained_checkpoint
from mmbinary.quant import ALLOW_BIT_CHANGE_KEY, BitWidthMismatchError
from mmbinary.utils.atomic_write import atomic_write_path
from mmbinary.utils.checkpoint import CheckpointError, check_conversion_paths
from mmbinary.utils.scope import load_tool_config, register_modules_for


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config the model was trained with')
    parser.add_argument('checkpoint', help='trained (unpacked) checkpoint')
    parser.add_argument('out', help='checkpoint to write')
    parser.add_argument(
        '--num-batches', type=int, default=None,
        help='training batches to run (default: one pass over the training '
        'loader; a few hundred are plenty on a large dataset)')
    parser.add_argument('--force', action='store_true',
                        help='overwrite OUT if it exists')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value pairs')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.num_batches is not None and args.num_batches < 1:
        raise SystemExit('--num-batches must be a positive integer, got '
                         f'{args.num_batches}')
    if osp.abspath(args.out) == osp.abspath(args.checkpoint):
        raise SystemExit('OUT must differ from CHECKPOINT: the trained '
                         'checkpoint is kept as it is')
    try:
        check_conversion_paths(args.config, args.checkpoint, args.out,
                               args.force)
    except ValueError as error:
        raise SystemExit(str(error))
    cfg = load_tool_config(args.config, args.cfg_options)
    register_modules_for(cfg)
    from mmengine.registry import MODELS
    model = MODELS.build(cfg.model)
    try:
        checkpoint = load_trained_checkpoint(
            model, args.checkpoint,
            bool(cfg.get(ALLOW_BIT_CHANGE_KEY, False)))
    except (CheckpointError, BitWidthMismatchError) as error:
        raise SystemExit(str(error))
    except ValueError as error:  # packed: the norms are folded
        raise SystemExit(f'{error}; a packed model\'s batch norms are '
                         'folded into its integer epilogues: recalibrate '
                         'the trained checkpoint, then pack that')
    seed = (cfg.get('randomness') or {}).get('seed')
    seed = 0 if seed is None else seed
    set_random_seed(seed)
    loader = Runner.build_dataloader(cfg.train_dataloader, seed=seed)
    count = recalibrate_batch_norms(model, loader, args.num_batches)
    checkpoint['state_dict'] = model.state_dict()
    checkpoint.setdefault('meta', {})['bn_recalibration'] = dict(
        source_checkpoint=osp.basename(args.checkpoint),
        num_batches=args.num_batches)
    try:
        with atomic_write_path(args.out) as temp:
            torch.save(checkpoint, temp)
    except (OSError, RuntimeError) as error:
        raise SystemExit(f'could not write {args.out} ({error}); nothing '
                         'was replaced')
    print(f'{count} batch norms recalibrated; written to {args.out}')


if __name__ == '__main__':
    main()
