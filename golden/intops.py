"""Integer-only transformer operations (I-BERT style): softmax, GELU and layernorm.

These functions are the bit-exact specification of the vector unit's SOFTMAX, GELU and LAYERNORM
functions. Every step inside :func:`softmax`, :func:`gelu` and :func:`layernorm` is integer
arithmetic that is cheap in hardware: add, subtract, compare, multiply (at most 32 x 32 -> 64
bits), arithmetic shifts, a row maximum, a bitwise integer square root and at most one integer
division per row. Floats appear only in the host-side ``*_params`` functions, which turn scales
into int32 constants.

Conventions, used everywhere below:

- ``a >> n`` is an arithmetic shift right, i.e. floor(a / 2**n), also for negative ``a``.
- "Round" means round half up: ``(a + 2**(n-1)) >> n`` = floor(a / 2**n + 1/2).
- Outputs saturate to the int8 range -128..127 after the output zero point is added.
- Every int32 input value is accepted (no input range check is needed: the widths stated in
  ``docs/integer_ops.md`` hold for the whole int32 range). Rows may be 1 to 65536 long.

All intermediate values fit in a signed 64-bit integer; the golden model computes in int64.
See ``docs/integer_ops.md`` for the formulas, widths and measured accuracy.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = [
    "SOFTMAX_PARAM_COUNT", "GELU_PARAM_COUNT", "LAYERNORM_CONST_COUNT", "MAX_ROW_LENGTH",
    "softmax_params", "softmax", "gelu_params", "gelu", "layernorm_params", "layernorm",
]

#: Longest row softmax and layernorm accept (the widths in the docs assume this bound).
MAX_ROW_LENGTH = 1 << 16

# Multipliers from the host are normalised: 2**30 <= M < 2**31 (a positive int32 with bit 30
# set), so that every multiplier has 31 significant bits.
_MULT_MIN = 1 << 30
_MULT_MAX = (1 << 31) - 1

# --- softmax: hard-wired constants ----------------------------------------------------------------
#: Fraction bits of the base-2 exponent (``nv`` below): |x - max| * input_scale * log2(e) in Q15.
SOFTMAX_FRAC_BITS = 15
#: 2**-t for t = f / 2**15 in [0, 1) is approximated in Q30 by ((A * (B - f)**2) >> 31) + C, the
#: I-BERT second-order polynomial a * (t - b)**2 + c refitted for base 2 with b = B / 2**15, a =
#: 0.5 / (2b - 1) (so that p(1) = p(0) / 2: continuous and monotonic across the 2**-z steps) and
#: C chosen so that the polynomial is exactly 2**30 at f = 0. Minimax ratio error: 1.00529.
SOFTMAX_EXP_B = 65535
SOFTMAX_EXP_A = 357921223
SOFTMAX_EXP_C = 357921224
#: exp values are in Q30; e = 2**30 exactly for the row maximum.
SOFTMAX_EXP_BITS = 30
#: Shifts of the Q30 polynomial value by more than this give 0 (hardware: a 5-bit shifter).
SOFTMAX_MAX_SHIFT = 31

#: Number of int32 constants of :func:`softmax`:
#: [input multiplier, input shift, output multiplier, output shift, output zero point].
SOFTMAX_PARAM_COUNT = 5

# --- GELU: hard-wired constants -------------------------------------------------------------------
#: Fraction bits of the GELU input in real units (w = x * input_scale in Q20).
GELU_FRAC_BITS = 20
#: Fraction bits of the erf polynomial's argument (|w| >> 6 in Q14).
GELU_POLY_FRAC_BITS = 14
#: erf(v / sqrt 2) ~ sign(v) * (1 - a * (b - min(|v|, b))**2) with a = 0.12876, b = 2.5888 (the
#: I-BERT form, refitted to minimise the GELU error): B = round(b * 2**14), A = round(a * 2**32).
GELU_ERF_A_REAL = 0.12876
GELU_ERF_B_REAL = 2.5888
GELU_ERF_B = round(GELU_ERF_B_REAL * (1 << GELU_POLY_FRAC_BITS))  # 42415
GELU_ERF_A = round(GELU_ERF_A_REAL * (1 << 32))  # 553019989
#: The GELU gate (1 + erf) / 2 is in Q30.
GELU_GATE_BITS = 30

#: Number of int32 constants of :func:`gelu`:
#: [input multiplier, input shift, output multiplier, output shift, output zero point].
GELU_PARAM_COUNT = 5

# --- layernorm: hard-wired constants --------------------------------------------------------------
#: Deviations are normalised to 2**22 <= max |D'| < 2**23 (or smaller when epsilon dominates).
LAYERNORM_DEV_BITS = 23
#: The one division per row: R = 2**53 // max(isqrt(T), 2**22).
LAYERNORM_RECIP_BITS = 53
LAYERNORM_MIN_ROOT = 1 << 22
#: Normalised values t = (D' * R) >> 23 are in Q30 (|t| <= 2**30).
LAYERNORM_NORM_BITS = 30

#: Number of int32 constants of :func:`layernorm` before the per-element gamma and beta codes:
#: [row length L, epsilon mantissa, epsilon exponent, gamma/beta shift, output zero point].
LAYERNORM_CONST_COUNT = 5

_INT8_MIN, _INT8_MAX = -128, 127
_INPUT_SCALE_MIN_LOG2, _INPUT_SCALE_MAX_LOG2 = -40, 10


# --- argument checks ------------------------------------------------------------------------------

def _dtype_name(value) -> str:
    if isinstance(value, np.ndarray):
        return value.dtype.name
    if isinstance(value, np.generic):
        return f"{value.dtype.name} scalar"
    return type(value).__name__


def _check_int32_array(name: str, value) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.dtype != np.int32:
        raise TypeError(f"{name} must be an int32 array, not {_dtype_name(value)}")
    return value


def _check_rows(x) -> np.ndarray:
    _check_int32_array("X", x)
    if x.ndim == 0 or not 1 <= x.shape[-1] <= MAX_ROW_LENGTH:
        raise ValueError(f"X must have a last axis of length between 1 and {MAX_ROW_LENGTH}, "
                         f"not shape {x.shape}")
    return x


def _check_range(label: str, value: int, low: int, high: int):
    if not low <= value <= high:
        raise ValueError(f"{label} must be between {low} and {high}, not {value}")


def _check_params(params, count: int, op: str) -> list[int]:
    _check_int32_array("Params", params)
    if params.ndim != 1:
        raise ValueError(f"Params must be a 1-D int32 array, not shape {params.shape}")
    if params.size != count:
        raise ValueError(f"Params must have {count} int32 values for {op}, not {params.size}")
    return [int(v) for v in params]


def _check_scale(label: str, value, low_log2: int | None = None, high_log2: int | None = None,
                 ) -> float:
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value <= 0):
        raise ValueError(f"{label} must be a positive finite float, not {value!r}")
    value = float(value)
    low = 2.0 ** low_log2 if low_log2 is not None else 0.0
    high = 2.0 ** high_log2 if high_log2 is not None else math.inf
    if not low <= value <= high:
        raise ValueError(f"{label} must be between 2**{low_log2} and 2**{high_log2}, "
                         f"not {value!r}")
    return value


def _check_zero_point(value) -> int:
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
            or not _INT8_MIN <= value <= _INT8_MAX):
        raise ValueError(f"Output zero point must be an integer between {_INT8_MIN} and "
                         f"{_INT8_MAX}, not {value!r}")
    return int(value)


def _quantize_multiplier(value: float) -> tuple[int, int]:
    """(M, S) with 2**30 <= M < 2**31 and M / 2**S = value to 31 significant bits."""
    mantissa, exponent = math.frexp(value)  # value = mantissa * 2**exponent, 0.5 <= mantissa < 1
    multiplier = round(mantissa * (1 << 31))
    shift = 31 - exponent
    if multiplier == 1 << 31:
        multiplier >>= 1
        shift -= 1
    return multiplier, shift


def _saturate_int8(values, shape: tuple) -> np.ndarray:
    return np.asarray(np.clip(values, _INT8_MIN, _INT8_MAX)).astype(np.int8).reshape(shape)


# --- softmax --------------------------------------------------------------------------------------

def softmax_params(*, input_scale: float, output_scale: float, output_zero_point: int) -> np.ndarray:
    """The int32 constants of :func:`softmax`.

    ``[Mi, Si, Mo, So, zp]``: Mi / 2**Si = input_scale * log2(e) * 2**15 and Mo / 2**So =
    1 / output_scale, both multipliers normalised to 2**30 <= M < 2**31.

    Accepted: 2**-40 <= input_scale <= 2**10, 2**-16 <= output_scale <= 1, -128 <= zp <= 127.
    """
    input_scale = _check_scale("Input scale", input_scale, _INPUT_SCALE_MIN_LOG2,
                               _INPUT_SCALE_MAX_LOG2)
    output_scale = _check_scale("Output scale", output_scale, -16, 0)
    zero_point = _check_zero_point(output_zero_point)
    mi, si = _quantize_multiplier(input_scale * math.log2(math.e) * (1 << SOFTMAX_FRAC_BITS))
    mo, so = _quantize_multiplier(1.0 / output_scale)
    return np.array([mi, si, mo, so, zero_point], dtype=np.int32)


def _softmax_constants(params) -> tuple[int, int, int, int, int]:
    mi, si, mo, so, zp = _check_params(params, SOFTMAX_PARAM_COUNT, "softmax")
    _check_range("Softmax params[0] (input multiplier)", mi, _MULT_MIN, _MULT_MAX)
    _check_range("Softmax params[1] (input shift)", si, 0, 62)
    _check_range("Softmax params[2] (output multiplier)", mo, _MULT_MIN, _MULT_MAX)
    _check_range("Softmax params[3] (output shift)", so, 14, 30)
    _check_range("Softmax params[4] (output zero point)", zp, _INT8_MIN, _INT8_MAX)
    return mi, si, mo, so, zp


def _exp2_neg(nv: np.ndarray) -> np.ndarray:
    """2**(-nv / 2**15) in Q30 for nv >= 0 (int64): the integer exponential."""
    z = np.minimum(nv >> SOFTMAX_FRAC_BITS, SOFTMAX_MAX_SHIFT)   # integer part, 0..31
    f = nv & ((1 << SOFTMAX_FRAC_BITS) - 1)                       # fraction, 0..2**15-1
    h = SOFTMAX_EXP_B - f                                         # 32768..65535 (16 bits)
    poly = ((SOFTMAX_EXP_A * (h * h)) >> 31) + SOFTMAX_EXP_C     # 2**29 < poly <= 2**30
    return poly >> z


def softmax(x: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Integer softmax along the last axis: int32 (..., L) -> int8 (..., L).

    Per row, with [Mi, Si, Mo, So, zp] = params:

    1. m = max_j x_j;  nv_j = ((m - x_j) * Mi) >> Si      (|x - m| * s * log2 e in Q15, >= 0)
    2. z_j = min(nv_j >> 15, 31);  f_j = nv_j & 0x7fff
       e_j = (((A * (B - f_j)**2) >> 31) + C) >> z_j     (exp(x_j - m) in Q30, e = 2**30 at max)
    3. sum = sum_j e_j;  R = (Mo << 31) // sum            (the one division per row)
    4. y_j = saturate(((e_j * R + 2**(So + 30)) >> (So + 31)) + zp)
    """
    _check_rows(x)
    mi, si, mo, so, zp = _softmax_constants(params)
    xw = x.astype(np.int64)
    nv = ((xw.max(axis=-1, keepdims=True) - xw) * mi) >> si
    e = _exp2_neg(nv)
    total = e.sum(axis=-1, keepdims=True)
    recip = (mo << 31) // total
    shift = so + 31
    y = ((e * recip + (1 << (shift - 1))) >> shift) + zp
    return _saturate_int8(y, x.shape)


# --- GELU -----------------------------------------------------------------------------------------

def gelu_params(*, input_scale: float, output_scale: float, output_zero_point: int) -> np.ndarray:
    """The int32 constants of :func:`gelu`.

    ``[Mi, Si, Mo, So, zp]``: Mi / 2**Si = input_scale * 2**20 and Mo / 2**So =
    1 / (output_scale * 2**20), both multipliers normalised to 2**30 <= M < 2**31.

    Accepted: 2**-40 <= input_scale <= 2**10, 2**-16 <= output_scale <= 2**2, -128 <= zp <= 127.
    """
    input_scale = _check_scale("Input scale", input_scale, _INPUT_SCALE_MIN_LOG2,
                               _INPUT_SCALE_MAX_LOG2)
    output_scale = _check_scale("Output scale", output_scale, -16, 2)
    zero_point = _check_zero_point(output_zero_point)
    mi, si = _quantize_multiplier(input_scale * (1 << GELU_FRAC_BITS))
    mo, so = _quantize_multiplier(1.0 / (output_scale * (1 << GELU_FRAC_BITS)))
    return np.array([mi, si, mo, so, zero_point], dtype=np.int32)


def _gelu_constants(params) -> tuple[int, int, int, int, int]:
    mi, si, mo, so, zp = _check_params(params, GELU_PARAM_COUNT, "gelu")
    _check_range("GELU params[0] (input multiplier)", mi, _MULT_MIN, _MULT_MAX)
    _check_range("GELU params[1] (input shift)", si, 0, 62)
    _check_range("GELU params[2] (output multiplier)", mo, _MULT_MIN, _MULT_MAX)
    _check_range("GELU params[3] (output shift)", so, 34, 52)
    _check_range("GELU params[4] (output zero point)", zp, _INT8_MIN, _INT8_MAX)
    return mi, si, mo, so, zp


def gelu(x: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Integer GELU, elementwise: int32 (any shape) -> int8 (same shape).

    With [Mi, Si, Mo, So, zp] = params:

    1. w = clip((x * Mi) >> Si, -(2**31 - 1), 2**31 - 1)   (x * s in Q20)
    2. h = B - min(|w| >> 6, B);  P = (A * h**2) >> 31      ((1 - erf(|w| / sqrt 2)) / 2 in Q30)
    3. g = 2**30 - P if w >= 0 else P                       ((1 + erf(w / sqrt 2)) / 2 in Q30)
    4. t = (w * g) >> 30                                     (gelu(x * s) in Q20)
    5. y = saturate(((t * Mo + 2**(So - 1)) >> So) + zp)
    """
    _check_int32_array("X", x)
    mi, si, mo, so, zp = _gelu_constants(params)
    limit = (1 << 31) - 1
    w = np.clip((x.astype(np.int64) * mi) >> si, -limit, limit)
    shift = GELU_FRAC_BITS - GELU_POLY_FRAC_BITS
    h = GELU_ERF_B - np.minimum(np.abs(w) >> shift, GELU_ERF_B)
    p = (GELU_ERF_A * (h * h)) >> 31
    g = np.where(w >= 0, (1 << GELU_GATE_BITS) - p, p)
    t = (w * g) >> GELU_GATE_BITS
    y = ((t * mo + (1 << (so - 1))) >> so) + zp
    return _saturate_int8(y, x.shape)


# --- layernorm ------------------------------------------------------------------------------------

def _check_vector(label: str, value) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
        raise TypeError(f"{label} must be a float array, not {_dtype_name(value)}")
    if value.ndim != 1 or not 1 <= value.size <= MAX_ROW_LENGTH:
        raise ValueError(f"{label} must be a 1-D array of length between 1 and {MAX_ROW_LENGTH}, "
                         f"not shape {value.shape}")
    value = value.astype(np.float64)
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{label} must be finite, not containing {value[~np.isfinite(value)][0]}")
    return value


def layernorm_params(*, input_scale: float, gamma: np.ndarray, beta: np.ndarray,
                     output_scale: float, output_zero_point: int,
                     epsilon: float = 1e-5) -> np.ndarray:
    """The int32 constants of :func:`layernorm` for rows of length L = len(gamma).

    ``[L, Me, Ee, SG, zp, G_0..G_{L-1}, B_0..B_{L-1}]``:

    - Me * 2**Ee = epsilon * L**3 / input_scale**2 (2**30 <= Me < 2**31): epsilon in the units of
      the sum of squared deviations of L * x.
    - G_i = round(gamma_i * sqrt(L) / output_scale * 2**SG), B_i = round(beta_i / output_scale *
      2**SG): gamma and beta in output steps, fixed point with SG fraction bits, SG the largest
      value <= 31 for which every code fits in int32.

    Accepted: positive finite scales and epsilon, gamma * sqrt(L) and beta of at most 2**23
    output steps (so SG >= 7), 1 <= L <= 65536, -128 <= zp <= 127.
    """
    input_scale = _check_scale("Input scale", input_scale)
    output_scale = _check_scale("Output scale", output_scale)
    zero_point = _check_zero_point(output_zero_point)
    if (isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real)
            or not math.isfinite(epsilon) or epsilon <= 0):
        raise ValueError(f"Epsilon must be a positive finite float, not {epsilon!r}")
    gamma = _check_vector("Gamma", gamma)
    beta = _check_vector("Beta", beta)
    if beta.shape != gamma.shape:
        raise ValueError(f"Beta must have the shape of gamma {gamma.shape}, not {beta.shape}")
    length = gamma.size

    eps_units = float(epsilon) * float(length) ** 3 / input_scale / input_scale
    if not 2.0 ** -900 <= eps_units <= 2.0 ** 900:  # also catches overflow to inf and 0
        raise ValueError(f"Epsilon * L**3 / input scale**2 must be between 2**-900 and 2**900, "
                         f"not {eps_units!r}")
    eps_mult, eps_shift = _quantize_multiplier(eps_units)

    gamma_steps = gamma * math.sqrt(length) / output_scale
    beta_steps = beta / output_scale
    largest = max(float(np.abs(gamma_steps).max()), float(np.abs(beta_steps).max()))
    if largest > 2.0 ** 23:
        raise ValueError(f"Gamma * sqrt(L) and beta must be at most 2**23 output steps, "
                         f"not {largest!r}")
    shift = 31
    while True:
        g_codes = np.round(gamma_steps * 2.0 ** shift)
        b_codes = np.round(beta_steps * 2.0 ** shift)
        if max(np.abs(g_codes).max(), np.abs(b_codes).max()) <= _MULT_MAX:
            break
        shift -= 1
    head = np.array([length, eps_mult, -eps_shift, shift, zero_point], dtype=np.int64)
    return np.concatenate([head, g_codes.astype(np.int64), b_codes.astype(np.int64)]).astype(
        np.int32)


def _isqrt(n: np.ndarray) -> np.ndarray:
    """floor(sqrt(n)) of int64 values 0 <= n < 2**63, by the bitwise (digit-by-digit) method.

    32 fixed steps, each a compare, a subtract and shifts: what the hardware does.
    """
    rem = n.astype(np.uint64)
    root = np.zeros_like(rem)
    bit = np.uint64(1 << 62)
    for _ in range(32):
        trial = root + bit
        take = rem >= trial
        rem = np.where(take, rem - trial, rem)
        root = np.where(take, (root >> np.uint64(1)) + bit, root >> np.uint64(1))
        bit >>= np.uint64(2)
    return root.astype(np.int64)


def _bit_length(values: np.ndarray) -> np.ndarray:
    """Number of significant bits of non-negative int64 values (0 for 0): a priority encoder."""
    length = np.zeros(values.shape, dtype=np.int64)
    rest = values.copy()
    for step in (32, 16, 8, 4, 2, 1):
        big = rest >= (np.int64(1) << step)
        length += np.where(big, step, 0)
        rest = np.where(big, rest >> step, rest)
    return length + (rest > 0)


def _layernorm_constants(params, length: int):
    _check_int32_array("Params", params)
    if params.ndim != 1:
        raise ValueError(f"Params must be a 1-D int32 array, not shape {params.shape}")
    if params.size < LAYERNORM_CONST_COUNT:
        raise ValueError(f"Params must have {LAYERNORM_CONST_COUNT + 2 * length} int32 values for "
                         f"layernorm of rows of length {length}, not {params.size}")
    row_length, eps_mult, eps_exp, shift, zp = (int(v) for v in params[:LAYERNORM_CONST_COUNT])
    if row_length != length:
        raise ValueError(f"X must have a last axis of length {row_length} (the params' row "
                         f"length), not {length}")
    if params.size != LAYERNORM_CONST_COUNT + 2 * length:
        raise ValueError(f"Params must have {LAYERNORM_CONST_COUNT + 2 * length} int32 values for "
                         f"layernorm of rows of length {length}, not {params.size}")
    _check_range("Layernorm params[1] (epsilon mantissa)", eps_mult, _MULT_MIN, _MULT_MAX)
    _check_range("Layernorm params[2] (epsilon exponent)", eps_exp, -1000, 1000)
    _check_range("Layernorm params[3] (gamma/beta shift)", shift, 0, 31)
    _check_range("Layernorm params[4] (output zero point)", zp, _INT8_MIN, _INT8_MAX)
    gamma = params[LAYERNORM_CONST_COUNT:LAYERNORM_CONST_COUNT + length].astype(np.int64)
    beta = params[LAYERNORM_CONST_COUNT + length:].astype(np.int64)
    return eps_mult, eps_exp, shift, zp, gamma, beta


def layernorm(x: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Integer layernorm along the last axis: int32 (..., L) -> int8 (..., L).

    Per row, with [L, Me, Ee, SG, zp, G.., B..] = params:

    1. S = sum_j x_j;  D_j = L * x_j - S                       (L * (x - mean), exact, |D| < 2**48)
    2. k = max(bitlen(max_j |D_j|) - 23, (Ee - 30) >> 1)       (normalisation shift, >= -23)
       D'_j = D_j << -k if k < 0 else D_j >> min(k, 63)        (|D'| <= 2**23)
    3. Q = sum_j D'_j**2;  e = Ee - 2k
       E = Me << e if e >= 0 else Me >> min(-e, 63)            (epsilon in units of D'**2)
       T = Q + E;  r = isqrt(T)                                (bitwise, floor)
    4. R = 2**53 // max(r, 2**22)                              (the one division per row)
    5. t_j = (D'_j * R) >> 23                                  ((x - mean) / sqrt(L (var + eps))
                                                                 in Q30, |t| <= 2**30)
    6. y_j = saturate(((t_j * G_j + (B_j << 30) + 2**(29 + SG)) >> (30 + SG)) + zp)
    """
    _check_rows(x)
    length = x.shape[-1]
    eps_mult, eps_exp, shift, zp, gamma, beta = _layernorm_constants(params, length)
    xw = x.astype(np.int64)
    dev = length * xw - xw.sum(axis=-1, keepdims=True)
    k_min = (eps_exp - 30) >> 1
    k = np.maximum(_bit_length(np.abs(dev).max(axis=-1, keepdims=True)) - LAYERNORM_DEV_BITS,
                   k_min)
    dev = np.where(k < 0, dev << np.maximum(-k, 0), dev >> np.clip(k, 0, 63))
    sum_sq = (dev * dev).sum(axis=-1, keepdims=True)
    e = eps_exp - 2 * k
    eps = np.where(e >= 0, eps_mult << np.clip(e, 0, 31), eps_mult >> np.clip(-e, 0, 63))
    root = _isqrt(sum_sq + eps)
    recip = (1 << LAYERNORM_RECIP_BITS) // np.maximum(root, LAYERNORM_MIN_ROOT)
    t = (dev * recip) >> LAYERNORM_DEV_BITS
    out_shift = LAYERNORM_NORM_BITS + shift
    y = ((t * gamma + (beta << LAYERNORM_NORM_BITS) + (1 << (out_shift - 1))) >> out_shift) + zp
    return _saturate_int8(y, x.shape)
