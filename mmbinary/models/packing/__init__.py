# Copyright (c) mmbinary contributors. All rights reserved.
"""Packed inference: packed layers, norm folding, model conversion."""
from .convert import (LAYOUT_KEY, FoldedNorm, apply_packed_layout,
                      checkpoint_layout, convert_to_packed,
                      is_packed_checkpoint, load_packed_checkpoint,
                      load_trained_checkpoint, packed_layout, state_dict_bytes)
from .float_convs import OneDNNConv2d, use_onednn_convs
from .kernel_choice import KernelChoice, choose_kernels
from .max_pool import ChannelsLastMaxPool2d, use_channels_last_max_pools
from .memory_format import (MEMORY_FORMATS, MemoryFormatChoice,
                            choose_memory_format, set_memory_format)
from .norm_folding import find_layer_norm_pairs, fold_norm
from .packed_layers import (KERNELS, PackedMBBConv2d, PackedMBBLinear,
                            int8_kernel_available)

__all__ = [
    'LAYOUT_KEY', 'FoldedNorm', 'apply_packed_layout', 'checkpoint_layout',
    'convert_to_packed', 'is_packed_checkpoint',
    'load_packed_checkpoint', 'load_trained_checkpoint', 'packed_layout',
    'state_dict_bytes',
    'find_layer_norm_pairs', 'fold_norm', 'PackedMBBConv2d',
    'PackedMBBLinear', 'KERNELS', 'int8_kernel_available', 'KernelChoice',
    'choose_kernels', 'OneDNNConv2d', 'use_onednn_convs',
    'ChannelsLastMaxPool2d', 'use_channels_last_max_pools', 'MEMORY_FORMATS',
    'MemoryFormatChoice', 'choose_memory_format', 'set_memory_format'
]
