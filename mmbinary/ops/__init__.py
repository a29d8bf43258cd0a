# Copyright (c) mmbinary contributors. All rights reserved.
"""Compiled ops (``torch.ops.mmbinary.*``) and their pure-PyTorch references."""
from .ext_loader import build_info, ext_load_error, ext_loaded, require_ext
from .pack_signs import (WORD_BITS, num_words, pack_signs,
                         pack_signs_reference, unpack_signs)

__all__ = [
    'build_info', 'ext_load_error', 'ext_loaded', 'require_ext', 'WORD_BITS',
    'num_words', 'pack_signs', 'pack_signs_reference', 'unpack_signs'
]
