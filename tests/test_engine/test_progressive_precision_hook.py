# Copyright (c) mmbinary contributors. All rights reserved.
"""ProgressivePrecisionHook: the bit widths change at the named epochs, and
a resumed run goes on with the widths of its epoch."""
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import Dataset

from mmbinary.engine import ProgressivePrecisionHook
from mmbinary.models import MBBConv2d
from mmbinary.registry import HOOKS

SCHEDULE = {0: (8, 8), 2: (4, 4), 3: (2, 2)}


class TinyModel(BaseModel):

    def __init__(self) -> None:
        super().__init__()
        self.conv = MBBConv2d(3, 4, 3, padding=1, w_bits=2, a_bits=2,
                              a_mode='signed')

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.conv(torch.stack(inputs))
        if mode == 'loss':
            return dict(loss=out.pow(2).mean())
        return out


class Images(Dataset):

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict:
        generator = torch.Generator().manual_seed(index)
        return dict(inputs=torch.randn(3, 6, 6, generator=generator))


class RecordBits(Hook):
    """Records (epoch, w_bits, a_bits, clip initialized) at each train
    iteration."""

    def __init__(self) -> None:
        self.seen = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        conv = runner.model.conv
        self.seen.append((runner.epoch, conv.w_bits, conv.a_bits))


def make_runner(work_dir, max_epochs=4, resume=False, schedule=SCHEDULE):
    recorder = RecordBits()
    runner = Runner(
        model=TinyModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=Images(), batch_size=2, num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='pseudo_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=1),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[
            dict(type='mmbinary.ProgressivePrecisionHook',
                 schedule=schedule), recorder
        ],
        resume=resume,
        default_scope='mmbinary',
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        log_level='WARNING')
    return runner, recorder


def test_bits_change_at_the_named_epochs_and_resume(tmp_path):
    runner, recorder = make_runner(tmp_path)
    runner.train()
    per_epoch = sorted(set(recorder.seen))
    assert per_epoch == [(0, 8, 8), (1, 8, 8), (2, 4, 4), (3, 2, 2)]
    saved = torch.load(tmp_path / 'epoch_2.pth', weights_only=False)
    assert int(saved['state_dict']['conv.act_quantizer.clip_bits']) == 8
    saved = torch.load(tmp_path / 'epoch_3.pth', weights_only=False)
    assert int(saved['state_dict']['conv.act_quantizer.clip_bits']) == 4
    clip_at_3 = saved['state_dict']['conv.act_quantizer.clip']
    # Resume from epoch 3 (saved at W4A4): the checkpoint loads at W4A4,
    # its clip is kept, and epoch 4 trains at W2A2.
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_3.pth'))
    runner, recorder = make_runner(tmp_path, resume=True)
    seen_at_load = {}

    class Probe(Hook):

        def before_train(self, runner):
            conv = runner.model.conv
            seen_at_load.update(bits=(conv.w_bits, conv.a_bits),
                                clip=conv.act_quantizer.clip.detach().clone())

    runner.register_hook(Probe())
    runner.train()
    assert seen_at_load['bits'] == (4, 4)
    assert torch.equal(seen_at_load['clip'], clip_at_3)
    assert sorted(set(recorder.seen)) == [(3, 2, 2)]
    final = torch.load(tmp_path / 'epoch_4.pth', weights_only=False)
    assert int(final['state_dict']['conv.act_quantizer.clip_bits']) == 2


def test_schedule_must_end_at_the_built_widths_and_start_at_0(tmp_path):
    runner, _ = make_runner(tmp_path, schedule={0: (8, 8), 2: (4, 4)})
    with pytest.raises(ValueError, match='ends at W4A4 but the model is '
                       'built W2A2'):
        runner.train()
    with pytest.raises(ValueError, match='entry for epoch 0'):
        ProgressivePrecisionHook(schedule={1: (2, 2)})
    with pytest.raises(ValueError, match='must be an integer in 1..8'):
        ProgressivePrecisionHook(schedule={0: (9, 2)})
    with pytest.raises(ValueError, match="clip must be one of"):
        ProgressivePrecisionHook(schedule={0: (2, 2)}, clip='nope')
    assert HOOKS.get('ProgressivePrecisionHook') is ProgressivePrecisionHook


def test_refit_fits_the_clip_again_keep_keeps_it():
    from mmbinary.engine.hooks.progressive_precision_hook import set_bit_widths
    model = nn.Sequential(MBBConv2d(3, 4, 1, w_bits=8, a_bits=8,
                                    a_mode='signed'))
    x = torch.randn(2, 3, 4, 4)
    model(x)
    clip8 = float(model[0].act_quantizer.clip)
    assert set_bit_widths(model, 2, 2, 'keep') == 2
    assert float(model[0].act_quantizer.clip) == clip8
    assert bool(model[0].act_quantizer.initialized)
    set_bit_widths(model, 1, 1, 'refit')
    assert not bool(model[0].act_quantizer.initialized)
    model(x)
    assert (model[0].w_bits, model[0].a_bits) == (1, 1)
    # refitted as a layer trained directly at that width starts
    direct = MBBConv2d(3, 4, 1, w_bits=1, a_bits=1, a_mode='signed')
    direct(x)
    assert float(model[0].act_quantizer.clip) == float(
        direct.act_quantizer.clip)
    assert float(model[0].act_quantizer.clip) != clip8
