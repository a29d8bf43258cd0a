# Copyright (c) mmbinary contributors. All rights reserved.
"""Time a whole model built from a config, batch 1, side by side in one run:
float32 at its best (batch norms folded, the faster of NCHW and
channels-last), torch's int8 (x86 backend, FX graph mode, on the backbone
and neck), the MBB training form and the packed model, for each thread
count; then where the packed model's time goes, layer by layer.

Examples::

    python tools/analysis_tools/benchmark_model.py \\
        configs/retinanet_mnv2_mbb_w2a2_trees.py --shape 400 400
    python tools/analysis_tools/benchmark_model.py \\
        configs/retinanet_r50_mbb_w2a2_coco.py --shape 512 672 \\
        --part backbone+neck --bits 1,1 2,2 4,4 --threads 1 2

Without CHECKPOINT the model is randomly initialised (seed 0) and its
activation quantizers and batch norm statistics are calibrated by one
forward of random data.
Times are medians of ``--repeat`` runs after ``--warmup`` runs, all the
models' runs interleaved; the per-layer breakdown is measured in separate
runs with forward hooks.
"""
import argparse
import copy
import math
import os
import os.path as osp
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from mmengine.config import Config, DictAction
from mmengine.model import revert_sync_batchnorm
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmbinary.models.layers import MBBConv2d, MBBLinear
from mmbinary.models.packing import (LAYOUT_KEY, PackedMBBConv2d,
                                     choose_kernels, convert_to_packed,
                                     packed_flow)
from mmbinary.models.precision import PART_A_BITS_KEYS
from mmbinary.ops import build_info, ext_loaded
from mmbinary.utils import benchmark as bm
from mmbinary.utils.memory import (forward_peak_memory, keep_freed_memory,
                                   tensor_bytes)
from mmbinary.utils.scope import register_modules_for

#: Default (H, W) of the random image per scope (as model_report.py).
DEFAULT_SHAPES = {'mmdet': (800, 1333), 'mmseg': (512, 1024)}
PARTS = ('whole', 'backbone+neck')
TOOL = 'tools/analysis_tools/benchmark_model.py'
#: Kernel variants of the packed CPU op, best first (as the op picks them).
CPU_KERNELS = ('avx512', 'avx2', 'popcnt', 'generic')
INT8_BACKEND = 'x86'
#: --packed-kernel: per-layer choice by timing, or one kernel everywhere.
KERNEL_MODES = ('choose', 'popcount', 'int8')
RANDOM_WEIGHTS = ('random (seed 0); quantizer clips and batch norm '
                  'statistics from one forward of a random image')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='config file path (mmdet or mmseg)')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='trained (unpacked) checkpoint; default: '
                        'random initialisation')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size (default: 800 1333 for mmdet, '
                        '512 1024 for mmseg)')
    parser.add_argument('--threads', type=int, nargs='+', default=[1],
                        help='torch thread counts to time (default: 1)')
    parser.add_argument('--bits', nargs='+', default=None,
                        help="W,A pairs ('1,1 2,2') or W A integers "
                        "('1 1 2 2'); default: the config's bits")
    parser.add_argument('--part', choices=PARTS, default='whole',
                        help="what a forward runs: the whole network in "
                        "tensor mode (no post-processing) or "
                        "extract_feat (backbone + neck)")
    parser.add_argument('--repeat', type=int, default=3,
                        help='timed runs of each model (median reported)')
    parser.add_argument('--warmup', type=int, default=1,
                        help='untimed runs of each model first')
    parser.add_argument('--no-training-form', action='store_true',
                        help='do not time the MBB training form (slow at '
                        'large inputs)')
    parser.add_argument('--no-int8', action='store_true',
                        help='do not build and time the torch int8 model')
    parser.add_argument('--packed-kernel', choices=KERNEL_MODES,
                        default='choose',
                        help='the packed convs\' CPU kernel: choose the '
                        'faster exact one per layer by timing both at '
                        'conversion (default), or popcount / int8 for all '
                        '(int8 where the layer allows it)')
    parser.add_argument('--no-breakdown', action='store_true',
                        help='skip the per-layer breakdown')
    parser.add_argument('--no-keep-freed-memory', action='store_true',
                        help='let glibc unmap large freed blocks (its '
                        'default) instead of keeping them for the next '
                        'forward; see mmbinary.utils.memory')
    parser.add_argument('--no-row-bands', action='store_true',
                        help="run large inverted-residual blocks at once "
                        "instead of in bands of rows (packed_flow's "
                        'MIN_BANDED_BYTES); for comparing the two')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value pairs')
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.repeat < 1:
        parser.error(f'--repeat must be >= 1, got {args.repeat}')
    if args.warmup < 0:
        parser.error(f'--warmup must be >= 0, got {args.warmup}')
    if any(t < 1 for t in args.threads):
        parser.error(f'--threads must be >= 1, got {args.threads}')
    if args.shape is not None and min(args.shape) < 1:
        parser.error(f'--shape must be positive, got {args.shape}')
    try:
        args.bits = None if args.bits is None else bits_pairs(args.bits)
    except ValueError as error:
        parser.error(str(error))
    return args


def bits_pairs(values: List[str]) -> List[Tuple[int, int]]:
    """``['1,1', '2,2']`` or ``['1', '1', '2', '2']`` -> ``[(1, 1), (2, 2)]``.
    """
    if all(',' in value for value in values):
        tokens = [part for value in values for part in value.split(',')]
    elif any(',' in value for value in values):
        raise ValueError(f"--bits: write every pair as W,A or none, got "
                         f'{values}')
    else:
        tokens = list(values)
    if len(tokens) % 2:
        raise ValueError(f'--bits needs W A pairs, got {values}')
    try:
        numbers = [int(token) for token in tokens]
    except ValueError:
        raise ValueError(f'--bits must be integers 1..8, got {values}') \
            from None
    if any(not 1 <= n <= 8 for n in numbers):
        raise ValueError(f'--bits must be integers 1..8, got {values}')
    return list(zip(numbers[::2], numbers[1::2]))


def set_bits(node, w_bits: int, a_bits: int) -> int:
    """Set every ``w_bits`` / ``a_bits`` in a model config, in place.

    Returns:
        int: how many MBB parts (dicts with ``w_bits``) were set.
    """
    count = 0
    if isinstance(node, dict):
        if 'w_bits' in node or 'a_bits' in node:
            node['w_bits'], node['a_bits'] = w_bits, a_bits
            count += 1
        for value in node.values():
            count += set_bits(value, w_bits, a_bits)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += set_bits(value, w_bits, a_bits)
    return count


def config_bits(node) -> List[Tuple[int, int]]:
    """The ``(w_bits, a_bits)`` pairs a model config sets, each once, in
    the config's order (empty if none); a part's ``expand_a_bits`` makes a
    pair of its own."""
    pairs: List[Tuple[int, int]] = []
    if isinstance(node, dict):
        if 'w_bits' in node:
            pairs.append((int(node['w_bits']),
                          int(node.get('a_bits', node['w_bits']))))
            # a part's own bits for some of its convs (expand_a_bits)
            pairs += [(int(node['w_bits']), int(node[key]))
                      for key in PART_A_BITS_KEYS
                      if node.get(key) is not None]
        children = node.values()
    elif isinstance(node, (list, tuple)):
        children = node
    else:
        return pairs
    for child in children:
        pairs += config_bits(child)
    return list(dict.fromkeys(pairs))


def bits_name(pairs: List[Tuple[int, int]]) -> str:
    """``'W2A2'``, or ``'mixed W4A4/W2A2'`` for a config whose parts have
    different bit widths."""
    names = [f'W{w}A{a}' for w, a in pairs]
    return names[0] if len(names) == 1 else 'mixed ' + '/'.join(names)


def forward_fn(part: str) -> bm.ForwardFn:
    """``run(model, image)`` for ``--part``."""
    if part == 'whole':
        return lambda model, image: model(image, mode='tensor')
    return lambda model, image: model.extract_feat(image)


def mbb_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, (MBBConv2d, MBBLinear))]


def build_mbb_model(cfg: Config, bits: Optional[Tuple[int, int]],
                    checkpoint: Optional[str], image: Tensor) -> nn.Module:
    """The config's model at ``bits``: random (seed 0) or loaded from
    ``checkpoint``, activation quantizers calibrated on ``image`` where no
    checkpoint set them; eval mode."""
    from mmengine.registry import MODELS
    from mmengine.runner import load_checkpoint
    model_cfg = copy.deepcopy(cfg.model)
    if bits is not None and not set_bits(model_cfg, *bits):
        raise SystemExit(f'{cfg.filename}: the model config has no w_bits / '
                         'a_bits to set with --bits')
    torch.manual_seed(0)
    model = revert_sync_batchnorm(MODELS.build(model_cfg))
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True,
                        logger='silent')
    model.eval()
    layers = mbb_layers(model)
    if not layers:
        raise SystemExit(f'{cfg.filename}: the model has no MBB layer to '
                         'pack')
    if not all(
            bool(layer.act_quantizer.initialized)
            and int(layer.act_quantizer.signed) >= 0 for _, layer in layers):
        # The whole network, whatever --part times: every layer is packed.
        calibrate(model, image, forward_fn('whole'),
                  norm_statistics=checkpoint is None)
    return model


@torch.no_grad()
def calibrate(model: nn.Module, image: Tensor, run: bm.ForwardFn,
              norm_statistics: bool) -> None:
    """One forward of ``image``: the activation quantizers take their
    clip and sign from it (their data-driven initialization) and, with
    ``norm_statistics``, every batch norm first takes the statistics of
    the input it gets (where it has more than one value per channel) as
    its running ones, so that a randomly initialised network keeps its
    activations at unit scale instead of fading layer after layer."""
    seen = set()

    def take_statistics(norm: _BatchNorm, args) -> None:
        x = args[0]
        if id(norm) in seen or x.numel() <= x.shape[1]:
            return
        seen.add(id(norm))
        dims = [d for d in range(x.dim()) if d != 1]
        norm.running_mean.copy_(x.mean(dims))
        norm.running_var.copy_(x.var(dims, unbiased=False))

    handles = [
        module.register_forward_pre_hook(take_statistics)
        for module in model.modules()
        if norm_statistics and isinstance(module, _BatchNorm)
        and module.running_mean is not None
    ]
    try:
        run(model, image)
        auxiliary = getattr(model, 'auxiliary_head', None)
        if auxiliary is not None:  # trained, packed, not run by inference
            auxiliary(model.extract_feat(image))
    finally:
        for handle in handles:
            handle.remove()


def check_checkpoint(checkpoint: Optional[str]) -> None:
    if checkpoint is None:
        return
    if not osp.isfile(checkpoint):
        raise SystemExit(f'CHECKPOINT {checkpoint} does not exist')
    from mmbinary.utils import safe_torch_load
    meta = (safe_torch_load(checkpoint, map_location='cpu') or {}).get(
        'meta') or {}
    if LAYOUT_KEY in meta:
        raise SystemExit(
            f'{checkpoint} is a packed checkpoint: pass the trained '
            '(unpacked) checkpoint, the tool packs it itself')


# ---- torch int8 -------------------------------------------------------------

class _BackboneNeck(nn.Module):
    """``neck(backbone(x))`` as one module, so that FX traces both with a
    tensor input."""

    def __init__(self, backbone: nn.Module, neck: Optional[nn.Module]):
        super().__init__()
        self.backbone = backbone
        self.neck = neck

    def forward(self, x: Tensor):
        features = self.backbone(x)
        return features if self.neck is None else self.neck(features)


class _PassThrough(nn.Module):
    """Stands for a neck already run inside the quantized backbone."""

    def forward(self, features):
        return features


def _quantize_fx(module: nn.Module, image: Tensor) -> nn.Module:
    """``module`` (float, eval) as torch's int8 model: FX graph mode,
    ``prepare_fx`` (conv + bn + relu fused), calibration on ``image``,
    ``convert_fx``."""
    import warnings

    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    torch.backends.quantized.engine = INT8_BACKEND
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # torch.ao's deprecation notices
        module.eval()
        prepared = prepare_fx(module,
                              get_default_qconfig_mapping(INT8_BACKEND),
                              (image, ))
        with torch.no_grad():
            prepared(image)
            prepared(torch.randn_like(image))
        return convert_fx(prepared)


def int8_model(float_model: nn.Module,
               image: Tensor) -> Tuple[Optional[nn.Module], str]:
    """torch's int8 model of the float twin: its backbone and neck in one
    FX graph, else the backbone alone; the heads stay float.

    Returns:
        tuple: the model (None if the backbone cannot be traced) and a note
        saying what is int8 and what could not be traced.
    """
    model = copy.deepcopy(float_model)
    model.eval()
    neck = getattr(model, 'neck', None)
    reasons = []
    try:
        model.backbone = _quantize_fx(_BackboneNeck(model.backbone, neck),
                                      image)
        if neck is not None:
            model.neck = _PassThrough()
            return model, 'int8: backbone + neck (one FX graph); heads float'
        return model, 'int8: backbone (no neck); heads float'
    except Exception as error:  # FX cannot trace every model
        reasons.append(f'backbone + neck not traceable '
                       f'({type(error).__name__}: {_first_line(error)})')
    try:
        model.backbone = _quantize_fx(model.backbone, image)
    except Exception as error:
        reasons.append(f'backbone not traceable ({type(error).__name__}: '
                       f'{_first_line(error)})')
        return None, 'int8: n/a, ' + '; '.join(reasons)
    return model, ('int8: backbone; neck and heads float; ' +
                   '; '.join(reasons))


def set_packed_kernels(mode: str, timed: nn.Module, twin: nn.Module,
                       run: Callable[[], Any]) -> str:
    """Give the packed convs of ``timed`` (and the same layers of ``twin``)
    their kernel per ``mode``; returns a line saying what was chosen."""
    layers = {name: m for name, m in timed.named_modules()
              if isinstance(m, PackedMBBConv2d)}
    if mode == 'choose':
        choices = choose_kernels(timed, run)
        chosen = {c.name: c.kernel for c in choices}
        saved = sum(c.ms['popcount'] - c.ms[c.kernel] for c in choices)
        int8 = [c for c in choices if c.kernel != 'popcount']
        im2col = [c for c in choices if c.kernel == 'int8-im2col']
        folded = (f' ({len(im2col)} with the taps folded into the channels, '
                  'int8-im2col)' if im2col else '')
        note = (f'per-layer choice by timing the kernels at conversion: '
                f'{len(int8)} of {len(choices)} layers on the integer '
                f'({int8_variant_text()}) kernel{folded}, {saved:.1f} ms '
                'less than popcount everywhere (sum of the per-layer '
                'timings)')
        if choices and not any('int8' in c.ms for c in choices):
            note += f' ({choices[0].reason})'
    else:
        chosen = {}
        for name, layer in layers.items():
            ok = mode == 'popcount' or layer.int8_unsupported() is None
            chosen[name] = mode if ok else 'popcount'
        count = sum(kernel == mode for kernel in chosen.values())
        note = f'--packed-kernel {mode}: {count} of {len(layers)} layers'
    for name, kernel in chosen.items():
        layers[name].set_kernel(kernel)
        twin.get_submodule(name).set_kernel(kernel)
    return note


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:160] if text else ''


# ---- environment ------------------------------------------------------------

def kernel_picked() -> str:
    """The packed CPU kernel the op runs: ``MMBINARY_CPU_KERNEL`` if set,
    else the best the build and the CPU have."""
    info = build_info()
    if not info['loaded']:
        return f'n/a (mmbinary._C not loaded: {info["error"]})'
    forced = os.environ.get('MMBINARY_CPU_KERNEL', '')
    compiled = str(info['compiled_cpu_kernels'])
    features = str(info['runtime_cpu_features'])
    if forced and forced != 'auto':
        picked = f'{forced} (MMBINARY_CPU_KERNEL)'
    else:
        runnable = [
            name for name in CPU_KERNELS
            if name in compiled.split(',') and (
                name == 'generic' or name in features.lower())
        ]
        picked = (f'{runnable[0]} (auto)' if runnable else
                  'auto (see the features)')
    return (f'{picked}; compiled: {compiled}; CPU features: {features}; '
            f'OpenMP: {info["with_openmp"]}')


def int8_variant_text() -> str:
    """How the integer kernel runs here: ``'AMX tiles where 16 columns
    wide, else VNNI'``, ``'VNNI'`` or ``'n/a'``."""
    ops = torch.ops.mmbinary
    variant = (ops.mbb_int8_variant()
               if hasattr(ops, 'mbb_int8_variant') else '')
    forced = os.environ.get('MMBINARY_INT8_KERNEL', '')
    if forced and forced != 'auto':
        return f'{forced.upper()} (MMBINARY_INT8_KERNEL)'
    return {'amx': 'AMX tiles where 16 columns wide, else VNNI',
            'vnni': 'VNNI'}.get(variant, 'n/a')


def depthwise_variant_text() -> str:
    """The code the fused depthwise conv (MobileNetV2 blocks) runs here:
    ``'avx512'``, ``'avx2'``, ``'portable (left to torch)'`` or ``'n/a'``
    (see ``packed_flow.FUSE_DEPTHWISE``)."""
    ops = torch.ops.mmbinary
    if not hasattr(ops, 'depthwise_pack_variant'):
        return 'n/a'
    variant = ops.depthwise_pack_variant()
    return 'portable (left to torch)' if variant == 'portable' else variant


def header_lines(args, cfg: Config, shape, ghz: Optional[float],
                 peak: Optional[float]) -> List[str]:
    flag = bm.cpu_has_flag('avx512_vpopcntdq')
    flag_text = 'n/a' if flag is None else ('yes' if flag else 'no')
    ghz_text = (f'{ghz:.2f} GHz (measured)' if ghz else
                'n/a (mmbinary.ops.profiling.measure_core_ghz missing)')
    return [
        f'# Whole-model benchmark: {osp.basename(cfg.filename)}, '
        f'{args.part}, input 1x3x{shape[0]}x{shape[1]}, batch 1', '',
        f'- CPU: {bm.cpu_model_name()}; avx512_vpopcntdq: {flag_text}; '
        f'core clock: {ghz_text}',
        f'- packed kernel: {kernel_picked()}; peak of its instruction mix '
        '(AND + POPCOUNT + ADD on registers, measured): ' +
        (f'{peak:.0f} binary MACs per cycle' if peak else 'n/a') +
        f'; integer kernel: {int8_variant_text()}',
        f'- torch {torch.__version__}; median of {args.repeat} runs after '
        f'{args.warmup} warm-up runs, the models\' runs interleaved; '
        f'weights: {args.checkpoint or RANDOM_WEIGHTS}',
        '- freed memory: ' + ('returned to the OS (glibc default)'
                              if args.no_keep_freed_memory else
                              'kept for the next forward, for every model '
                              '(mmbinary.utils.memory)'),
        '- inverted-residual blocks: ' + (
            'at once (--no-row-bands)' if args.no_row_bands else
            'in bands of rows where their float outputs exceed '
            f'{packed_flow.MIN_BANDED_BYTES >> 20} MB') +
        f'; fused depthwise convs: {depthwise_variant_text()}',
        f'- command: python {TOOL} {" ".join(args.argv)}'
    ]


# ---- tables -----------------------------------------------------------------

def speed_table(rows: List[Tuple[str, Dict[int, Optional[float]]]],
                threads: List[int], float_best: Dict[int, float],
                int8: Dict[int, Optional[float]]) -> List[str]:
    """Markdown: ms and speed-ups (reference ms / this ms) per thread
    count."""
    header = ['model']
    for t in threads:
        header += [f'{t} thr ms', f'{t} thr vs best float32',
                   f'{t} thr vs int8']
    lines = ['| ' + ' | '.join(header) + ' |',
             '|---|' + '---:|' * (len(header) - 1)]
    for name, times in rows:
        cells = [name]
        for t in threads:
            ms = times.get(t)
            cells += [bm.format_ms(ms), bm.format_ratio(float_best[t], ms),
                      bm.format_ratio(int8.get(t), ms)]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


def breakdown_table(breakdowns: List[Tuple[str, int, bm.Breakdown]]
                    ) -> List[str]:
    """Markdown: ms per kind of module and per packed-op phase (phases
    summed over packed layers and flow blocks)."""
    phases = list(bm.PHASES)
    packed_kinds = ['packed MBB', 'packed flow blocks']
    float_kinds = [
        kind for kind in bm.KINDS if kind not in packed_kinds and any(
            b.by_kind()[kind] > 0 for _, _, b in breakdowns)
    ]
    columns = (['total'] + packed_kinds + [f'- {p}' for p in phases] +
               float_kinds + ['Python/glue'])
    lines = ['| packed model | thr | ' + ' | '.join(columns) + ' |',
             '|---|---:|' + '---:|' * len(columns)]
    for bits, threads, breakdown in breakdowns:
        kinds = breakdown.by_kind()
        phase_ms = breakdown.phase_totals()
        cells = [bm.format_ms(breakdown.total_ms)]
        cells += [bm.format_ms(kinds[kind]) for kind in packed_kinds]
        cells += [bm.format_ms(phase_ms[p]) if breakdown.phases_available
                  else 'n/a' for p in phases]
        cells += [bm.format_ms(kinds[kind])
                  for kind in float_kinds + ['Python/glue']]
        lines.append(f'| {bits} | {threads} | ' + ' | '.join(cells) + ' |')
    return lines


def _of_peak(per_cycle: Optional[float], peak: Optional[float]) -> str:
    return 'n/a' if per_cycle is None or not peak else \
        f'{100 * per_cycle / peak:.0f} %'


def layer_table(bits: str, breakdown: bm.Breakdown, ghz: Optional[float],
                threads: int, peak: Optional[float] = None) -> List[str]:
    phases = list(bm.PHASES)
    header = (['layer', 'geometry', 'calls', 'ms', 'binary GMAC',
               'bMAC/cycle', 'of peak'] + [f'{p} ms' for p in phases])
    lines = [f'Packed layers, {bits}, {threads} thread(s); bMAC/cycle = '
             'binary MACs (M*K*C_in/groups*kh*kw*C_out*H_out*W_out) per '
             'cycle of the measured core clock, per thread, end to end '
             '(packing and epilogue included); "of peak": against the '
             'measured peak of the kernel\'s instruction mix:', '',
             '| ' + ' | '.join(header) + ' |',
             '|---|---|' + '---:|' * (len(header) - 2)]
    rows = bm.packed_layer_rows(breakdown, ghz, threads)
    for row in rows:
        macs = row['binary_macs']
        cells = [row['name'], row['geometry'],
                 str(row['calls']), bm.format_ms(row['ms']),
                 'n/a' if macs is None else f'{macs / 1e9:.3f}',
                 'n/a' if row['per_cycle'] is None else
                 f'{row["per_cycle"]:.0f}', _of_peak(row['per_cycle'], peak)]
        cells += [bm.format_ms(row['phases'][p]) if p in row['phases'] else
                  'n/a' for p in phases]
        lines.append('| ' + ' | '.join(cells) + ' |')
    total_macs = sum(row['binary_macs'] or 0 for row in rows)
    total_ms = sum(row['ms'] for row in rows)
    per_cycle = (total_macs / (total_ms * 1e-3 * ghz * 1e9 * threads)
                 if ghz and total_ms else None)
    count = breakdown.packed_layer_count()
    lines.append(f'| **all {count} packed layers** | | | '
                 f'{bm.format_ms(total_ms)} | {total_macs / 1e9:.3f} | ' +
                 ('n/a' if per_cycle is None else f'{per_cycle:.0f}') +
                 f' | {_of_peak(per_cycle, peak)} |' + ' |' * len(phases))
    return lines


def agreement_line(bits: str, agreement: bm.Agreement,
                   random_weights: bool) -> str:
    if agreement.layer_error is not None:
        layers = f'per-layer check not possible ({agreement.layer_error})'
    elif not agreement.layers_failing:
        layers = (f'all {agreement.layers_checked} packed layers agree with '
                  'their MBB layers to float32 rounding on the same input '
                  f'(worst relative error {agreement.worst_layer_error:.1e})')
    else:
        layers = (f'MISMATCH: {len(agreement.layers_failing)} of '
                  f'{agreement.layers_checked} packed layers differ from '
                  'their MBB layers beyond float32 rounding (first: '
                  f'{agreement.layers_failing[0]}, worst relative error '
                  f'{agreement.worst_layer_error:.1e})')
    if agreement.blocks_failing:
        layers += (f'; MISMATCH: {len(agreement.blocks_failing)} of '
                   f'{agreement.blocks_checked} modules that pass packed '
                   'activations on differ from their layer-by-layer '
                   'forward (first: '
                   f'{agreement.blocks_failing[0]})')
    elif agreement.blocks_checked:
        layers += (f'; all {agreement.blocks_checked} modules that pass '
                   'packed activations on equal their layer-by-layer '
                   'forward')
    note = ('; a network at random initialisation amplifies small changes'
            if random_weights else '')
    return (f'- {bits}: {layers}. Whole model (information, not a '
            f'check{note}): '
            f'outputs differ by {100 * agreement.output_error:.2g} % (L2), '
            f'{100 * agreement.output_mismatch_fraction:.2g} % of the '
            'elements beyond rounding: an activation within rounding of a '
            'quantization step takes the other code in one of the two, and '
            'that spreads through the later layers')


# ---- main -------------------------------------------------------------------

def memory_table(models: List[Tuple[str, nn.Module, Callable[[], Any]]]
                 ) -> List[str]:
    """Peak memory of inference per model: its parameters and buffers plus
    what one forward touches beyond them (mmbinary.utils.memory), as
    markdown rows; the first model is the reference of the ratio."""
    lines = [
        '| model | weights + buffers MB | forward peak MB | total MB | '
        'total vs first |', '|---|---:|---:|---:|---:|'
    ]
    reference = None
    for name, model, forward in models:
        with torch.no_grad():
            peak = forward_peak_memory(forward)
        held = tensor_bytes(model)
        if peak is None:
            lines.append(f'| {name} | {held / 2**20:.1f} | n/a | n/a | n/a |')
            continue
        total = held + peak
        reference = reference or total
        lines.append(f'| {name} | {held / 2**20:.1f} | {peak / 2**20:.1f} | '
                     f'{total / 2**20:.1f} | {total / reference:.2f}x |')
    return lines


def log(message: str) -> None:
    """Progress, on stderr (the tables go to stdout)."""
    print(f'[benchmark_model] {message}', file=sys.stderr, flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    banded = packed_flow.MIN_BANDED_BYTES
    if args.no_row_bands:
        packed_flow.MIN_BANDED_BYTES = math.inf
    try:
        return run_benchmark(args)
    finally:
        packed_flow.MIN_BANDED_BYTES = banded


def run_benchmark(args: argparse.Namespace) -> int:
    """Everything :func:`main` prints, for the parsed ``args``."""
    if not args.no_keep_freed_memory:
        # Every model below runs with it: large activations are not
        # page-faulted in again at every forward (as under jemalloc).
        keep_freed_memory()
    if not ext_loaded():
        raise SystemExit(f'mmbinary._C is not built: {build_info()["error"]}')
    if not osp.isfile(args.config):
        raise SystemExit(f'CONFIG {args.config} does not exist')
    check_checkpoint(args.checkpoint)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    scope = register_modules_for(cfg)
    shape = tuple(args.shape) if args.shape else DEFAULT_SHAPES[scope]
    run = forward_fn(args.part)
    torch.set_flush_denormal(True)
    image = torch.randn(1, 3, *shape,
                        generator=torch.Generator().manual_seed(1))
    # --bits sets every part's bits; without it each part keeps the
    # config's (a mixed-precision model stays mixed)
    if args.bits:
        bits_list = [(f'W{w}A{a}', (w, a)) for w, a in args.bits]
    else:
        pairs = config_bits(cfg.model)
        if not pairs:
            raise SystemExit(
                f'{args.config}: no w_bits / a_bits in the model')
        bits_list = [(bits_name(pairs), None)]
    threads = list(dict.fromkeys(args.threads))
    torch.set_num_threads(threads[0])

    mbb = {}
    packed = {}
    packed_cl = {}
    agreements = {}
    layouts_agree = {}
    kernel_notes = {}
    image_cl = image.contiguous(memory_format=torch.channels_last)
    for name, bits in bits_list:
        log(f'{name}: build, calibrate, pack, check against the training '
            'form')
        mbb[name] = build_mbb_model(cfg, bits, args.checkpoint, image)
        packed[name] = convert_to_packed(copy.deepcopy(mbb[name]))
        # The float convs left (stem, shortcuts) fold their norms too, as in
        # the best float32 row.
        bm.fold_batch_norms(packed[name])
        agreements[name] = bm.packed_agreement(mbb[name], packed[name], image,
                                               run)
        packed_cl[name] = bm.to_channels_last(copy.deepcopy(packed[name]))
        kernel_notes[name] = set_packed_kernels(
            args.packed_kernel, packed_cl[name], packed[name],
            lambda model=packed_cl[name]: run(model, image_cl))
        with torch.no_grad():
            layouts_agree[name] = bm.relative_l2(
                run(packed_cl[name], image_cl), run(packed[name], image))
    float_model = bm.float_twin(next(iter(mbb.values())))
    int8, int8_note = (None, 'int8: not run (--no-int8)')
    if not args.no_int8:
        log('torch int8: prepare_fx, calibrate, convert_fx')
        int8, int8_note = int8_model(float_model, image)
    ghz = bm.core_ghz()
    peak = bm.peak_bmacs()

    times: Dict[int, Dict[str, float]] = {}
    float_forms: Dict[int, bm.FloatBest] = {}
    for t in threads:
        torch.set_num_threads(t)
        log(f'{t} thread(s): time every model, {args.warmup} + '
            f'{args.repeat} runs each')
        extra = {}
        if int8 is not None:
            extra['int8'] = (lambda: run(int8, image))
        for name in mbb:
            if not args.no_training_form:
                extra[f'{name} training'] = (
                    lambda model=mbb[name]: run(model, image))
            extra[f'{name} packed'] = (
                lambda model=packed[name]: run(model, image))
            extra[f'{name} packed channels-last'] = (
                lambda model=packed_cl[name]: run(model, image_cl))
        float_forms[t], times[t] = bm.fastest_float(
            float_model, image, run, args.repeat, args.warmup, extra)

    best = {t: float_forms[t].best_ms for t in threads}
    int8_ms = {t: times[t].get('int8') for t in threads}
    first = float_forms[threads[0]]
    rows = [('float32, BN unfolded, NCHW',
             {t: float_forms[t].ms['unfolded NCHW'] for t in threads}),
            (f'float32, BN folded ({first.folded_norms}), NCHW',
             {t: float_forms[t].ms['folded NCHW'] for t in threads}),
            ('float32, BN folded, channels-last',
             {t: float_forms[t].ms['folded channels-last'] for t in threads}),
            ('float32, BN folded, channels-last, 1x1 convs on oneDNN, '
             'compiled max pools',
             {t: float_forms[t].ms['folded channels-last, 1x1 on oneDNN']
              for t in threads}),
            (f'torch int8 ({INT8_BACKEND}, FX)', int8_ms)]
    for name in mbb:
        if not args.no_training_form:
            rows.append((f'MBB {name} training form (eval)',
                         {t: times[t][f'{name} training'] for t in threads}))
        rows.append((f'**MBB {name} packed, NCHW**',
                     {t: times[t][f'{name} packed'] for t in threads}))
        rows.append((f'**MBB {name} packed, channels-last**', {
            t: times[t][f'{name} packed channels-last'] for t in threads
        }))

    lines = header_lines(args, cfg, shape, ghz, peak)
    lines += ['', '## Speed', '',
              'ms per forward; "vs X" = X\'s ms / this ms (above 1: '
              'faster than X). Best float32 per thread count: ' + ', '.join(
                  f'{t} thr {float_forms[t].best}' for t in threads) +
              f'. {int8_note}.', '']
    lines += speed_table(rows, threads, best, int8_ms)
    for t in threads[1:]:
        scaling = [('best float32', best)] + [
            (name.strip('*'), times_) for name, times_ in rows
            if name.startswith(('torch int8', '**MBB'))
        ]
        lines += ['', f'{t} threads against {threads[0]}: ' + ', '.join(
            f'{name} {bm.format_ratio(ms.get(threads[0]), ms.get(t))}'
            for name, ms in scaling) + '.']
    torch.set_num_threads(threads[0])
    log('peak memory of one forward per model')
    float_best = first.model
    float_input = image if first.best == 'folded NCHW' else image_cl
    memory_models = [(f'float32 best ({first.best})', float_best,
                      lambda: run(float_best, float_input))]
    if int8 is not None:
        memory_models.append((f'torch int8 ({INT8_BACKEND}, FX)', int8,
                              lambda: run(int8, image)))
    for name in mbb:
        memory_models.append((f'MBB {name} packed, NCHW', packed[name],
                              lambda model=packed[name]: run(model, image)))
        memory_models.append(
            (f'MBB {name} packed, channels-last', packed_cl[name],
             lambda model=packed_cl[name]: run(model, image_cl)))
    lines += ['', '## Peak memory of inference', '',
              f'{threads[0]} thread(s), batch 1: the parameters and buffers '
              'each model holds, plus the memory one forward touches beyond '
              'what the process held before it (peak resident set size, '
              'freed memory given back to the OS first); the input image '
              'not counted. "total vs first": against the best float32.',
              '']
    lines += memory_table(memory_models)
    lines += ['', '## Packed kernels', '']
    lines += [f'- {name}: {note}' for name, note in kernel_notes.items()]
    lines += ['', '## Packed against the training form', '']
    lines += [
        agreement_line(name, a, args.checkpoint is None)
        for name, a in agreements.items()
    ]
    lines += [
        f'- {name}: the channels-last packed model\'s outputs differ from '
        f'the NCHW one\'s by {100 * error:.2g} % (L2)'
        for name, error in layouts_agree.items()
    ]

    if not args.no_breakdown:
        breakdowns = []
        for t in threads:
            torch.set_num_threads(t)
            log(f'{t} thread(s): per-layer breakdown of the packed models')
            for name in packed:
                # the faster layout at the first thread count
                cl = (times[threads[0]][f'{name} packed channels-last'] <
                      times[threads[0]][f'{name} packed'])
                model, x = ((packed_cl[name], image_cl) if cl else
                            (packed[name], image))
                breakdowns.append(
                    (f'{name} {"channels-last" if cl else "NCHW"}', t,
                     bm.module_breakdown(model, x, run, args.repeat,
                                         args.warmup)))
        lines += ['', '## What is encoded', '']
        for name, t, breakdown in breakdowns:
            if t == threads[0]:
                lines.append(f'- {name}: {bm.describe_encoding(breakdown)}')
        lines += [
            '', '## Where the packed time goes', '',
            'ms per forward, leaf modules timed with forward hooks (the run '
            'of median total; the hooked total is a little above the '
            'table\'s). "- phase": '
            'packed-op phases from mmbinary.ops.profiling (n/a where that is '
            'not built); "Python/glue": the total minus the modules\' '
            'sum (residual adds, upsampling, concatenation, control flow).',
            ''
        ]
        lines += breakdown_table(breakdowns)
        for name, t, breakdown in breakdowns:
            if t == threads[0]:
                lines += [''] + layer_table(name, breakdown, ghz, t, peak)
    print('\n'.join(lines), flush=True)
    return 0 if all(a.layers_agree for a in agreements.values()) else 1


if __name__ == '__main__':
    sys.exit(main())
