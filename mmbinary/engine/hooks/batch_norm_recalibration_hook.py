# Copyright (c) mmbinary contributors. All rights reserved.
"""``BatchNormRecalibrationHook``: estimate the batch norms' running
statistics again, with the final weights, before the last checkpoint.

During quantization-aware training a batch norm's running mean and variance
are an exponential average over the last few dozen batches, each computed
with the weights of its step. Low-bit weights jump between codes from step
to step (a latent weight near a decision level flips its code back and
forth), so the statistics lag behind the network the checkpoint holds; the
packed model folds them into its integer epilogue and inherits the error.
Running the training data once more through the final network with the
averages reset (``momentum=None``: a plain mean over the batches) gives the
statistics of the weights that are saved (Nagel et al., "Overcoming
Oscillations in Quantization-Aware Training", ICML 2022, batch-norm
re-estimation).
"""
from typing import Iterable, List, Optional

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import IterBasedTrainLoop
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmbinary.registry import HOOKS


def training_batch_norms(model: nn.Module) -> List[_BatchNorm]:
    """The batch norms that ``model.train()`` puts in training mode: not
    those a backbone keeps frozen (``frozen_stages``, ``norm_eval``) nor a
    distiller's teacher. The model's mode is left as it was."""
    was_training = model.training
    model.train()
    norms = [m for m in model.modules()
             if isinstance(m, _BatchNorm) and m.training
             and m.track_running_stats]
    model.train(was_training)
    return norms


@torch.no_grad()
def recalibrate_batch_norms(model: nn.Module,
                            batches: Iterable[dict],
                            num_batches: Optional[int] = None) -> int:
    """Estimate again the running statistics of the batch norms that train,
    as the plain mean over ``batches`` of the current network.

    Everything else runs in eval mode (quantizers, dropout, frozen norms);
    the model's mode and the norms' momenta are restored.

    Args:
        model (nn.Module): an mmengine ``BaseModel`` (detector, segmentor
            or distiller; a distiller runs its student) with a
            ``data_preprocessor``.
        batches (Iterable[dict]): data-loader batches (``inputs``,
            ``data_samples``), e.g. the training loader.
        num_batches (int, optional): use the first ``num_batches``;
            default: all.

    Returns:
        int: the number of batch norms recalibrated.
    """
    if num_batches is not None and (not isinstance(num_batches, int)
                                    or num_batches < 1):
        raise ValueError('num_batches must be a positive int or None, got '
                         f'{num_batches!r}')
    norms = training_batch_norms(model)
    if not norms:
        return 0
    was_training = model.training
    momenta = [norm.momentum for norm in norms]
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative mean over the batches
        norm.train()
    seen = 0
    try:
        for seen, batch in enumerate(batches, start=1):
            data = model.data_preprocessor(batch, True)
            model(**data, mode='tensor')
            if num_batches is not None and seen >= num_batches:
                break
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.train(was_training)
    if seen == 0:
        raise ValueError('recalibrate_batch_norms: no batch to run; the '
                         'running statistics were reset')
    return len(norms)


@HOOKS.register_module()
class BatchNormRecalibrationHook(Hook):
    """Recalibrate the batch norms (:func:`recalibrate_batch_norms`) on the
    training data after the last training epoch (or iteration, in an
    iteration-based loop), before the checkpoint hook saves it, so that the
    saved, packed and evaluated model all have the new statistics::

        custom_hooks = [dict(type='mmbinary.BatchNormRecalibrationHook')]

    Args:
        num_batches (int, optional): training batches to run; default: one
            pass over the training loader.
    """

    # Before CheckpointHook (VERY_LOW) in after_train_epoch.
    priority = 'NORMAL'

    def __init__(self, num_batches: Optional[int] = None) -> None:
        if num_batches is not None and (not isinstance(num_batches, int)
                                        or num_batches < 1):
            raise ValueError('num_batches must be a positive int or None, '
                             f'got {num_batches!r}')
        self.num_batches = num_batches

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if isinstance(runner.train_loop, IterBasedTrainLoop) and \
                self.is_last_train_iter(runner):
            self._recalibrate(runner)

    def after_train_epoch(self, runner) -> None:
        if not isinstance(runner.train_loop, IterBasedTrainLoop) and \
                self.is_last_train_epoch(runner):
            self._recalibrate(runner)

    def _recalibrate(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        count = recalibrate_batch_norms(model, runner.train_dataloader,
                                        self.num_batches)
        runner.logger.info(f'BatchNormRecalibrationHook: {count} batch '
                           'norms recalibrated on the training data')
