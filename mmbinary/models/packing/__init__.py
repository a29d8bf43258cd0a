# Copyright (c) mmbinary contributors. All rights reserved.
"""Packed inference: packed layers, norm folding, model conversion."""
from .convert import (LAYOUT_KEY, FoldedNorm, apply_packed_layout,
                      checkpoint_layout, convert_to_packed,
                      is_packed_checkpoint, load_packed_checkpoint,
                      packed_layout, state_dict_bytes)
from .norm_folding import find_layer_norm_pairs, fold_norm
from .packed_layers import PackedMBBConv2d, PackedMBBLinear

__all__ = [
    'LAYOUT_KEY', 'FoldedNorm', 'apply_packed_layout', 'checkpoint_layout',
    'convert_to_packed', 'is_packed_checkpoint',
    'load_packed_checkpoint', 'packed_layout', 'state_dict_bytes',
    'find_layer_norm_pairs', 'fold_norm', 'PackedMBBConv2d',
    'PackedMBBLinear'
]
