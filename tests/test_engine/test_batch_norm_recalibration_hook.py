# Copyright (c) mmbinary contributors. All rights reserved.
"""BatchNormRecalibrationHook: after the last epoch the batch norms that
train hold the plain mean of their batch statistics over the training data,
computed with the final weights, and that is what the checkpoint saves."""
import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mmbinary.engine import BatchNormRecalibrationHook, recalibrate_batch_norms
from mmbinary.models import MBBConv2d


class TinyModel(BaseModel):
    """An MBB conv, a batch norm that trains, one kept frozen
    (``norm_eval``-like) and a teacher-like branch kept in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = MBBConv2d(3, 4, 3, padding=1, w_bits=2, a_bits=2,
                              a_mode='signed')
        self.norm = nn.BatchNorm2d(4)
        self.frozen = nn.BatchNorm2d(4)
        self.teacher = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))

    def train(self, mode: bool = True) -> 'TinyModel':
        super().train(mode)
        self.frozen.eval()
        self.teacher.eval()
        return self

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = torch.stack(inputs) if isinstance(inputs, list) else inputs
        out = self.frozen(self.norm(self.conv(x))) + self.teacher(x)
        if mode == 'loss':
            return dict(loss=out.pow(2).mean())
        return out


class Images(Dataset):

    def __len__(self) -> int:
        return 6

    def __getitem__(self, index: int) -> dict:
        generator = torch.Generator().manual_seed(index)
        return dict(inputs=torch.randn(3, 6, 6, generator=generator) * 2 + 1)


def batches():
    return DataLoader(Images(), batch_size=2, collate_fn=lambda items: dict(
        inputs=[item['inputs'] for item in items]))


def batch_statistics(model):
    """Per batch, the mean and unbiased variance of the norm's input."""
    stats = []
    with torch.no_grad():
        for batch in batches():
            x = model.conv(torch.stack(batch['inputs']))
            stats.append((x.mean((0, 2, 3)), x.var((0, 2, 3))))
    return stats


def test_running_statistics_are_the_mean_over_the_batches():
    torch.manual_seed(0)
    model = TinyModel()
    model.train()
    model(torch.randn(2, 3, 6, 6))  # the learned clip starts; EMA moves
    model.eval()
    expected = batch_statistics(model)
    untouched = {name: buffer.clone() for name, buffer in
                 model.named_buffers() if 'frozen' in name
                 or 'teacher' in name}
    assert recalibrate_batch_norms(model, batches()) == 1
    mean = torch.stack([m for m, _ in expected]).mean(0)
    var = torch.stack([v for _, v in expected]).mean(0)
    torch.testing.assert_close(model.norm.running_mean, mean)
    torch.testing.assert_close(model.norm.running_var, var)
    assert int(model.norm.num_batches_tracked) == 3
    assert model.norm.momentum == 0.1  # restored
    assert not model.training and not model.norm.training  # mode restored
    for name, buffer in model.named_buffers():
        if name in untouched:
            assert torch.equal(buffer, untouched[name]), name


def test_num_batches_and_bad_values():
    model = TinyModel()
    model.eval()
    recalibrate_batch_norms(model, batches(), num_batches=2)
    assert int(model.norm.num_batches_tracked) == 2
    with pytest.raises(ValueError, match='num_batches'):
        recalibrate_batch_norms(model, batches(), num_batches=0)
    with pytest.raises(ValueError, match='num_batches'):
        BatchNormRecalibrationHook(num_batches=1.5)
    with pytest.raises(ValueError, match='no batch'):
        recalibrate_batch_norms(model, [])


def test_hook_recalibrates_before_the_last_checkpoint(tmp_path):
    torch.manual_seed(0)
    runner = Runner(
        model=TinyModel(),
        work_dir=str(tmp_path),
        train_dataloader=dict(
            dataset=Images(), batch_size=2, num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='pseudo_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=True, max_epochs=2),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=1)),
        custom_hooks=[dict(type='mmbinary.BatchNormRecalibrationHook')],
        default_scope='mmbinary',
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        log_level='WARNING')
    runner.train()
    first = torch.load(tmp_path / 'epoch_1.pth', weights_only=False)
    last = torch.load(tmp_path / 'epoch_2.pth', weights_only=False)
    model = TinyModel()
    model.load_state_dict(last['state_dict'])
    model.eval()
    expected = batch_statistics(model)
    mean = torch.stack([m for m, _ in expected]).mean(0)
    torch.testing.assert_close(last['state_dict']['norm.running_mean'],
                               mean)
    # Only after the last epoch: epoch 1 holds the training average.
    assert int(first['state_dict']['norm.num_batches_tracked']) == 3
    assert int(last['state_dict']['norm.num_batches_tracked']) == 3
    assert not torch.allclose(first['state_dict']['norm.running_mean'],
                              mean)
