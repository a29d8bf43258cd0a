# Copyright (c) mmbinary contributors. All rights reserved.
"""The encoding core: ``{-1, +1}`` decomposition and quantizers (pure
PyTorch, no compiled code)."""
from .encoding import (MAX_BITS, MIN_BITS, check_bits, decode, decode_unsigned,
                       encode, encode_unsigned, num_levels)
from .functions import (GAUSSIAN_OPTIMAL_CLIP, ActivationQuantizeSTE,
                        WeightQuantizeSTE, activation_codes, lsq_grad_scale,
                        quantize_activation, quantize_weight, weight_codes)
from .quantizers import (ACTIVATION_MODES, ALLOW_BIT_CHANGE_KEY, WEIGHT_MODES,
                         ActivationQuantizer, BitWidthMismatchError,
                         WeightQuantizer, allow_bit_change, bit_change_allowed)

__all__ = [
    'MAX_BITS', 'MIN_BITS', 'check_bits', 'decode', 'decode_unsigned',
    'encode', 'encode_unsigned', 'num_levels', 'GAUSSIAN_OPTIMAL_CLIP',
    'ActivationQuantizeSTE', 'WeightQuantizeSTE', 'activation_codes',
    'lsq_grad_scale', 'quantize_activation', 'quantize_weight',
    'weight_codes', 'ACTIVATION_MODES', 'WEIGHT_MODES', 'ActivationQuantizer',
    'WeightQuantizer', 'ALLOW_BIT_CHANGE_KEY', 'BitWidthMismatchError',
    'allow_bit_change', 'bit_change_allowed'
]
