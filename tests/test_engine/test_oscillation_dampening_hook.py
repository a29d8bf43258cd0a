# Copyright (c) mmbinary contributors. All rights reserved.
"""OscillationDampeningHook: the dampening term is the distance of the
latent weights to their levels, its gradient pulls them onto the levels,
its weight follows the cosine ramp and it reaches the training loss."""
import math

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import Dataset

from mmbinary.engine import OscillationDampeningHook, dampening_loss
from mmbinary.engine.hooks.oscillation_dampening_hook import (LOSS_KEY,
                                                              cosine_ramp,
                                                              dampened_layers)
from mmbinary.models import MBBConv2d


def test_the_term_is_the_distance_to_the_levels():
    torch.manual_seed(0)
    conv = MBBConv2d(3, 4, 3, w_bits=2, a_bits=2)
    weight = conv.weight.detach()
    alpha = conv.weight_quantizer.alpha(weight)
    levels = torch.tensor([-3.0, -1.0, 1.0, 3.0]) / 3
    clipped = weight.clamp(-alpha, alpha)
    # the nearest level of each clipped weight, in units of alpha
    nearest = levels[(clipped / alpha).unsqueeze(-1).sub(levels).abs()
                     .argmin(-1)] * alpha
    expected = (nearest - clipped).pow(2).reshape(4, -1).mean(1).sum()
    torch.testing.assert_close(dampening_loss([conv]), expected)
    assert float(expected) > 0


def test_its_gradient_moves_the_weights_onto_their_levels():
    torch.manual_seed(1)
    conv = MBBConv2d(8, 6, 3, w_bits=2, a_bits=2)
    codes = conv.weight_quantizer.codes(conv.weight)[0]
    before = float(dampening_loss([conv]))
    optimizer = torch.optim.SGD(conv.parameters(), lr=2.0)
    for _ in range(20):
        optimizer.zero_grad()
        dampening_loss([conv]).backward()
        optimizer.step()
    # (less than to 0: the scale, from the weights' statistics, follows
    # them a little)
    assert float(dampening_loss([conv])) < 0.3 * before
    # pulled towards the levels they had, not across a decision level
    same = conv.weight_quantizer.codes(conv.weight)[0] == codes
    assert same.float().mean() > 0.97


def test_the_ramp_and_bad_values():
    assert cosine_ramp(0.0, 0.0, 0.1) == 0.0
    assert cosine_ramp(1.0, 0.0, 0.1) == pytest.approx(0.1)
    assert cosine_ramp(0.5, 0.0, 0.1) == pytest.approx(0.05)
    for kwargs, name in ((dict(final_weight=0), 'final_weight'),
                         (dict(final_weight=float('nan')), 'final_weight'),
                         (dict(final_weight=True), 'final_weight'),
                         (dict(start_weight=-1), 'start_weight'),
                         (dict(final_weight=0.1, start_weight=0.2),
                          'start_weight')):
        with pytest.raises(ValueError, match=name):
            OscillationDampeningHook(**kwargs)


class TinyModel(BaseModel):
    """An MBB conv that trains and one that does not (a teacher's)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = MBBConv2d(3, 4, 3, padding=1, w_bits=2, a_bits=2,
                              a_mode='signed')
        self.frozen = MBBConv2d(3, 4, 1, w_bits=2, a_bits=2, a_mode='signed')
        self.frozen.requires_grad_(False)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = torch.stack(inputs) if isinstance(inputs, list) else inputs
        out = self.conv(x) + self.frozen(x)
        if mode == 'loss':
            return dict(loss=out.pow(2).mean())
        return out


class Images(Dataset):

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> dict:
        generator = torch.Generator().manual_seed(index)
        return dict(inputs=torch.randn(3, 6, 6, generator=generator))


class Record(OscillationDampeningHook):
    """Records the weight and the training loss dict of every iteration."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seen = []

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        self.seen.append((self.weight, dict(outputs)))


def tiny_runner(model, tmp_path, hook, epochs: int = 1) -> Runner:
    """A Runner training ``model`` on :class:`Images` with ``hook``."""
    return Runner(
        model=model,
        work_dir=str(tmp_path),
        train_dataloader=dict(
            dataset=Images(), batch_size=2, num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='pseudo_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=True, max_epochs=epochs),
        custom_hooks=[hook],
        default_scope='mmbinary',
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        log_level='WARNING')


def test_hook_adds_the_term_to_the_training_loss(tmp_path):
    torch.manual_seed(0)
    model = TinyModel()
    assert dampened_layers(model) == [model.conv]
    hook = Record(final_weight=0.5, start_weight=0.1)
    runner = tiny_runner(model, tmp_path, hook, epochs=2)
    runner.train()
    weights = [weight for weight, _ in hook.seen]
    assert len(weights) == 8
    assert weights[0] == pytest.approx(0.1)
    assert weights[-1] == pytest.approx(0.5)
    assert weights[3] == pytest.approx(
        0.5 + (0.1 - 0.5) * (1 + math.cos(math.pi * 3 / 7)) / 2)
    for _, outputs in hook.seen:
        assert float(outputs[LOSS_KEY]) > 0
        # the total the optimizer stepped on holds the term
        assert float(outputs['loss']) > float(outputs[LOSS_KEY])
    assert 'parse_losses' not in model.__dict__  # restored after training


def test_hook_refuses_a_model_without_mbb_layers(tmp_path):

    class Plain(TinyModel):

        def __init__(self) -> None:
            BaseModel.__init__(self)
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.frozen = nn.Conv2d(3, 4, 1)

    runner = tiny_runner(Plain(), tmp_path,
                         dict(type='mmbinary.OscillationDampeningHook'))
    with pytest.raises(ValueError, match='no MBB layer whose weight trains'):
        runner.train()
