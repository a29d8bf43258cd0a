# Copyright (c) mmbinary contributors. All rights reserved.
"""Per-layer report of a model built from a config: bits, binary operations
(BOPs), float MACs left, float and packed sizes, and their totals.

For every conv and linear layer run by one inference forward of a dummy
image (forward hooks count output sizes, so layers shared across pyramid
levels count once per call):

* ``MACs``: multiply-accumulates, ``out_elements * C_in/groups * kh * kw``;
* ``BOPs``: binary operations of an MBB layer, ``MACs * w_bits * a_bits``
  (its M*K binary branches); 0 for float layers;
* ``float MACs``: MACs of the layers left in floating point;
* ``float size``: float32 weights and bias;
* ``packed size``: an MBB layer's bit-packed weights,
  ``O * ceil(C_in/groups / 64) * 64 * kh * kw * w_bits`` bits, plus float32
  per-channel scales, bias and activation clip; float layers count as float.

Norm layers and other parameters are summed apart; layers the inference
forward does not run (auxiliary heads) are listed as skipped. Example::

    python tools/analysis_tools/model_report.py \\
        configs/retinanet_r50_mbb_w2a2_coco.py --shape 800 1333
"""
import argparse
import math
import os.path as osp
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config, DictAction
from mmengine.model import revert_sync_batchnorm
from torch import nn

from mmbinary.packed_format import WORD_BITS, num_group_words
from mmbinary.utils.scope import register_modules_for

#: Default (H, W) of the dummy image per scope.
DEFAULT_SHAPES = {'mmdet': (800, 1333), 'mmseg': (512, 1024)}
FLOAT_BYTES = 4


@dataclass
class LayerRow:
    """One conv/linear layer of the report (sizes in bytes)."""
    name: str
    type: str
    w_bits: Optional[int]
    a_bits: Optional[int]
    macs: int
    bops: int
    float_macs: int
    float_bytes: float
    packed_bytes: float
    ran: bool


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Per-layer bits, BOPs, float MACs and sizes of a model')
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        metavar=('H', 'W'),
        help='dummy image size (default: 800 1333 for mmdet, 512 1024 for '
        'mmseg)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, as key=value pairs')
    parser.add_argument('--out', help='also write the report to this .json')
    parser.add_argument(
        '--summary', action='store_true', help='print the totals only')
    return parser.parse_args()


def build_model(cfg: Config) -> nn.Module:
    """The config's model in eval mode, SyncBN reverted to BN (CPU)."""
    from mmengine.registry import MODELS
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.eval()
    return model


def dummy_inputs(scope: str, shape: Tuple[int, int]) -> tuple:
    """Arguments of ``model._forward`` for one image: a (1, 3, H, W)
    random normal tensor (as after the data preprocessor) and a data
    sample holding its shape."""
    height, width = shape
    metainfo = dict(
        img_shape=(height, width),
        ori_shape=(height, width),
        pad_shape=(height, width),
        batch_input_shape=(height, width),
        scale_factor=(1.0, 1.0))
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample
        sample = DetDataSample(metainfo=metainfo)
    else:
        from mmseg.structures import SegDataSample
        sample = SegDataSample(metainfo=metainfo)
    return torch.randn(1, 3, height, width), [sample]


def _weight_layout(layer: nn.Module) -> Tuple[int, int, int]:
    """(O, C_in per group, kh * kw) of a conv or linear weight."""
    out_channels, group_channels = layer.weight.shape[:2]
    return out_channels, group_channels, math.prod(layer.weight.shape[2:])


def float_size(layer: nn.Module) -> float:
    """Bytes of the float32 weight and bias."""
    count = layer.weight.numel()
    if layer.bias is not None:
        count += layer.bias.numel()
    return float(count * FLOAT_BYTES)


def packed_size(layer: nn.Module) -> float:
    """Bytes of an MBB layer packed for inference (float layers: float).

    Weights: ``O * ceil(C_g / 64) * 64 * kh * kw * w_bits`` bits; float32
    extras: ``O`` weight scales, the bias and the activation clip.
    """
    if not hasattr(layer, 'w_bits'):
        return float_size(layer)
    out_channels, group_channels, taps = _weight_layout(layer)
    word_bits = num_group_words(group_channels) * WORD_BITS
    weight_bits = out_channels * word_bits * taps * layer.w_bits
    extras = out_channels + 1
    if layer.bias is not None:
        extras += layer.bias.numel()
    return weight_bits / 8 + extras * FLOAT_BYTES


def layer_report(model: nn.Module, inputs: tuple
                 ) -> Tuple[List[LayerRow], Dict[str, float]]:
    """Run ``model._forward(*inputs)`` once and report each layer.

    Args:
        model (nn.Module): an mmdet detector or mmseg segmentor.
        inputs (tuple): a (1, 3, H, W) image tensor and its data samples,
            see :func:`dummy_inputs`.

    Returns:
        tuple: the rows, one per conv/linear layer in module order, and the
        totals over the layers that ran, plus ``other_param_bytes`` (norm
        layers and the rest, float32) and ``skipped_layers``.
    """
    layers = [(name, module) for name, module in model.named_modules()
              if isinstance(module, (nn.Conv2d, nn.Linear))]
    macs = {name: 0 for name, _ in layers}
    calls = {name: 0 for name, _ in layers}

    def hook_for(name: str):

        def count(layer: nn.Module, args, output: torch.Tensor) -> None:
            _, group_channels, taps = _weight_layout(layer)
            macs[name] += output.numel() * group_channels * taps
            calls[name] += 1

        return count

    handles = [
        module.register_forward_hook(hook_for(name))
        for name, module in layers
    ]
    try:
        with torch.no_grad():
            model._forward(*inputs)
    finally:
        for handle in handles:
            handle.remove()

    rows = []
    for name, layer in layers:
        w_bits = getattr(layer, 'w_bits', None)
        a_bits = getattr(layer, 'a_bits', None)
        is_mbb = w_bits is not None
        rows.append(
            LayerRow(
                name=name,
                type=type(layer).__name__,
                w_bits=w_bits,
                a_bits=a_bits,
                macs=macs[name],
                bops=macs[name] * w_bits * a_bits if is_mbb else 0,
                float_macs=0 if is_mbb else macs[name],
                float_bytes=float_size(layer),
                packed_bytes=packed_size(layer),
                ran=calls[name] > 0))
    ran = [row for row in rows if row.ran]
    layer_params = {
        id(param)
        for _, layer in layers for param in layer.parameters(recurse=False)
    }
    totals = dict(
        macs=sum(row.macs for row in ran),
        bops=sum(row.bops for row in ran),
        float_macs=sum(row.float_macs for row in ran),
        float_bytes=sum(row.float_bytes for row in ran),
        packed_bytes=sum(row.packed_bytes for row in ran),
        mbb_layers=sum(row.w_bits is not None for row in ran),
        float_layers=sum(row.w_bits is None for row in ran),
        skipped_layers=len(rows) - len(ran),
        other_param_bytes=float(FLOAT_BYTES * sum(
            param.numel() for param in model.parameters()
            if id(param) not in layer_params)))
    return rows, totals


def format_report(rows: Sequence[LayerRow], totals: Dict[str, float],
                  summary: bool = False) -> str:
    """The report as a text table (MACs and BOPs in millions, sizes in
    KiB; totals in G and MiB)."""
    lines = []
    if not summary:
        header = (f'{"layer":<44} {"type":<10} {"W":>2} {"A":>2} '
                  f'{"MMACs":>10} {"MBOPs":>11} {"float MMACs":>11} '
                  f'{"float KiB":>10} {"packed KiB":>10}')
        lines += [header, '-' * len(header)]
        for row in rows:
            bits = (f'{row.w_bits:>2} {row.a_bits:>2}'
                    if row.w_bits is not None else ' - ' + ' -')
            macs = (f'{row.macs / 1e6:>10.2f} {row.bops / 1e6:>11.2f} '
                    f'{row.float_macs / 1e6:>11.2f}'
                    if row.ran else f'{"(not run)":>10} {"":>11} {"":>11}')
            lines.append(f'{row.name:<44} {row.type:<10} {bits} {macs} '
                         f'{row.float_bytes / 1024:>10.1f} '
                         f'{row.packed_bytes / 1024:>10.1f}')
        lines.append('')
    mib = 1024 * 1024
    lines += [
        f'layers: {totals["mbb_layers"]} MBB, {totals["float_layers"]} '
        f'float, {totals["skipped_layers"]} not run by inference',
        f'MACs: {totals["macs"] / 1e9:.3f} G, of which float: '
        f'{totals["float_macs"] / 1e9:.3f} G',
        f'BOPs: {totals["bops"] / 1e9:.3f} G',
        f'conv/linear size: float {totals["float_bytes"] / mib:.2f} MiB, '
        f'packed {totals["packed_bytes"] / mib:.2f} MiB',
        f'other parameters (norms, ...): '
        f'{totals["other_param_bytes"] / mib:.2f} MiB float',
    ]
    return '\n'.join(lines)


def main() -> None:
    args = parse_args()
    if not osp.isfile(args.config):
        raise SystemExit(f'CONFIG {args.config} does not exist')
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    scope = register_modules_for(cfg)
    model = build_model(cfg)
    shape = tuple(args.shape) if args.shape else DEFAULT_SHAPES[scope]
    rows, totals = layer_report(model, dummy_inputs(scope, shape))
    print(f'{args.config}, input (1, 3, {shape[0]}, {shape[1]})')
    print(format_report(rows, totals, summary=args.summary))
    if args.out:
        import mmengine
        mmengine.dump(
            dict(
                config=args.config,
                shape=list(shape),
                layers=[asdict(row) for row in rows],
                totals=totals), args.out)


if __name__ == '__main__':
    main()
