# Copyright (c) mmbinary contributors. All rights reserved.
"""Pack a trained MBB model: bit-packed weights, folded batch norms, no float
weight in the packed layers. Prints a per-layer size table.

    python tools/pack_model.py CONFIG CHECKPOINT OUT [--force]

Evaluate the packed checkpoint with the usual pipeline::

    python tools/test.py CONFIG OUT --packed

OUT is written to a temporary file beside it and renamed into place when
complete: a failed write (a full disk) leaves an existing OUT, even OUT =
CHECKPOINT, as it was.
"""
import argparse
import os.path as osp

import torch
from mmengine.config import DictAction

import mmbinary
from mmbinary.models.layers import MBBConv2d, MBBLinear
from mmbinary.models.packing import (LAYOUT_KEY, convert_to_packed,
                                     load_trained_checkpoint, packed_layout,
                                     state_dict_bytes)
from mmbinary.quant import ALLOW_BIT_CHANGE_KEY, BitWidthMismatchError
from mmbinary.utils.atomic_write import atomic_write_path
from mmbinary.utils.checkpoint import CheckpointError, check_conversion_paths
from mmbinary.utils.scope import load_tool_config, register_modules_for


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config the model was trained with')
    parser.add_argument('checkpoint', help='trained (unpacked) checkpoint')
    parser.add_argument('out', help='packed checkpoint to write')
    parser.add_argument('--force', action='store_true',
                        help='overwrite OUT if it exists')
    parser.add_argument('--no-fold-norms', action='store_true',
                        help='keep batch norms as separate layers')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value pairs')
    return parser.parse_args()


def size_table(rows, float_total: int, packed_total: int) -> str:
    """Markdown table of per-layer float and packed bytes."""
    lines = ['| layer | type | W/A | float KiB | packed KiB | ratio |',
             '|---|---|---|---:|---:|---:|']
    for name, kind, bits, float_bytes, packed_bytes in rows:
        lines.append(f'| {name} | {kind} | {bits} | {float_bytes / 1024:.1f} '
                     f'| {packed_bytes / 1024:.1f} | '
                     f'{float_bytes / packed_bytes:.1f}x |')
    layer_float = sum(row[3] for row in rows)
    layer_packed = sum(row[4] for row in rows)
    lines.append(f'| **MBB layers ({len(rows)})** | | | '
                 f'{layer_float / 1024:.1f} | {layer_packed / 1024:.1f} | '
                 f'{layer_float / max(layer_packed, 1):.1f}x |')
    lines.append(f'| **whole model** | | | {float_total / 1024:.1f} | '
                 f'{packed_total / 1024:.1f} | '
                 f'{float_total / max(packed_total, 1):.1f}x |')
    return '\n'.join(lines)


def main() -> None:
    args = parse_args()
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
        load_trained_checkpoint(model, args.checkpoint,
                                bool(cfg.get(ALLOW_BIT_CHANGE_KEY, False)))
    except (CheckpointError, ValueError, BitWidthMismatchError) as error:
        raise SystemExit(str(error))
    model.eval()

    float_total = state_dict_bytes(model)
    float_bytes = {
        name: sum(p.numel() * 4 for p in module.parameters(recurse=False))
        for name, module in model.named_modules()
        if isinstance(module, (MBBConv2d, MBBLinear))
    }
    try:
        convert_to_packed(model, fold_norms=not args.no_fold_norms)
    except (RuntimeError, ValueError) as error:
        raise SystemExit(f'cannot pack {args.checkpoint}: {error}')
    layout = packed_layout(model)
    rows = []
    for name, entry in layout['layers'].items():
        module = model.get_submodule(name)
        rows.append((name, entry['type'].replace('PackedMBB', ''),
                     f'W{module.w_bits}A{module.a_bits}', float_bytes[name],
                     module.packed_bytes()))
    packed_total = state_dict_bytes(model)
    print(size_table(rows, float_total, packed_total))

    checkpoint = dict(
        meta={
            LAYOUT_KEY: layout,
            'mmbinary_version': mmbinary.__version__,
            'source_checkpoint': osp.basename(args.checkpoint),
        },
        state_dict=model.state_dict())
    try:
        with atomic_write_path(args.out) as temp:
            torch.save(checkpoint, temp)
    except (OSError, RuntimeError) as error:  # a full disk, a size limit
        raise SystemExit(f'could not write {args.out} ({error}); nothing '
                         'was replaced')
    print(f'packed checkpoint written to {args.out} '
          f'({osp.getsize(args.out) / 1024:.1f} KiB)')


if __name__ == '__main__':
    main()
