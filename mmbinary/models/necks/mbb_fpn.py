# Copyright (c) mmbinary contributors. All rights reserved.
"""``MBBFPN``: mmdet's FPN with binary-branch lateral and output convs."""
from typing import List, Optional

from mmdet.models.necks import FPN

from mmbinary.quant import check_bits
from mmbinary.registry import MODELS

from ..backbones.layer_swap import check_mbb_cfg, to_mbb

_ACT_MODES = ('unsigned', 'signed', 'auto')
_RELU_TYPES = ('ReLU', 'ReLU6')


@MODELS.register_module()
class MBBFPN(FPN):
    """Drop-in for mmdet's FPN whose lateral and output convs are MBB convs.

    Built as the float FPN, then the ``conv`` inside each lateral and output
    ``ConvModule`` becomes an :class:`~mmbinary.models.layers.MBBConv2d`
    with the activation mode of its input:

    * lateral convs read backbone outputs: ``in_act_mode`` (``'unsigned'``
      for ResNets, whose stages end with a ReLU);
    * output convs read top-down sums of laterals: ``'signed'`` (or
      ``'unsigned'`` when ``act_cfg`` is a ReLU);
    * extra convs (RetinaNet's P6/P7) read the backbone's last output
      (``'on_input'``), a lateral or an output, and then the previous
      level, after a ReLU when ``relu_before_extra_convs``.

    Parameter names do not change, so a float FPN checkpoint loads.

    Args:
        in_channels (list[int]): channels of each backbone output.
        out_channels (int): channels of each pyramid level.
        num_outs (int): number of pyramid levels.
        w_bits (int): weight bits M, 1..8. Default: 2.
        a_bits (int): activation bits K, 1..8. Default: 2.
        encode_lateral (bool): encode the lateral 1x1 convs. Default: True.
        encode_output (bool): encode the 3x3 output (and extra) convs.
            Default: True.
        in_act_mode (str): what the backbone outputs are: ``'unsigned'``
            (post-ReLU, default), ``'signed'`` or ``'auto'``.
        mbb_cfg (dict, optional): other MBB layer options (not the bits or
            ``a_mode``).
        **kwargs: the other arguments of mmdet's ``FPN`` (``start_level``,
            ``add_extra_convs``, ``relu_before_extra_convs``, ...).
    """

    def __init__(self,
                 in_channels: List[int],
                 out_channels: int,
                 num_outs: int,
                 *,
                 w_bits: int = 2,
                 a_bits: int = 2,
                 encode_lateral: bool = True,
                 encode_output: bool = True,
                 in_act_mode: str = 'unsigned',
                 mbb_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(in_channels, out_channels, num_outs, **kwargs)
        if in_act_mode not in _ACT_MODES:
            raise ValueError(f'in_act_mode must be one of {_ACT_MODES}, got '
                             f'{in_act_mode!r}')
        self.w_bits = check_bits(w_bits, 'w_bits')
        self.a_bits = check_bits(a_bits, 'a_bits')
        self.encode_lateral = encode_lateral
        self.encode_output = encode_output
        self.in_act_mode = in_act_mode
        mbb_cfg = check_mbb_cfg(mbb_cfg)
        if encode_lateral:
            for conv_module in self.lateral_convs:
                self._encode(conv_module, in_act_mode, mbb_cfg)
        if encode_output:
            for conv_module, a_mode in zip(self.fpn_convs,
                                           self._output_modes()):
                self._encode(conv_module, a_mode, mbb_cfg)

    def _encode(self, conv_module, a_mode: str, mbb_cfg: dict) -> None:
        conv_module.conv = to_mbb(conv_module.conv, self.w_bits, self.a_bits,
                                  a_mode, mbb_cfg)

    def _output_modes(self) -> List[str]:
        """Activation mode of each output conv's input, in ``fpn_convs``
        order."""
        relu_act = bool(self.lateral_convs) and \
            self.lateral_convs[0].with_activation and \
            self.lateral_convs[0].act_cfg['type'] in _RELU_TYPES
        sums = 'unsigned' if relu_act else 'signed'
        used_levels = len(self.lateral_convs)
        modes = [sums] * used_levels
        num_extra = len(self.fpn_convs) - used_levels
        if num_extra > 0:
            first = self.in_act_mode \
                if self.add_extra_convs == 'on_input' else sums
            after = 'unsigned' if self.relu_before_extra_convs else sums
            modes += [first] + [after] * (num_extra - 1)
        return modes
