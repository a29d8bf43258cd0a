# Copyright (c) mmbinary contributors. All rights reserved.
"""Per-layer choice of the fastest exact CPU kernel of a packed model.

Every packed conv can run on the popcount kernel (AND + popcount over its
``M * K`` bit-plane pairs) or, with AVX-512 VNNI, on the integer kernel
(a dot product of the same integer codes); both give the same integer
accumulator, so the outputs are bit-identical and the choice is about
speed alone. Which is faster depends on the layer (bits, channels, kernel
size, image size) and the CPU, so it is measured: each layer, on an input
of the shape it sees in the model, is timed on both kernels and keeps the
faster one. The choice is not saved with the weights (another machine
chooses again).
"""
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .packed_flow import (RELU, disable_packed_flow, enable_packed_flow,
                          packed_flow_enabled)
from .packed_layers import PackedMBBConv2d, int8_kernel_available


@dataclass
class KernelChoice:
    """One layer's measurement: ms per kernel and the kernel it keeps."""
    name: str
    input_shape: Tuple[int, ...]
    ms: Dict[str, float]
    kernel: str
    reason: str = ''  # why the integer kernel was not timed


def _input_shapes(model: nn.Module,
                  run: Callable[[], object]) -> Dict[str, Tuple[int, ...]]:
    """(N, C, H, W) of every packed conv's input in one forward (the
    layer-by-layer path, where each conv gets its own input)."""
    flowing = packed_flow_enabled(model)
    disable_packed_flow(model)
    shapes: Dict[str, Tuple[int, ...]] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, PackedMBBConv2d):

            def hook(module, args, name=name):
                if args and isinstance(args[0], Tensor):
                    x = args[0]
                    if x.dim() != 4:  # a linear layer: (*, C)
                        x = x.reshape(-1, module.in_channels, 1, 1)
                    shapes.setdefault(name, tuple(x.shape))

            handles.append(module.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
        if flowing:
            enable_packed_flow(model)
    return shapes


def _best_ms(forward: Callable[[], object], repeat: int) -> float:
    forward()  # warm-up (and the integer weight layout, built once)
    best = float('inf')
    for _ in range(repeat):
        begin = time.perf_counter()
        forward()
        best = min(best, time.perf_counter() - begin)
    return best * 1e3


def time_kernels(layer: PackedMBBConv2d, input_shape: Tuple[int, ...],
                 repeat: int = 3) -> Dict[str, float]:
    """ms of ``layer`` on each kernel that runs it, on packed activations of
    ``input_shape`` (N, C, H, W), float output with a ReLU (what a flowing
    layer writes). The layer's kernel is left as it was."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(input_shape, generator=gen) / float(layer.inv_step)
    if not layer.signed:
        x = x.abs()
    words = torch.ops.mmbinary.mbb_quantize_pack(
        x.contiguous(memory_format=torch.channels_last), layer.a_bits,
        float(layer.inv_step), layer.signed, 1)
    kernels = ['popcount']
    if layer.int8_unsupported() is None:
        kernels.append('int8')
    kept = layer.kernel
    ms = {}
    try:
        with torch.no_grad():
            for kernel in kernels:
                layer.kernel = kernel
                ms[kernel] = _best_ms(
                    lambda: layer.run_words(words, *RELU), repeat)
    finally:
        layer.kernel = kept
    return ms


def choose_kernels(model: nn.Module,
                   run: Callable[[], object],
                   repeat: int = 3,
                   log: Optional[Callable[[str], None]] = None
                   ) -> List[KernelChoice]:
    """Give every packed conv of ``model`` its fastest exact kernel.

    Args:
        model (nn.Module): a packed model (:func:`convert_to_packed`), on
            the CPU.
        run (callable): runs one forward of ``model`` on an input of the
            size to tune for (e.g. ``lambda: model(image)``).
        repeat (int): timed runs per kernel and layer (the best counts).
        log (callable, optional): told one line per layer.

    Returns:
        list[KernelChoice]: per layer, the times and the kernel kept (also
        set on the layer: ``layer.kernel``, ``layer.kernel_ms``).
    """
    if repeat < 1:
        raise ValueError(f'repeat must be >= 1, got {repeat}')
    shapes = _input_shapes(model, run)
    choices = []
    reason = ('' if int8_kernel_available() else
              'this CPU or build has no AVX-512 VNNI')
    for name, module in model.named_modules():
        if not isinstance(module, PackedMBBConv2d) or name not in shapes:
            continue
        if module.groups != 1 or module.weight_words.device.type != 'cpu':
            continue  # the popcount kernel's own layouts
        ms = time_kernels(module, shapes[name], repeat)
        kernel = min(ms, key=ms.get)
        module.set_kernel(kernel)
        module.kernel_ms = dict(ms)
        choice = KernelChoice(name, shapes[name], ms, kernel,
                              reason or (module.int8_unsupported() or ''))
        choices.append(choice)
        if log is not None:
            log(f'{name}: ' + ', '.join(f'{k} {v:.2f} ms'
                                        for k, v in ms.items()) +
                f' -> {kernel}')
    return choices
