# Copyright (c) mmbinary contributors. All rights reserved.
"""``PackedKernelChoiceHook``: give a packed model's convs their fastest
exact CPU kernels on the first test batch.

A packed conv runs on the popcount kernel until something chooses; which
kernel is fastest depends on the layer, the image size and the CPU, so it
is measured (:func:`~mmbinary.models.packing.choose_kernels`: every kernel
gives the same integer accumulators, so the outputs are bit-identical
either way). ``tools/test.py --packed`` registers this hook: before the
first test iteration it replays each layer's call of that batch on every
kernel that runs it and keeps the fastest for the rest of the test.
"""
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmbinary.models.packing import PackedMBBConv2d, choose_kernels
from mmbinary.registry import HOOKS


@HOOKS.register_module()
class PackedKernelChoiceHook(Hook):
    """Choose the packed convs' kernels on the first test batch.

    Args:
        repeat (int): timed runs per kernel and layer (the best counts).
            Default: 3.
    """

    priority = 'LOW'

    def __init__(self, repeat: int = 3) -> None:
        if not isinstance(repeat, int) or repeat < 1:
            raise ValueError(
                f'PackedKernelChoiceHook: repeat must be an int >= 1, got '
                f'{repeat!r}')
        self.repeat = repeat
        self.chosen = False

    def before_test_iter(self, runner, batch_idx: int,
                         data_batch: Optional[dict] = None) -> None:
        if self.chosen or data_batch is None:
            return
        self.chosen = True
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        if not any(isinstance(m, PackedMBBConv2d) for m in model.modules()):
            return
        choices = choose_kernels(model, lambda: model.test_step(data_batch),
                                 repeat=self.repeat)
        counts = {}
        for choice in choices:
            counts[choice.kernel] = counts.get(choice.kernel, 0) + 1
        summary = ', '.join(f'{n} on {k}' for k, n in sorted(counts.items()))
        runner.logger.info(
            f'packed kernels chosen on the first test batch ({len(choices)} '
            f'layers, same outputs on every kernel): {summary}')
