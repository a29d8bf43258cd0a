# Copyright (c) mmbinary contributors. All rights reserved.
"""Training cost of MBB layers against float convs: forward + backward of a
ResNet-50 bottleneck stage on the CPU, median of repeated runs.

    python tools/analysis_tools/benchmark_train_cost.py --stage 1 --batch 4
"""
import argparse
import copy
import statistics
import time

import torch
from mmdet.models.backbones.resnet import Bottleneck, ResLayer

from mmbinary.models import swap_to_mbb

# (in channels, planes, blocks, input size) of ResNet-50's stages at a
# 224 x 224 input.
STAGES = {
    1: (64, 64, 3, 56),
    2: (256, 128, 4, 28),
    3: (512, 256, 6, 14),
    4: (1024, 512, 3, 7)
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--stage', type=int, choices=sorted(STAGES),
                        default=1)
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument(
        '--bits', default='2x2,1x1,4x4,8x8',
        help='comma-separated WxA pairs to compare with float')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch threads (default: torch decides)')
    return parser.parse_args()


def build_stage(stage: int) -> torch.nn.Module:
    in_channels, planes, blocks, _ = STAGES[stage]
    return ResLayer(Bottleneck, in_channels, planes, blocks,
                    stride=1 if stage == 1 else 2)


def time_train_step(model, x, repeats, warmup) -> float:
    """Median milliseconds of one forward + backward."""
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        model(x).sum().backward()
        elapsed = time.perf_counter() - start
        model.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(elapsed * 1e3)
    return statistics.median(times)


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    in_channels, _, _, size = STAGES[args.stage]
    x = torch.randn(args.batch, in_channels, size, size).relu()
    float_model = build_stage(args.stage).train()
    rows = [('float', time_train_step(float_model, x, args.repeats,
                                      args.warmup))]
    for pair in args.bits.split(','):
        w_bits, a_bits = (int(v) for v in pair.lower().split('x'))
        model = swap_to_mbb(copy.deepcopy(float_model), w_bits, a_bits)
        model(x)  # data-driven initialization of the clips
        rows.append((f'W{w_bits}A{a_bits}',
                     time_train_step(model, x, args.repeats, args.warmup)))
    print(f'ResNet-50 stage {args.stage}, input {tuple(x.shape)}, '
          f'{torch.get_num_threads()} threads, median of {args.repeats}')
    print('| model | fwd+bwd ms | ratio to float |')
    print('|---|---:|---:|')
    base = rows[0][1]
    for name, ms in rows:
        print(f'| {name} | {ms:.1f} | {ms / base:.2f} |')


if __name__ == '__main__':
    main()
