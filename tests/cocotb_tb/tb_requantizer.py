"""cocotb testbench of rtl.requantizer.Requantizer against golden.quant, both modes: dense random
values, rounding ties, int32 -> float32 rounding, saturation, shifts at both ends, both modes
interleaved, bad params."""


import cocotb
import numpy as np
from tb_common import LaneTB

from golden import quant


def _field(value, width):
    return int(value) & ((1 << width) - 1)


class TB(LaneTB):
    @staticmethod
    def payload(acc, fixed, scale_bits, shift, zp, lo, hi):
        word, offset = 0, 0
        for value, width in ((acc, 32), (fixed, 1), (scale_bits, 32), (shift, 32), (zp, 8), (lo, 8),
                             (hi, 8)):
            word |= _field(value, width) << offset
            offset += width
        return word

    async def run(self, cases):
        """cases: list of payload tuples; returns (values, errors) in order."""
        return await self.run_words([self.payload(*case) for case in cases])


def golden_fp32(acc, scale, zp, lo, hi):
    acc = np.asarray(acc, np.int32)
    out = np.empty(acc.shape, np.int8)
    for i in range(acc.size):  # per-value zero point and clip
        out[i] = quant.requantize_fp32(acc[i:i + 1], scale[i:i + 1], zero_point=int(zp[i]),
                                       qmin=int(lo[i]), qmax=int(hi[i]))[0]
    return out


def golden_fixed(acc, mult, shift, zp, lo, hi):
    acc = np.asarray(acc, np.int32)
    out = np.empty(acc.shape, np.int8)
    for i in range(acc.size):
        out[i] = quant.requantize_fixed(acc[i:i + 1], [mult[i]], [shift[i]], zero_point=int(zp[i]),
                                        qmin=int(lo[i]), qmax=int(hi[i]))[0]
    return out


def random_clip(rng, n):
    a = rng.integers(-128, 128, n)
    b = rng.integers(-128, 128, n)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    wide = rng.random(n) < 0.6
    return np.where(wide, -128, lo), np.where(wide, 127, hi)


async def check_fp32(tb, acc, scale):
    n = len(acc)
    zp = tb.rng.integers(-128, 128, n)
    lo, hi = random_clip(tb.rng, n)
    scale = np.asarray(scale, np.float32)
    bits = scale.view(np.uint32)
    cases = [(a, 0, b, 0, z, l, h) for a, b, z, l, h in zip(acc, bits, zp, lo, hi, strict=True)]
    values, errors = await tb.run(cases)
    assert not errors.any()
    np.testing.assert_array_equal(values, golden_fp32(acc, scale, zp, lo, hi))


@cocotb.test()
async def fp32_dense_random(dut):
    tb = TB(dut)
    await tb.start()
    n = 3000
    rng = tb.rng
    magnitude = rng.integers(0, 32, n)
    acc = (rng.integers(-(1 << 31), 1 << 31, n) >> magnitude).astype(np.int32)
    scale = (10.0 ** rng.uniform(-9, 1, n)).astype(np.float32)
    await check_fp32(tb, acc, scale)


@cocotb.test()
async def fp32_rounding_ties(dut):
    """Power-of-two scales make acc * scale exact: odd multiples land on .5 (ties to even)."""
    tb = TB(dut)
    await tb.start()
    rng = tb.rng
    n = 1500
    k = rng.integers(1, 12, n)
    acc = rng.integers(-(1 << 12), 1 << 12, n).astype(np.int32)
    scale = (2.0 ** -k).astype(np.float32)
    products = acc.astype(np.float64) * scale
    assert np.sum(products % 1 == 0.5) > 100  # really exercises ties
    await check_fp32(tb, acc, scale)


@cocotb.test()
async def fp32_int_to_float_rounding_and_saturation(dut):
    """Accumulators above 2^24 round when converted to float32; both saturation ends."""
    tb = TB(dut)
    await tb.start()
    rng = tb.rng
    n = 1000
    base = rng.integers(1 << 24, 1 << 31, n)
    acc = (base * rng.choice([-1, 1], n)).astype(np.int32)
    acc[:4] = [(1 << 31) - 1, -(1 << 31), (1 << 24) + 1, -(1 << 24) - 3]
    scale = (2.0 ** rng.integers(-30, -20, n) * rng.uniform(1, 2, n)).astype(np.float32)
    scale[:4] = [1.0, 1.0, 2.0 ** -16, 2.0 ** -16]
    await check_fp32(tb, acc, scale)


@cocotb.test()
async def fixed_mode_random_and_shift_extremes(dut):
    tb = TB(dut)
    await tb.start()
    rng = tb.rng
    n = 2000
    acc = (rng.integers(-(1 << 31), 1 << 31, n) >> rng.integers(0, 32, n)).astype(np.int32)
    mult = rng.integers(1 << 30, 1 << 31, n)
    shift = rng.integers(-31, 31, n)
    shift[:200] = -31
    shift[200:400] = 30
    shift[400:600] = 0
    mult[:50] = (1 << 31) - 1
    zp = rng.integers(-128, 128, n)
    lo, hi = random_clip(rng, n)
    values, errors = await tb.run([(a, 1, m, s, z, l, h)
                                   for a, m, s, z, l, h in zip(acc, mult, shift, zp, lo, hi, strict=True)])
    assert not errors.any()
    np.testing.assert_array_equal(values, golden_fixed(acc, mult, shift, zp, lo, hi))


@cocotb.test()
async def mixed_modes(dut):
    """fp32 and fixed values interleaved at random: the mode travels with each value through the
    shared shifters and multiplier."""
    tb = TB(dut)
    await tb.start()
    rng = tb.rng
    n = 2000
    fixed = rng.random(n) < 0.5
    acc = (rng.integers(-(1 << 31), 1 << 31, n) >> rng.integers(0, 32, n)).astype(np.int32)
    scale = (10.0 ** rng.uniform(-9, 1, n)).astype(np.float32)
    mult = rng.integers(0, 1 << 31, n)
    shift = rng.integers(-31, 31, n)
    zp = rng.integers(-128, 128, n)
    lo, hi = random_clip(rng, n)
    cases = [(a, 1, mu, sh, z, l, h) if f else (a, 0, int(b), 0, z, l, h)
             for f, a, b, mu, sh, z, l, h in zip(fixed, acc, scale.view(np.uint32), mult, shift,
                                                 zp, lo, hi, strict=True)]
    values, errors = await tb.run(cases)
    assert not errors.any()
    expected = np.where(fixed, golden_fixed(acc, mult, shift, zp, lo, hi),
                        golden_fp32(acc, scale, zp, lo, hi))
    np.testing.assert_array_equal(values, expected)


@cocotb.test()
async def bad_parameters_raise_error(dut):
    tb = TB(dut, input_idle=0, output_stall=0)
    await tb.start()
    bad_scales = np.array([0.0, -0.5, np.inf, np.nan, 1e-40], np.float32).view(np.uint32)
    cases = [(100, 0, int(b), 0, 0, -128, 127) for b in bad_scales]
    cases += [(100, 1, 1 << 30, 31, 0, -128, 127), (100, 1, 1 << 30, -32, 0, -128, 127),
              (100, 1, 1 << 31, 0, 0, -128, 127), (100, 0, 0x3F000000, 0, 0, -128, 127)]
    _, errors = await tb.run(cases)
    np.testing.assert_array_equal(errors, [1] * 8 + [0])
