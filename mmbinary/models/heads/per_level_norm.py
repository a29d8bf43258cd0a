# Copyright (c) mmbinary contributors. All rights reserved.
"""A conv shared over FPN levels with one batch norm per level (AQD, Chen
et al., CVPR 2021), and its packed form with one folded epilogue per
level.

A head shared over the levels of a pyramid sees other statistics at each
level; a quantized head suffers from one shared norm. ``PerLevelNormMBBConv2d``
keeps one weight (and its codes) and normalizes each level on its own;
packed, the level's norm folds into that level's ``(scale, bias)``, so one
packed weight serves every level bit-exactly.
"""
from typing import Optional

import torch
from mmcv.cnn import build_norm_layer
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..layers import MBBConv2d
from ..packing.convert import PACKED_TYPES
from ..packing.norm_folding import fold_norm
from ..packing.packed_layers import PackedMBBConv2d


def _check_level(level, num_levels: int, owner: str) -> int:
    if isinstance(level, bool) or not isinstance(level, int) or \
            not 0 <= level < num_levels:
        raise ValueError(f'{owner}: level must be an integer in '
                         f'0..{num_levels - 1}, got {level!r}')
    return level


class PerLevelNormMBBConv2d(MBBConv2d):
    """An :class:`MBBConv2d` followed by the batch norm of the input's
    pyramid level: ``forward(x, level) = norms[level](conv(x))``.

    A norm not trained yet (a float checkpoint without it, say) starts as
    the identity on the first training batch of its level: its affine
    parameters are set to that batch's standard deviation and mean, so
    fine-tuning a float head starts from the float head's function.

    Args:
        *args: as :class:`MBBConv2d`.
        num_levels (int): pyramid levels, one norm each.
        norm_cfg (dict): the norm (mmcv config). Default: ``dict(type='BN')``.
        **kwargs: as :class:`MBBConv2d` (bits, modes).
    """

    def __init__(self,
                 *args,
                 num_levels: int,
                 norm_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(num_levels, bool) or not isinstance(
                num_levels, int) or num_levels < 1:
            raise ValueError(
                f'num_levels must be an integer >= 1, got {num_levels!r}')
        self.num_levels = num_levels
        norm_cfg = dict(type='BN') if norm_cfg is None else dict(norm_cfg)
        self.norms = nn.ModuleList(
            build_norm_layer(norm_cfg, self.out_channels)[1]
            for _ in range(num_levels))
        for norm in self.norms:
            if not isinstance(norm, _BatchNorm):
                raise ValueError('norm_cfg must build a batch norm (folded '
                                 f'when packed), got {type(norm).__name__}')
        self.register_buffer('norm_initialized',
                             torch.zeros(num_levels, dtype=torch.bool))

    @classmethod
    def from_mbb(cls, conv: MBBConv2d, num_levels: int,
                 norm_cfg: Optional[dict] = None) -> 'PerLevelNormMBBConv2d':
        """The per-level form of ``conv``, sharing its parameters and its
        quantizers."""
        if type(conv) is not MBBConv2d:
            raise TypeError(
                f'conv must be an MBBConv2d, got {type(conv).__name__}')
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size,
                    conv.stride, conv.padding, conv.dilation, conv.groups,
                    conv.bias is not None, device='meta',
                    num_levels=num_levels, norm_cfg=norm_cfg)
        layer.weight, layer.bias = conv.weight, conv.bias
        layer.weight_quantizer = conv.weight_quantizer
        layer.act_quantizer = conv.act_quantizer
        device = conv.weight.device
        layer.norms = layer.norms.to_empty(device=device)
        for norm in layer.norms:
            norm.reset_parameters()
        layer.norm_initialized = torch.zeros(
            num_levels, dtype=torch.bool, device=device)
        return layer

    def forward(self, input: Tensor, level: int) -> Tensor:
        """(N, C_in, H, W) of pyramid level ``level`` -> normalized
        (N, C_out, H_out, W_out)."""
        _check_level(level, self.num_levels, type(self).__name__)
        output = super().forward(input)
        norm = self.norms[level]
        if self.training and not bool(self.norm_initialized[level]):
            self._init_identity(norm, output)
            self.norm_initialized[level] = True
        return norm(output)

    @torch.no_grad()
    def _init_identity(self, norm: _BatchNorm, output: Tensor) -> None:
        dims = [0] + list(range(2, output.dim()))
        mean = output.detach().float().mean(dims)
        var = output.detach().float().var(dims, unbiased=False)
        if norm.affine:
            norm.weight.copy_(torch.sqrt(var + norm.eps))
            norm.bias.copy_(mean)
        norm.running_mean.copy_(mean)
        norm.running_var.copy_(var)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys,
                              error_msgs):
        saved = sorted({
            int(key[len(prefix) + len('norms.'):].split('.')[0])
            for key in state_dict
            if key.startswith(prefix + 'norms.')
        })
        if saved and saved != list(range(self.num_levels)):
            raise ValueError(
                f'{prefix.rstrip(".")}: the checkpoint has per-level norms '
                f'for levels {saved}, the model has {self.num_levels} levels '
                f'(0..{self.num_levels - 1}); build the head with the '
                'checkpoint\'s num_levels')
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, num_levels={self.num_levels}'


class PackedPerLevelMBBConv2d(PackedMBBConv2d):
    """The packed :class:`PerLevelNormMBBConv2d`: one packed weight, one
    folded epilogue per level (``level_scale``, ``level_bias``: (L, O)).

    Args:
        *args: as :class:`PackedMBBConv2d`.
        num_levels (int): pyramid levels.
        **kwargs: as :class:`PackedMBBConv2d`.
    """

    def __init__(self, *args, num_levels: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.num_levels = int(num_levels)
        self.register_buffer('level_scale',
                             torch.zeros(self.num_levels, self.out_channels))
        self.register_buffer('level_bias',
                             torch.zeros(self.num_levels, self.out_channels))

    @classmethod
    def from_mbb(cls,
                 layer: PerLevelNormMBBConv2d,
                 norm: Optional[_BatchNorm] = None
                 ) -> 'PackedPerLevelMBBConv2d':
        """Pack ``layer``, folding each level's norm into its epilogue
        (``norm`` must be None: the norms are the layer's own)."""
        if not isinstance(layer, PerLevelNormMBBConv2d):
            raise TypeError('layer must be a PerLevelNormMBBConv2d, got '
                            f'{type(layer).__name__}')
        if norm is not None:
            raise ValueError('a PerLevelNormMBBConv2d folds its own norms; '
                             'no norm follows it')
        packed = cls(layer.in_channels, layer.out_channels,
                     layer.kernel_size, layer.stride, layer.padding,
                     layer.dilation, layer.groups, w_bits=layer.w_bits,
                     a_bits=layer.a_bits,
                     signed=layer.act_quantizer.is_signed,
                     num_levels=layer.num_levels)
        packed._fill_from(layer, None)
        with torch.no_grad():
            for level, level_norm in enumerate(layer.norms):
                scale, bias = fold_norm(packed.out_scale, packed.out_bias,
                                        level_norm)
                packed.level_scale[level].copy_(scale.float())
                packed.level_bias[level].copy_(bias.float())
        return packed

    def forward(self, input: Tensor, level: int) -> Tensor:
        """(N, C_in, H, W) float32 of level ``level`` -> (N, C_out, H_out,
        W_out) float32, with that level's folded norm, on the layer's
        kernel (``kernel``, as :class:`PackedMBBConv2d`)."""
        _check_level(level, self.num_levels, type(self).__name__)
        return self.forward_with_epilogue(
            input, self.level_scale[level].contiguous(),
            self.level_bias[level].contiguous())

    def config(self) -> dict:
        return dict(super().config(), num_levels=self.num_levels)

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, num_levels={self.num_levels}'


class PerLevelConvModule(nn.Module):
    """One tower stage of a per-level head: conv (with its level's norm)
    then activation. ``conv`` keeps the name of ``ConvModule.conv``, so a
    float head's checkpoint loads.

    Args:
        conv (PerLevelNormMBBConv2d): the conv.
        activate (nn.Module, optional): the activation.
    """

    def __init__(self, conv: PerLevelNormMBBConv2d,
                 activate: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv = conv
        self.activate = activate if activate is not None else nn.Identity()

    def forward(self, input: Tensor, level: int) -> Tensor:
        return self.activate(self.conv(input, level))


PACKED_TYPES[PerLevelNormMBBConv2d] = PackedPerLevelMBBConv2d
