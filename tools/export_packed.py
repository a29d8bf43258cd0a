# Copyright (c) mmbinary contributors. All rights reserved.
"""Export a packed model part (the backbone by default) for hardware: the
packed-model format (manifest.json + model.safetensors), a resource table,
optionally test vectors and ONNX graphs. docs/export.md describes it.

    python tools/export_packed.py CONFIG CHECKPOINT OUT_DIR \\
        [--part backbone] [--input-size H W] [--vectors N] [--onnx] [--force]

CHECKPOINT is a trained MBB checkpoint (packed here) or a packed one
(tools/pack_model.py).
"""
import argparse
import os
import os.path as osp

import torch
from mmengine.config import DictAction
from mmengine.runner import load_checkpoint

from mmbinary.export.format import EXPORT_FILES
from mmbinary.models.packing import (convert_to_packed, is_packed_checkpoint,
                                     load_packed_checkpoint)
from mmbinary.quant import ALLOW_BIT_CHANGE_KEY, allow_bit_change
from mmbinary.utils import safe_torch_load
from mmbinary.utils.checkpoint import CheckpointError
from mmbinary.utils.scope import load_tool_config, register_modules_for


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config the model was trained with')
    parser.add_argument('checkpoint',
                        help='trained MBB checkpoint, or a packed one')
    parser.add_argument('out_dir', help='export directory to write')
    parser.add_argument('--part', default='backbone',
                        help='the model part to export (a module name of '
                        'the model, e.g. backbone, neck); default backbone')
    parser.add_argument('--input-size', type=int, nargs=2, default=[224, 224],
                        metavar=('H', 'W'),
                        help='image size the shapes, resources and vectors '
                        'are for (default 224 224)')
    parser.add_argument('--vectors', type=int, default=0, metavar='N',
                        help='write N seeded random test vectors')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the test vectors')
    parser.add_argument('--onnx', action='store_true',
                        help='also write model_custom.onnx and '
                        'model_plain.onnx')
    parser.add_argument('--force', action='store_true',
                        help='write into a non-empty OUT_DIR (replaces only '
                        'the files an export writes)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value pairs')
    args = parser.parse_args(argv)
    if args.vectors < 0:
        parser.error(f'--vectors must be >= 0, got {args.vectors}')
    if min(args.input_size) < 1:
        parser.error(f'--input-size must be positive, got {args.input_size}')
    return args


def check_out_dir(out_dir: str, force: bool) -> None:
    """Refuse a file, or a non-empty directory without ``--force``."""
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise SystemExit(f'OUT_DIR {out_dir} exists and is not a directory')
    if osp.isdir(out_dir) and os.listdir(out_dir) and not force:
        raise SystemExit(
            f'OUT_DIR {out_dir} is not empty; pass --force to write into it '
            f'(only {", ".join(EXPORT_FILES)} are replaced)')


def load_model(cfg, checkpoint: str) -> torch.nn.Module:
    """Build the config's model and give it its packed form from a trained
    or a packed checkpoint; a damaged checkpoint, one of other bit widths
    (unless ``allow_bit_change=True``) or a layer that cannot be packed
    stops with a one-line message."""
    register_modules_for(cfg)
    from mmengine.registry import MODELS
    model = MODELS.build(cfg.model)
    try:
        packed = is_packed_checkpoint(
            safe_torch_load(checkpoint, map_location='cpu'))
        with allow_bit_change(bool(cfg.get(ALLOW_BIT_CHANGE_KEY, False))):
            if packed:
                load_packed_checkpoint(model, checkpoint)
            else:
                load_checkpoint(model, checkpoint, map_location='cpu',
                                strict=True)
                convert_to_packed(model)
    except CheckpointError as error:  # (names the file)
        raise SystemExit(str(error))
    except (ValueError, RuntimeError) as error:
        raise SystemExit(f'{checkpoint}: {error}')
    return model.eval()


class _Captured(Exception):
    pass


def part_inputs(model: torch.nn.Module, part: torch.nn.Module,
                size) -> tuple:
    """The inputs ``part`` gets when the model runs on one random image.

    Returns:
        tuple: (list of tensors, container type or None).
    """
    captured = {}

    def hook(module, args):
        captured['args'] = args
        raise _Captured

    handle = part.register_forward_pre_hook(hook)
    image = torch.randn(1, 3, *size)
    try:
        with torch.no_grad():
            if part is model:
                model(image)
            else:
                model._forward(image)
    except _Captured:
        pass
    finally:
        handle.remove()
    if 'args' not in captured:
        raise SystemExit('--part: the model did not run this part on an '
                         'image (is it a head run only in loss/predict?)')
    args = captured['args']
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        return list(args[0]), type(args[0])
    if not all(isinstance(arg, torch.Tensor) for arg in args):
        raise SystemExit('--part: the part takes non-tensor arguments')
    return list(args), None


def main(argv=None) -> None:
    args = parse_args(argv)
    check_out_dir(args.out_dir, args.force)
    if not osp.isfile(args.config):
        raise SystemExit(f'CONFIG not found: {args.config}')
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'CHECKPOINT not found: {args.checkpoint}')
    cfg = load_tool_config(args.config, args.cfg_options)
    model = load_model(cfg, args.checkpoint)
    try:
        part = model.get_submodule(args.part) if args.part else model
    except AttributeError:
        children = [name for name, _ in model.named_children()]
        raise SystemExit(f'--part {args.part!r} is not a module of the '
                         f'model; its parts: {children}') from None
    inputs, container = part_inputs(model, part, args.input_size)

    from mmbinary.export.exporter import ExportError, export_packed
    from mmbinary.export.resources import resource_table
    try:
        export = export_packed(
            part, inputs, args.out_dir, container=container,
            vectors=args.vectors, seed=args.seed, onnx=args.onnx,
            source=dict(config=osp.basename(args.config),
                        checkpoint=osp.basename(args.checkpoint),
                        part=args.part, input_size=args.input_size))
    except ExportError as error:
        raise SystemExit(f'--part {args.part}: {error}')
    print(resource_table(export.manifest['resources']))
    files = export.manifest['files']
    print(f'export written to {args.out_dir}: ' + ', '.join(
        f"{entry['path']} ({entry['bytes'] / 1024:.1f} KiB)"
        for entry in files.values()))


if __name__ == '__main__':
    main()
