# Copyright (c) mmbinary contributors. All rights reserved.
"""Sign packing: a ``{-1, +1}`` tensor into 64-bit words along channels.

Packing format, shared by every packed op of mmbinary:

* input ``(N, C, *spatial)``; output ``(N, *spatial, W)`` with
  ``W = ceil(C / 64)`` words per position (channels last), stored as
  ``torch.int64`` holding the 64 bits unchanged;
* channel ``c`` is bit ``c % 64`` (least significant first) of word
  ``c // 64``;
* a bit is 1 where the value is ``> 0`` (the code +1), 0 elsewhere (-1);
* the pad bits of the last word (channels ``C .. 64 * W - 1``) are 0, so an
  xor of two packed tensors is 0 there and ``dot = n - 2 * popcount(xor)``
  holds with ``n`` the real channel count.
"""
import numpy as np
import torch
from torch import Tensor

from .ext_loader import require_ext

WORD_BITS = 64


def num_words(channels: int) -> int:
    """Number of 64-bit words that hold ``channels`` bits."""
    return (channels + WORD_BITS - 1) // WORD_BITS


def _check_input(input: Tensor) -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f'input must be a Tensor, got {type(input).__name__}')
    if input.dim() < 2:
        raise ValueError('input must have at least 2 dimensions (N, C, ...), '
                         f'got shape {tuple(input.shape)}')


def pack_signs(input: Tensor) -> Tensor:
    """Pack the signs of ``input`` with the compiled op.

    Args:
        input (Tensor): (N, C, *spatial) tensor of any real dtype, CPU or
            CUDA; made contiguous if it is not.

    Returns:
        Tensor: (N, *spatial, ceil(C / 64)) int64 words.
    """
    _check_input(input)
    require_ext('mmbinary.ops.pack_signs')
    return torch.ops.mmbinary.pack_signs(input.contiguous())


def pack_signs_reference(input: Tensor) -> Tensor:
    """Pure NumPy/PyTorch reference of :func:`pack_signs` (slow, exact).

    Args:
        input (Tensor): (N, C, *spatial) tensor of any real dtype.

    Returns:
        Tensor: (N, *spatial, ceil(C / 64)) int64 words, on ``input``'s
        device.
    """
    _check_input(input)
    channels = input.shape[1]
    bits = (input.detach() > 0).movedim(1, -1).cpu().numpy()
    pad = num_words(channels) * WORD_BITS - channels
    bits = np.pad(bits, [(0, 0)] * (bits.ndim - 1) + [(0, pad)])
    # Little bit order: bit i of byte j is channel 8 * j + i; eight bytes
    # read as one little-endian uint64 put channel c at bit c % 64.
    words = np.packbits(bits, axis=-1, bitorder='little')
    words = np.ascontiguousarray(words).view('<u8').view(np.int64)
    return torch.from_numpy(words).to(input.device)


def unpack_signs(words: Tensor, channels: int, dtype=torch.float32) -> Tensor:
    """Inverse of :func:`pack_signs` for ``{-1, +1}`` inputs.

    Args:
        words (Tensor): (N, *spatial, W) int64 words.
        channels (int): the channel count C, with ``ceil(C / 64) == W``.
        dtype (torch.dtype): dtype of the result.

    Returns:
        Tensor: (N, C, *spatial) tensor of -1 and +1.
    """
    if words.dtype != torch.int64:
        raise TypeError(f'words must be int64, got {words.dtype}')
    if words.dim() < 2 or words.shape[-1] != num_words(channels):
        raise ValueError(
            f'words must have shape (N, *spatial, {num_words(channels)}) for '
            f'channels={channels}, got {tuple(words.shape)}')
    shifts = torch.arange(WORD_BITS, device=words.device)
    bits = (words.unsqueeze(-1) >> shifts) & 1  # (N, *spatial, W, 64)
    bits = bits.flatten(-2)[..., :channels]
    return (bits.to(dtype) * 2 - 1).movedim(-1, 1).contiguous()


def _register_fake() -> None:
    """Shape-only kernel, so ``torch.compile`` and meta tensors can trace."""
    from .ext_loader import ext_loaded
    if not ext_loaded():
        return

    @torch.library.register_fake('mmbinary::pack_signs')
    def _(input: Tensor) -> Tensor:
        shape = (input.shape[0], *input.shape[2:], num_words(input.shape[1]))
        return input.new_empty(shape, dtype=torch.int64)


_register_fake()
