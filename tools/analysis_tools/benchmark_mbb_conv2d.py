# Copyright (c) mmbinary contributors. All rights reserved.
"""Time the packed MBB conv op (``mmbinary.ops.mbb_conv2d``, activation
quantize + pack included) against ``torch.nn.functional.conv2d`` in float32
on ResNet-50-like layer shapes, side by side in one run, and print a
markdown table. Each CPU kernel variant is forced with
``MMBINARY_CPU_KERNEL``.

Example::

    python tools/analysis_tools/benchmark_mbb_conv2d.py --bits 1,1 2,2 4,4
"""
import argparse
import os
import platform
import statistics
import time
from typing import Callable, List, Tuple

import torch
import torch.nn.functional as F

from mmbinary.ops import (build_info, ext_loaded, mbb_conv2d, num_group_words,
                          pack_weight_codes, quantize_pack)

# name, in channels, out channels, input size, kernel, stride, padding,
# dilation
SHAPES = [
    ('res2 3x3 64@56', 64, 64, 56, 3, 1, 1, 1),
    ('res3 3x3 128@28', 128, 128, 28, 3, 1, 1, 1),
    ('res4 3x3 256@14', 256, 256, 14, 3, 1, 1, 1),
    ('res5 3x3 512@7', 512, 512, 7, 3, 1, 1, 1),
    ('1x1 256->64@56', 256, 64, 56, 1, 1, 0, 1),
    ('ASPP 3x3 d12 256@33', 256, 256, 33, 3, 1, 12, 12),
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--bits', nargs='+', default=['1,1', '2,2', '4,4'],
                        help='W,A bit pairs (M,K), e.g. 1,1 2,2 4,4')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--threads', type=int, default=os.cpu_count(),
                        help='torch.set_num_threads (default: all cores)')
    parser.add_argument('--runs', type=int, default=20,
                        help='timed runs per measurement (median reported)')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--signed', action='store_true',
                        help='signed activations (default: unsigned)')
    parser.add_argument('--kernels', nargs='+',
                        default=['generic', 'popcnt', 'avx2', 'avx512'],
                        help='CPU kernel variants to time (those the CPU '
                        'cannot run are left out)')
    parser.add_argument('--shapes', nargs='+', default=None,
                        help='subset of shape names (default: all)')
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
    torch.set_num_threads(args.threads)
    previous = os.environ.get('MMBINARY_CPU_KERNEL')
    kernels = runnable_kernels(args.kernels)
    shapes = [s for s in SHAPES if args.shapes is None or s[0] in args.shapes]
    print(f'CPU: {cpu_name()}, torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads, batch {args.batch}, '
          f'{"signed" if args.signed else "unsigned"} activations, median '
          f'of {args.runs} runs after {args.warmup} warm-up runs; packed '
          'times include activation quantize + pack.\n')
    header = (['shape', 'W/A', 'float32 ms'] + [f'{k} ms' for k in kernels] +
              [f'float32 / {k}' for k in kernels] +
              ['weight bytes packed / float32'])
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '|'.join(['---'] * len(header)) + '|')
    generator = torch.Generator().manual_seed(0)
    try:
        for name, cin, cout, size, kernel, stride, padding, dilation in shapes:
            x = torch.randn(args.batch, cin, size, size, generator=generator)
            weight = torch.randn(cout, cin, kernel, kernel,
                                 generator=generator)
            float_ms = median_ms(
                lambda: F.conv2d(x, weight, None, stride, padding, dilation),
                args.runs, args.warmup)
            float_bytes = weight.numel() * 4
            for w_bits, a_bits in bits_pairs(args.bits):
                mmax = 2**w_bits - 1
                codes = torch.randint(
                    0, mmax + 1, weight.shape, generator=generator) * 2 - mmax
                words = pack_weight_codes(codes, w_bits)
                scale = torch.rand(cout, generator=generator)
                bias = torch.randn(cout, generator=generator)
                times = []
                for variant in kernels:
                    os.environ['MMBINARY_CPU_KERNEL'] = variant
                    times.append(
                        median_ms(
                            lambda: mbb_conv2d(
                                x, words, scale, bias, in_channels=cin,
                                w_bits=w_bits, a_bits=a_bits,
                                inv_step=2.0, signed=args.signed,
                                kernel_size=kernel, stride=stride,
                                padding=padding, dilation=dilation),
                            args.runs, args.warmup))
                packed_bytes = (cout * w_bits * kernel * kernel *
                                num_group_words(cin) * 8 + 2 * cout * 4)
                row = ([name, f'W{w_bits}A{a_bits}', f'{float_ms:.3f}'] +
                       [f'{t:.3f}' for t in times] +
                       [f'{float_ms / t:.2f}x' for t in times] + [
                           f'{packed_bytes:,} / {float_bytes:,} '
                           f'({packed_bytes / float_bytes:.3f})'
                       ])
                print('| ' + ' | '.join(row) + ' |', flush=True)
    finally:
        if previous is None:
            os.environ.pop('MMBINARY_CPU_KERNEL', None)
        else:
            os.environ['MMBINARY_CPU_KERNEL'] = previous


if __name__ == '__main__':
    main()
