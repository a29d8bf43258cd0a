# Copyright (c) mmbinary contributors. All rights reserved.
"""Fake kernel of ``torch.ops.mmbinary.max_pool2d_channels_last`` (torch's
max pool, bit for bit, on channels-last float32 CPU tensors)."""
import torch

from mmbinary import packed_format as fmt

from .ext_loader import ext_loaded


def _register_fake() -> None:
    if not ext_loaded():
        return

    @torch.library.register_fake('mmbinary::max_pool2d_channels_last')
    def _(input, kernel_size, stride, padding, dilation):
        n, channels, height, width = input.shape
        sizes = zip((height, width), kernel_size, stride, padding, dilation)
        ho, wo = (fmt.conv_out_size(*args) for args in sizes)
        return input.new_empty((n, channels, ho, wo)).contiguous(
            memory_format=torch.channels_last)


_register_fake()
