# Copyright (c) mmbinary contributors. All rights reserved.
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmbinary.ops import (num_words, pack_signs, pack_signs_reference,
                          unpack_signs)

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16,
          torch.int8, torch.int32, torch.int64]


def random_signs(shape, dtype, generator):
    signs = torch.randint(0, 2, shape, generator=generator) * 2 - 1
    return signs.to(dtype)


@pytest.mark.parametrize('channels', [1, 63, 64, 65, 128, 130])
def test_reference_layout(channels):
    """Bit c % 64 of word c // 64 is channel c; pad bits are zero."""
    x = -torch.ones(1, channels, 1)
    for c in range(channels):
        x.fill_(-1)
        x[0, c, 0] = 1
        words = pack_signs_reference(x)[0, 0]
        expected = torch.zeros(num_words(channels), dtype=torch.int64)
        bit = torch.tensor(1, dtype=torch.int64) << (c % 64)
        expected[c // 64] = bit  # bit 63 gives the int64 sign bit
        assert torch.equal(words, expected), c


def test_reference_all_positive_words():
    words = pack_signs_reference(torch.ones(1, 130, 1))[0, 0]
    assert words[0].item() == -1 and words[1].item() == -1  # all 64 bits
    assert words[2].item() == 0b11  # channels 128, 129; pad bits zero


@pytest.mark.ext
@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 2),
    c=st.integers(1, 200),
    spatial=st.lists(st.integers(1, 9), min_size=0, max_size=3),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**31 - 1))
def test_pack_signs_equals_reference(n, c, spatial, dtype, seed):
    generator = torch.Generator().manual_seed(seed)
    x = random_signs((n, c, *spatial), dtype, generator)
    words = pack_signs(x)
    assert words.dtype == torch.int64
    assert words.shape == (n, *spatial, num_words(c))
    assert torch.equal(words, pack_signs_reference(x))
    assert torch.equal(unpack_signs(words, c), x.float())


@pytest.mark.ext
def test_pack_signs_large_spatial_and_zero():
    """Several spatial blocks, and 0 packs as -1 (bit 0), like the reference."""
    x = torch.randn(2, 70, 50, 45)
    x[:, :, 0, 0] = 0
    words = pack_signs(x)
    assert torch.equal(words, pack_signs_reference(x))
    assert torch.equal(words[:, 0, 0], torch.zeros(2, 2, dtype=torch.int64))


@pytest.mark.ext
def test_pack_signs_non_contiguous_input():
    x = torch.randn(2, 9, 6, 5).transpose(2, 3)
    assert torch.equal(pack_signs(x), pack_signs_reference(x))


@pytest.mark.ext
def test_pack_signs_empty():
    assert pack_signs(torch.ones(0, 5, 3)).shape == (0, 3, 1)


@pytest.mark.ext
def test_op_checks_name_the_argument():
    x = torch.randn(2, 9, 6, 5)
    with pytest.raises(RuntimeError, match='input must be contiguous'):
        torch.ops.mmbinary.pack_signs(x.transpose(2, 3))
    with pytest.raises(RuntimeError, match='input must have at least 2'):
        torch.ops.mmbinary.pack_signs(torch.ones(4))


def test_wrapper_rejects_bad_input():
    with pytest.raises(ValueError, match='at least 2 dimensions'):
        pack_signs(torch.ones(3))
    with pytest.raises(TypeError, match='input must be a Tensor'):
        pack_signs([1, -1])
    with pytest.raises(ValueError, match='channels=65'):
        unpack_signs(torch.zeros(1, 1, dtype=torch.int64), 65)


@pytest.mark.cuda
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
def test_pack_signs_cuda_equals_cpu(dtype):
    x = torch.randn(2, 130, 17, 19).to(dtype)
    words = pack_signs(x.cuda())
    assert words.is_cuda
    assert torch.equal(words.cpu(), pack_signs(x))
