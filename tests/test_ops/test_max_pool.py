# Copyright (c) mmbinary contributors. All rights reserved.
"""torch.ops.mmbinary.max_pool2d_channels_last: torch's max pool, bit for
bit (signed zeros and NaN included), in both kernels."""
import random

import pytest
import torch
import torch.nn.functional as F

from mmbinary.ops import ext_loaded

pytestmark = [
    pytest.mark.ext,
    pytest.mark.skipif(not ext_loaded(), reason='no compiled extension')
]


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def _awkward_input(n, c, h, w, seed) -> torch.Tensor:
    """Random values with ties, signed zeros, infinities and NaN."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen).round()  # many ties
    pick = torch.rand(n, c, h, w, generator=gen)
    x[pick < 0.15] = 0.0
    x[(pick >= 0.15) & (pick < 0.3)] = -0.0
    x[(pick >= 0.3) & (pick < 0.32)] = float('-inf')
    x[(pick >= 0.32) & (pick < 0.33)] = float('nan')
    x[(pick >= 0.33) & (pick < 0.34)] = float('inf')
    return x.contiguous(memory_format=torch.channels_last)


def _cases(count: int):
    rng = random.Random(0)
    yield (1, 64, 33, 41, (3, 3), (2, 2), (1, 1), (1, 1))  # ResNet's stem
    yield (2, 200, 9, 10, (2, 2), (2, 2), (0, 0), (1, 1))
    for _ in range(count):
        kh, kw = rng.randint(1, 4), rng.randint(1, 4)
        yield (rng.randint(1, 2), rng.randint(1, 150), rng.randint(5, 14),
               rng.randint(5, 14), (kh, kw),
               (rng.randint(1, 3), rng.randint(1, 3)),
               (rng.randint(0, kh // 2), rng.randint(0, kw // 2)),
               (rng.randint(1, 2), rng.randint(1, 2)))


@pytest.mark.parametrize('kernel', ['auto', 'portable'])
@pytest.mark.parametrize('case', list(_cases(14)))
def test_max_pool_equals_torch_bit_for_bit(case, kernel, monkeypatch):
    monkeypatch.setenv('MMBINARY_CPU_KERNEL', kernel)
    n, c, h, w, k, s, p, d = case
    x = _awkward_input(n, c, h, w, seed=c * h + w)
    expected = F.max_pool2d(x, k, s, p, d)
    out = torch.ops.mmbinary.max_pool2d_channels_last(x, k, s, p, d)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert out.shape == expected.shape
    assert torch.equal(_bits(out), _bits(expected))


def test_max_pool_checks_its_arguments_and_has_a_fake_kernel():
    op = torch.ops.mmbinary.max_pool2d_channels_last
    x = torch.randn(1, 4, 6, 6).contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(op.default, (x, [3, 3], [2, 2], [1, 1], [1, 1]),
                          test_utils=('test_faketensor', ))
    with pytest.raises(RuntimeError, match='padding must be at most half'):
        op(x, [3, 3], [1, 1], [2, 2], [1, 1])
    with pytest.raises(RuntimeError, match='stride must be >= 1'):
        op(x, [3, 3], [0, 1], [1, 1], [1, 1])
    with pytest.raises(RuntimeError, match='float32'):
        op(x.double(), [3, 3], [2, 2], [1, 1], [1, 1])
    with pytest.raises(RuntimeError, match='output would be empty'):
        op(x, [7, 7], [1, 1], [0, 0], [1, 1])
