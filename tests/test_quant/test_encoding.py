# Copyright (c) mmbinary contributors. All rights reserved.
import pytest
import torch

from mmbinary.quant import (check_bits, decode, decode_unsigned, encode,
                            encode_unsigned, num_levels)

ALL_BITS = list(range(1, 9))


@pytest.mark.parametrize('bits', ALL_BITS)
def test_signed_round_trip_covers_every_odd_code(bits):
    levels = 2**bits - 1
    codes = torch.arange(-levels, levels + 1, 2)
    planes = encode(codes, bits)
    assert planes.shape == (bits, codes.numel())
    assert set(planes.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(decode(planes), codes)
    # q = sum_m 2^(m-1) s_m, written out.
    powers = 2.0**torch.arange(bits)
    assert torch.equal((planes * powers[:, None]).sum(0), codes.float())


@pytest.mark.parametrize('bits', ALL_BITS)
def test_unsigned_round_trip_and_formula(bits):
    levels = 2**bits - 1
    codes = torch.arange(0, levels + 1)
    planes = encode_unsigned(codes, bits, dtype=torch.float64)
    assert torch.equal(decode_unsigned(planes), codes)
    powers = 2.0**torch.arange(bits, dtype=torch.float64)
    value = 0.5 * (planes * powers[:, None]).sum(0) + levels / 2
    assert torch.equal(value, codes.double())
    # Zero is all signs -1.
    assert torch.equal(planes[:, 0], -torch.ones(bits, dtype=torch.float64))


def test_planes_follow_offset_binary_bits():
    # q = 1 at 2 bits: n = (1 + 3) / 2 = 2 = 0b10 -> s = (-1, +1).
    assert encode(torch.tensor([1]), 2)[:, 0].tolist() == [-1.0, 1.0]
    assert encode(torch.tensor([-3]), 2)[:, 0].tolist() == [-1.0, -1.0]
    assert encode_unsigned(torch.tensor([5]), 3)[:, 0].tolist() == [
        1.0, -1.0, 1.0
    ]


def test_multidimensional_shapes_are_kept():
    codes = torch.tensor([[1, -1, 3], [-3, 1, 1]])
    planes = encode(codes, 2)
    assert planes.shape == (2, 2, 3)
    assert torch.equal(decode(planes), codes)


@pytest.mark.parametrize('bits', [0, 9, -1, 2.5, 2.0, '2', True, None])
def test_bad_bits_are_refused(bits):
    with pytest.raises(ValueError, match=r'bits must be an integer in 1\.\.8'):
        check_bits(bits)
    with pytest.raises(ValueError, match='1..8'):
        encode(torch.tensor([1]), bits)


def test_check_bits_names_the_argument():
    with pytest.raises(ValueError, match='w_bits'):
        check_bits(0, 'w_bits')
    assert check_bits(8, 'a_bits') == 8
    assert num_levels(3) == 7


def test_bad_codes_are_refused():
    with pytest.raises(ValueError, match='odd'):
        encode(torch.tensor([2]), 2)
    with pytest.raises(ValueError, match=r'\[-3, 3\]'):
        encode(torch.tensor([5]), 2)
    with pytest.raises(ValueError, match='integers'):
        encode(torch.tensor([1.5]), 2)
    with pytest.raises(ValueError, match=r'\[0, 3\]'):
        encode_unsigned(torch.tensor([-1]), 2)
    with pytest.raises(TypeError, match='Tensor'):
        encode([1, 3], 2)


def test_bad_planes_are_refused():
    with pytest.raises(ValueError, match='-1 and \\+1'):
        decode(torch.tensor([[0.0, 1.0]]))
    with pytest.raises(ValueError, match='bit width'):
        decode(torch.ones(9, 2))
