# Copyright (c) mmbinary contributors. All rights reserved.
"""The memory format a packed model runs in, chosen by measurement.

A model's conv weights set the layout its activations take on the CPU:
with channels-last weights, torch's float convs write channels-last
outputs even from an NCHW input (as the data preprocessors of mmdet and
mmseg give), and the packed ops then read and write channels-last too,
where MobileNetV2's blocks fuse their depthwise convs and run their expand
and depthwise convs in one pass. Which layout is faster depends on the
model and the CPU (MobileNetV2 gains 20-30 %; ResNet-50 runs about as fast
either way), so it is measured on the model's own input. The packed layers
give the same outputs in either layout; the float layers left (a stem,
predictors) may round their last bit differently.
"""
import time
from dataclasses import dataclass
from typing import Callable, Dict

import torch
from torch import nn

#: The memory formats a model can be put in, by name.
MEMORY_FORMATS = {
    'contiguous': torch.contiguous_format,
    'channels_last': torch.channels_last
}


def set_memory_format(model: nn.Module, memory_format: str) -> nn.Module:
    """``model``, in place, with its 4-D float parameters and buffers (conv
    weights) in ``memory_format``; integer buffers (packed words) keep the
    layout their op defines.

    Args:
        model (nn.Module): any model.
        memory_format (str): a key of :data:`MEMORY_FORMATS`.

    Returns:
        nn.Module: ``model``.
    """
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f'memory_format must be one of '
                         f'{sorted(MEMORY_FORMATS)}, got {memory_format!r}')
    layout = MEMORY_FORMATS[memory_format]
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if param.dim() == 4:
                param.data = param.data.contiguous(memory_format=layout)
        for name, buffer in module.named_buffers(recurse=False):
            if buffer.dim() == 4 and buffer.is_floating_point():
                module._buffers[name] = buffer.contiguous(
                    memory_format=layout)
    return model


@dataclass
class MemoryFormatChoice:
    """What :func:`choose_memory_format` measured and kept."""
    ms: Dict[str, float]  # best ms of a forward per memory format
    memory_format: str


def choose_memory_format(model: nn.Module,
                         run: Callable[[], object],
                         repeat: int = 3) -> MemoryFormatChoice:
    """Put ``model`` in its faster memory format for ``run``.

    Each format's forward is timed ``repeat`` times, the formats
    alternated (a busy machine slows both alike), after one untimed
    forward each (first calls build caches); the best time counts.

    Args:
        model (nn.Module): a (packed) model on the CPU.
        run (callable): one forward of ``model`` on the input to tune for.
        repeat (int): timed forwards per format.

    Returns:
        MemoryFormatChoice: the times and the format ``model`` is left in.
    """
    if not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f'repeat must be an int >= 1, got {repeat!r}')
    ms = {name: float('inf') for name in MEMORY_FORMATS}
    with torch.no_grad():
        for round_ in range(repeat + 1):
            for name in MEMORY_FORMATS:
                set_memory_format(model, name)
                start = time.perf_counter()
                run()
                elapsed = (time.perf_counter() - start) * 1e3
                if round_ > 0:
                    ms[name] = min(ms[name], elapsed)
    best = min(ms, key=ms.get)
    set_memory_format(model, best)
    return MemoryFormatChoice(ms, best)
