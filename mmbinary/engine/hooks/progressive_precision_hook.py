# Copyright (c) mmbinary contributors. All rights reserved.
"""``ProgressivePrecisionHook``: lower the bit widths of every MBB layer at
given epochs, within one training run (one optimizer, one learning-rate
schedule)."""
from typing import Dict, Optional, Sequence, Tuple

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch import nn

from mmbinary.quant import ActivationQuantizer, WeightQuantizer, check_bits
from mmbinary.registry import HOOKS

#: How a learned clip goes on at a new activation width.
CLIP_POLICIES = ('refit', 'keep')


def _model(runner) -> nn.Module:
    model = runner.model
    return model.module if is_model_wrapper(model) else model


def set_bit_widths(model: nn.Module, w_bits: int, a_bits: int,
                   clip: str = 'refit') -> int:
    """Set every MBB layer of ``model`` to ``w_bits``/``a_bits``, in place.

    Args:
        model (nn.Module): a model with MBB layers.
        w_bits, a_bits (int): the new widths, 1..8.
        clip (str): at a changed activation width, ``'refit'`` the learned
            clip (MSE-optimal for the new width, on the next batch, the way
            a directly trained layer starts) or ``'keep'`` it.

    Returns:
        int: the number of quantizers whose width changed.
    """
    check_bits(w_bits, 'w_bits')
    check_bits(a_bits, 'a_bits')
    if clip not in CLIP_POLICIES:
        raise ValueError(f'clip must be one of {CLIP_POLICIES}, got {clip!r}')
    changed = 0
    for module in model.modules():
        if isinstance(module, WeightQuantizer) and module.bits != w_bits:
            module.bits = w_bits
            changed += 1
        elif isinstance(module, ActivationQuantizer) and \
                module.bits != a_bits:
            module.bits = a_bits
            module.clip_bits.fill_(a_bits)
            if clip == 'refit' and module.learn_clip and \
                    bool(module.initialized):
                module.initialized.fill_(False)
            changed += 1
    return changed


def model_bit_widths(model: nn.Module) -> Optional[Tuple[int, int]]:
    """The ``(w_bits, a_bits)`` of a model's MBB layers, None without any;
    raises if they differ between layers."""
    widths = set()
    for module in model.modules():
        weight = getattr(module, 'weight_quantizer', None)
        act = getattr(module, 'act_quantizer', None)
        if isinstance(weight, WeightQuantizer) and \
                isinstance(act, ActivationQuantizer):
            widths.add((weight.bits, act.bits))
    if len(widths) > 1:
        raise ValueError('ProgressivePrecisionHook sets one width for every '
                         f'MBB layer; the model has {sorted(widths)}')
    return widths.pop() if widths else None


@HOOKS.register_module()
class ProgressivePrecisionHook(Hook):
    """Train at decreasing bit widths in one run:
    ``schedule={0: (8, 8), 6: (4, 4), 12: (2, 2)}`` trains epochs 0-5 at
    W8A8, 6-11 at W4A4 and from 12 on at W2A2.

    The optimizer, its moments and the learning-rate schedule go on through
    the changes; at each change the learned activation clips are fitted
    again for the new width (``clip='refit'``) or kept (``'keep'``). The
    last entry must be the width the model is built with, so the final
    checkpoint tests, packs and exports with the same config. A resumed run
    (``--resume``) gets the widths of the epoch its checkpoint was saved at
    before the checkpoint loads, and goes on with the schedule.

    Args:
        schedule (dict[int, tuple[int, int]] | list): first epoch ->
            ``(w_bits, a_bits)``, or a list of ``[epoch, w_bits, a_bits]``
            (what ``--cfg-options custom_hooks.0.schedule=[[0,8,8],...]``
            gives); must have an entry for epoch 0.
        clip (str): ``'refit'`` (default) or ``'keep'``.
    """

    priority = 'VERY_HIGH'  # before the other hooks of an epoch

    def __init__(self,
                 schedule: Dict[int, Sequence[int]],
                 clip: str = 'refit') -> None:
        if isinstance(schedule, (list, tuple)) and all(
                isinstance(entry, (list, tuple)) and len(entry) == 3
                for entry in schedule):
            # [[epoch, w_bits, a_bits], ...], as --cfg-options writes it
            schedule = {entry[0]: tuple(entry[1:]) for entry in schedule}
        if not isinstance(schedule, dict) or not schedule:
            raise ValueError('schedule must be a non-empty dict epoch -> '
                             '(w_bits, a_bits) or a list of [epoch, w_bits, '
                             f'a_bits], got {schedule!r}')
        parsed = {}
        for epoch, bits in schedule.items():
            if isinstance(epoch, bool) or not isinstance(epoch, int) or \
                    epoch < 0:
                raise ValueError('schedule epochs must be integers >= 0, '
                                 f'got {epoch!r}')
            if not isinstance(bits, (tuple, list)) or len(bits) != 2:
                raise ValueError(f'schedule[{epoch}] must be (w_bits, '
                                 f'a_bits), got {bits!r}')
            parsed[epoch] = (check_bits(bits[0], f'schedule[{epoch}] w_bits'),
                             check_bits(bits[1], f'schedule[{epoch}] a_bits'))
        if 0 not in parsed:
            raise ValueError('schedule must have an entry for epoch 0, got '
                             f'epochs {sorted(parsed)}')
        if clip not in CLIP_POLICIES:
            raise ValueError(
                f'clip must be one of {CLIP_POLICIES}, got {clip!r}')
        self.schedule = dict(sorted(parsed.items()))
        self.clip = clip

    def bits_at(self, epoch: int) -> Tuple[int, int]:
        """The ``(w_bits, a_bits)`` of epoch ``epoch`` (0-based)."""
        return [bits for first, bits in self.schedule.items()
                if first <= epoch][-1]

    def before_run(self, runner) -> None:
        built = model_bit_widths(_model(runner))
        final = list(self.schedule.values())[-1]
        if built is None:
            raise ValueError('ProgressivePrecisionHook: the model has no MBB '
                             'layer to schedule')
        if built != final:
            raise ValueError(
                f'ProgressivePrecisionHook: the schedule ends at W{final[0]}'
                f'A{final[1]} but the model is built W{built[0]}A{built[1]}; '
                'build it with the final widths, so that its checkpoint '
                'tests and packs with the same config')

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Runs before the state dict loads into the model: a resumed run
        # takes the widths its checkpoint was saved with.
        if not getattr(runner, '_resume', False):
            return
        epoch = int((checkpoint.get('meta') or {}).get('epoch', 0))
        w_bits, a_bits = self.bits_at(max(epoch - 1, 0))
        set_bit_widths(_model(runner), w_bits, a_bits, self.clip)

    def before_train_epoch(self, runner) -> None:
        w_bits, a_bits = self.bits_at(runner.epoch)
        if set_bit_widths(_model(runner), w_bits, a_bits, self.clip):
            runner.logger.info(
                f'ProgressivePrecisionHook: epoch {runner.epoch + 1} trains '
                f'at W{w_bits}A{a_bits} (clip: {self.clip})')
