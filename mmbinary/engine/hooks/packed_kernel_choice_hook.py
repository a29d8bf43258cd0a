# Copyright (c) mmbinary contributors. All rights reserved.
"""``PackedKernelChoiceHook``: give a packed model's convs their fastest
exact CPU kernels, and the model its faster memory format, on the first
test batch.

A packed conv runs on the popcount kernel until something chooses; which
kernel is fastest depends on the layer, the image size and the CPU, so it
is measured (:func:`~mmbinary.models.packing.choose_kernels`: every kernel
gives the same integer accumulators, so the outputs are bit-identical
either way). ``tools/test.py --packed`` registers this hook: before the
first test iteration it replays each layer's call of that batch on every
kernel that runs it and keeps the fastest for the rest of the test; then
it times the whole test step with the model's weights NCHW and
channels-last (:func:`~mmbinary.models.packing.choose_memory_format`) and
keeps the faster.
"""
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmbinary.models.packing import (MEMORY_FORMATS, PackedMBBConv2d,
                                     choose_kernels, choose_memory_format,
                                     set_memory_format)
from mmbinary.registry import HOOKS


@HOOKS.register_module()
class PackedKernelChoiceHook(Hook):
    """Choose the packed convs' kernels on the first test batch.

    Args:
        repeat (int): timed runs per kernel and layer, and per memory
            format (the best counts). Default: 3.
        memory_format (str): ``'choose'`` (time both), ``'contiguous'``
            or ``'channels_last'``. Default: ``'choose'``.
        kernels (bool): choose the kernels (else the layers keep theirs).
            Default: True.
    """

    priority = 'LOW'

    def __init__(self, repeat: int = 3,
                 memory_format: str = 'choose',
                 kernels: bool = True) -> None:
        if not isinstance(repeat, int) or repeat < 1:
            raise ValueError(
                f'PackedKernelChoiceHook: repeat must be an int >= 1, got '
                f'{repeat!r}')
        formats = ['choose'] + sorted(MEMORY_FORMATS)
        if memory_format not in formats:
            raise ValueError(
                f'PackedKernelChoiceHook: memory_format must be one of '
                f'{formats}, got {memory_format!r}')
        self.repeat = repeat
        self.memory_format = memory_format
        self.kernels = bool(kernels)
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

        def run():
            return model.test_step(data_batch)

        if self.kernels:
            self._choose_kernels(runner, model, run)
        if self.memory_format == 'choose':
            choice = choose_memory_format(model, run, repeat=self.repeat)
            times = ', '.join(f'{name} {ms:.1f} ms'
                              for name, ms in choice.ms.items())
            runner.logger.info(
                f'packed model memory format chosen on the first test batch: '
                f'{choice.memory_format} (a test step: {times})')
        else:
            set_memory_format(model, self.memory_format)

    def _choose_kernels(self, runner, model, run) -> None:
        choices = choose_kernels(model, run, repeat=self.repeat)
        counts = {}
        for choice in choices:
            counts[choice.kernel] = counts.get(choice.kernel, 0) + 1
        summary = ', '.join(f'{n} on {k}' for k, n in sorted(counts.items()))
        runner.logger.info(
            f'packed kernels chosen on the first test batch ({len(choices)} '
            f'layers, same outputs on every kernel): {summary}')
