# Copyright (c) mmbinary contributors. All rights reserved.
"""Per-layer choice of the fastest exact CPU kernel of a packed model.

Every packed conv can run on the popcount kernel (AND + popcount over its
``M * K`` bit-plane pairs) or, with AVX-512 VNNI, on the integer kernel (a
dot product of the same integer codes; a layer with few input channels
that takes a float input also with its taps folded into the channels,
``'int8-im2col'``). All give the same integer accumulator, so the outputs
are bit-identical and the choice is about speed alone. Which is faster
depends on the layer (bits, channels, kernel size, image size, what the
call writes) and the CPU, so it is measured: one forward records each
layer's call (its activation words or float input, residual and outputs as
the packed flow passes them, or the float input of its own forward), each
layer replays it on every kernel that runs it and keeps the fastest. The
choice is not saved with the weights (another machine chooses again).
"""
import inspect
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .packed_layers import PackedMBBConv2d, int8_kernel_available


@dataclass
class KernelChoice:
    """One layer's measurement: ms per kernel and the kernel it keeps."""
    name: str
    input_shape: Tuple[int, ...]
    ms: Dict[str, float]
    kernel: str
    reason: str = ''  # why the integer kernel was not timed
    call: str = ''  # the call that was timed (see _Call.describe)


@dataclass
class _Call:
    """How a layer was called in one forward: ``run_words`` arguments
    (the packed flow on words), ``run_float`` arguments (the packed flow on
    a float input) or the float input of its own forward."""
    run_words: Optional[tuple] = None
    input: Optional[Tensor] = None
    run_float: Optional[tuple] = None
    # the forward's other arguments (a per-level head's level)
    forward_args: tuple = ()
    forward_kwargs: Optional[dict] = None

    def describe(self) -> str:
        """e.g. ``'words in; float + residual + words out'``."""
        flow = self.run_words or self.run_float
        if flow is None:
            return 'float in; float out'
        _, _, _, float_out, next_conv, residual = flow[:6]
        outs = (['float'] if float_out else []) + (
            ['residual'] if residual is not None else []) + (
                ['words'] if next_conv is not None else [])
        source = 'words' if self.run_words is not None else 'float'
        return f'{source} in; ' + ' + '.join(outs) + ' out'

    def shape(self, layer: PackedMBBConv2d) -> Tuple[int, ...]:
        if self.run_words is not None:
            n, h, w = self.run_words[0].shape[:3]
            return (n, layer.in_channels, h, w)
        if self.run_float is not None:
            return tuple(self.run_float[0].shape)
        return tuple(self.input.shape)


def _record_calls(model: nn.Module,
                  run: Callable[[], object]) -> Dict[str, _Call]:
    """The first call of every packed conv in one forward of ``run``, with
    the tensors it got (as the packed flow calls it, or through its own
    forward where nothing flows)."""
    names = {id(m): name for name, m in model.named_modules()
             if isinstance(m, PackedMBBConv2d)}
    calls: Dict[str, _Call] = {}
    originals = {'run_words': PackedMBBConv2d.run_words,
                 'run_float': PackedMBBConv2d.run_float}

    def recording(method: str):
        original = originals[method]

        def record(layer, *args, **kwargs):
            name = names.get(id(layer))
            if name is not None and name not in calls:
                bound = inspect.signature(original).bind(
                    layer, *args, **kwargs)
                bound.apply_defaults()
                arguments = tuple(bound.arguments.values())[1:]
                calls[name] = _Call(**{method: arguments})
            return original(layer, *args, **kwargs)

        return record

    def pre_hook(layer, args, kwargs):
        name = names[id(layer)]
        if name not in calls and args and isinstance(args[0], Tensor):
            x = args[0]
            if x.dim() != 4:  # a linear layer: (*, C)
                x = x.reshape(-1, layer.in_channels, 1, 1)
            calls[name] = _Call(input=x, forward_args=tuple(args[1:]),
                                forward_kwargs=dict(kwargs))

    handles = [m.register_forward_pre_hook(pre_hook, with_kwargs=True)
               for m in model.modules() if id(m) in names]
    for method in originals:
        setattr(PackedMBBConv2d, method, recording(method))
    try:
        with torch.no_grad():
            run()
    finally:
        for method, original in originals.items():
            setattr(PackedMBBConv2d, method, original)
        for handle in handles:
            handle.remove()
    return calls


def _time_kernels(layer: PackedMBBConv2d, call: _Call,
                  repeat: int = 3) -> Dict[str, float]:
    """ms of ``layer`` on each kernel that runs it, replaying ``call`` (the
    same inputs, residual and outputs as in the model). The layer's kernel
    is left as it was."""
    kernels = ['popcount']
    if layer.int8_unsupported() is None:
        kernels.append('int8')
    if call.run_words is None and layer.im2col_unsupported() is None:
        kernels.append('int8-im2col')  # it folds float inputs only
    if call.run_words is not None:
        forward = lambda: layer.run_words(*call.run_words)  # noqa: E731
    elif call.run_float is not None:
        forward = lambda: layer.run_float(*call.run_float)  # noqa: E731
    else:
        forward = lambda: layer(  # noqa: E731
            call.input, *call.forward_args, **(call.forward_kwargs or {}))
    kept = layer.kernel
    best = {kernel: float('inf') for kernel in kernels}
    try:
        with torch.no_grad():
            for kernel in kernels:  # warm-up (and the int8 weight layout)
                layer.kernel = kernel
                forward()
            # Rounds of every kernel in turn, the best run of each kept: a
            # burst of load from other processes then slows the kernels of
            # one round alike instead of deciding the choice.
            for _ in range(repeat):
                for kernel in kernels:
                    layer.kernel = kernel
                    begin = time.perf_counter()
                    forward()
                    best[kernel] = min(best[kernel],
                                       time.perf_counter() - begin)
    finally:
        layer.kernel = kept
    ms = {kernel: seconds * 1e3 for kernel, seconds in best.items()}
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
    for layer in model.modules():  # record what the popcount kernel gets
        if isinstance(layer, PackedMBBConv2d):
            layer.kernel = 'popcount'
    calls = _record_calls(model, run)
    choices = []
    reason = ('' if int8_kernel_available() else
              'this CPU or build has no AVX-512 VNNI')
    for name, module in model.named_modules():
        if not isinstance(module, PackedMBBConv2d) or name not in calls:
            continue
        if module.groups != 1 or module.weight_words.device.type != 'cpu':
            continue  # the popcount kernel's own layouts
        ms = _time_kernels(module, calls[name], repeat)
        kernel = min(ms, key=ms.get)
        module.set_kernel(kernel)
        module.kernel_ms = dict(ms)
        choice = KernelChoice(name, calls[name].shape(module), ms, kernel,
                              reason or (module.int8_unsupported() or ''),
                              calls[name].describe())
        choices.append(choice)
        if log is not None:
            log(f'{name}: ' + ', '.join(f'{k} {v:.2f} ms'
                                        for k, v in ms.items()) +
                f' -> {kernel}')
    return choices
