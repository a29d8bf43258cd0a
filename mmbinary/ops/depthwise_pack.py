# Copyright (c) mmbinary contributors. All rights reserved.
"""Fake kernel of ``torch.ops.mmbinary.depthwise_pack`` (the fused float32
depthwise conv + scale/bias + clamp + pack, compiled CPU op)."""
import torch

from mmbinary import packed_format as fmt

from .ext_loader import ext_loaded


def _register_fake() -> None:
    if not ext_loaded():
        return

    @torch.library.register_fake('mmbinary::depthwise_pack')
    def _(input, weight, scale, bias, stride, padding, dilation, act_min,
          act_max, float_out, out_a_bits, out_inv_step, out_signed):
        n, channels, height, width = input.shape
        sizes = zip((height, width), weight.shape[2:], stride, padding,
                    dilation)
        ho, wo = (fmt.conv_out_size(*args) for args in sizes)
        out = input.new_empty((0, ))
        if float_out:
            out = input.new_empty((n, channels, ho, wo)).contiguous(
                memory_format=torch.channels_last)
        words = input.new_empty((0, ), dtype=torch.int64)
        if out_a_bits > 0:
            words = input.new_zeros(
                (n, ho, wo, 1, out_a_bits, fmt.num_group_words(channels)),
                dtype=torch.int64)
        return out, words


_register_fake()
