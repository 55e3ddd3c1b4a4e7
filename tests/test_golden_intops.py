"""Integer-only softmax, GELU and layernorm (golden/intops.py) against float numpy.

The accuracy tests print the measured worst errors; run them with
``.venv/bin/python -m pytest -q -s tests/test_golden_intops.py -k accuracy`` to see the numbers
quoted in docs/integer_ops.md.
"""

import math
import re

import numpy as np
import pytest

from golden import intops
from golden.intops import (
    GELU_PARAM_COUNT,
    LAYERNORM_CONST_COUNT,
    SOFTMAX_PARAM_COUNT,
    gelu,
    gelu_params,
    layernorm,
    layernorm_params,
    softmax,
    softmax_params,
)

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
_erf = np.vectorize(math.erf, otypes=[np.float64])

# Bounds measured with the accuracy tests below (see docs/integer_ops.md).
SOFTMAX_LSB_BOUND = 1          # |int8 output - quantised float softmax|
SOFTMAX_REAL_BOUND = 0.001     # |dequantised output - float softmax| - output_scale / 2
GELU_LSB_BOUND = 1
GELU_REAL_BOUND = 0.0146       # the erf polynomial's own error, in real units
LAYERNORM_LSB_BOUND = 1
LAYERNORM_REAL_BOUND = 0.002   # in output steps, beyond the final rounding's 1/2


def quantise(real, scale, zero_point):
    """The float reference quantised like the integer ops: round, add zero point, saturate."""
    return np.clip(np.round(real / scale) + zero_point, -128, 127).astype(np.int64)


def float_softmax(real):
    e = np.exp(real - real.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def float_gelu(real):
    return real * 0.5 * (1.0 + _erf(real / math.sqrt(2.0)))


def float_layernorm(real, gamma, beta, epsilon):
    mean = real.mean(axis=-1, keepdims=True)
    var = ((real - mean) ** 2).mean(axis=-1, keepdims=True)
    return (real - mean) / np.sqrt(var + epsilon) * gamma + beta


def to_int32(real, scale):
    return np.clip(np.round(real / scale), INT32_MIN, INT32_MAX).astype(np.int32)


def real_error(y, real, scale, zero_point):
    """Worst |dequantised output - float| over the outputs that did not saturate, in real units."""
    y = y.astype(np.int64)
    inside = (y > -128) & (y < 127)
    return float(np.abs((y - zero_point) * scale - real)[inside].max(initial=0.0))


# --- softmax --------------------------------------------------------------------------------------

SOFTMAX_OUTPUTS = [(1 / 256, -128), (1 / 255, -128), (1 / 128, 0), (1 / 256, 0)]


@pytest.mark.parametrize("seed", range(4))
def test_softmax_accuracy_attention_scores(seed):
    rng = np.random.default_rng(seed)
    worst_lsb, worst_real = 0, 0.0
    for length in (1, 7, 64, 128, 384):
        for input_scale in (2.0 ** -12, 1e-4, 3.7e-3):
            for output_scale, zero_point in SOFTMAX_OUTPUTS:
                real = (rng.uniform(-10, 10, size=(6, length)) if length % 2
                        else np.clip(rng.normal(0, 3, size=(6, length)), -10, 10))
                x = to_int32(real, input_scale)
                params = softmax_params(input_scale=input_scale, output_scale=output_scale,
                                        output_zero_point=zero_point)
                y = softmax(x, params)
                assert y.dtype == np.int8 and y.shape == x.shape
                ref = float_softmax(x.astype(np.float64) * input_scale)
                worst_lsb = max(worst_lsb, int(np.abs(y - quantise(ref, output_scale, zero_point))
                                               .max()))
                worst_real = max(worst_real,
                                 real_error(y, ref, output_scale, zero_point) - output_scale / 2)
    print(f"softmax seed {seed}: worst {worst_lsb} LSB, real error {worst_real:.5f} beyond rounding")
    assert worst_lsb <= SOFTMAX_LSB_BOUND
    assert worst_real <= SOFTMAX_REAL_BOUND


def test_softmax_extreme_int32_rows():
    """Differences up to 2**32 - 1 and every accepted input scale: the widths hold."""
    rng = np.random.default_rng(10)
    for input_scale in (2.0 ** -40, 1e-9, 20 / 2 ** 31, 1.0, 2.0 ** 10):
        x = rng.integers(INT32_MIN, INT32_MAX, size=(32, 50), endpoint=True).astype(np.int32)
        x[:, 0], x[:, 1] = INT32_MIN, INT32_MAX
        x[:4] = rng.choice([INT32_MIN, INT32_MAX], size=(4, 50))
        params = softmax_params(input_scale=input_scale, output_scale=1 / 256,
                                output_zero_point=-128)
        ref = float_softmax(x.astype(np.float64) * input_scale)
        assert np.abs(softmax(x, params) - quantise(ref, 1 / 256, -128)).max() <= 1


@pytest.mark.parametrize("length", [1, 2, 3, 5, 7, 100, 1000])
def test_softmax_uniform_rows(length):
    params = softmax_params(input_scale=0.01, output_scale=1 / 256, output_zero_point=-128)
    for value in (INT32_MIN, -5, 0, 12345, INT32_MAX):
        y = softmax(np.full((2, length), value, dtype=np.int32), params)
        expected = min(127, math.floor(256 / length + 0.5) - 128)
        np.testing.assert_array_equal(y, np.full((2, length), expected, dtype=np.int8))


@pytest.mark.parametrize("output_scale, zero_point, top", [
    (1 / 255, -128, 127), (1 / 256, -128, 127), (1 / 128, 0, 127), (1 / 200, -128, 72),
    (1 / 100, 0, 100),
])
def test_softmax_one_dominant_value(output_scale, zero_point, top):
    rng = np.random.default_rng(11)
    input_scale = 1e-3
    params = softmax_params(input_scale=input_scale, output_scale=output_scale,
                            output_zero_point=zero_point)
    for length in (1, 2, 10, 768):
        x = to_int32(rng.uniform(-5, 5, size=(3, length)), input_scale)
        winner = rng.integers(length, size=3)
        x[np.arange(3), winner] = to_int32(np.full(3, 25.0), input_scale)  # 20+ above the rest
        y = softmax(x, params)
        assert np.all(y[np.arange(3), winner] == top)
        y[np.arange(3), winner] = zero_point
        assert np.all(y == zero_point)


def test_softmax_rows_of_length_one():
    x = np.array([[INT32_MIN], [0], [INT32_MAX]], dtype=np.int32)
    for output_scale, zero_point, expected in [(1 / 255, -128, 127), (1 / 256, -128, 127),
                                               (1 / 64, 10, 74), (1.0, -50, -49)]:
        params = softmax_params(input_scale=0.5, output_scale=output_scale,
                                output_zero_point=zero_point)
        np.testing.assert_array_equal(softmax(x, params), np.full((3, 1), expected, np.int8))


def test_softmax_accuracy_two_element_rows():
    """Rows [0, -d] give p = 1 / (1 + exp(d)): every fraction of the exponent, finely resolved."""
    input_scale = 2.0 ** -16
    d = np.arange(0, 12 << 16, 97)
    x = np.stack([np.zeros_like(d), -d], axis=-1).astype(np.int32)
    ref = float_softmax(x * input_scale)
    worst = 0.0
    for output_scale in (1 / 256, 2.0 ** -10):
        params = softmax_params(input_scale=input_scale, output_scale=output_scale,
                                output_zero_point=-128)
        worst = max(worst, real_error(softmax(x, params), ref, output_scale, -128)
                    - output_scale / 2)
    print(f"softmax two-element rows: real error {worst:.5f} beyond rounding")
    assert worst <= SOFTMAX_REAL_BOUND


def test_softmax_saturates_at_both_ends():
    rng = np.random.default_rng(12)
    x = to_int32(rng.uniform(-10, 10, size=(4, 32)), 1e-3)
    high = softmax(x, softmax_params(input_scale=1e-3, output_scale=1 / 256, output_zero_point=127))
    assert np.all(high == 127)
    # Tiny probabilities with zero point -128 stay at -128; nothing goes below it.
    x[:, 0] = to_int32(np.full(4, 30.0), 1e-3)
    low = softmax(x, softmax_params(input_scale=1e-3, output_scale=1 / 256,
                                    output_zero_point=-128))
    assert np.all(low[:, 1:] == -128) and np.all(low[:, 0] == 127)


def test_softmax_invariant_to_adding_a_constant():
    rng = np.random.default_rng(13)
    params = softmax_params(input_scale=2.0 ** -10, output_scale=1 / 256, output_zero_point=-128)
    x = rng.integers(-10_000, 10_000, size=(50, 64)).astype(np.int32)
    y = softmax(x, params)
    for shift in (1, -7, 123_456, -(2 ** 30), INT32_MAX - 10_000):
        np.testing.assert_array_equal(softmax((x.astype(np.int64) + shift).astype(np.int32),
                                              params), y)


def test_softmax_permutation_equivariant_and_monotonic():
    rng = np.random.default_rng(14)
    params = softmax_params(input_scale=3e-3, output_scale=1 / 255, output_zero_point=-128)
    x = to_int32(rng.normal(0, 3, size=(40, 100)), 3e-3)
    y = softmax(x, params)
    perm = rng.permutation(100)
    np.testing.assert_array_equal(softmax(x[:, perm], params), y[:, perm])
    order = np.argsort(x, axis=-1, kind="stable")
    assert np.all(np.diff(np.take_along_axis(y, order, axis=-1).astype(np.int64), axis=-1) >= 0)


def test_softmax_outputs_sum_to_one():
    rng = np.random.default_rng(15)
    output_scale, zero_point, length = 1 / 255, -128, 16
    params = softmax_params(input_scale=1e-3, output_scale=output_scale,
                            output_zero_point=zero_point)
    x = to_int32(rng.normal(0, 2, size=(400, length)), 1e-3)
    sums = (softmax(x, params).astype(np.int64) - zero_point).sum(axis=-1)
    # Every row: at most 1/2 step of rounding per element, plus the approximation's share.
    assert np.all(np.abs(sums - 1 / output_scale) <= length / 2)
    # Round to nearest is unbiased: the mean of the sums is 255 within a fraction of a step
    # (a floor instead of round half up would be about 8 below).
    assert abs(sums.mean() - 1 / output_scale) < 0.5


def test_softmax_exponential_is_monotonic_and_accurate():
    """The Q30 exponential over 33 binades: non-increasing and within the stated ratio."""
    nv = np.arange(0, 33 << intops.SOFTMAX_FRAC_BITS, dtype=np.int64)
    e = intops._exp2_neg(nv)
    assert e[0] == 1 << 30
    assert np.all(np.diff(e) <= 0)
    assert np.all(e[32 << intops.SOFTMAX_FRAC_BITS:] == 0)
    head = nv < (12 << intops.SOFTMAX_FRAC_BITS)  # where the floor shift is still fine
    ratio = e[head] / np.exp2(30 - nv[head] / 2 ** intops.SOFTMAX_FRAC_BITS)
    assert ratio.max() / ratio.min() < 1.0054


# --- GELU -----------------------------------------------------------------------------------------

GELU_OUTPUTS = [(6.17 / 255, -121), (0.05, -125), (0.03, -100), (0.0146, -116)]


@pytest.mark.parametrize("seed", range(3))
def test_gelu_accuracy(seed):
    rng = np.random.default_rng(100 + seed)
    worst_lsb, worst_real = 0, 0.0
    for input_scale in (1e-3, 2.0 ** -20, 6 / 127, 0.37):
        real = rng.uniform(-6, 6, size=30_000)
        x = to_int32(real, input_scale)
        ref = float_gelu(x.astype(np.float64) * input_scale)
        for output_scale, zero_point in GELU_OUTPUTS:
            params = gelu_params(input_scale=input_scale, output_scale=output_scale,
                                 output_zero_point=zero_point)
            y = gelu(x, params)
            assert y.dtype == np.int8 and y.shape == x.shape
            worst_lsb = max(worst_lsb, int(np.abs(y - quantise(ref, output_scale, zero_point))
                                           .max()))
            worst_real = max(worst_real,
                             real_error(y, ref, output_scale, zero_point) - output_scale / 2)
    print(f"gelu seed {seed}: worst {worst_lsb} LSB, real error {worst_real:.5f} beyond rounding")
    assert worst_lsb <= GELU_LSB_BOUND
    assert worst_real <= GELU_REAL_BOUND


def test_gelu_accuracy_fine_output_scale():
    """With output steps of 2**-10 the error beyond rounding is the erf polynomial's own."""
    x = np.arange(-3000, 3001, dtype=np.int32)  # -3 .. 3 in steps of 1e-3
    params = gelu_params(input_scale=1e-3, output_scale=2.0 ** -10, output_zero_point=0)
    y = gelu(x, params)
    ref = float_gelu(x * 1e-3)
    error = real_error(y, ref, 2.0 ** -10, 0) - 2.0 ** -11
    print(f"gelu polynomial error: {error:.5f}")
    assert 0.010 < error <= GELU_REAL_BOUND  # the I-BERT form is not more accurate than this


def test_gelu_extreme_int32_inputs():
    rng = np.random.default_rng(101)
    x = rng.integers(INT32_MIN, INT32_MAX, size=5000, endpoint=True).astype(np.int32)
    x[:2] = INT32_MIN, INT32_MAX
    for input_scale in (2.0 ** -40, 1e-9, 1e-6, 1.0, 2.0 ** 10):
        for output_scale in (0.02, 1.0, 4.0):
            params = gelu_params(input_scale=input_scale, output_scale=output_scale,
                                 output_zero_point=0)
            ref = float_gelu(x.astype(np.float64) * input_scale)
            assert np.abs(gelu(x, params) - quantise(ref, output_scale, 0)).max() <= 1


def test_gelu_identity_for_large_inputs():
    # Power-of-two scales make every step exact: y = round_half_up(x / 64) + zp for x >= 2.59.
    params = gelu_params(input_scale=2.0 ** -8, output_scale=2.0 ** -2, output_zero_point=-100)
    x = np.arange(700, 20_000, 7, dtype=np.int32)
    expected = np.minimum(np.floor(x / 64 + 0.5) - 100, 127)
    np.testing.assert_array_equal(gelu(x, params), expected.astype(np.int8))


def test_gelu_zero_for_large_negative_inputs():
    params = gelu_params(input_scale=1e-3, output_scale=1e-3, output_zero_point=7)
    x = np.concatenate([np.arange(-2600, -100_000, -37), [INT32_MIN]]).astype(np.int32)
    assert np.all(gelu(x, params) == 7)
    assert gelu(np.zeros(3, np.int32), params).tolist() == [7, 7, 7]


def test_gelu_saturates_at_both_ends():
    params = gelu_params(input_scale=1e-3, output_scale=0.02, output_zero_point=-128)
    near_minimum = np.arange(-1200, -300, dtype=np.int32)  # gelu about -0.17: 8 steps below -128
    assert np.all(gelu(near_minimum, params) == -128)
    assert np.all(gelu(np.array([6000, 100_000, INT32_MAX], np.int32), params) == 127)
    params = gelu_params(input_scale=1e-3, output_scale=0.002, output_zero_point=0)
    y = gelu(np.array([-800, 800, 3000], np.int32), params)  # -0.17, 0.63, 3.0 real
    assert -93 < y[0] < -77 and y[1:].tolist() == [127, 127]  # -84.7 +- 0.0146 / 0.002


def test_gelu_monotonic_for_positive_inputs_and_sign():
    params = gelu_params(input_scale=1e-4, output_scale=0.01, output_zero_point=0)
    x = np.arange(-80_000, 80_000, dtype=np.int32)
    y = gelu(x, params).astype(np.int64)
    assert np.all(np.diff(y[x >= 0]) >= 0)
    assert np.all(y[x <= 0] <= 0) and np.all(y[x >= 0] >= 0)
    assert y.min() == round(-0.17 / 0.01)  # the minimum of GELU, -0.170 at -0.75


def test_gelu_keeps_any_shape():
    params = gelu_params(input_scale=1e-3, output_scale=0.05, output_zero_point=0)
    for shape in [(), (0,), (3, 0, 2), (2, 3, 4)]:
        y = gelu(np.full(shape, 1000, np.int32), params)
        assert y.shape == shape and y.dtype == np.int8


# --- layernorm ------------------------------------------------------------------------------------

def layernorm_case(rng, length, input_scale, rows=8, outlier=True):
    real = rng.normal(rng.uniform(-1, 1), rng.uniform(0.3, 3), size=(rows, length))
    if outlier and length > 4:
        real[:, rng.integers(length)] *= 40  # one outlier channel, as in BERT
    gamma = rng.normal(1, 0.3, length)
    beta = rng.normal(0, 0.5, length)
    return to_int32(real, input_scale), gamma, beta


@pytest.mark.parametrize("seed", range(4))
def test_layernorm_accuracy(seed):
    rng = np.random.default_rng(200 + seed)
    worst_lsb, worst_real = 0, 0.0
    for length in (64, 256, 768):
        for input_scale in (2.0 ** -16, 1e-4, 3e-3, 0.05):
            x, gamma, beta = layernorm_case(rng, length, input_scale)
            ref = float_layernorm(x * input_scale, gamma, beta, 1e-5)
            for output_scale, zero_point in [(0.05, 0), (np.abs(ref).max() / 127, -3)]:
                params = layernorm_params(input_scale=input_scale, gamma=gamma, beta=beta,
                                          output_scale=output_scale, output_zero_point=zero_point)
                assert params.dtype == np.int32
                assert params.shape == (LAYERNORM_CONST_COUNT + 2 * length,)
                y = layernorm(x, params)
                assert y.dtype == np.int8 and y.shape == x.shape
                worst_lsb = max(worst_lsb, int(np.abs(y - quantise(ref, output_scale, zero_point))
                                               .max()))
                worst_real = max(worst_real, real_error(y, ref, output_scale, zero_point)
                                 / output_scale - 0.5)
    print(f"layernorm seed {seed}: worst {worst_lsb} LSB, "
          f"{worst_real:.5f} output steps beyond rounding")
    assert worst_lsb <= LAYERNORM_LSB_BOUND
    assert worst_real <= LAYERNORM_REAL_BOUND


@pytest.mark.parametrize("input_scale", [1e-3, 1e-4, 1e-7, 1e-9])
def test_layernorm_accuracy_small_variance(input_scale):
    """Rows whose variance is near or below epsilon (the epsilon-dominated normalisation)."""
    rng = np.random.default_rng(210)
    worst = 0.0
    for length in (2, 16, 768):
        for sd in (1e-6, 1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 1.0):
            x = to_int32(rng.normal(0, sd, size=(8, length)), input_scale)
            gamma, beta = rng.normal(1, 0.3, length), rng.normal(0, 0.01, length)
            for epsilon in (1e-5, 1e-12):
                ref = float_layernorm(x * input_scale, gamma, beta, epsilon)
                output_scale = max(np.abs(ref).max() / 127, 1e-6)
                params = layernorm_params(input_scale=input_scale, gamma=gamma, beta=beta,
                                          output_scale=output_scale, output_zero_point=0,
                                          epsilon=epsilon)
                worst = max(worst, real_error(layernorm(x, params), ref, output_scale, 0)
                            / output_scale - 0.5)
    print(f"layernorm small variance, input scale {input_scale}: "
          f"{worst:.5f} output steps beyond rounding")
    assert worst <= LAYERNORM_REAL_BOUND


def test_layernorm_extreme_int32_rows():
    rng = np.random.default_rng(220)
    for length in (2, 3, 1000, 65536):
        x = rng.choice([INT32_MIN, INT32_MAX], size=(2, length)).astype(np.int32)
        x[0, 0], x[0, 1] = INT32_MIN, INT32_MAX
        if length > 3:
            x[1] = rng.integers(INT32_MIN, INT32_MAX, size=length, endpoint=True)
        ones, zeros = np.ones(length), np.zeros(length)
        for input_scale in (1.0, 1e-9):
            ref = float_layernorm(x.astype(np.float64) * input_scale, ones, zeros, 1e-5)
            output_scale = np.abs(ref).max() / 127
            params = layernorm_params(input_scale=input_scale, gamma=ones, beta=zeros,
                                      output_scale=output_scale, output_zero_point=0)
            assert np.abs(layernorm(x, params) - quantise(ref, output_scale, 0)).max() <= 1


@pytest.mark.parametrize("length", [1, 2, 64, 768])
def test_layernorm_constant_rows_give_beta(length):
    rng = np.random.default_rng(230)
    gamma = rng.normal(1, 0.3, length)
    beta = np.round(rng.uniform(-3, 3, length) / 0.05) * 0.05 + 0.01  # 0.2 steps from any tie
    params = layernorm_params(input_scale=1e-3, gamma=gamma, beta=beta, output_scale=0.05,
                              output_zero_point=4)
    expected = np.clip(np.round(beta / 0.05) + 4, -128, 127).astype(np.int8)
    for value in (INT32_MIN, -1, 0, 77, INT32_MAX):
        y = layernorm(np.full((3, length), value, np.int32), params)
        np.testing.assert_array_equal(y, np.broadcast_to(expected, (3, length)))


def test_layernorm_zero_gamma_gives_beta():
    rng = np.random.default_rng(231)
    x, _, beta = layernorm_case(rng, 96, 1e-3)
    params = layernorm_params(input_scale=1e-3, gamma=np.zeros(96), beta=beta, output_scale=0.03,
                              output_zero_point=-2)
    np.testing.assert_array_equal(layernorm(x, params),
                                  np.broadcast_to(quantise(beta, 0.03, -2), x.shape))


def test_layernorm_invariant_to_shift_and_power_of_two_scale():
    """Same real values, bit-identical output: x + c, and x * 2**j with input_scale / 2**j."""
    rng = np.random.default_rng(240)
    x, gamma, beta = layernorm_case(rng, 128, 1e-3, rows=20)
    params = layernorm_params(input_scale=1e-3, gamma=gamma, beta=beta, output_scale=0.04,
                              output_zero_point=0)
    y = layernorm(x, params)
    for shift in (1, -999, 1 << 20, -(1 << 28)):
        np.testing.assert_array_equal(layernorm(x + np.int32(shift), params), y)
    for j in (1, 2, 5):
        scaled = layernorm_params(input_scale=1e-3 / 2 ** j, gamma=gamma, beta=beta,
                                  output_scale=0.04, output_zero_point=0)
        np.testing.assert_array_equal(layernorm(x * np.int32(2 ** j), scaled), y)


def test_layernorm_saturates_at_both_ends():
    x = np.tile(np.arange(-32, 32, dtype=np.int32) * 1000, (2, 1))
    params = layernorm_params(input_scale=1e-3, gamma=np.full(64, 5.0), beta=np.zeros(64),
                              output_scale=0.02, output_zero_point=0)
    y = layernorm(x, params)
    assert np.all(y[:, :8] == -128) and np.all(y[:, -8:] == 127)
    assert np.all(np.diff(y.astype(np.int64), axis=-1) >= 0)


def test_isqrt_matches_math_isqrt():
    rng = np.random.default_rng(250)
    values = [0, 1, 2, 3, 4, 8, 15, 16, (1 << 62) - 1, 1 << 62, (1 << 63) - 1]
    roots = [1 << 31, 3037000499, 2 ** 16 + 1, 46341]
    values += [r * r + d for r in roots for d in (-1, 0, 1) if 0 <= r * r + d < 1 << 63]
    values += [int(v) >> int(s) for v, s in zip(rng.integers(0, (1 << 63) - 1, size=3000),
                                                rng.integers(0, 63, size=3000), strict=True)]
    n = np.array(values, dtype=np.int64)
    np.testing.assert_array_equal(intops._isqrt(n), [math.isqrt(v) for v in values])
    np.testing.assert_array_equal(intops._bit_length(np.abs(n)), [v.bit_length() for v in values])


# --- parameter layouts ----------------------------------------------------------------------------

def test_param_layouts():
    assert SOFTMAX_PARAM_COUNT == GELU_PARAM_COUNT == LAYERNORM_CONST_COUNT == 5
    # Mi / 2**Si = s * log2(e) * 2**15, Mo / 2**So = 1 / output_scale.
    params = softmax_params(input_scale=2.0 ** -8, output_scale=1 / 256, output_zero_point=-128)
    assert params.dtype == np.int32 and params.shape == (SOFTMAX_PARAM_COUNT,)
    assert params.tolist() == [round(math.log2(math.e) * 2 ** 30), 23, 1 << 30, 22, -128]
    # Mi / 2**Si = s * 2**20, Mo / 2**So = 1 / (output_scale * 2**20).
    params = gelu_params(input_scale=2.0 ** -8, output_scale=2.0 ** -2, output_zero_point=3)
    assert params.dtype == np.int32 and params.shape == (GELU_PARAM_COUNT,)
    assert params.tolist() == [1 << 30, 18, 1 << 30, 48, 3]
    # [L, Me, Ee, SG, zp, G.., B..]: Me * 2**Ee = eps * L**3 / s**2, G = gamma sqrt(L) / os * 2**SG.
    params = layernorm_params(input_scale=2.0 ** -10, gamma=np.array([1.0, -0.5, 2.0, 0.0]),
                              beta=np.array([0.0, 0.25, -1.0, 3.0]), output_scale=0.125,
                              output_zero_point=-7, epsilon=2.0 ** -10)
    assert params.dtype == np.int32
    # eps * 4**3 / 2**-20 = 2**16 = 2**30 * 2**-14; gamma steps [16, -8, 32, 0], beta steps
    # [0, 2, -8, 24]; the largest, 32 * 2**SG, must stay below 2**31: SG = 25.
    assert params.tolist() == [4, 1 << 30, -14, 25, -7,
                               16 << 25, -8 << 25, 32 << 25, 0,
                               0, 2 << 25, -8 << 25, 24 << 25]


def test_hardwired_constants():
    """The constants the RTL hard-wires (docs/integer_ops.md); changing them changes the spec."""
    assert (intops.SOFTMAX_EXP_A, intops.SOFTMAX_EXP_B, intops.SOFTMAX_EXP_C) == (
        357921223, 65535, 357921224)
    assert (intops.GELU_ERF_A, intops.GELU_ERF_B) == (553019989, 42415)
    assert intops.SOFTMAX_FRAC_BITS == 15 and intops.GELU_FRAC_BITS == 20


# --- bad input ------------------------------------------------------------------------------------

SM = softmax_params(input_scale=1e-3, output_scale=1 / 256, output_zero_point=-128)
GE = gelu_params(input_scale=1e-3, output_scale=0.05, output_zero_point=0)
LN = layernorm_params(input_scale=1e-3, gamma=np.ones(8), beta=np.zeros(8), output_scale=0.05,
                      output_zero_point=0)


@pytest.mark.parametrize("op, params", [(softmax, SM), (gelu, GE), (layernorm, LN)])
@pytest.mark.parametrize("x, message", [
    (np.zeros(8, np.float64), "X must be an int32 array, not float64"),
    (np.zeros(8, np.int64), "X must be an int32 array, not int64"),
    (np.zeros(8, np.int8), "X must be an int32 array, not int8"),
    ([0] * 8, "X must be an int32 array, not list"),
    (np.int32(3), "X must be an int32 array, not int32 scalar"),
])
def test_bad_x_dtype(op, params, x, message):
    with pytest.raises(TypeError, match=f"^{message}$"):
        op(x, params)


@pytest.mark.parametrize("op, params", [(softmax, SM), (layernorm, LN)])
@pytest.mark.parametrize("shape", [(), (3, 0), (1, 65537)])
def test_bad_row_shape(op, params, shape):
    with pytest.raises(ValueError, match="^X must have a last axis of length between 1 and 65536, "
                                         f"not shape {re.escape(str(shape))}$"):
        op(np.zeros(shape, np.int32), params)


@pytest.mark.parametrize("op, params, count, name", [
    (softmax, SM, SOFTMAX_PARAM_COUNT, "softmax"), (gelu, GE, GELU_PARAM_COUNT, "gelu"),
])
def test_bad_params(op, params, count, name):
    x = np.zeros((2, 8), np.int32)
    with pytest.raises(TypeError, match="^Params must be an int32 array, not float64$"):
        op(x, params.astype(np.float64))
    with pytest.raises(TypeError, match="^Params must be an int32 array, not list$"):
        op(x, params.tolist())
    with pytest.raises(ValueError,
                       match=rf"^Params must be a 1-D int32 array, not shape \(1, {count}\)$"):
        op(x, params[None])
    for bad in (params[:-1], np.append(params, np.int32(0))):
        with pytest.raises(ValueError, match=rf"^Params must have {count} int32 values for {name}, "
                                             rf"not {bad.size}$"):
            op(x, bad)
    for index, value in [(0, 5), (0, -(1 << 30)), (1, -1), (1, 63), (2, (1 << 30) - 1), (3, 0),
                         (3, 53), (4, 128), (4, -129)]:
        bad = params.copy()
        bad[index] = value
        with pytest.raises(ValueError, match=rf"^(Softmax|GELU) params\[{index}\] \(.*\) must be "
                                             rf"between -?\d+ and -?\d+, not {value}$"):
            op(x, bad)


def test_bad_layernorm_params():
    x = np.zeros((2, 8), np.int32)
    with pytest.raises(TypeError, match="^Params must be an int32 array, not float64$"):
        layernorm(x, LN.astype(np.float64))
    with pytest.raises(ValueError, match=r"^Params must be a 1-D int32 array, not shape \(1, 21\)$"):
        layernorm(x, LN[None])
    with pytest.raises(ValueError, match="^Params must have 21 int32 values for layernorm of rows "
                                         "of length 8, not 20$"):
        layernorm(x, LN[:-1])
    with pytest.raises(ValueError, match="^Params must have 21 int32 values for layernorm of rows "
                                         "of length 8, not 3$"):
        layernorm(x, LN[:3])
    with pytest.raises(ValueError, match=r"^X must have a last axis of length 8 \(the params' row "
                                         r"length\), not 9$"):
        layernorm(np.zeros((2, 9), np.int32), LN)
    for index, value in [(1, 0), (1, -5), (2, 1001), (3, -1), (3, 32), (4, 128)]:
        bad = LN.copy()
        bad[index] = value
        with pytest.raises(ValueError, match=rf"^Layernorm params\[{index}\] \(.*\) must be "
                                             rf"between -?\d+ and -?\d+, not {value}$"):
            layernorm(x, bad)


@pytest.mark.parametrize("make", [softmax_params, gelu_params])
def test_bad_softmax_and_gelu_scales(make):
    good = dict(input_scale=1e-3, output_scale=0.01, output_zero_point=0)
    for value in (-1.0, 0.0, 0, math.nan, math.inf, "1", None, True):
        with pytest.raises(ValueError, match=rf"^Input scale must be a positive finite float, "
                                             rf"not {re.escape(repr(value))}$"):
            make(**{**good, "input_scale": value})
        with pytest.raises(ValueError, match="^Output scale must be a positive finite float"):
            make(**{**good, "output_scale": value})
    with pytest.raises(ValueError, match=r"^Input scale must be between 2\*\*-40 and 2\*\*10, "
                                         r"not 2048.0$"):
        make(**{**good, "input_scale": 2048.0})
    with pytest.raises(ValueError, match=r"^Input scale must be between 2\*\*-40 and 2\*\*10, "):
        make(**{**good, "input_scale": 1e-13})
    with pytest.raises(ValueError, match=r"^Output scale must be between 2\*\*-16 and "):
        make(**{**good, "output_scale": 1e-6})
    with pytest.raises(ValueError, match=r"^Output scale must be between 2\*\*-16 and 2\*\*\d, "
                                         r"not 5.0$"):
        make(**{**good, "output_scale": 5.0})
    for value in (128, -129, 1.5, True, "0", None):
        with pytest.raises(ValueError, match=rf"^Output zero point must be an integer between -128 "
                                             rf"and 127, not {re.escape(repr(value))}$"):
            make(**{**good, "output_zero_point": value})


def test_softmax_output_scale_at_most_one():
    with pytest.raises(ValueError, match=r"^Output scale must be between 2\*\*-16 and 2\*\*0, "
                                         r"not 2.0$"):
        softmax_params(input_scale=1e-3, output_scale=2.0, output_zero_point=0)
    assert gelu_params(input_scale=1e-3, output_scale=2.0, output_zero_point=0)[3] == 51


def test_bad_layernorm_arguments():
    ones, zeros = np.ones(8), np.zeros(8)
    good = dict(input_scale=1e-3, gamma=ones, beta=zeros, output_scale=0.05, output_zero_point=0)
    with pytest.raises(ValueError, match="^Input scale must be a positive finite float, not -1.0$"):
        layernorm_params(**{**good, "input_scale": -1.0})
    with pytest.raises(ValueError, match="^Output scale must be a positive finite float, not nan$"):
        layernorm_params(**{**good, "output_scale": math.nan})
    with pytest.raises(ValueError, match="^Output zero point must be an integer between -128 and "
                                         "127, not 300$"):
        layernorm_params(**{**good, "output_zero_point": 300})
    for value in (0.0, -1e-5, math.inf, "1e-5", None):
        with pytest.raises(ValueError, match="^Epsilon must be a positive finite float, not "):
            layernorm_params(**good, epsilon=value)
    with pytest.raises(TypeError, match="^Gamma must be a float array, not list$"):
        layernorm_params(**{**good, "gamma": [1.0] * 8})
    with pytest.raises(TypeError, match="^Beta must be a float array, not complex128$"):
        layernorm_params(**{**good, "beta": zeros.astype(complex)})
    with pytest.raises(ValueError, match=r"^Gamma must be a 1-D array of length between 1 and 65536, "
                                         r"not shape \(2, 4\)$"):
        layernorm_params(**{**good, "gamma": ones.reshape(2, 4)})
    with pytest.raises(ValueError, match=r"^Gamma must be a 1-D array of length between 1 and 65536, "
                                         r"not shape \(0,\)$"):
        layernorm_params(**{**good, "gamma": np.zeros(0)})
    with pytest.raises(ValueError, match=r"^Beta must have the shape of gamma \(8,\), not \(7,\)$"):
        layernorm_params(**{**good, "beta": np.zeros(7)})
    with pytest.raises(ValueError, match="^Beta must be finite, not containing nan$"):
        layernorm_params(**{**good, "beta": np.array([0.0] * 7 + [math.nan])})
    with pytest.raises(ValueError, match=r"^Gamma \* sqrt\(L\) and beta must be at most 2\*\*23 "
                                         r"output steps, not "):
        layernorm_params(**{**good, "gamma": ones * 1e6})
    with pytest.raises(ValueError, match=r"^Epsilon \* L\*\*3 / input scale\*\*2 must be between "):
        layernorm_params(**{**good, "input_scale": 1e-300})
    with pytest.raises(ValueError, match=r"^Epsilon \* L\*\*3 / input scale\*\*2 must be between "):
        layernorm_params(**{**good, "input_scale": 1e300})
