# Copyright (c) mmbinary contributors. All rights reserved.
"""Training cost per iteration with distillation against without: the same
student, the same batch, forward (loss) + backward, median of repeated runs,
side by side in one process (the two take turns at every repeat).

    python tools/analysis_tools/benchmark_distill_cost.py \
        configs/pennfudan/retinanet_mnv2_mbb_w2a2_kd_pennfudan.py

The teacher's weights do not change the cost: without ``--teacher-ckpt`` a
freshly initialized teacher is saved to a temporary file and used.
"""
import argparse
import os.path as osp
import statistics
import tempfile
import time

import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='a distilled config '
                        '(model.type SingleTeacherDistill)')
    parser.add_argument('--teacher-ckpt', default=None)
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--size', type=int, default=384,
                        help='image side in pixels')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--threads', type=int, default=None)
    return parser.parse_args()


def registry(scope: str):
    if scope == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    else:
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    return MODELS


def fake_batch(cfg, model, batch: int, size: int) -> dict:
    """A preprocessed batch of random images with a few boxes (detection)
    or random masks (segmentation)."""
    generator = torch.Generator().manual_seed(0)
    images = [
        torch.randint(0, 255, (3, size, size), generator=generator,
                      dtype=torch.uint8) for _ in range(batch)
    ]
    if cfg.default_scope == 'mmdet':
        from mmdet.testing import demo_mm_inputs
        data = demo_mm_inputs(batch_size=batch,
                              image_shapes=[(3, size, size)] * batch,
                              num_items=[3] * batch, num_classes=2)
        for sample in data['data_samples']:  # one class: the person
            sample.gt_instances.labels.zero_()
    else:
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        samples = []
        for _ in range(batch):
            sample = SegDataSample(metainfo=dict(
                img_shape=(size, size), ori_shape=(size, size),
                pad_shape=(size, size)))
            sample.gt_sem_seg = PixelData(data=torch.randint(
                0, 2, (1, size, size), generator=generator))
            samples.append(sample)
        data = dict(inputs=images, data_samples=samples)
    return model.data_preprocessor(data, True)


def train_step_ms(model, data) -> float:
    """Milliseconds of one loss forward + backward."""
    start = time.perf_counter()
    loss, _ = model.parse_losses(model(**data, mode='loss'))
    loss.backward()
    elapsed = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return elapsed * 1e3


def time_side_by_side(models: dict, data: dict, repeats: int,
                      warmup: int) -> dict:
    """Median milliseconds per model, the models taking turns at every
    repeat (so that a change in the machine's load hits all of them)."""
    times = {name: [] for name in models}
    for index in range(warmup + repeats):
        for name, model in models.items():
            elapsed = train_step_ms(model, data)
            if index >= warmup:
                times[name].append(elapsed)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = Config.fromfile(args.config)
    if 'SingleTeacherDistill' not in str(cfg.model.get('type')):
        raise SystemExit(f'{args.config}: model.type is '
                         f'{cfg.model.get("type")!r}, not a distiller')
    models = registry(cfg.default_scope)
    with DefaultScope.overwrite_default_scope(cfg.default_scope), \
            tempfile.TemporaryDirectory() as tmp:
        teacher_ckpt = args.teacher_ckpt
        if teacher_ckpt is None:
            teacher_cfg = Config.fromfile(cfg.model.teacher.cfg_path).model
            teacher_ckpt = osp.join(tmp, 'teacher.pth')
            torch.save(dict(state_dict=models.build(teacher_cfg).state_dict()),
                       teacher_ckpt)
        cfg.model.teacher_ckpt = teacher_ckpt
        torch.manual_seed(0)
        distiller = models.build(cfg.model).train()
        student = models.build(cfg.model.architecture).train()
        student.load_state_dict(distiller.architecture.state_dict())
        data = fake_batch(cfg, student, args.batch, args.size)
        times = time_side_by_side(
            dict(plain=student, distilled=distiller), data, args.repeats,
            args.warmup)
        plain, distilled = times['plain'], times['distilled']
    print(f'{osp.basename(args.config)}: batch {args.batch} x '
          f'{args.size}px, {torch.get_num_threads()} threads')
    print(f'  student alone    {plain:8.1f} ms / iteration')
    print(f'  with distillation{distilled:8.1f} ms / iteration  '
          f'({distilled / plain:.2f}x)')


if __name__ == '__main__':
    main()
