# Copyright (c) mmbinary contributors. All rights reserved.
"""The float convs a packed model keeps (stem, shortcuts), run at their
best on the CPU.

torch runs a 1x1, stride-1 conv of a batch below 16 on one thread through
its generic im2col path (``aten::_slow_conv2d_forward``), which also copies
a channels-last input to NCHW and back; oneDNN
(``aten::mkldnn_convolution``, what torch uses for every other float conv
on the CPU) runs the same conv 2-3.5x faster there. :class:`OneDNNConv2d`
is an ``nn.Conv2d`` (same parameters, same state dict) that takes that
path at inference; :func:`use_onednn_convs` switches a model's 1x1 convs
to it in place.
"""
import torch
from torch import Tensor, nn


def _runs_on_onednn(conv: nn.Conv2d, input: Tensor) -> bool:
    """Whether ``conv(input)`` can go to oneDNN directly: CPU float32,
    nothing that needs a gradient, zero padding given as numbers."""
    if not torch.backends.mkldnn.is_available():
        return False
    if input.device.type != 'cpu' or input.dtype != torch.float32:
        return False
    if input.dim() != 4 or conv.weight.dtype != torch.float32:
        return False
    if torch.is_grad_enabled() and (input.requires_grad
                                    or conv.weight.requires_grad):
        return False
    return conv.padding_mode == 'zeros' and not isinstance(conv.padding, str)


class OneDNNConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose inference forward on the CPU runs on oneDNN.

    (N, C, H, W) float32 -> (N, O, Ho, Wo) float32, in the input's memory
    format; equal to ``nn.Conv2d`` to float32 rounding (the summation order
    differs). Training, other devices and dtypes use ``nn.Conv2d``'s
    forward.
    """

    def forward(self, input: Tensor) -> Tensor:
        if _runs_on_onednn(self, input):
            return torch.ops.aten.mkldnn_convolution(
                input, self.weight, self.bias, list(self.padding),
                list(self.stride), list(self.dilation), self.groups)
        return super().forward(input)


def use_onednn_convs(model: nn.Module) -> int:
    """Switch, in place, every plain 1x1 stride-1 ``nn.Conv2d`` of
    ``model`` to :class:`OneDNNConv2d` (the convs torch itself would not
    send to oneDNN at batch 1 on one thread).

    Returns:
        int: the number of convs switched.
    """
    count = 0
    for module in model.modules():
        if type(module) is not nn.Conv2d:
            continue
        if (module.kernel_size == (1, 1) and module.stride == (1, 1)
                and module.dilation == (1, 1)
                and module.padding_mode == 'zeros'
                and not isinstance(module.padding, str)):
            module.__class__ = OneDNNConv2d
            count += 1
    return count
