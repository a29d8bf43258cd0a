# Copyright (c) mmbinary contributors. All rights reserved.
"""The main job, on the embedded data: train an encoded (W2A2 by default)
RetinaNet on aerial tree crowns with the standard tools, evaluate it with
mmdet's CocoMetric, pack it, evaluate the packed model through the same
pipeline, draw its detections on a held-out image, and summarise.

    python tools/demo.py                 # about 10 minutes on 2 CPU cores
    python tools/demo.py --bits 4        # another precision
    python tools/demo.py --quick         # a smoke run of a few iterations

Every step is a standard tool run, printed before it runs, so it can be
repeated by hand; the outputs go to ``--work-dir`` (default
``work_dirs/demo``).
"""
import argparse
import copy
import json
import os.path as osp
import subprocess
import sys

import torch

from mmbinary.packed_format import MAX_BITS, MIN_BITS
from mmbinary.utils.atomic_write import atomic_open, atomic_write_path
from mmbinary.utils.logged_metrics import read_test_metrics

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs', 'retinanet_mnv2_mbb_w2a2_trees.py')
#: The whole-model benchmark row the summary adds: RetinaNet R-50 backbone
#: + FPN (random weights: speed does not depend on them), at the demo's
#: bits; ``--quick`` runs it at a small input.
R50_CONFIG = osp.join(ROOT, 'configs', 'retinanet_r50_mbb_w2a2_coco.py')
R50_SHAPE = (512, 672)
R50_QUICK_SHAPE = (96, 128)
METRICS = ('coco/bbox_mAP', 'coco/bbox_mAP_50')
#: Largest metric difference (1 AP point) for packed and unpacked to agree.
#: Each packed layer equals its unpacked layer to float32 rounding (the
#: batch norm folded into one scale rounds differently), but an activation
#: that lands within that rounding of a quantization boundary takes the
#: other code, and such flips spread through the later layers; on a few
#: hundred boxes that moves AP by a few thousandths.
AGREEMENT = 0.01
#: Score above which detections are drawn.
SCORE_THR = 0.3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'demo'))
    parser.add_argument('--bits', type=int, default=2,
                        help='weight and activation bits, 1..8 (default 2)')
    parser.add_argument('--epochs', type=int, default=None,
                        help='training epochs (default: the config\'s)')
    parser.add_argument('--quick', action='store_true',
                        help='a smoke run: 1 epoch on 8 tiles, 4 val images')
    parser.add_argument('--data-root', default=osp.join(ROOT, 'data', 'demo'),
                        help='where the embedded data is (built if missing)')
    args = parser.parse_args()
    if not MIN_BITS <= args.bits <= MAX_BITS:
        parser.error(f'--bits must be an integer in {MIN_BITS}..{MAX_BITS}, '
                     f'got {args.bits}')
    if args.epochs is not None and args.epochs < 1:
        parser.error(f'--epochs must be >= 1, got {args.epochs}')
    return args


def run(step: str, command: list) -> None:
    """Run one tool, echoing it, and stop the demo if it fails."""
    print(f'\n=== {step}\n$ {" ".join(command)}', flush=True)
    result = subprocess.run(command, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f'{step} failed (exit code {result.returncode})')


def cfg_options(args) -> list:
    trees = osp.join(args.data_root, 'trees') + '/'
    from mmengine.config import Config

    from mmbinary.models.precision import precision_cfg_options
    bits = precision_cfg_options(
        Config.fromfile(CONFIG).model, args.bits, args.bits)
    options = bits + [
        f'data_root={trees}',
        f'train_dataloader.dataset.data_root={trees}',
        f'val_dataloader.dataset.data_root={trees}',
        f'test_dataloader.dataset.data_root={trees}',
        f'val_evaluator.ann_file={trees}annotations/val.json',
        f'test_evaluator.ann_file={trees}annotations/val.json',
        'model.backbone.init_cfg.checkpoint=' +
        osp.join(args.data_root, 'pretrained', 'mobilenet_v2_mmdet.pth'),
    ]
    epochs = 1 if args.quick else args.epochs
    if epochs is not None:
        options += [f'train_cfg.max_epochs={epochs}',
                    f'train_cfg.val_interval={epochs}',
                    f'default_hooks.checkpoint.interval={epochs}',
                    f'param_scheduler.1.end={epochs}']
    if args.quick:
        options += ['train_dataloader.dataset.indices=8',
                    'val_dataloader.dataset.indices=4',
                    'test_dataloader.dataset.indices=4',
                    'param_scheduler.0.end=2']
    return options


def load_config(args):
    from mmengine.config import Config, DictAction
    cfg = Config.fromfile(CONFIG)
    parsed = {}
    for option in cfg_options(args):
        key, value = option.split('=', 1)
        parsed[key] = DictAction._parse_iterable(value)
    cfg.merge_from_dict(parsed)
    return cfg


def float_twin(cfg) -> dict:
    """The same detector with float convs (for the speed comparison)."""
    from mmbinary.models.precision import float_model_config
    model = float_model_config(cfg.model)
    model['backbone']['init_cfg'] = None
    return model


def logged_val_metrics(train_dir: str) -> dict:
    """The last validation metrics a training run in ``train_dir`` logged
    (mmengine's ``<timestamp>/vis_data/<timestamp>.json``), or {}."""
    import glob
    for log in sorted(glob.glob(osp.join(train_dir, '*', 'vis_data',
                                         '*.json')), reverse=True):
        with open(log, encoding='utf-8') as f:
            lines = [json.loads(line) for line in f if line.strip()]
        found = [line for line in lines if METRICS[0] in line]
        if found:
            return {key: float(found[-1].get(key, 0.0)) for key in METRICS}
    return {}


def float_baseline(python: str, work_dir: str, options: list) -> dict:
    """Validation metrics of the float twin (``tools/train.py --float``)
    trained with the same schedule and data; trained once per schedule
    and reused from ``<work-dir>/float`` afterwards."""
    float_dir = osp.join(work_dir, 'float')
    schedule_file = osp.join(float_dir, 'schedule.json')
    same = False
    if osp.isfile(schedule_file):
        with open(schedule_file, encoding='utf-8') as f:
            same = json.load(f) == options
    metrics = logged_val_metrics(float_dir) if same else {}
    if metrics:
        print(f'\n=== The float twin of the same schedule: kept in '
              f'{float_dir}', flush=True)
        return metrics
    run('Train the float twin with the same schedule (once; then reused)',
        [python, 'tools/train.py', CONFIG, '--float', '--work-dir',
         float_dir, '--cfg-options', *options])
    with atomic_open(schedule_file, 'w', encoding='utf-8') as f:
        json.dump(options, f)
    return logged_val_metrics(float_dir)


def tensor_forward(model, images):
    """One forward pass in tensor mode (no NMS)."""
    return model(images, mode='tensor')


def measure_and_draw(args, cfg, checkpoint, packed, out_file) -> dict:
    """Model sizes, float/unpacked/packed speed, and a picture of the
    packed model's detections on a held-out image."""
    import mmcv
    from mmdet.apis import inference_detector, init_detector
    from mmdet.visualization import DetLocalVisualizer
    from mmengine.registry import MODELS
    from mmengine.runner import load_checkpoint

    from mmbinary.models.packing import (load_packed_checkpoint,
                                         state_dict_bytes)
    from mmbinary.utils.scope import register_modules_for
    register_modules_for(cfg)
    unpacked_model = MODELS.build(cfg.model).eval()
    load_checkpoint(unpacked_model, checkpoint, map_location='cpu',
                    strict=True, logger='silent')
    packed_model = init_detector(cfg, None, device='cpu')
    load_packed_checkpoint(packed_model, packed)
    packed_model.dataset_meta = dict(cfg.metainfo)
    float_model = MODELS.build(float_twin(cfg)).eval()

    # Speed, side by side in one run, against the fastest float twin: the
    # trained weights in float convs, batch norms folded, the faster of
    # NCHW and channels-last; the packed model likewise, its float layers
    # (the depthwise convs) with their norms folded too.
    from mmbinary.utils import benchmark
    images = torch.randn(1, 3, 400, 400)
    images_cl = images.contiguous(memory_format=torch.channels_last)
    repeats = 3 if args.quick else 10
    fast_packed = copy.deepcopy(packed_model)
    benchmark.fold_batch_norms(fast_packed)
    packed_cl = benchmark.to_channels_last(copy.deepcopy(fast_packed))
    # Each packed conv on its faster exact kernel (popcount or integer),
    # measured here, as at conversion.
    from mmbinary.models.packing import choose_kernels
    for choice in choose_kernels(
            packed_cl, lambda: tensor_forward(packed_cl, images_cl), 1):
        fast_packed.get_submodule(choice.name).set_kernel(choice.kernel)
    float_best, speed = benchmark.fastest_float(
        benchmark.float_twin(unpacked_model), images, tensor_forward,
        repeats, 1,
        extra=dict(
            unpacked=lambda: tensor_forward(unpacked_model, images),
            packed_nchw=lambda: tensor_forward(fast_packed, images),
            packed_cl=lambda: tensor_forward(packed_cl, images_cl)))
    packed_form = ('channels-last' if speed['packed_cl'] <
                   speed['packed_nchw'] else 'NCHW')
    speed.update(float=float_best.best_ms,
                 float_unfolded=float_best.ms['unfolded NCHW'],
                 packed=min(speed['packed_cl'], speed['packed_nchw']))
    breakdown = benchmark.module_breakdown(
        *((packed_cl, images_cl) if packed_form == 'channels-last' else
          (fast_packed, images)), tensor_forward, 1, 1)

    val = cfg.test_dataloader.dataset
    with open(osp.join(val.data_root, val.ann_file), encoding='utf-8') as f:
        image_name = json.load(f)['images'][-1]['file_name']
    image_path = osp.join(val.data_root, val.data_prefix['img'], image_name)
    result = inference_detector(packed_model, image_path)
    visualizer = DetLocalVisualizer(name='mmbinary_demo')
    visualizer.dataset_meta = packed_model.dataset_meta
    with atomic_write_path(out_file) as temp:  # (temp keeps the suffix)
        visualizer.add_datasample(
            'detections',
            mmcv.imread(image_path, channel_order='rgb'),
            result,
            draw_gt=False,
            pred_score_thr=SCORE_THR,
            out_file=temp)
    kept = int((result.pred_instances.scores >= SCORE_THR).sum())
    return dict(speed=speed,
                float_form=float_best.best,
                packed_form=packed_form,
                encoding=benchmark.describe_encoding(breakdown),
                depthwise_ms=breakdown.by_kind()['float depthwise conv'],
                hooked_ms=breakdown.total_ms,
                float_bytes=state_dict_bytes(float_model),
                packed_bytes=state_dict_bytes(packed_model),
                image=image_path,
                detections=kept)


def r50_speed(args) -> dict:
    """The RetinaNet R-50 backbone + FPN row of the whole-model benchmark
    (tools/analysis_tools/benchmark_model.py) at the demo's bits: ms of the
    best float32, torch int8 and the faster packed layout, and what is
    encoded."""
    shape = R50_QUICK_SHAPE if args.quick else R50_SHAPE
    command = [
        sys.executable, 'tools/analysis_tools/benchmark_model.py',
        osp.relpath(R50_CONFIG, ROOT),
        '--shape', *map(str, shape), '--part', 'backbone+neck', '--bits',
        f'{args.bits},{args.bits}', '--threads',
        str(torch.get_num_threads()), '--no-training-form', '--no-breakdown',
        '--repeat', '1' if args.quick else '3'
    ]
    print('\n=== The RetinaNet R-50 backbone + FPN row of the whole-model '
          f'benchmark\n$ {" ".join(command)}', flush=True)
    out = subprocess.run(command, cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout
    rows = {}
    for line in out.split('## Speed', 1)[1].splitlines():
        cells = [cell.strip().strip('*')
                 for cell in line.strip('|').split('|')]
        if len(cells) >= 2 and cells[1].replace('.', '', 1).isdigit():
            rows[cells[0]] = float(cells[1])
    packed = min(ms for name, ms in rows.items()
                 if name.startswith('MBB ') and ' packed' in name)
    float_ms = min(ms for name, ms in rows.items()
                   if name.startswith('float32, BN folded'))
    return dict(shape=shape, command=' '.join(command[1:]), packed=packed,
                float=float_ms, int8=rows.get('torch int8 (x86, FX)'))


def main() -> int:
    args = parse_args()
    work_dir = osp.abspath(args.work_dir)
    python = sys.executable
    run('Prepare the embedded data (a no-op once it is there)', [
        python, 'tools/dataset_converters/prepare_demo_data.py', '--out',
        args.data_root
    ])
    options = cfg_options(args)
    run(f'Train RetinaNet-MobileNetV2, W{args.bits}A{args.bits}', [
        python, 'tools/train.py', CONFIG, '--work-dir', work_dir,
        '--cfg-options', *options
    ])
    with open(osp.join(work_dir, 'last_checkpoint'), encoding='utf-8') as f:
        checkpoint = f.read().strip()
    run('Evaluate the trained (unpacked) model with CocoMetric', [
        python, 'tools/test.py', CONFIG, checkpoint, '--work-dir',
        osp.join(work_dir, 'test_unpacked'), '--cfg-options', *options
    ])
    packed = osp.join(work_dir, 'packed.pth')
    run('Pack it: bit-packed weights, folded batch norms', [
        python, 'tools/pack_model.py', CONFIG, checkpoint, packed,
        '--force', '--cfg-options', *options
    ])
    run('Evaluate the packed model through the same pipeline', [
        python, 'tools/test.py', CONFIG, packed, '--packed', '--work-dir',
        osp.join(work_dir, 'test_packed'), '--cfg-options', *options
    ])
    unpacked_metrics = read_test_metrics(
        osp.join(work_dir, 'test_unpacked'), METRICS)
    packed_metrics = read_test_metrics(
        osp.join(work_dir, 'test_packed'), METRICS)
    float_metrics = float_baseline(python, work_dir, options)

    print('\n=== Measure speed and size, draw detections', flush=True)
    picture = osp.join(work_dir, 'detections.jpg')
    facts = measure_and_draw(args, load_config(args), checkpoint, packed,
                             picture)
    speed = facts['speed']
    r50 = r50_speed(args)
    agree = all(
        abs(unpacked_metrics[key] - packed_metrics[key]) <= AGREEMENT
        for key in METRICS)
    lines = [
        f'# mmbinary demo: RetinaNet-MobileNetV2 W{args.bits}A{args.bits} '
        'on the embedded tree crowns', '',
        '| | unpacked | packed |', '|---|---:|---:|'
    ] + [
        f'| {key} | {unpacked_metrics[key]:.3f} | {packed_metrics[key]:.3f} |'
        for key in METRICS
    ] + [
        '', f'The same detector in float, trained with the same schedule '
        f'and data: the gap W{args.bits}A{args.bits} leaves.', '',
        '| same schedule | bbox mAP | AP50 |', '|---|---:|---:|',
        '| float | ' + ' | '.join(f'{float_metrics.get(key, 0.0):.3f}'
                                  for key in METRICS) + ' |',
        f'| W{args.bits}A{args.bits} − float | ' + ' | '.join(
            f'{unpacked_metrics[key] - float_metrics.get(key, 0.0):+.3f}'
            for key in METRICS) + ' |'
    ] + [
        '', '| model | size MiB | forward ms (1x3x400x400, '
        f'{torch.get_num_threads()} threads) |', '|---|---:|---:|',
        f'| float, as built (batch norms unfolded, NCHW) | '
        f'{facts["float_bytes"] / 2**20:.2f} | '
        f'{speed["float_unfolded"]:.1f} |',
        f'| float, fastest (batch norms folded, '
        f'{facts["float_form"].split()[-1]}) '
        f'| | {speed["float"]:.1f} |',
        f'| MBB unpacked (training form) | | {speed["unpacked"]:.1f} |',
        f'| MBB packed ({facts["packed_form"]}) | '
        f'{facts["packed_bytes"] / 2**20:.2f} | '
        f'{speed["packed"]:.1f} |', '',
        f'Packed and unpacked metrics agree (within {AGREEMENT}): '
        f'{"yes" if agree else "NO"}. '
        f'Size float/packed: '
        f'{facts["float_bytes"] / facts["packed_bytes"]:.1f}x; whole-model '
        f'speed, packed against the fastest float twin (measured side by '
        f'side): {speed["float"] / speed["packed"]:.2f}x '
        f'({"faster" if speed["packed"] < speed["float"] else "slower"}).',
        f'Encoded and float (packed model, one forward): '
        f'{facts["encoding"]}. MobileNetV2\'s depthwise convs stay float '
        f'({facts["depthwise_ms"]:.1f} of {facts["hooked_ms"]:.1f} ms): '
        'they bound what packing can gain on this model. Other models '
        '(RetinaNet R-50, DeepLabV3): '
        'tools/analysis_tools/benchmark_model.py, docs/benchmarks.md.', '',
        f'RetinaNet R-50 backbone + FPN, 1x3x{r50["shape"][0]}x'
        f'{r50["shape"][1]}, W{args.bits}A{args.bits} (every block conv and '
        'FPN conv encoded; the stem and the 4 shortcut convs float), '
        f'{torch.get_num_threads()} threads, side by side:', '',
        '| R-50 + FPN | forward ms | packed vs it |', '|---|---:|---:|',
        f'| float32, fastest (batch norms folded) | {r50["float"]:.1f} | '
        f'{r50["float"] / r50["packed"]:.2f}x |',
        (f'| torch int8 (x86, FX) | {r50["int8"]:.1f} | '
         f'{r50["int8"] / r50["packed"]:.2f}x |' if r50['int8'] else
         '| torch int8 (x86, FX) | n/a | n/a |'),
        f'| MBB packed | {r50["packed"]:.1f} | |', '',
        f'(python {r50["command"]})', '',
        f'Detections ({facts["detections"]} with score >= {SCORE_THR}) on the '
        f'held-out {osp.basename(facts["image"])}: {picture}'
    ]
    summary = '\n'.join(lines)
    with atomic_open(osp.join(work_dir, 'summary.md'), 'w',
                     encoding='utf-8') as f:
        f.write(summary + '\n')
    print('\n' + summary)
    return 0 if agree else 1


if __name__ == '__main__':
    sys.exit(main())
