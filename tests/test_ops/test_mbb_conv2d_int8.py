# Copyright (c) mmbinary contributors. All rights reserved.
"""The integer (AVX-512 VNNI) kernel: the same accumulators, float outputs
and next-layer words as the popcount kernel, bit for bit."""
import random

import pytest
import torch

from mmbinary.ops import ext_loaded, pack_weight_codes, quantize_pack

pytestmark = pytest.mark.ext


def _supported() -> bool:
    return ext_loaded() and hasattr(torch.ops.mmbinary, 'mbb_int8_supported') \
        and bool(torch.ops.mmbinary.mbb_int8_supported())


needs_vnni = pytest.mark.skipif(not _supported(),
                                reason='no AVX-512 VNNI or no extension')

#: C, O, kernel, stride, padding, dilation, w_bits, a_bits, signed
CASES = [(64, 64, 3, 1, 1, 1, 4, 4, False), (37, 21, 3, 2, 1, 1, 3, 5, True),
         (130, 70, 5, 1, 2, 2, 7, 8, True), (5, 3, 1, 1, 0, 1, 1, 1, False),
         (20, 33, 3, 1, 4, 3, 2, 2, True), (3, 16, 7, 2, 3, 1, 8, 8, True),
         (70, 20, 3, 1, 2, 2, 8, 4, False)]


def _random_cases(count: int):
    rng = random.Random(0)
    for _ in range(count):
        k = rng.choice([1, 3, 5])
        yield (rng.randint(1, 140), rng.randint(1, 70), k, rng.randint(1, 2),
               rng.randint(0, 3), rng.randint(1, 3), rng.randint(1, 8),
               rng.randint(1, 8), rng.random() < 0.5)


def _words_layer(case, seed: int):
    """A random layer of ``case`` on a 2 x C x 9 x 11 input: (activation
    words, weight words, scale, bias, the ops' geometry arguments, gen);
    skips the test where the geometry has no output."""
    c, o, k, s, p, d, m, a, signed = case
    gen = torch.Generator().manual_seed(seed)
    h, w = 9, 11
    if (h + 2 * p - d * (k - 1) - 1) < 0 or (w + 2 * p - d * (k - 1) - 1) < 0:
        pytest.skip('no output for this geometry')
    x = torch.randn(2, c, h, w, generator=gen)
    codes = (torch.randint(0, 2**m, (o, c, k, k), generator=gen) * 2 -
             (2**m - 1)).int()
    weight_words = pack_weight_codes(codes, m)
    act = quantize_pack(x, a, 3.0, signed)
    scale = torch.randn(o, generator=gen)
    bias = torch.randn(o, generator=gen)
    geometry = (c, m, a, signed, [k, k], [s, s], [p, p], [d, d])
    return act, weight_words, scale, bias, geometry, gen


@needs_vnni
@pytest.mark.parametrize('case', CASES + list(_random_cases(12)))
@pytest.mark.parametrize('residual', [False, True])
def test_int8_kernel_equals_popcount_kernel(case, residual):
    c, o, k, s, p, d, m, a, signed = case
    h, w = 9, 11
    act, weight_words, scale, bias, geometry, gen = _words_layer(
        case, c * 1000 + o)
    out_h = (h + 2 * p - d * (k - 1) - 1) // s + 1
    out_w = (w + 2 * p - d * (k - 1) - 1) // s + 1
    res = (torch.randn(2, o, out_h, out_w, generator=gen).contiguous(
        memory_format=torch.channels_last) if residual else None)
    ops = torch.ops.mmbinary
    ref = ops.mbb_conv2d_words(act, weight_words, scale, bias, *geometry, 1,
                               res, 0.0, float('inf'), True, 3, 1.7, False)
    w8, wsum = ops.mbb_int8_prepare_weight(weight_words, c, m, [k, k])
    out = ops.mbb_conv2d_int8_words(act, weight_words, w8, wsum, scale, bias,
                                    *geometry, res, 0.0, float('inf'), True,
                                    3, 1.7, False)
    assert torch.equal(ref[0], out[0])  # float output
    assert torch.equal(ref[1], out[1])  # the next layer's words
    acc_ref = ops.mbb_conv2d_accumulate(act, weight_words, c, o, m, a,
                                        signed, [k, k], [s, s], [p, p],
                                        [d, d], 1)
    acc = ops.mbb_conv2d_int8_words(act, weight_words, w8, wsum, scale, bias,
                                    *geometry, None, -float('inf'),
                                    float('inf'), False, 0, 1.0, False,
                                    True)[0]
    assert torch.equal(acc, acc_ref)


@needs_vnni
@pytest.mark.parametrize('case', CASES[:5] + list(_random_cases(6)))
@pytest.mark.parametrize('next_words', [False, True])
def test_side_words_equal_packing_the_float_output(case, next_words):
    """A second consumer's words of the output (its own bits, step and
    sign), written in place in the same pass: mbb_quantize_pack of the
    float output, bit for bit, with or without the next layer's words;
    the other outputs unchanged; a stale buffer is overwritten (channels
    past a 16-channel block zeroed)."""
    c, o, k, s, p, d, m, a, signed = case
    act, weight_words, scale, bias, geometry, _ = _words_layer(
        case, c * 7 + o)
    ops = torch.ops.mmbinary
    w8, wsum = ops.mbb_int8_prepare_weight(weight_words, c, m, [k, k])
    next_bits = 3 if next_words else 0
    plain = ops.mbb_conv2d_int8_words(act, weight_words, w8, wsum, scale,
                                      bias, *geometry, None, -1.0, 4.0, True,
                                      next_bits, 1.7, False)
    side_bits, side_inv, side_signed = 1 + (o + m) % 4, 0.9, o % 2 == 1
    expected = ops.mbb_quantize_pack(plain[0], side_bits, side_inv,
                                     side_signed)
    side = torch.full_like(expected, -1)  # stale bits everywhere
    out = ops.mbb_conv2d_int8_words(act, weight_words, w8, wsum, scale, bias,
                                    *geometry, None, -1.0, 4.0, True,
                                    next_bits, 1.7, False, False, side,
                                    side_inv, side_signed)
    assert torch.equal(side, expected)
    assert torch.equal(out[0], plain[0])
    assert torch.equal(out[1], plain[1])


@needs_vnni
def test_side_words_are_checked_and_have_a_fake_kernel():
    gen = torch.Generator().manual_seed(0)
    codes = (torch.randint(0, 4, (20, 8, 3, 3), generator=gen) * 2 - 3).int()
    weight_words = pack_weight_codes(codes, 2)
    act = quantize_pack(torch.randn(1, 8, 6, 7, generator=gen), 2, 3.0,
                        False)
    ops = torch.ops.mmbinary
    w8, wsum = ops.mbb_int8_prepare_weight(weight_words, 8, 2, [3, 3])
    args = [act, weight_words, w8, wsum, torch.ones(20), torch.zeros(20), 8,
            2, 2, False, [3, 3], [1, 1], [1, 1], [1, 1], None, 0.0,
            float('inf'), True, 2, 1.0, False, False,
            torch.zeros(1, 6, 7, 1, 2, 1, dtype=torch.int64), 0.5, True]
    torch.library.opcheck(ops.mbb_conv2d_int8_words.default, tuple(args),
                          test_utils=('test_schema', 'test_faketensor'))
    args[22] = torch.zeros(1, 6, 7, 1, 2, 2, dtype=torch.int64)
    with pytest.raises(RuntimeError, match='side_words must be'):
        ops.mbb_conv2d_int8_words(*args)
    args[22] = torch.zeros(1, 6, 7, 1, 9, 1, dtype=torch.int64)
    with pytest.raises(RuntimeError, match='side_words must be'):
        ops.mbb_conv2d_int8_words(*args)
    args[22], args[23] = torch.zeros(1, 6, 7, 1, 2, 1,
                                     dtype=torch.int64), 0.0
    with pytest.raises(RuntimeError, match='inv_step'):
        ops.mbb_conv2d_int8_words(*args)
    args[21], args[23] = True, 0.5  # accumulators only: no epilogue
    with pytest.raises(RuntimeError, match='side_words needs'):
        ops.mbb_conv2d_int8_words(*args)


@needs_vnni
@pytest.mark.parametrize('signed', [False, True])
def test_eight_bit_weights_at_the_extreme_codes(signed):
    """8-bit codes reach +-255, outside int8: the kernel holds
    h = (w - 1) / 2 and adds each patch's sum of levels back; the extreme
    codes, full levels and padded borders (where the patch is partial)
    give the popcount kernel's accumulators."""
    gen = torch.Generator().manual_seed(8)
    codes = torch.where(torch.rand(24, 70, 3, 3, generator=gen) < 0.5, -255,
                        255).int()
    codes[:, :3] = torch.randint(0, 256, (24, 3, 3, 3), generator=gen) * 2 \
        - 255
    words = pack_weight_codes(codes, 8)
    x = torch.full((1, 70, 6, 20), 9.0)  # every level at its top
    x[:, :, 2:4] = torch.randn(1, 70, 2, 20, generator=gen)
    act = quantize_pack(x, 8, 30.0, signed)
    ops = torch.ops.mmbinary
    w8, wsum = ops.mbb_int8_prepare_weight(words, 70, 8, [3, 3])
    for stride, pad, dilation in ((1, 1, 1), (2, 3, 2)):
        geometry = ([3, 3], [stride] * 2, [pad] * 2, [dilation] * 2)
        expected = ops.mbb_conv2d_accumulate(act, words, 70, 24, 8, 8,
                                             signed, *geometry, 1)
        acc = ops.mbb_conv2d_int8_words(
            act, words, w8, wsum, torch.ones(24), torch.zeros(24), 70, 8, 8,
            signed, *geometry, None, -float('inf'), float('inf'), False, 0,
            1.0, False, True)[0]
        assert torch.equal(acc, expected)


@needs_vnni
@pytest.mark.parametrize('accumulate_only', [False, True])
def test_int8_ops_fake_kernels_match_the_real_ones(accumulate_only):
    """The shapes, dtypes and strides torch.compile gets from the fake
    kernels are those of the real outputs."""
    gen = torch.Generator().manual_seed(0)
    codes = (torch.randint(0, 4, (20, 37, 3, 3), generator=gen) * 2 - 3).int()
    weight_words = pack_weight_codes(codes, 2)
    act = quantize_pack(torch.randn(1, 37, 7, 9, generator=gen), 2, 3.0,
                        False)
    ops = torch.ops.mmbinary
    prepare_args = (weight_words, 37, 2, [3, 3])
    torch.library.opcheck(ops.mbb_int8_prepare_weight.default, prepare_args,
                          test_utils=('test_faketensor', ))
    w8, wsum = ops.mbb_int8_prepare_weight(*prepare_args)
    args = (act, weight_words, w8, wsum, torch.ones(20), torch.zeros(20), 37,
            2, 2, False, [3, 3], [2, 2], [1, 1], [1, 1], None, 0.0,
            float('inf'), True, 2, 1.0, False, accumulate_only)
    torch.library.opcheck(ops.mbb_conv2d_int8_words.default, args,
                          test_utils=('test_faketensor', ))


def _variant() -> str:
    ops = torch.ops.mmbinary
    return ops.mbb_int8_variant() if hasattr(ops, 'mbb_int8_variant') else ''


needs_amx = pytest.mark.skipif(
    not _supported() or _variant() != 'amx',
    reason='no AMX tiles (amx-tile, amx-int8) on this CPU, OS or build')

#: C, O, kernel, stride, padding, dilation, w_bits, a_bits, signed, output
#: width: wide outputs (at least 16 columns), the AMX tiles' case; widths
#: not a multiple of 16 (the last tile moved back), odd numbers of tiles
#: and of 16-channel blocks, channels not a multiple of 64; the last five:
#: 1x1 convs with at most 64 channels (one tdpbusd a tile, the pipelined
#: rows of single_step_row), 1 to 4 tiles a row, 1 to 5 channel blocks.
WIDE_CASES = [(64, 64, 3, 1, 1, 1, 2, 2, False, 40),
              (256, 48, 1, 1, 0, 1, 1, 1, True, 21),
              (37, 21, 3, 2, 1, 1, 3, 5, True, 35),
              (130, 70, 5, 1, 2, 2, 7, 8, True, 16),
              (96, 144, 3, 1, 6, 6, 4, 4, False, 50),
              (3, 64, 7, 2, 3, 1, 8, 8, True, 40),
              (16, 96, 1, 1, 0, 1, 2, 2, False, 40),
              (24, 16, 1, 1, 0, 1, 2, 2, True, 16),
              (64, 48, 1, 2, 0, 1, 8, 8, True, 50),
              (5, 33, 1, 1, 0, 1, 3, 4, False, 21),
              (32, 80, 1, 1, 1, 1, 1, 1, True, 33)]


def _random_wide_cases(count: int):
    rng = random.Random(1)
    for _ in range(count):
        k, d = rng.choice([1, 3, 5]), rng.randint(1, 3)
        yield (rng.randint(1, 200), rng.randint(1, 90), k, rng.randint(1, 2),
               rng.randint(0, d * (k - 1) // 2), d, rng.randint(1, 8),
               rng.randint(1, 8), rng.random() < 0.5, rng.randint(16, 70))


@needs_amx
@pytest.mark.parametrize('case', WIDE_CASES + list(_random_wide_cases(10)))
def test_amx_tiles_equal_vnni_and_popcount(case, monkeypatch):
    c, o, k, s, p, d, m, a, signed, out_w = case
    gen = torch.Generator().manual_seed(c * 1000 + o)
    out_h = 2
    w = (out_w - 1) * s + d * (k - 1) + 1 - 2 * p
    h = (out_h - 1) * s + d * (k - 1) + 1 - 2 * p
    x = torch.randn(2, c, h, w, generator=gen)
    codes = (torch.randint(0, 2**m, (o, c, k, k), generator=gen) * 2 -
             (2**m - 1)).int()
    weight_words = pack_weight_codes(codes, m)
    act = quantize_pack(x, a, 3.0, signed)
    scale, bias = torch.randn(o, generator=gen), torch.randn(o, generator=gen)
    res = torch.randn(2, o, out_h, out_w, generator=gen).contiguous(
        memory_format=torch.channels_last)
    geometry = (c, m, a, signed, [k, k], [s, s], [p, p], [d, d])
    ops = torch.ops.mmbinary
    w8, wsum = ops.mbb_int8_prepare_weight(weight_words, c, m, [k, k])
    ref = ops.mbb_conv2d_words(act, weight_words, scale, bias, *geometry, 1,
                               res, 0.0, float('inf'), True, 3, 1.7, False)
    acc_ref = ops.mbb_conv2d_accumulate(act, weight_words, c, o, m, a,
                                        signed, [k, k], [s, s], [p, p],
                                        [d, d], 1)
    for variant in ('amx', 'vnni'):
        monkeypatch.setenv('MMBINARY_INT8_KERNEL', variant)
        out = ops.mbb_conv2d_int8_words(act, weight_words, w8, wsum, scale,
                                        bias, *geometry, res, 0.0,
                                        float('inf'), True, 3, 1.7, False)
        assert torch.equal(ref[0], out[0]), variant
        assert torch.equal(ref[1], out[1]), variant
        acc = ops.mbb_conv2d_int8_words(act, weight_words, w8, wsum, scale,
                                        bias, *geometry, None, -float('inf'),
                                        float('inf'), False, 0, 1.0, False,
                                        True)[0]
        assert torch.equal(acc, acc_ref), variant


@needs_vnni
def test_int8_kernel_variant_is_checked(monkeypatch):
    codes = torch.ones(16, 64, 1, 1, dtype=torch.int32)
    words = pack_weight_codes(codes, 1)
    ops = torch.ops.mmbinary
    w8, wsum = ops.mbb_int8_prepare_weight(words, 64, 1, [1, 1])
    act = quantize_pack(torch.randn(1, 64, 2, 8), 1, 1.0, False)
    args = (act, words, w8, wsum, torch.ones(16), torch.zeros(16), 64, 1, 1,
            False, [1, 1], [1, 1], [0, 0], [1, 1], None, -float('inf'),
            float('inf'), True, 0, 1.0, False)
    monkeypatch.setenv('MMBINARY_INT8_KERNEL', 'sse')
    with pytest.raises(RuntimeError, match='MMBINARY_INT8_KERNEL must be '
                       'auto, vnni or amx'):
        ops.mbb_conv2d_int8_words(*args)
    monkeypatch.setenv('MMBINARY_INT8_KERNEL', 'amx')
    # 8 output columns: too narrow for the tiles, or no AMX at all
    with pytest.raises(RuntimeError, match='MMBINARY_INT8_KERNEL=amx'):
        ops.mbb_conv2d_int8_words(*args)


@needs_vnni
@pytest.mark.parametrize('case', CASES + WIDE_CASES +
                         list(_random_cases(6)))
def test_float_input_op_equals_pack_then_words_op(case):
    """mbb_conv2d_int8 quantizes its float input straight into the
    kernel's levels: the same outputs as mbb_quantize_pack followed by
    mbb_conv2d_int8_words, on NCHW and channels-last inputs."""
    c, o, k, s, p, d, m, a, signed = case[:9]
    out_w = case[9] if len(case) > 9 else None
    gen = torch.Generator().manual_seed(c * 7 + o)
    h = 9 if out_w is None else (2 - 1) * s + d * (k - 1) + 1 - 2 * p
    w = 11 if out_w is None else (out_w - 1) * s + d * (k - 1) + 1 - 2 * p
    if (h + 2 * p - d * (k - 1) - 1) < 0 or (w + 2 * p - d * (k - 1) - 1) < 0:
        pytest.skip('no output for this geometry')
    x = torch.randn(2, c, h, w, generator=gen) * 2
    codes = (torch.randint(0, 2**m, (o, c, k, k), generator=gen) * 2 -
             (2**m - 1)).int()
    weight_words = pack_weight_codes(codes, m)
    scale, bias = torch.randn(o, generator=gen), torch.randn(o, generator=gen)
    ops = torch.ops.mmbinary
    w8, wsum = ops.mbb_int8_prepare_weight(weight_words, c, m, [k, k])
    geometry = ([k, k], [s, s], [p, p], [d, d])
    epilogue = (None, 0.0, 6.0, True, 2, 1.3, False)
    words = quantize_pack(x, a, 1.7, signed)
    expected = ops.mbb_conv2d_int8_words(words, weight_words, w8, wsum, scale,
                                         bias, c, m, a, signed, *geometry,
                                         *epilogue)
    for layout in (torch.contiguous_format, torch.channels_last):
        out = ops.mbb_conv2d_int8(x.contiguous(memory_format=layout),
                                  weight_words, w8, wsum, scale, bias, c, m,
                                  a, 1.7, signed, *geometry, *epilogue)
        assert torch.equal(out[0], expected[0])
        assert torch.equal(out[1], expected[1])


@needs_vnni
def test_float_input_op_refuses_nan_and_matches_its_fake_kernel():
    gen = torch.Generator().manual_seed(0)
    codes = (torch.randint(0, 4, (20, 37, 3, 3), generator=gen) * 2 - 3).int()
    weight_words = pack_weight_codes(codes, 2)
    ops = torch.ops.mmbinary
    w8, wsum = ops.mbb_int8_prepare_weight(weight_words, 37, 2, [3, 3])
    x = torch.randn(1, 37, 7, 9, generator=gen)
    args = [x, weight_words, w8, wsum, torch.ones(20), torch.zeros(20), 37,
            2, 2, 1.0, False, [3, 3], [2, 2], [1, 1], [1, 1], None, 0.0,
            float('inf'), True, 2, 1.0, False]
    torch.library.opcheck(ops.mbb_conv2d_int8.default, tuple(args),
                          test_utils=('test_faketensor', ))
    args[0] = x.clone()
    args[0][0, 3, 2, 2] = float('nan')
    with pytest.raises(RuntimeError, match='NaN'):
        ops.mbb_conv2d_int8(*args)


@needs_vnni
@pytest.mark.parametrize('kernel', ['vnni', 'amx'])
@pytest.mark.parametrize('stride', [(2, 2), (2, 1), (1, 3), (3, 2)])
def test_strided_one_by_one_quantizes_only_the_pixels_it_reads(
        kernel, stride, monkeypatch):
    """A strided 1x1 conv without padding (a ResNet shortcut) quantizes
    only the pixels it reads and runs at stride 1 over them: the same
    outputs and words as quantize_pack of the whole input followed by the
    words op, on odd sizes (the last row and column read or not); a NaN in
    a pixel it reads is refused, one in a pixel it skips reaches
    nothing."""
    if kernel == 'amx' and _variant() != 'amx':
        pytest.skip('no AMX tiles (amx-tile, amx-int8) on this CPU, OS or '
                    'build')
    monkeypatch.setenv('MMBINARY_INT8_KERNEL', kernel)
    gen = torch.Generator().manual_seed(sum(stride))
    c, o, m, a = 70, 40, 8, 8
    x = torch.randn(2, c, 2 * 17 + 1, 3 * 16 + 2, generator=gen) * 2
    codes = (torch.randint(0, 2**m, (o, c, 1, 1), generator=gen) * 2 -
             (2**m - 1)).int()
    weight_words = pack_weight_codes(codes, m)
    scale, bias = torch.randn(o, generator=gen), torch.randn(o, generator=gen)
    ops = torch.ops.mmbinary
    w8, wsum = ops.mbb_int8_prepare_weight(weight_words, c, m, [1, 1])
    geometry = ([1, 1], list(stride), [0, 0], [1, 1])
    epilogue = (None, 0.0, float('inf'), True, 2, 1.3, False)
    words = quantize_pack(x, a, 1.7, True)
    expected = ops.mbb_conv2d_int8_words(words, weight_words, w8, wsum, scale,
                                         bias, c, m, a, True, *geometry,
                                         *epilogue)
    for layout in (torch.contiguous_format, torch.channels_last):
        out = ops.mbb_conv2d_int8(x.contiguous(memory_format=layout),
                                  weight_words, w8, wsum, scale, bias, c, m,
                                  a, 1.7, True, *geometry, *epilogue)
        assert torch.equal(out[0], expected[0])
        assert torch.equal(out[1], expected[1])
    skipped = x.clone()
    skipped[1, 5, 1, 1] = float('nan')  # row 1 and column 1: never read
    if stride == (2, 2) or stride == (3, 2):
        out = ops.mbb_conv2d_int8(skipped, weight_words, w8, wsum, scale,
                                  bias, c, m, a, 1.7, True, *geometry,
                                  *epilogue)
        assert torch.equal(out[0], expected[0])
    read = x.clone()
    read[1, 5, stride[0], stride[1]] = float('nan')
    with pytest.raises(RuntimeError, match='NaN'):
        ops.mbb_conv2d_int8(read, weight_words, w8, wsum, scale, bias, c, m,
                            a, 1.7, True, *geometry, *epilogue)


def _im2col_cases(count: int):
    """Few input channels (the stem's case), kernels up to 7x7, strides,
    paddings and dilations up to 3, every bit width, both modes."""
    rng = random.Random(2)
    for _ in range(count):
        kh, kw = rng.randint(1, 7), rng.randint(1, 7)
        dh, dw = rng.randint(1, 3), rng.randint(1, 3)
        yield (rng.randint(1, 31), rng.randint(1, 70), (kh, kw),
               (rng.randint(1, 3), rng.randint(1, 3)),
               (rng.randint(0, 3), rng.randint(0, 3)), (dh, dw),
               rng.randint(1, 8), rng.randint(1, 8), rng.random() < 0.5)


#: C, O, kernel, stride, padding, dilation, w_bits, a_bits, signed: the
#: ResNet stem (3 -> 64, 7x7, stride 2) at 8 and 4 bits, a patch of
#: exactly 64 bytes, one past it, and 1x1 / 1xk kernels.
IM2COL_CASES = [(3, 64, (7, 7), (2, 2), (3, 3), (1, 1), 8, 8, True),
                (3, 64, (7, 7), (2, 2), (3, 3), (1, 1), 4, 8, False),
                (16, 20, (2, 2), (1, 1), (1, 1), (1, 1), 2, 2, True),
                (13, 17, (5, 1), (1, 2), (2, 0), (2, 1), 1, 1, True),
                (5, 8, (1, 1), (1, 1), (0, 0), (1, 1), 3, 5, False)]


@needs_vnni
@pytest.mark.parametrize('case', IM2COL_CASES + list(_im2col_cases(24)))
def test_im2col_op_equals_the_float_input_op(case, monkeypatch):
    """mbb_conv2d_int8_im2col (the taps folded into the channels) gives
    mbb_conv2d_int8's float output and next-layer words bit for bit, with a
    residual, on NCHW and channels-last inputs, on AMX tiles and VNNI."""
    from mmbinary.models.packing.packed_layers import im2col_weight
    c, o, (kh, kw), (sh, sw), (ph, pw), (dh, dw), m, a, signed = case
    gen = torch.Generator().manual_seed(c * 100 + o + kh)
    out_h, out_w = 3, 21  # wide enough for the AMX tiles
    h = (out_h - 1) * sh + dh * (kh - 1) + 1 - 2 * ph
    w = (out_w - 1) * sw + dw * (kw - 1) + 1 - 2 * pw
    if h < 1 or w < 1:
        pytest.skip('no input for this geometry')
    out_h = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    x = torch.randn(2, c, h, w, generator=gen) * 2
    codes = (torch.randint(0, 2**m, (o, c, kh, kw), generator=gen) * 2 -
             (2**m - 1)).int()
    weight_words = pack_weight_codes(codes, m)
    scale, bias = torch.randn(o, generator=gen), torch.randn(o, generator=gen)
    res = torch.randn(2, o, out_h, out_w, generator=gen).contiguous(
        memory_format=torch.channels_last)
    ops = torch.ops.mmbinary
    w8, wsum = ops.mbb_int8_prepare_weight(weight_words, c, m, [kh, kw])
    folded = im2col_weight(w8, c)
    assert folded.shape == (w8.shape[0], 1, 16 * -(-(kh * kw * c) // 64),
                            16, 4)
    args = (c, m, a, 1.7, signed, [kh, kw], [sh, sw], [ph, pw], [dh, dw],
            res, 0.0, 6.0, True, 2, 1.3, False)
    expected = ops.mbb_conv2d_int8(x, weight_words, w8, wsum, scale, bias,
                                   *args)
    variants = ['vnni'] + (['amx'] if _variant() == 'amx' else [])
    for variant in variants:
        monkeypatch.setenv('MMBINARY_INT8_KERNEL', variant)
        for layout in (torch.contiguous_format, torch.channels_last):
            out = ops.mbb_conv2d_int8_im2col(
                x.contiguous(memory_format=layout), weight_words, folded,
                wsum, scale, bias, *args)
            assert torch.equal(out[0], expected[0]), variant
            assert torch.equal(out[1], expected[1]), variant


@needs_vnni
def test_im2col_op_refuses_nan_and_matches_its_fake_kernel():
    from mmbinary.models.packing.packed_layers import im2col_weight
    gen = torch.Generator().manual_seed(0)
    codes = (torch.randint(0, 4, (20, 3, 7, 7), generator=gen) * 2 - 3).int()
    weight_words = pack_weight_codes(codes, 2)
    ops = torch.ops.mmbinary
    w8, wsum = ops.mbb_int8_prepare_weight(weight_words, 3, 2, [7, 7])
    x = torch.randn(1, 3, 19, 23, generator=gen)
    args = [x, weight_words, im2col_weight(w8, 3), wsum, torch.ones(20),
            torch.zeros(20), 3, 2, 2, 1.0, True, [7, 7], [2, 2], [3, 3],
            [1, 1], None, 0.0, float('inf'), True, 2, 1.0, False]
    torch.library.opcheck(ops.mbb_conv2d_int8_im2col.default, tuple(args),
                          test_utils=('test_faketensor', ))
    args[0] = x.clone()
    args[0][0, 1, 18, 22] = float('nan')  # the last element of a row
    with pytest.raises(RuntimeError, match='NaN'):
        ops.mbb_conv2d_int8_im2col(*args)
    args[0] = x
    args[2] = w8  # the unfolded layout
    with pytest.raises(RuntimeError, match='weight_int8 must be'):
        ops.mbb_conv2d_int8_im2col(*args)


def test_outputs_handed_on_above_the_streaming_size_are_exact():
    """A float output also handed on as words writes around the caches
    above 4 MB (streaming stores): the same floats as the output written
    alone (5.3 MB, through the caches), and the words of those floats, in
    the popcount kernel and (where it runs) the integer kernel."""
    gen = torch.Generator().manual_seed(5)
    c, o, h, w = 64, 256, 72, 72  # float output 256 x 72 x 72: 5.3 MB
    x = torch.randn(1, c, h, w, generator=gen)
    codes = (torch.randint(0, 2, (o, c, 1, 1), generator=gen) * 2 - 1).int()
    weight_words = pack_weight_codes(codes, 1)
    act = quantize_pack(x, 1, 3.0, False)
    scale, bias = torch.randn(o, generator=gen), torch.randn(o, generator=gen)
    res = torch.randn(1, o, h, w, generator=gen).contiguous(
        memory_format=torch.channels_last)
    geometry = (c, 1, 1, False, [1, 1], [1, 1], [0, 0], [1, 1])
    ops = torch.ops.mmbinary
    alone = ops.mbb_conv2d_words(act, weight_words, scale, bias, *geometry, 1,
                                 res, 0.0, float('inf'), True, 0, 1.0,
                                 False)[0]
    handed = ops.mbb_conv2d_words(act, weight_words, scale, bias, *geometry,
                                  1, res, 0.0, float('inf'), True, 2, 1.7,
                                  False)
    assert torch.equal(handed[0], alone)
    assert torch.equal(handed[1], quantize_pack(alone, 2, 1.7, False))
    if not _supported():
        return
    w8, wsum = ops.mbb_int8_prepare_weight(weight_words, c, 1, [1, 1])
    int8 = ops.mbb_conv2d_int8_words(act, weight_words, w8, wsum, scale,
                                     bias, *geometry, res, 0.0, float('inf'),
                                     True, 2, 1.7, False)
    assert torch.equal(int8[0], alone)
    assert torch.equal(int8[1], handed[1])


def _int8_equals_popcount_on_threads(monkeypatch, threads: int, c: int,
                                     o: int, h: int, w: int, k: int, a: int,
                                     with_residual: bool) -> None:
    """A random k x k (padding k // 2) W2 conv of 2 samples on a-bit words,
    and on the float input where k == 1, run by the integer kernel (each
    inner loop this CPU has, on ``threads`` threads): the popcount kernel's
    float outputs and next-layer words bit for bit."""
    gen = torch.Generator().manual_seed(c + o + h + k)
    m, pad = 2, k // 2
    x = torch.randn(2, c, h, w, generator=gen).contiguous(
        memory_format=torch.channels_last)
    codes = (torch.randint(0, 2**m, (o, c, k, k), generator=gen) * 2 -
             (2**m - 1)).int()
    weight_words = pack_weight_codes(codes, m)
    act = quantize_pack(x, a, 3.0, False)
    scale = torch.randn(o, generator=gen)
    bias = torch.randn(o, generator=gen)
    res = torch.randn(2, o, h, w, generator=gen).contiguous(
        memory_format=torch.channels_last) if with_residual else None
    geometry = (c, m, a, False, [k, k], [1, 1], [pad, pad], [1, 1])
    epilogue = (res, 0.0, float('inf'), True, 2, 1.7, False)
    ops = torch.ops.mmbinary
    ref = ops.mbb_conv2d_words(act, weight_words, scale, bias, *geometry, 1,
                               *epilogue)
    w8, wsum = ops.mbb_int8_prepare_weight(weight_words, c, m, [k, k])
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for variant in ('amx', 'vnni'):
            if variant == 'amx' and ops.mbb_int8_variant() != 'amx':
                continue
            monkeypatch.setenv('MMBINARY_INT8_KERNEL', variant)
            outs = [ops.mbb_conv2d_int8_words(act, weight_words, w8, wsum,
                                              scale, bias, *geometry,
                                              *epilogue)]
            if k == 1:
                outs.append(ops.mbb_conv2d_int8(
                    x, weight_words, w8, wsum, scale, bias, c, m, a, 3.0,
                    False, *geometry[4:], *epilogue))
            for got in outs:
                assert torch.equal(ref[0], got[0]), variant
                assert torch.equal(ref[1], got[1]), variant
    finally:
        torch.set_num_threads(before)


@needs_vnni
@pytest.mark.parametrize('threads', [1, 2])
@pytest.mark.parametrize('c, o', [(256, 256), (256, 208), (512, 512)])
def test_weight_chunks_on_threads(monkeypatch, threads, c, o):
    """3x3 convs whose weights exceed a chunk's share (res4 / res5 / FPN
    sizes): the output channels split into chunks of equal size (16 + 0
    blocks -> 8 + 8, 13 -> 8 + 5), every chunk's rows on either thread."""
    _int8_equals_popcount_on_threads(monkeypatch, threads, c, o, 6, 21, 3,
                                     2, False)


@needs_vnni
@pytest.mark.parametrize('threads', [1, 2])
@pytest.mark.parametrize('c, o, h, w', [(200, 48, 20, 37), (130, 600, 6, 17),
                                        (64, 96, 5, 40)])
def test_row_local_1x1_convs_on_threads(monkeypatch, threads, c, o, h, w):
    """1x1 stride-1 convs fill each input row's levels per thread, just
    before its outputs (one output chunk), else the whole level image first
    (several chunks: 600 channels at 130 inputs, with few rows per thread);
    the AMX kernel overlaps each tile block's epilogue with the next
    block's products. Words in and float in, with a residual."""
    _int8_equals_popcount_on_threads(monkeypatch, threads, c, o, h, w, 1, 3,
                                     True)
