# Copyright (c) mmbinary contributors. All rights reserved.
"""``MBBLinear``: a multi-precision binary-branch fully connected layer."""
from typing import Union

import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor, nn

from .mbb_conv import MBBQuantMixin


@MODELS.register_module('MBBLinear')
class MBBLinear(MBBQuantMixin, nn.Linear):
    """``nn.Linear`` with M-bit weights and K-bit activations.

    Registered in mmengine's root ``MODELS`` as ``'MBBLinear'``. Options as
    :class:`MBBConv2d`; the weight scale is per output feature.
    """

    #: ``nn.Linear``'s positional arguments, read off a float linear.
    FLOAT_ARGS = ('in_features', 'out_features', 'bias')

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 bias: bool = True,
                 device=None,
                 dtype=None,
                 *,
                 w_bits: int = 2,
                 a_bits: int = 2,
                 w_mode: str = 'channel',
                 a_mode: str = 'auto',
                 a_clip: Union[str, float] = 'learned',
                 w_clip: str = 'stats') -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self._init_quantizers(w_bits, a_bits, w_mode, a_mode, a_clip,
                              w_clip)

    @classmethod
    def from_float(cls, module: nn.Linear, **options) -> 'MBBLinear':
        """An MBBLinear sharing ``module``'s weight and bias parameters."""
        return cls._share_float(module, nn.Linear, options)

    def forward(self, input: Tensor) -> Tensor:
        """(*, in_features) -> (*, out_features)."""
        self._check_input(input, self.in_features, '*C')
        return F.linear(
            self.act_quantizer(input), self.quantized_weight(), self.bias)

    def _binary_op(self, a_planes: Tensor, w_planes: Tensor) -> Tensor:
        return F.linear(a_planes, w_planes)

    def _per_output(self, values: Tensor) -> Tensor:
        return values

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, {self._quant_repr()}'
