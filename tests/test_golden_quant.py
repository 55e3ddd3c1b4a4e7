"""golden/quant.py: the fixed-point (TFLite / gemmlowp) mode against plain-Python-int references,
and the argument checks of every public function.

The references below are written from the gemmlowp and TFLite definitions with Python integers
(no numpy, nothing from ``golden``), so that they share no code with what they check:

- SaturatingRoundingDoublingHighMul: gemmlowp's int64 code, with C++'s truncating division.
- RoundingDivideByPOT: x / 2^e rounded to nearest, ties away from zero (the definition, not
  gemmlowp's mask-and-threshold trick).
- QuantizeMultiplier: ``frexp`` and ``std::round`` (half away from zero) on the exact mantissa.
- MultiplyByQuantizedMultiplier: RoundingDivideByPOT(SRDHM(x << left, m), right), with the left
  shift wrapping in 32 bits (the hardware's documented behaviour; TFLite leaves it undefined).
- TFLite's quantised Add (``AddElementwise`` and the constants from ``add.cc``'s Prepare).
"""

from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
import pytest

from golden import quant

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


# References (plain Python ints) --------------------------------------------------------------

def wrap32(value: int) -> int:
    return (value + (1 << 31)) % (1 << 32) - (1 << 31)


def ref_srdhm(a: int, b: int) -> int:
    """gemmlowp SaturatingRoundingDoublingHighMul(std::int32_t a, std::int32_t b)."""
    if a == INT32_MIN and b == INT32_MIN:
        return INT32_MAX
    ab = a * b  # std::int64_t
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    total = ab + nudge
    quotient = abs(total) // (1 << 31)  # C++ '/' truncates toward zero
    return quotient if total >= 0 else -quotient


def ref_rounding_divide_by_pot(x: int, exponent: int) -> int:
    """x / 2**exponent to the nearest integer, ties away from zero."""
    quotient, remainder = divmod(abs(x), 1 << exponent)
    magnitude = quotient + (1 if 2 * remainder >= (1 << exponent) else 0)
    return magnitude if x >= 0 else -magnitude


def ref_quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier (shift > 30 is an error there and here)."""
    if real == 0.0:
        return 0, 0
    mantissa, shift = math.frexp(real)
    scaled = mantissa * 2.0 ** 31  # exact: a power-of-two scaling of a double
    q_fixed = math.floor(scaled) + (1 if scaled - math.floor(scaled) >= 0.5 else 0)  # std::round
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    assert shift <= 30, real
    return q_fixed, shift


def ref_mbqm(x: int, multiplier: int, shift: int) -> int:
    """TFLite MultiplyByQuantizedMultiplier (the double-rounding gemmlowp form)."""
    left, right = max(shift, 0), max(-shift, 0)
    return ref_rounding_divide_by_pot(ref_srdhm(wrap32(x * (1 << left)), multiplier), right)


def ref_add_params(a_scale: float, b_scale: float, c_scale: float) -> dict[str, int]:
    """TFLite add.cc Prepare for int8: left_shift 20, multipliers from doubles."""
    left_shift = 20
    twice_max = 2 * max(a_scale, b_scale)
    ma, sa = ref_quantize_multiplier(a_scale / twice_max)
    mb, sb = ref_quantize_multiplier(b_scale / twice_max)
    mo, so = ref_quantize_multiplier(twice_max / ((1 << left_shift) * c_scale))
    return dict(left_shift=left_shift, a_multiplier=ma, a_shift=sa, b_multiplier=mb, b_shift=sb,
                out_multiplier=mo, out_shift=so)


def ref_add(a: int, b: int, *, a_zero_point, b_zero_point, c_zero_point, left_shift, a_multiplier,
            a_shift, b_multiplier, b_shift, out_multiplier, out_shift, qmin=-128, qmax=127) -> int:
    """TFLite reference_integer_ops AddElementwise for one element."""
    shifted_a = (a - a_zero_point) * (1 << left_shift)
    shifted_b = (b - b_zero_point) * (1 << left_shift)
    scaled_a = ref_mbqm(shifted_a, a_multiplier, a_shift)
    scaled_b = ref_mbqm(shifted_b, b_multiplier, b_shift)
    raw = ref_mbqm(scaled_a + scaled_b, out_multiplier, out_shift) + c_zero_point
    return min(qmax, max(qmin, raw))


def random_int32(rng: random.Random, count: int) -> list[int]:
    """Uniform int32 values mixed with small ones and the extremes."""
    edges = [INT32_MIN, INT32_MIN + 1, -(1 << 30), -1, 0, 1, 1 << 30, INT32_MAX - 1, INT32_MAX]
    values = [rng.randint(INT32_MIN, INT32_MAX) for _ in range(count // 2)]
    values += [rng.randint(-(1 << rng.randint(0, 31)), 1 << rng.randint(0, 30)) for _ in range(count // 2)]
    return edges + values


def as_int32(values) -> np.ndarray:
    return np.array(values, dtype=np.int32)


# The references themselves, on hand-checked values ---------------------------------------------

SRDHM_HAND = [
    (INT32_MIN, INT32_MIN, INT32_MAX),  # the one overflow: saturates
    (INT32_MIN, INT32_MAX, -INT32_MAX),  # -(2^31 - 1) exactly
    (INT32_MAX, INT32_MAX, INT32_MAX - 1),  # (2^31 - 1)^2 / 2^31 = 2^31 - 2 + 2^-31
    (INT32_MIN, 1, -1),  # -2^31 * 2 / 2^32
    (1 << 30, 1, 1),  # +0.5 rounds up
    (-(1 << 30), 1, 0),  # -0.5: the nudge and truncation give 0, not -1
    (3, 1 << 30, 2),  # +1.5 -> 2
    (-3, 1 << 30, -1),  # -1.5 -> -1 (ties go up, not away from zero)
    (5, 1 << 30, 3),
    (-5, 1 << 30, -2),
    (1 << 30, 1 << 30, 1 << 29),
    (0, INT32_MIN, 0),
]


@pytest.mark.parametrize(("a", "b", "expected"), SRDHM_HAND)
def test_srdhm_hand_checked(a, b, expected):
    assert ref_srdhm(a, b) == expected
    np.testing.assert_array_equal(quant.saturating_rounding_doubling_high_mul(as_int32([a]), b),
                                  as_int32([expected]))


RDBP_HAND = [
    (5, 1, 3), (-5, 1, -3), (3, 1, 2), (-3, 1, -2), (1, 1, 1), (-1, 1, -1),
    (6, 2, 2), (-6, 2, -2), (5, 2, 1), (-5, 2, -1), (7, 2, 2), (-7, 2, -2),
    (INT32_MIN, 31, -1), (INT32_MAX, 31, 1), (1 << 30, 31, 1), (-(1 << 30), 31, -1),
    ((1 << 30) - 1, 31, 0), (-(1 << 30) + 1, 31, 0), (INT32_MIN, 0, INT32_MIN), (INT32_MAX, 0, INT32_MAX),
    (INT32_MAX, 1, 1 << 30), (INT32_MIN, 1, -(1 << 30)), (INT32_MIN + 1, 1, -(1 << 30)),
]


@pytest.mark.parametrize(("x", "exponent", "expected"), RDBP_HAND)
def test_rounding_divide_by_pot_hand_checked(x, exponent, expected):
    assert ref_rounding_divide_by_pot(x, exponent) == expected
    np.testing.assert_array_equal(quant.rounding_divide_by_pot(as_int32([x]), exponent),
                                  as_int32([expected]))


QM_HAND = [
    (0.0, (0, 0)),
    (0.5, (1 << 30, 0)),
    (0.75, (3 << 29, 0)),
    (1.0, (1 << 30, 1)),
    (2.0 ** 29, (1 << 30, 30)),  # the largest shift
    (2.0 ** -32, (1 << 30, -31)),  # the smallest shift
    (2.0 ** -33, (0, 0)),  # flushed to zero
    (0.5 + 2.0 ** -32, ((1 << 30) + 1, 0)),  # mantissa * 2^31 = 2^30 + 0.5: away from zero
    (0.75 + 2.0 ** -32, ((3 << 29) + 1, 0)),  # 3 * 2^29 + 0.5, also a tie, even below
    (1.0 - 2.0 ** -33, (1 << 30, 1)),  # rounds up to 2^31: halved, shift + 1
    (1.0 - 2.0 ** -31, ((1 << 31) - 1, 0)),
]


@pytest.mark.parametrize(("real", "expected"), QM_HAND)
def test_quantize_multiplier_hand_checked(real, expected):
    assert ref_quantize_multiplier(real) == expected
    assert quant.quantize_multiplier(real) == expected


MBQM_HAND = [
    (5, 1 << 30, 0, 3),  # 2.5 -> 3 in SRDHM
    (5, 1 << 30, -1, 2),  # SRDHM gives 3, then 1.5 -> 2: double rounding (exact 1.25)
    (-5, 1 << 30, -1, -1),  # SRDHM gives -2, then -1
    (1, 1 << 30, 30, 1 << 29),  # the largest left shift
    (-2, 1 << 30, 30, -(1 << 30)),
    (INT32_MAX, INT32_MAX, -31, 1),  # the largest right shift
    (INT32_MIN, 1 << 30, -31, -1),  # -0.5 away from zero
    (1 << 30, 1 << 30, -31, 0),
    (2, 1 << 30, 30, -(1 << 30)),  # 2 << 30 wraps to INT32_MIN (the hardware's shifter)
    (12345, 0, 7, 0),
]


@pytest.mark.parametrize(("x", "multiplier", "shift", "expected"), MBQM_HAND)
def test_mbqm_hand_checked(x, multiplier, shift, expected):
    assert ref_mbqm(x, multiplier, shift) == expected
    np.testing.assert_array_equal(
        quant.multiply_by_quantized_multiplier(as_int32([x]), multiplier, shift), as_int32([expected]))


# Golden against the references on random values ------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_srdhm_random(seed):
    rng = random.Random(seed)
    a = random_int32(rng, 1500)
    b = random_int32(rng, 1500)
    rng.shuffle(b)
    b = b[:len(a)]
    expected = [ref_srdhm(x, y) for x, y in zip(a, b, strict=True)]
    np.testing.assert_array_equal(quant.saturating_rounding_doubling_high_mul(as_int32(a), as_int32(b)),
                                  as_int32(expected))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rounding_divide_by_pot_random(seed):
    rng = random.Random(seed)
    x = random_int32(rng, 2000)
    exponents = [rng.randint(0, 31) for _ in x]
    exponents[:32] = range(32)
    expected = [ref_rounding_divide_by_pot(v, e) for v, e in zip(x, exponents, strict=True)]
    np.testing.assert_array_equal(quant.rounding_divide_by_pot(as_int32(x), np.array(exponents)),
                                  as_int32(expected))
    # Ties in both directions for every exponent (x = (2k + 1) * 2^(e-1)).
    ties = [sign * (2 * rng.randint(0, (1 << (31 - e)) - 1) + 1) << (e - 1)
            for e in range(1, 32) for sign in (1, -1)]
    tie_exponents = [e for e in range(1, 32) for _ in (1, -1)]
    got = quant.rounding_divide_by_pot(as_int32(ties), np.array(tie_exponents))
    np.testing.assert_array_equal(got, as_int32([ref_rounding_divide_by_pot(v, e)
                                                 for v, e in zip(ties, tie_exponents, strict=True)]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quantize_multiplier_random(seed):
    rng = random.Random(seed)
    reals = [2.0 ** rng.uniform(-34.0, 29.9) for _ in range(300)]
    reals += [float(np.float32(rng.uniform(1e-4, 4.0))) for _ in range(300)]
    # Ties: an odd 32-bit mantissa puts mantissa * 2^31 exactly on k + 0.5.
    reals += [math.ldexp(rng.randrange(1 << 31, 1 << 32) | 1, rng.randint(-62, -3)) for _ in range(300)]
    for real in reals:
        assert quant.quantize_multiplier(real) == ref_quantize_multiplier(real), real


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mbqm_random(seed):
    rng = random.Random(seed)
    x = random_int32(rng, 1200)
    shifts = [rng.randint(-31, 30) for _ in x]
    shifts[:62] = range(-31, 31)
    multipliers = [rng.choice([rng.randint(1 << 30, INT32_MAX), rng.randint(0, INT32_MAX), INT32_MAX,
                               1 << 30]) for _ in x]
    expected = [ref_mbqm(*args) for args in zip(x, multipliers, shifts, strict=True)]
    got = quant.multiply_by_quantized_multiplier(as_int32(x), np.array(multipliers), np.array(shifts))
    np.testing.assert_array_equal(got, as_int32(expected))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_requantize_fixed_random(seed):
    rng = random.Random(seed)
    channels, rows = 7, 60
    params = [ref_quantize_multiplier(2.0 ** rng.uniform(-24.0, -3.0)) for _ in range(channels)]
    params[0] = ref_quantize_multiplier(2.0 ** -10)  # exact: ties land on k + 0.5
    zero_point = rng.randint(-128, 127)
    qmin, qmax = sorted(rng.sample(range(-128, 128), 2)) if seed == 2 else (-128, 127)
    acc = [[rng.choice([rng.randint(-(1 << 22), 1 << 22), rng.randint(INT32_MIN, INT32_MAX),
                        (2 * rng.randint(-4000, 4000) + 1) << 9])
            for _ in range(channels)] for _ in range(rows)]
    expected = [[min(qmax, max(qmin, ref_mbqm(v, *params[c]) + zero_point)) for c, v in enumerate(row)]
                for row in acc]
    got = quant.requantize_fixed(as_int32(acc), np.array([m for m, _ in params]),
                                 np.array([s for _, s in params]), zero_point=zero_point, qmin=qmin,
                                 qmax=qmax)
    np.testing.assert_array_equal(got, np.array(expected, dtype=np.int8))
    assert {qmin, qmax} <= set(np.unique(got).tolist())  # both ends saturate


ADD_CONFIGS = [  # a_scale, b_scale, c_scale, a_zp, b_zp, c_zp, qmin, qmax
    (0.02, 0.03, 0.04, 3, -10, 7, -128, 127),
    (0.0235, 0.0235, 0.05, -128, 127, 0, -128, 127),
    (1.0, 1.0, 2.0, 0, 0, 0, -128, 127),  # power-of-two scales: many exact ties
    (0.1, 0.0125, 0.0625, -40, 20, -128, -128, 127),  # output saturates at both ends
    (0.007843, 0.011, 0.0121, 0, 5, -20, -128, 60),  # a fused activation clamp
]


@pytest.mark.parametrize("config", ADD_CONFIGS)
def test_add_fixed_exhaustive(config):
    a_scale, b_scale, c_scale, a_zp, b_zp, c_zp, qmin, qmax = (
        float(np.float32(v)) if i < 3 else v for i, v in enumerate(config))
    params = quant.add_fixed_params(a_scale=a_scale, b_scale=b_scale, c_scale=c_scale)
    expected_params = ref_add_params(a_scale, b_scale, c_scale)
    assert params == expected_params
    codes = list(range(-128, 128))
    expected = [[ref_add(a, b, a_zero_point=a_zp, b_zero_point=b_zp, c_zero_point=c_zp, qmin=qmin, qmax=qmax,
                         **expected_params) for b in codes] for a in codes]
    grid_a = np.repeat(np.arange(-128, 128), 256).astype(np.int8).reshape(256, 256)
    grid_b = np.tile(np.arange(-128, 128), 256).astype(np.int8).reshape(256, 256)
    got = quant.add_fixed(grid_a, grid_b, a_zero_point=a_zp, b_zero_point=b_zp, c_zero_point=c_zp,
                          qmin=qmin, qmax=qmax, **params)
    np.testing.assert_array_equal(got, np.array(expected, dtype=np.int8))


def test_add_fixed_hand_checked():
    # Equal input scales 1, output scale 2: the sum is halved, ties away from zero.
    params = quant.add_fixed_params(a_scale=1.0, b_scale=1.0, c_scale=2.0)
    assert params == dict(left_shift=20, a_multiplier=1 << 30, a_shift=0, b_multiplier=1 << 30, b_shift=0,
                          out_multiplier=1 << 30, out_shift=-19)
    a = np.array([1, -1, 3, -3, 2, 127, -128], np.int8)
    b = np.array([0, 0, 0, 0, 2, 127, -128], np.int8)
    got = quant.add_fixed(a, b, a_zero_point=0, b_zero_point=0, c_zero_point=0, **params)
    np.testing.assert_array_equal(got, np.array([1, -1, 2, -2, 2, 127, -128], np.int8))


# fma_f32 (the fp32 add's fused multiply-add) against exact rational arithmetic ------------------

def ref_round_to_float32(value: Fraction) -> float:
    """The float32 nearest to an exact rational, ties to even (normal range and subnormals)."""
    if value == 0:
        return 0.0
    magnitude = abs(value)
    exponent = magnitude.numerator.bit_length() - magnitude.denominator.bit_length()
    while Fraction(2) ** exponent > magnitude:
        exponent -= 1
    while Fraction(2) ** (exponent + 1) <= magnitude:
        exponent += 1
    quantum = max(exponent - 23, -149)
    scaled = magnitude / Fraction(2) ** quantum
    whole = math.floor(scaled)
    rest = scaled - whole
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and whole % 2 == 1):
        whole += 1
    return math.copysign(math.ldexp(whole, quantum), value)


def test_fma_f32_double_rounding_case():
    # (1 + 2^-18) * 2^-24 (1 - 2^-18) + (1 + 2^-23) = 1 + 2^-23 + 2^-24 - 2^-60: just below the
    # midpoint between 1 + 2^-23 and 1 + 2^-22. Rounding to float64 first lands on the midpoint,
    # which then rounds to even (1 + 2^-22); a fused multiply-add gives 1 + 2^-23.
    x, y = np.float32(1 + 2.0 ** -18), np.float32(2.0 ** -24 * (1 - 2.0 ** -18))
    z = np.float32(1 + 2.0 ** -23)
    assert np.float32(np.float64(x) * np.float64(y) + np.float64(z)) == np.float32(1 + 2.0 ** -22)
    assert quant.fma_f32(x, y, z) == np.float32(1 + 2.0 ** -23)
    assert quant.fma_f32(-x, y, -z) == np.float32(-(1 + 2.0 ** -23))


@pytest.mark.parametrize("seed", [0, 1])
def test_fma_f32_random(seed):
    rng = np.random.default_rng(seed)
    count = 400
    x = (rng.uniform(-2, 2, count) * 2.0 ** rng.integers(-20, 20, count)).astype(np.float32)
    y = (rng.uniform(-2, 2, count) * 2.0 ** rng.integers(-20, 20, count)).astype(np.float32)
    z = (rng.uniform(-2, 2, count) * 2.0 ** rng.integers(-20, 20, count)).astype(np.float32)
    # A quarter of the cases: z cancels most of x * y.
    z[::4] = (-(x[::4].astype(np.float64) * y[::4])).astype(np.float32)
    # Another quarter: x * y = 2^-24 (1 - k^2 2^-36) lands a hair below a float32 midpoint above z,
    # and a float64 rounding would land exactly on it (k < 12).
    k = rng.integers(1, 12, count // 4)
    x[1::4] = (1 + 2.0 ** -18 * k).astype(np.float32)
    y[1::4] = (2.0 ** -24 * (1 - 2.0 ** -18 * k)).astype(np.float32)
    z[1::4] = (1 + 2.0 ** -23 * rng.integers(0, 8, count // 4)).astype(np.float32)
    expected = [ref_round_to_float32(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))
                for a, b, c in zip(x, y, z, strict=True)]
    np.testing.assert_array_equal(quant.fma_f32(x, y, z), np.array(expected, np.float32))


# Bad inputs -------------------------------------------------------------------------------------

I8 = np.zeros((2, 2), np.int8)
I8_4D = np.zeros((1, 1, 3, 3), np.int8)
W_4D = np.zeros((1, 1, 3, 3), np.int8)
I32 = np.zeros((2, 2), np.int32)
F32 = np.float32(0.5)
ADD_PARAMS = dict(left_shift=20, a_multiplier=1 << 30, a_shift=0, b_multiplier=1 << 30, b_shift=0,
                  out_multiplier=1 << 30, out_shift=-19)
ADD_ZPS = dict(a_zero_point=0, b_zero_point=0, c_zero_point=0)
FP32_ADD = dict(a_scale=0.1, a_zero_point=0, b_scale=0.1, b_zero_point=0, c_scale=0.1, c_zero_point=0)

BAD_INPUTS = [
    # name, call, exception, message pattern
    ("check_array type", lambda: quant.check_array("x", [1], np.int8), TypeError,
     r"X must be a numpy array, not list"),
    ("check_array dtype", lambda: quant.check_array("x", I32, np.int8), TypeError,
     r"X must be an int8 array, not int32"),
    ("check_array ndim", lambda: quant.check_array("x", I8, np.int8, ndim=(3, 4)), ValueError,
     r"X must have 3 or 4 dimensions, not shape \(2, 2\)"),
    ("check_int type", lambda: quant.check_int("rows", 1.5), TypeError, r"Rows must be an integer, not 1.5"),
    ("check_int bool", lambda: quant.check_int("rows", True), TypeError,
     r"Rows must be an integer, not True"),
    ("check_int range", lambda: quant.check_int("rows", 0, minimum=1), ValueError,
     r"Rows must be between 1 and inf, not 0"),
    ("check_scale type", lambda: quant.check_scale("x scale", "0.1"), TypeError,
     r"X scale must be a positive finite float, not '0.1'"),
    ("check_scale zero", lambda: quant.check_scale("x scale", 0.0), ValueError,
     r"X scale must be a positive finite float, not 0.0"),
    ("check_scale nan", lambda: quant.check_scale("x scale", float("nan")), ValueError,
     r"X scale must be a positive finite float, not nan"),
    ("uint8_to_int8", lambda: quant.uint8_to_int8(I8), TypeError, r"Q must be an uint8 array, not int8"),
    ("int8_to_uint8", lambda: quant.int8_to_uint8(np.zeros(2, np.uint8)), TypeError,
     r"Q must be an int8 array, not uint8"),
    ("wrap_int32 float", lambda: quant.wrap_int32(np.zeros(2, np.float64)), TypeError,
     r"X must be an integer numpy array, not float64"),
    ("wrap_int32 list", lambda: quant.wrap_int32([1, 2]), TypeError,
     r"X must be an integer numpy array, not list"),
    ("matmul dtype", lambda: quant.matmul(I32, I8), TypeError, r"X must be an int8 array, not int32"),
    ("matmul ndim", lambda: quant.matmul(I8_4D, I8), ValueError, r"X must have 2 dimensions, not shape"),
    ("matmul shapes", lambda: quant.matmul(I8, np.zeros((3, 2), np.int8)), ValueError,
     r"W must have 2 rows to match x of shape \(2, 2\), not shape \(3, 2\)"),
    ("conv2d dtype", lambda: quant.conv2d(I8_4D, W_4D.astype(np.int32)), TypeError,
     r"W must be an int8 array, not int32"),
    ("conv2d groups", lambda: quant.conv2d(I8_4D, W_4D, groups=0), ValueError,
     r"Groups must be between 1 and inf, not 0"),
    ("conv2d groups divide", lambda: quant.conv2d(np.zeros((1, 3, 3, 3), np.int8),
                                                  np.zeros((2, 3, 1, 1), np.int8), groups=2), ValueError,
     r"Groups must divide the input \(3\) and output \(2\) channels, not 2"),
    ("conv2d channels", lambda: quant.conv2d(I8_4D, np.zeros((1, 2, 3, 3), np.int8)), ValueError,
     r"W must have 1 input channels per group, not shape \(1, 2, 3, 3\)"),
    ("conv2d stride", lambda: quant.conv2d(I8_4D, W_4D, stride=0), ValueError,
     r"Stride must be between 1 and inf, not 0"),
    ("conv2d stride pair", lambda: quant.conv2d(I8_4D, W_4D, stride=(1, 1, 1)), ValueError,
     r"Stride must be an integer or a pair, not \(1, 1, 1\)"),
    ("conv2d pads", lambda: quant.conv2d(I8_4D, W_4D, pads=(1, 1)), ValueError,
     r"Pads must be an integer or \(top, left, bottom, right\), not \(1, 1\)"),
    ("conv2d negative pad", lambda: quant.conv2d(I8_4D, W_4D, pads=-1), ValueError,
     r"Pads must be between 0 and 255, not -1"),
    ("conv2d pad value", lambda: quant.conv2d(I8_4D, W_4D, pad_value=128), ValueError,
     r"Pad value must be between -128 and 127, not 128"),
    ("conv2d kernel", lambda: quant.conv2d(np.zeros((1, 1, 2, 2), np.int8), W_4D), ValueError,
     r"Kernel 3x3 is larger than the padded input \(2, 2\)"),
    ("fold_zero_point bias dtype", lambda: quant.fold_zero_point(np.zeros(1, np.int64), W_4D, 0), TypeError,
     r"Bias must be an int32 array, not int64"),
    ("fold_zero_point bias size", lambda: quant.fold_zero_point(np.zeros(2, np.int32), W_4D, 0), ValueError,
     r"Bias must have 1 values, one per output channel, not 2"),
    ("fold_zero_point zp", lambda: quant.fold_zero_point(None, W_4D, -129), ValueError,
     r"X zero point must be between -128 and 127, not -129"),
    ("fp32_requant_scale x", lambda: quant.fp32_requant_scale(-1.0, [0.1], 0.1), ValueError,
     r"X scale must be a positive finite float, not -1.0"),
    ("fp32_requant_scale y", lambda: quant.fp32_requant_scale(0.1, [0.1], None), TypeError,
     r"Y scale must be a positive finite float, not None"),
    ("fp32_requant_scale w", lambda: quant.fp32_requant_scale(0.1, [0.1, 0.0], 0.1), ValueError,
     r"W scale must be positive finite floats, not \[0.1, 0.0\]"),
    ("requantize_fp32 acc", lambda: quant.requantize_fp32(I8, np.float32([1]), zero_point=0), TypeError,
     r"Acc must be an int32 array, not int8"),
    ("requantize_fp32 scale dtype", lambda: quant.requantize_fp32(I32, np.float64([1]), zero_point=0),
     TypeError, r"Scale must be float32, not float64"),
    ("requantize_fp32 scale finite", lambda: quant.requantize_fp32(I32, np.float32([np.inf]), zero_point=0),
     ValueError, r"Scale must be finite"),
    ("requantize_fp32 scale count", lambda: quant.requantize_fp32(I32, np.float32([1, 1, 1]), zero_point=0),
     ValueError, r"Scale must have 1 or 2 values \(axis -1\), not 3"),
    ("requantize_fp32 zp", lambda: quant.requantize_fp32(I32, np.float32([1]), zero_point=200), ValueError,
     r"Zero point must be between -128 and 127, not 200"),
    ("requantize_fp32 range", lambda: quant.requantize_fp32(I32, np.float32([1]), zero_point=0, qmin=5,
                                                            qmax=4), ValueError,
     r"Output minimum must not exceed its maximum, not 5 > 4"),
    ("requantize_fp32 axis", lambda: quant.requantize_fp32(I32, np.float32([1]), zero_point=0, axis=2),
     ValueError, r"Axis must be between -2 and 1, not 2"),
    ("quantize_multiplier type", lambda: quant.quantize_multiplier("0.5"), TypeError,
     r"Real multiplier must be a float, not '0.5'"),
    ("quantize_multiplier negative", lambda: quant.quantize_multiplier(-0.5), ValueError,
     r"Real multiplier must be a non-negative finite float, not -0.5"),
    ("quantize_multiplier large", lambda: quant.quantize_multiplier(2.0 ** 30), ValueError,
     r"Real multiplier must be below 2\^30, not 1073741824.0"),
    ("srdhm a", lambda: quant.saturating_rounding_doubling_high_mul(np.zeros(2, np.int64), 1), TypeError,
     r"A must be an int32 array, not int64"),
    ("srdhm b range", lambda: quant.saturating_rounding_doubling_high_mul(I32, 1 << 31), ValueError,
     r"B must be between -2147483648 and 2147483647, not 2147483648"),
    ("srdhm b float", lambda: quant.saturating_rounding_doubling_high_mul(I32, 0.5), TypeError,
     r"B must be an integer or an integer array, not 0.5"),
    ("rdbp x", lambda: quant.rounding_divide_by_pot(I8, 1), TypeError, r"X must be an int32 array, not int8"),
    ("rdbp exponent", lambda: quant.rounding_divide_by_pot(I32, 32), ValueError,
     r"Exponent must be between 0 and 31, not 32"),
    ("rdbp exponent float", lambda: quant.rounding_divide_by_pot(I32, 1.5), TypeError,
     r"Exponent must be an integer or an integer array, not 1.5"),
    ("mbqm x", lambda: quant.multiply_by_quantized_multiplier(I8, 1, 0), TypeError,
     r"X must be an int32 array, not int8"),
    ("mbqm multiplier", lambda: quant.multiply_by_quantized_multiplier(I32, -1, 0), ValueError,
     r"Multiplier must be between 0 and 2147483647, not -1"),
    ("mbqm shift", lambda: quant.multiply_by_quantized_multiplier(I32, 1, 31), ValueError,
     r"Shift must be between -31 and 30, not 31"),
    ("mbqm multiplier float", lambda: quant.multiply_by_quantized_multiplier(I32, 0.5, 0), TypeError,
     r"Multiplier must be an integer or an integer array, not 0.5"),
    ("requantize_fixed acc", lambda: quant.requantize_fixed(I8, 1 << 30, 0, zero_point=0), TypeError,
     r"Acc must be an int32 array, not int8"),
    ("requantize_fixed zp", lambda: quant.requantize_fixed(I32, 1 << 30, 0, zero_point=-129), ValueError,
     r"Zero point must be between -128 and 127, not -129"),
    ("requantize_fixed channels", lambda: quant.requantize_fixed(I32, [1, 2, 3], 0, zero_point=0), ValueError,
     r"Multiplier must have 1 or 2 values \(axis -1\), not 3"),
    ("requantize_fixed shift", lambda: quant.requantize_fixed(I32, 1 << 30, -32, zero_point=0), ValueError,
     r"Shift must be between -31 and 30, not -32"),
    ("requantize_fixed shift float", lambda: quant.requantize_fixed(I32, 1 << 30, 1.0, zero_point=0),
     TypeError, r"Shift must be an integer or an integer array, not 1.0"),
    ("fma_f32 type", lambda: quant.fma_f32("1", F32, F32), TypeError,
     r"X must be a real number or array, not '1'"),
    ("fma_f32 y shape", lambda: quant.fma_f32(np.zeros(2), np.zeros(3), F32), ValueError,
     r"Y must broadcast with x of shape \(2,\), not shape \(3,\)"),
    ("fma_f32 z shape", lambda: quant.fma_f32(np.zeros((2, 1)), np.zeros(3), np.zeros(4)), ValueError,
     r"Z must broadcast with x \* y of shape \(2, 3\), not shape \(4,\)"),
    ("add_fp32_params scale", lambda: quant.add_fp32_params(**{**FP32_ADD, "c_scale": 0.0}), ValueError,
     r"C scale must be a positive finite float, not 0.0"),
    ("add_fp32_params zp", lambda: quant.add_fp32_params(**{**FP32_ADD, "b_zero_point": 256}), ValueError,
     r"B zero point must be between -128 and 255, not 256"),
    ("add_fp32 dtype", lambda: quant.add_fp32(I32, I8, F32, F32, F32, qmin=-128, qmax=127), TypeError,
     r"A must be an int8 or uint8 array, not int32"),
    ("add_fp32 b dtype", lambda: quant.add_fp32(I8, [1], F32, F32, F32, qmin=-128, qmax=127), TypeError,
     r"B must be an int8 or uint8 array, not <class 'list'>"),
    ("add_fp32 shape", lambda: quant.add_fp32(I8, np.zeros(4, np.int8), F32, F32, F32, qmin=-128, qmax=127),
     ValueError, r"B must have the shape of a \(2, 2\), not \(4,\)"),
    ("add_fp32 qmax", lambda: quant.add_fp32(I8, I8, F32, F32, F32, qmin=0, qmax=256), ValueError,
     r"Qmax must be between 0 and 255, not 256"),
    ("add_fixed_params", lambda: quant.add_fixed_params(a_scale=0.1, b_scale=-0.1, c_scale=0.1), ValueError,
     r"B scale must be a positive finite float, not -0.1"),
    ("add_fixed dtype", lambda: quant.add_fixed(I8, I8.astype(np.uint8), **ADD_ZPS, **ADD_PARAMS), TypeError,
     r"B must be an int8 array, not uint8"),
    ("add_fixed shape", lambda: quant.add_fixed(I8, np.zeros(4, np.int8), **ADD_ZPS, **ADD_PARAMS),
     ValueError,
     r"B must have the shape of a \(2, 2\), not \(4,\)"),
    ("add_fixed left shift", lambda: quant.add_fixed(I8, I8, **ADD_ZPS, **{**ADD_PARAMS, "left_shift": 25}),
     ValueError, r"Left shift must be between 0 and 24, not 25"),
    ("add_fixed zp", lambda: quant.add_fixed(I8, I8, **{**ADD_ZPS, "c_zero_point": 128}, **ADD_PARAMS),
     ValueError, r"C zero point must be between -128 and 127, not 128"),
    ("add_fixed range", lambda: quant.add_fixed(I8, I8, qmin=1, qmax=0, **ADD_ZPS, **ADD_PARAMS), ValueError,
     r"Output minimum must not exceed its maximum, not 1 > 0"),
    ("add_fixed shift", lambda: quant.add_fixed(I8, I8, **ADD_ZPS, **{**ADD_PARAMS, "out_shift": 31}),
     ValueError, r"Shift must be between -31 and 30, not 31"),
    ("max_pool2d dtype", lambda: quant.max_pool2d(I8_4D.astype(np.uint8), kernel=2), TypeError,
     r"X must be an int8 array, not uint8"),
    ("max_pool2d kernel", lambda: quant.max_pool2d(I8_4D, kernel=0), ValueError,
     r"Kernel must be between 1 and inf, not 0"),
    ("max_pool2d pads", lambda: quant.max_pool2d(I8_4D, kernel=2, pads=2), ValueError,
     r"Pads must be smaller than the kernel \(2, 2\), not \(2, 2, 2, 2\)"),
    ("max_pool2d too large", lambda: quant.max_pool2d(I8_4D, kernel=4), ValueError,
     r"Kernel 4x4 is larger than the padded input \(3, 3\)"),
    ("sum_pool2d ndim", lambda: quant.sum_pool2d(I8, kernel=2), ValueError,
     r"X must have 4 dimensions, not shape \(2, 2\)"),
    ("sum_pool2d pad value", lambda: quant.sum_pool2d(I8_4D, kernel=2, pad_value=-200), ValueError,
     r"Pad value must be between -128 and 127, not -200"),
    ("sum_pool2d too large", lambda: quant.sum_pool2d(I8_4D, kernel=(1, 5), pads=(0, 1, 0, 0)), ValueError,
     r"Kernel 1x5 is larger than the padded input \(3, 4\)"),
    ("global_average_pool_scale count", lambda: quant.global_average_pool_scale(x_scale=0.1, y_scale=0.1,
                                                                               count=0),
     ValueError, r"Count must be between 1 and inf, not 0"),
    ("global_average_pool_scale scale", lambda: quant.global_average_pool_scale(x_scale=0.1, y_scale=np.inf,
                                                                               count=4),
     ValueError, r"Y scale must be a positive finite float, not inf"),
]


@pytest.mark.parametrize(("call", "error", "pattern"), [case[1:] for case in BAD_INPUTS],
                         ids=[case[0] for case in BAD_INPUTS])
def test_bad_inputs(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_every_public_function_has_a_bad_input_test():
    tested = {case[0].split()[0] for case in BAD_INPUTS}
    aliases = {"srdhm": "saturating_rounding_doubling_high_mul", "rdbp": "rounding_divide_by_pot",
               "mbqm": "multiply_by_quantized_multiplier"}
    tested = {aliases.get(name, name) for name in tested}
    public = {name for name in quant.__all__ if callable(getattr(quant, name))}
    public |= {"check_array", "check_int", "check_scale"}
    assert public - tested == set()
