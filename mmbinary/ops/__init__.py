# Copyright (c) mmbinary contributors. All rights reserved.
"""Compiled ops (``torch.ops.mmbinary.*``), the packed format they use
(:mod:`~mmbinary.packed_format`) and their pure-PyTorch references."""
from mmbinary.packed_format import WORD_BITS, num_group_words

from . import depthwise_pack, max_pool  # noqa: F401 (their fake kernels)
from .ext_loader import build_info, ext_load_error, ext_loaded, require_ext
from .mbb_conv2d import mbb_conv2d, mbb_conv2d_accumulate, quantize_pack
from .mbb_conv2d_reference import (activation_codes_reference,
                                   mbb_conv2d_accumulate_reference,
                                   mbb_conv2d_reference, pack_activation_codes,
                                   pack_weight_codes, unpack_activation_words,
                                   unpack_weight_words)

__all__ = [
    'build_info', 'ext_load_error', 'ext_loaded', 'require_ext', 'WORD_BITS',
    'num_group_words', 'activation_codes_reference', 'quantize_pack',
    'pack_activation_codes', 'unpack_activation_words', 'pack_weight_codes',
    'unpack_weight_words', 'mbb_conv2d_accumulate',
    'mbb_conv2d_accumulate_reference', 'mbb_conv2d', 'mbb_conv2d_reference'
]
