# Copyright (c) mmbinary contributors. All rights reserved.
"""mmengine checkpoints load (resume and load_from) under torch >= 2.6
without full unpickling; other pickled objects are refused."""
import os

import pytest
import torch
from torch import nn

import mmbinary  # noqa: F401  (registers the safe loader)
from mmbinary.utils.checkpoint import TRUSTED_ENV, safe_torch_load


class ToyModel(nn.Module):
    """A model in mmengine's BaseModel form, small enough to train here."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, targets, mode='tensor'):
        out = self.linear(inputs)
        if mode == 'loss':
            return dict(loss=((out - targets)**2).mean())
        return [out]


def _toy_runner(work_dir, max_epochs, **kwargs):
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Wrapped(BaseModel):

        def __init__(self):
            super().__init__()
            self.toy = ToyModel()

        def forward(self, inputs, targets, mode='tensor'):
            return self.toy(inputs, targets, mode)

    generator = torch.Generator().manual_seed(0)
    dataset = [
        dict(inputs=torch.randn(2, generator=generator),
             targets=torch.randn(1, generator=generator)) for _ in range(8)
    ]
    return Runner(
        model=Wrapped(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=dataset,
            sampler=dict(type='DefaultSampler', shuffle=True),
            batch_size=4,
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
        param_scheduler=dict(type='MultiStepLR', milestones=[1]),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        default_scope='mmengine',
        **kwargs)


@pytest.fixture(scope='module')
def trained_checkpoint(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('toy')
    runner = _toy_runner(work_dir, max_epochs=1)
    runner.train()
    path = work_dir / 'epoch_1.pth'
    assert path.is_file()
    return path, runner.model.state_dict()


def test_plain_weights_only_load_fails(trained_checkpoint):
    """The problem being solved: torch's default refuses the file."""
    path, _ = trained_checkpoint
    with pytest.raises(Exception, match='weights_only'):
        torch.load(path, weights_only=True)


def test_safe_load_reads_everything(trained_checkpoint):
    path, state_dict = trained_checkpoint
    checkpoint = safe_torch_load(str(path))
    assert set(checkpoint) >= {'meta', 'state_dict', 'message_hub',
                               'optimizer', 'param_schedulers'}
    for name, value in state_dict.items():
        assert torch.equal(checkpoint['state_dict'][name], value)
    history = checkpoint['message_hub']['log_scalars']['train/loss']
    assert history.mean() > 0


def test_load_from_and_resume(trained_checkpoint, tmp_path):
    path, state_dict = trained_checkpoint
    runner = _toy_runner(tmp_path / 'resumed', max_epochs=2,
                         load_from=str(path), resume=True)
    runner.train()
    assert runner.epoch == 2
    runner = _toy_runner(tmp_path / 'loaded', max_epochs=1)
    runner.load_checkpoint(str(path))
    for name, value in state_dict.items():
        assert torch.equal(runner.model.state_dict()[name], value)


class RunsCode:

    def __reduce__(self):
        return (os.system, ('echo should-not-run',))


def test_arbitrary_objects_are_refused(tmp_path, monkeypatch):
    path = tmp_path / 'evil.pth'
    torch.save(dict(state_dict={}, payload=RunsCode()), path)
    monkeypatch.delenv(TRUSTED_ENV, raising=False)
    with pytest.raises(RuntimeError, match=TRUSTED_ENV):
        safe_torch_load(str(path))
    from mmengine.runner.checkpoint import _load_checkpoint
    with pytest.raises(RuntimeError, match='weights_only=True'):
        _load_checkpoint(str(path))


def test_getattr_is_restricted(tmp_path):
    """The pickled ``getattr`` only reaches HistoryBuffer's statistics."""
    import pickle

    from mmengine.logging import HistoryBuffer

    from mmbinary.utils.checkpoint import _history_buffer_getattr
    assert _history_buffer_getattr(HistoryBuffer, 'mean') is \
        HistoryBuffer.mean
    with pytest.raises(pickle.UnpicklingError, match='refusing'):
        _history_buffer_getattr(HistoryBuffer, '__init__')
    with pytest.raises(pickle.UnpicklingError, match='refusing'):
        _history_buffer_getattr(os, 'system')


def test_trusted_opt_in(tmp_path, monkeypatch):
    path = tmp_path / 'other.pth'
    torch.save(dict(value=complex(1, 2)), path)  # not in the allow list
    monkeypatch.setenv(TRUSTED_ENV, '1')
    assert safe_torch_load(str(path))['value'] == complex(1, 2)


def test_legacy_format_still_loads_and_missing_files_are_named(tmp_path):
    from mmbinary.utils.checkpoint import check_checkpoint_file
    path = tmp_path / 'legacy.pth'
    torch.save(dict(state_dict=dict(w=torch.ones(2))), path,
               _use_new_zipfile_serialization=False)
    check_checkpoint_file(str(path))  # no checksums to verify: accepted
    assert torch.equal(safe_torch_load(str(path))['state_dict']['w'],
                       torch.ones(2))
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        safe_torch_load(str(tmp_path / 'missing.pth'))
