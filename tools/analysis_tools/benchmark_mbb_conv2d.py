# Copyright (c) mmbinary contributors. All rights reserved.
"""Time the packed MBB conv op (``mmbinary.ops.mbb_conv2d``, activation
quantize + pack included) side by side with ``F.conv2d`` in float32
(oneDNN), torch's int8 quantized conv (x86/fbgemm, input quantization
included) and MBBConv's training path (fake quantization), on ResNet-50,
FPN and ASPP layer shapes at detection / segmentation input sizes, and print
a markdown table with the ratios and the packed kernel's binary MACs per
cycle. Each CPU kernel variant is forced with ``MMBINARY_CPU_KERNEL``.

Example::

    python tools/analysis_tools/benchmark_mbb_conv2d.py \\
        --bits 1,1 1,2 2,2 4,4 --batch 1 8 --threads 1 2
    python tools/analysis_tools/benchmark_mbb_conv2d.py --preset small
    python tools/analysis_tools/benchmark_mbb_conv2d.py --bits 1,1 2,2 \\
        --threads 1 --kernels avx512 --channels-last --packed-input
"""
import argparse
import os
import platform
import statistics
import time
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F

from mmbinary.models import MBBConv2d
from mmbinary.models.packing.packed_layers import int8_kernel_available
from mmbinary.ops import (build_info, ext_loaded, mbb_conv2d, num_group_words,
                          pack_weight_codes, profiling, quantize_pack)
from mmbinary.utils.memory import keep_freed_memory

# name, in channels, out channels, (H, W), kernel, stride, padding, dilation
PRESETS = {
    # ResNet-50 at an 800 x 1333 detection input (stage strides 4..32), the
    # FPN output conv on P3, and DeepLabV3's ASPP on 512 x 1024 (stride 8).
    'detection': [
        ('res2 3x3 64', 64, 64, (200, 334), 3, 1, 1, 1),
        ('res3 3x3 128', 128, 128, (100, 167), 3, 1, 1, 1),
        ('res4 3x3 256', 256, 256, (50, 84), 3, 1, 1, 1),
        ('res5 3x3 512', 512, 512, (25, 42), 3, 1, 1, 1),
        ('res2 1x1 256-64', 256, 64, (200, 334), 1, 1, 0, 1),
        ('res4 1x1 1024-256', 1024, 256, (50, 84), 1, 1, 0, 1),
        ('FPN P3 3x3 256', 256, 256, (100, 167), 3, 1, 1, 1),
        ('ASPP 3x3 d12 2048-512', 2048, 512, (64, 128), 3, 1, 12, 12),
        ('ASPP 3x3 d36 2048-512', 2048, 512, (64, 128), 3, 1, 36, 36),
    ],
    # The same layers at a 224 x 224 input, for a quick look.
    'small': [
        ('res2 3x3 64', 64, 64, (56, 56), 3, 1, 1, 1),
        ('res3 3x3 128', 128, 128, (28, 28), 3, 1, 1, 1),
        ('res4 3x3 256', 256, 256, (14, 14), 3, 1, 1, 1),
        ('res5 3x3 512', 512, 512, (7, 7), 3, 1, 1, 1),
        ('res2 1x1 256-64', 256, 64, (56, 56), 1, 1, 0, 1),
        ('ASPP 3x3 d12 256', 256, 256, (33, 33), 3, 1, 12, 12),
    ],
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--preset', choices=sorted(PRESETS),
                        default='detection')
    parser.add_argument('--shapes', nargs='+', default=None,
                        help='subset of the shape names of the preset')
    parser.add_argument('--bits', nargs='+',
                        default=['1,1', '1,2', '2,2', '4,4'],
                        help='W,A bit pairs (M,K)')
    parser.add_argument('--batch', type=int, nargs='+', default=[1])
    parser.add_argument('--threads', type=int, nargs='+',
                        default=[1, os.cpu_count()])
    parser.add_argument('--runs', type=int, default=20,
                        help='timed runs per measurement (median reported)')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--signed', action='store_true',
                        help='signed activations (default: unsigned)')
    parser.add_argument('--channels-last', action='store_true',
                        help='channels-last input for every row (as a '
                        'packed model passes it from layer to layer; '
                        'default: NCHW)')
    parser.add_argument('--kernels', nargs='+',
                        default=['generic', 'popcnt', 'avx2', 'avx512'],
                        help='CPU kernel variants to time (those the CPU '
                        'cannot run are left out)')
    parser.add_argument('--no-baselines', action='store_true',
                        help='skip int8 and the MBBConv training path')
    parser.add_argument('--packed-input', action='store_true',
                        help='also time the layer on activation words '
                        'packed beforehand (mbb_conv2d_words, float32 '
                        'channels-last out), as a packed model\'s flow '
                        'hands them from the layer before; run time kernel')
    parser.add_argument('--ghz', type=float, default=None,
                        help='clock for binary MACs per cycle (default: '
                        'measured, mmbinary.ops.profiling.measure_core_ghz)')
    return parser.parse_args()


def median_ms(fn: Callable[[], object], runs: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def runnable_kernels(requested: List[str]) -> List[str]:
    """The requested variants that this build and CPU can run."""
    compiled = build_info()['compiled_cpu_kernels'].split(',')
    runnable = []
    for name in requested:
        if name not in compiled:
            continue
        os.environ['MMBINARY_CPU_KERNEL'] = name
        try:
            quantize_pack(torch.zeros(1, 1, 1, 1), 1, 1.0, False)
        except RuntimeError:  # the CPU lacks the instructions
            continue
        runnable.append(name)
    return runnable


def cpu_name() -> str:
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_ghz() -> Optional[float]:
    """The measured core clock, else the largest "cpu MHz" of the OS."""
    try:
        return profiling.measure_core_ghz()
    except (RuntimeError, AttributeError):
        pass
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            mhz = [float(line.split(':', 1)[1]) for line in f
                   if line.startswith('cpu MHz')]
        return max(mhz) / 1e3 if mhz else None
    except (OSError, ValueError):
        return None


def int8_conv(x, weight, stride, padding, dilation) -> Callable:
    """torch's int8 conv (fbgemm): per-channel int8 weights, uint8 input
    quantized in each call."""
    torch.backends.quantized.engine = 'fbgemm'
    cout, cin, kernel, _ = weight.shape
    conv = torch.ao.nn.quantized.Conv2d(cin, cout, kernel, stride, padding,
                                        dilation)
    w_scale = weight.abs().amax((1, 2, 3)) / 127
    conv.set_weight_bias(
        torch.quantize_per_channel(weight, w_scale,
                                   torch.zeros(cout, dtype=torch.long), 0,
                                   torch.qint8), None)
    conv.scale, conv.zero_point = 0.05, 64
    x_scale = float(x.abs().max()) / 127
    return lambda: conv(torch.quantize_per_tensor(x, x_scale, 128,
                                                  torch.quint8))


def bits_pairs(values: List[str]) -> List[Tuple[int, int]]:
    pairs = []
    for value in values:
        w_bits, a_bits = (int(v) for v in value.split(','))
        pairs.append((w_bits, a_bits))
    return pairs


def main() -> None:
    args = parse_args()
    if not ext_loaded():
        raise SystemExit('mmbinary._C is not built; see README (compiled '
                         'extension)')
    previous = os.environ.get('MMBINARY_CPU_KERNEL')
    # Every row's outputs from memory the process already has (the first
    # rows would otherwise pay the page faults of fresh allocations, the
    # later ones not, once glibc raises its mmap threshold).
    kept = keep_freed_memory()
    kernels = runnable_kernels(args.kernels)
    shapes = [s for s in PRESETS[args.preset]
              if args.shapes is None or s[0] in args.shapes]
    ghz = args.ghz or cpu_ghz()
    peaks = {}
    for name in kernels:  # each kernel's instruction mix
        os.environ['MMBINARY_CPU_KERNEL'] = name
        peaks[name] = profiling.measure_peak_bmacs(repeats=1) or None
    print(f'CPU: {cpu_name()} ({f"{ghz:.2f}" if ghz else "?"} GHz'
          f'{"" if args.ghz else ", measured"}), torch {torch.__version__}, '
          f'{"signed" if args.signed else "unsigned"} activations, '
          f'{"channels-last" if args.channels_last else "NCHW"} input, median '
          f'of {args.runs} runs after {args.warmup} warm-up runs; freed '
          f'memory {"kept" if kept else "returned to the OS"}; packed '
          'times include activation quantize + pack; int8 includes input '
          'quantization. bMAC/cyc: binary MACs (MACs x M x K) per cycle of '
          'the fastest packed kernel, per thread; "of peak": against the '
          'measured peak of that kernel\'s instruction mix (' + ', '.join(
              f'{k} {p:.0f}' for k, p in peaks.items() if p) +
          ' binary MACs per cycle; the MACs count every tap, the padded ones '
          'the kernel skips too, so a dilated layer on a small input can '
          'pass 100 %).' +
          (' "words in": the layer on activation words packed beforehand '
           '(mbb_conv2d_words, the run-time kernel), packing excluded.'
           if args.packed_input else '') +
          (' "integer kernel words in": the same with the integer kernel '
           f'(mbb_conv2d_int8_words: {int8_variant_text()}); "integer '
           'kernel float in": the integer kernel quantizing the float input '
           'itself (mbb_conv2d_int8).'
           if args.packed_input and int8_kernel_available() else '') + '\n')
    baselines = [] if args.no_baselines else ['int8', 'train path']
    words_in = ['words in'] if args.packed_input else []
    if args.packed_input and int8_kernel_available():
        words_in += ['integer kernel words in', 'integer kernel float in']
    header = (['shape', 'N', 'thr', 'W/A', 'float32 ms'] +
              [f'{b} ms' for b in baselines] + [f'{k} ms' for k in kernels] +
              [f'{w} ms' for w in words_in] + ['float32 / best'] +
              [f'{b} / best' for b in baselines] +
              [f'float32 / {w}' for w in words_in] +
              ['bMAC/cyc', 'of peak', 'weights packed / float32'])
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '|'.join(['---'] * len(header)) + '|')
    generator = torch.Generator().manual_seed(0)
    try:
        for (name, cin, cout, size, kernel, stride, padding,
             dilation) in shapes:
            weight = torch.randn(cout, cin, kernel, kernel,
                                 generator=generator) * 0.05
            for batch in args.batch:
                x = torch.randn(batch, cin, *size, generator=generator).relu()
                if args.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                out_h = (size[0] + 2 * padding - dilation *
                         (kernel - 1) - 1) // stride + 1
                out_w = (size[1] + 2 * padding - dilation *
                         (kernel - 1) - 1) // stride + 1
                macs = batch * cout * out_h * out_w * cin * kernel * kernel
                for threads in args.threads:
                    torch.set_num_threads(threads)
                    float_ms = median_ms(
                        lambda: F.conv2d(x, weight, None, stride, padding,
                                         dilation), args.runs, args.warmup)
                    int8_ms = None
                    if baselines:
                        int8_ms = median_ms(
                            int8_conv(x, weight, stride, padding, dilation),
                            args.runs, args.warmup)
                    for w_bits, a_bits in bits_pairs(args.bits):
                        row = run_bits(args, kernels, baselines, name, batch,
                                       threads, x, weight, stride, padding,
                                       dilation, w_bits, a_bits, float_ms,
                                       int8_ms, macs, ghz, peaks)
                        print('| ' + ' | '.join(row) + ' |', flush=True)
    finally:
        if previous is None:
            os.environ.pop('MMBINARY_CPU_KERNEL', None)
        else:
            os.environ['MMBINARY_CPU_KERNEL'] = previous


def int8_variant_text() -> str:
    """The integer kernel's inner loop on this CPU (AMX tiles or VNNI)."""
    ops = torch.ops.mmbinary
    variant = (ops.mbb_int8_variant()
               if hasattr(ops, 'mbb_int8_variant') else '')
    return {'amx': 'AMX tiles where the output is 16 columns wide, else '
            'AVX-512 VNNI', 'vnni': 'AVX-512 VNNI'}.get(variant, 'n/a')


def int8_kernel_ms(args, x, act_words, words, scale, bias, cin, w_bits,
                   a_bits, kernel, stride, padding,
                   dilation) -> List[float]:
    """ms of the integer kernel (weights laid out once, as a packed layer
    does) on activation words packed beforehand and on the float input
    ``x`` (quantized by the op with the same ``inv_step`` 2.0); NaN where
    it cannot run the layer."""
    ops = torch.ops.mmbinary
    weight_int8, weight_sums = ops.mbb_int8_prepare_weight(
        words, cin, w_bits, [kernel] * 2)
    geometry = ([kernel] * 2, [stride] * 2, [padding] * 2, [dilation] * 2)
    epilogue = (None, -float('inf'), float('inf'), True, 0, 1.0, False)
    on_words = median_ms(
        lambda: ops.mbb_conv2d_int8_words(
            act_words, words, weight_int8, weight_sums, scale, bias, cin,
            w_bits, a_bits, args.signed, *geometry, *epilogue), args.runs,
        args.warmup)
    on_float = median_ms(
        lambda: ops.mbb_conv2d_int8(
            x, words, weight_int8, weight_sums, scale, bias, cin, w_bits,
            a_bits, 2.0, args.signed, *geometry, *epilogue), args.runs,
        args.warmup)
    return [on_words, on_float]


def run_bits(args, kernels, baselines, name, batch, threads, x, weight,
             stride, padding, dilation, w_bits, a_bits, float_ms, int8_ms,
             macs, ghz, peaks) -> List[str]:
    """One table row: every timing of one layer at one bit pair."""
    cout, cin, kernel, _ = weight.shape
    generator = torch.Generator().manual_seed(w_bits * 10 + a_bits)
    mmax = 2**w_bits - 1
    codes = torch.randint(0, mmax + 1, weight.shape,
                          generator=generator) * 2 - mmax
    words = pack_weight_codes(codes, w_bits)
    scale = torch.rand(cout, generator=generator)
    bias = torch.randn(cout, generator=generator)
    times = []
    for variant in kernels:
        os.environ['MMBINARY_CPU_KERNEL'] = variant
        times.append(
            median_ms(
                lambda: mbb_conv2d(
                    x, words, scale, bias, in_channels=cin, w_bits=w_bits,
                    a_bits=a_bits, inv_step=2.0, signed=args.signed,
                    kernel_size=kernel, stride=stride, padding=padding,
                    dilation=dilation), args.runs, args.warmup))
    best = min(times)
    best_kernel = kernels[times.index(best)]
    words_ms = []
    if args.packed_input:
        os.environ.pop('MMBINARY_CPU_KERNEL', None)  # the run-time pick
        act_words = quantize_pack(x, a_bits, 2.0, args.signed)
        words_ms = [
            median_ms(
                lambda: torch.ops.mmbinary.mbb_conv2d_words(
                    act_words, words, scale, bias, cin, w_bits, a_bits,
                    args.signed, [kernel] * 2, [stride] * 2, [padding] * 2,
                    [dilation] * 2, 1, None, -float('inf'), float('inf'),
                    True, 0, 1.0, False), args.runs, args.warmup)
        ]
        if int8_kernel_available():
            words_ms += int8_kernel_ms(args, x, act_words, words, scale,
                                       bias, cin, w_bits, a_bits, kernel,
                                       stride, padding, dilation)
    baseline_ms = []
    if baselines:
        layer = MBBConv2d(cin, cout, kernel, stride, padding, dilation,
                          bias=False, w_bits=w_bits, a_bits=a_bits,
                          a_mode='signed' if args.signed else 'unsigned',
                          a_clip=1.0).eval()
        with torch.no_grad():
            layer.weight.copy_(weight)
            train_ms = median_ms(lambda: layer(x), args.runs, args.warmup)
        baseline_ms = [int8_ms, train_ms]
    float_bytes = weight.numel() * 4
    packed_bytes = (cout * w_bits * kernel * kernel * num_group_words(cin) *
                    8 + 2 * cout * 4)
    per_cycle, of_peak = '?', '?'
    if ghz:
        binary_macs = macs * w_bits * a_bits
        cycles = binary_macs / (best * 1e-3 * ghz * 1e9 * threads)
        per_cycle = f'{cycles:.0f}'
        if peaks.get(best_kernel):
            of_peak = f'{100 * cycles / peaks[best_kernel]:.0f} %'
    return ([name, str(batch), str(threads), f'W{w_bits}A{a_bits}',
             f'{float_ms:.2f}'] + [f'{t:.2f}' for t in baseline_ms] +
            [f'{t:.2f}' for t in times] + [f'{t:.2f}' for t in words_ms] +
            [f'{float_ms / best:.2f}x'] +
            [f'{t / best:.2f}x' for t in baseline_ms] +
            [f'{float_ms / t:.2f}x' for t in words_ms] + [
                per_cycle, of_peak, f'{packed_bytes / float_bytes:.3f}'
            ])


if __name__ == '__main__':
    main()
