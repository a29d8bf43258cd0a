# Copyright (c) mmbinary contributors. All rights reserved.
"""The max pools a packed model keeps (ResNet's stem), run at their best
on the CPU.

torch's channels-last max pool takes 3.2-3.8 ms for a ResNet stem's 3x3,
stride-2 pool at 512x672 on one thread (Xeon with AVX-512), about a
thirtieth of the whole packed backbone + FPN; ``torch.ops.mmbinary.
max_pool2d_channels_last`` gives the same values bit for bit (each output
takes the first of its largest window values, NaN wins) in 1.4 ms.
:class:`ChannelsLastMaxPool2d` is an ``nn.MaxPool2d`` (same arguments, no
state) that takes that path at inference; :func:`use_channels_last_max_pools`
switches a model's max pools to it in place.
"""
import torch
from torch import Tensor, nn

from mmbinary.ops import ext_loaded
from mmbinary.packed_format import pair as _pair


class ChannelsLastMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` whose inference forward on a channels-last float32
    CPU input runs the compiled max pool.

    (N, C, H, W) -> (N, C, Ho, Wo) channels-last, equal to ``nn.MaxPool2d``
    bit for bit. Other inputs (NCHW, other devices and dtypes, a gradient
    to track), ``ceil_mode``, ``return_indices`` and a build without the
    compiled ops use ``nn.MaxPool2d``'s forward.
    """

    def _compiled(self, input: Tensor) -> bool:
        if self.ceil_mode or self.return_indices or not ext_loaded():
            return False
        if input.device.type != 'cpu' or input.dtype != torch.float32:
            return False
        if input.dim() != 4 or not input.is_contiguous(
                memory_format=torch.channels_last):
            return False
        return not (torch.is_grad_enabled() and input.requires_grad)

    def forward(self, input: Tensor) -> Tensor:
        if self._compiled(input):
            stride = self.stride if self.stride else self.kernel_size
            return torch.ops.mmbinary.max_pool2d_channels_last(
                input, _pair(self.kernel_size), _pair(stride),
                _pair(self.padding), _pair(self.dilation))
        return super().forward(input)


def use_channels_last_max_pools(model: nn.Module) -> int:
    """Switch, in place, every ``nn.MaxPool2d`` of ``model`` to
    :class:`ChannelsLastMaxPool2d`.

    Returns:
        int: the number of max pools switched.
    """
    count = 0
    for module in model.modules():
        if type(module) is nn.MaxPool2d:
            module.__class__ = ChannelsLastMaxPool2d
            count += 1
    return count
