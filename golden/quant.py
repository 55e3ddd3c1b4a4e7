"""Bit-exact semantics of the NPU's quantised operations (numpy only).

Conventions (DESIGN section 3):

- Tensors are stored as int8. A uint8 tensor q with zero point zp is the int8 tensor q - 128 with
  zero point zp - 128 (:func:`uint8_to_int8`); matmul, convolution and requantisation are exactly
  the same computation in both domains. Only the fp32 elementwise add sees raw codes.
- Products int8 x int8 accumulate in int32 with two's-complement wrap-around, as the hardware does.
- Every function widens explicitly, checks its inputs and raises TypeError/ValueError naming the
  argument and the accepted range.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "INT8_MIN", "INT8_MAX", "uint8_to_int8", "int8_to_uint8", "wrap_int32",
    "matmul", "conv2d", "fold_zero_point", "fp32_requant_scale", "requantize_fp32",
    "quantize_multiplier", "saturating_rounding_doubling_high_mul", "rounding_divide_by_pot",
    "multiply_by_quantized_multiplier", "requantize_fixed", "fma_f32", "add_fp32_params",
    "add_fp32", "add_fixed_params", "add_fixed", "max_pool2d", "sum_pool2d",
    "global_average_pool_scale",
]

INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


# Argument checks -------------------------------------------------------------------------------

def _label(name: str) -> str:
    return name[0].upper() + name[1:]


def check_array(name: str, value, dtype, *, ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
    """Return ``value`` if it is an ndarray of ``dtype`` (and ``ndim``), else raise."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{_label(name)} must be a numpy array, not {type(value).__name__}")
    if value.dtype != np.dtype(dtype):
        raise TypeError(f"{_label(name)} must be an {np.dtype(dtype)} array, not {value.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if value.ndim not in allowed:
            raise ValueError(f"{_label(name)} must have {' or '.join(map(str, allowed))} "
                             f"dimensions, not shape {value.shape}")
    return value


def check_int(name: str, value, *, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{_label(name)} must be an integer, not {value!r}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        low = "-inf" if minimum is None else minimum
        high = "inf" if maximum is None else maximum
        raise ValueError(f"{_label(name)} must be between {low} and {high}, not {value!r}")
    return value


def check_scale(name: str, value) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{_label(name)} must be a positive finite float, not {value!r}")
    if not (math.isfinite(float(value)) and float(value) > 0):
        raise ValueError(f"{_label(name)} must be a positive finite float, not {value!r}")
    return float(value)


def _check_range(name: str, qmin: int, qmax: int):
    check_int(f"{name} minimum", qmin, minimum=INT8_MIN, maximum=INT8_MAX)
    check_int(f"{name} maximum", qmax, minimum=INT8_MIN, maximum=INT8_MAX)
    if qmin > qmax:
        raise ValueError(f"{_label(name)} minimum must not exceed its maximum, not {qmin} > {qmax}")


def _check_int_values(name: str, value, *, minimum: int, maximum: int) -> np.ndarray:
    """An integer (or integer array, not bool) with every value in [minimum, maximum], as int64."""
    if isinstance(value, int) and not isinstance(value, bool) and not minimum <= value <= maximum:
        raise ValueError(f"{_label(name)} must be between {minimum} and {maximum}, not {value!r}")
    values = np.asarray(value)
    if values.dtype == np.bool_ or not np.issubdtype(values.dtype, np.integer):
        raise TypeError(f"{_label(name)} must be an integer or an integer array, not {value!r}")
    if np.any(values < minimum) or np.any(values > maximum):
        raise ValueError(f"{_label(name)} must be between {minimum} and {maximum}, not {value!r}")
    return values.astype(np.int64)


def _check_window(kernel: tuple[int, int], padded_shape: tuple[int, ...]):
    if padded_shape[2] < kernel[0] or padded_shape[3] < kernel[1]:
        raise ValueError(f"Kernel {kernel[0]}x{kernel[1]} is larger than the padded input "
                         f"{padded_shape[2:]}")


# Domains --------------------------------------------------------------------------------------

def uint8_to_int8(q: np.ndarray) -> np.ndarray:
    """uint8 codes as the int8 tensor q - 128 (a zero point zp becomes zp - 128)."""
    check_array("q", q, np.uint8)
    return (q.astype(np.int16) - 128).astype(np.int8)


def int8_to_uint8(q: np.ndarray) -> np.ndarray:
    """The inverse of :func:`uint8_to_int8`."""
    check_array("q", q, np.int8)
    return (q.astype(np.int16) + 128).astype(np.uint8)


def wrap_int32(x: np.ndarray) -> np.ndarray:
    """Two's-complement wrap of an int64 array into int32 (what a 32-bit adder does)."""
    if not isinstance(x, (np.ndarray, np.integer)) or x.dtype == np.bool_ \
            or not np.issubdtype(x.dtype, np.integer):
        found = x.dtype if isinstance(x, (np.ndarray, np.generic)) else type(x).__name__
        raise TypeError(f"X must be an integer numpy array, not {found}")
    return x.astype(np.int64).astype(np.uint64).astype(np.uint32).view(np.int32).reshape(x.shape)


# Matmul and convolution -------------------------------------------------------------------------

def matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """int8 (M, K) @ int8 (K, N) accumulated in int32 (wrapping like the hardware)."""
    check_array("x", x, np.int8, ndim=2)
    check_array("w", w, np.int8, ndim=2)
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"W must have {x.shape[1]} rows to match x of shape {x.shape}, "
                         f"not shape {w.shape}")
    return wrap_int32(x.astype(np.int64) @ w.astype(np.int64))


def _pads4(pads) -> tuple[int, int, int, int]:
    if isinstance(pads, (int, np.integer)):
        pads = (pads,) * 4
    pads = tuple(pads)
    if len(pads) != 4:
        raise ValueError(f"Pads must be an integer or (top, left, bottom, right), not {pads!r}")
    return tuple(check_int("pads", p, minimum=0, maximum=255) for p in pads)


def _pair(name: str, value, *, minimum: int = 1) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2:
        raise ValueError(f"{_label(name)} must be an integer or a pair, not {value!r}")
    return tuple(check_int(name, v, minimum=minimum) for v in value)


def _pad_nchw(x: np.ndarray, pads, value: int) -> np.ndarray:
    top, left, bottom, right = pads
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def _windows(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """(N, C, OH, OW, KH, KW) view of the sliding windows of an NCHW array."""
    view = np.lib.stride_tricks.sliding_window_view(x, kernel, axis=(2, 3))
    return view[:, :, ::stride[0], ::stride[1]]


def conv2d(x: np.ndarray, w: np.ndarray, *, stride=1, pads=0, pad_value: int = 0,
           groups: int = 1) -> np.ndarray:
    """Raw int32 sums of an int8 NCHW input with int8 OIHW weights.

    The input is padded with ``pad_value`` (the input zero point, so that the zero-point
    correction of :func:`fold_zero_point` is exact at the borders). ``groups`` = channels gives a
    depthwise convolution. No bias, no zero-point correction.
    """
    check_array("x", x, np.int8, ndim=4)
    check_array("w", w, np.int8, ndim=4)
    groups = check_int("groups", groups, minimum=1)
    stride = _pair("stride", stride)
    pads = _pads4(pads)
    pad_value = check_int("pad value", pad_value, minimum=INT8_MIN, maximum=INT8_MAX)
    n, c, _, _ = x.shape
    o, cg, kh, kw = w.shape
    if c % groups or o % groups:
        raise ValueError(f"Groups must divide the input ({c}) and output ({o}) channels, "
                         f"not {groups}")
    if cg != c // groups:
        raise ValueError(f"W must have {c // groups} input channels per group, not shape {w.shape}")
    xp = _pad_nchw(x, pads, pad_value)
    if xp.shape[2] < kh or xp.shape[3] < kw:
        raise ValueError(f"Kernel {kh}x{kw} is larger than the padded input {xp.shape[2:]}")
    win = _windows(xp.astype(np.int64), (kh, kw), stride)  # N, C, OH, OW, KH, KW
    oh, ow = win.shape[2], win.shape[3]
    win = win.reshape(n, groups, cg, oh, ow, kh, kw)
    wg = w.astype(np.int64).reshape(groups, o // groups, cg, kh, kw)
    out = np.einsum("ngchwij,gocij->ngohw", win, wg, optimize=True)
    return wrap_int32(out.reshape(n, o, oh, ow))


def fold_zero_point(bias: np.ndarray | None, w: np.ndarray, x_zero_point: int) -> np.ndarray:
    """Host-side bias with the input zero point folded in: bias - zp_x * sum(w) per output.

    ``w`` is (O, ...) with the output channel first (OIHW for convolution, (N, K) for a
    transposed matmul weight); the sum runs over all other axes.
    """
    check_array("w", w, np.int8)
    x_zero_point = check_int("x zero point", x_zero_point, minimum=INT8_MIN, maximum=INT8_MAX)
    sums = w.reshape(w.shape[0], -1).astype(np.int64).sum(axis=1)
    if bias is None:
        bias = np.zeros(w.shape[0], np.int32)
    check_array("bias", bias, np.int32, ndim=1)
    if bias.shape[0] != w.shape[0]:
        raise ValueError(f"Bias must have {w.shape[0]} values, one per output channel, "
                         f"not {bias.shape[0]}")
    return wrap_int32(bias.astype(np.int64) - x_zero_point * sums)


# Requantisation, fp32 mode (onnxruntime) ---------------------------------------------------------

def fp32_requant_scale(x_scale, w_scale, y_scale) -> np.ndarray:
    """Per-channel float32 scale f32(f32(x_scale * w_scale[c]) / y_scale), in that order.

    This is the order onnxruntime's CPU kernels use; any other order (one rounding from float64,
    x * (w / y)) costs bit-exactness.
    """
    xs = np.float32(check_scale("x scale", x_scale))
    ys = np.float32(check_scale("y scale", y_scale))
    ws = np.atleast_1d(np.asarray(w_scale, dtype=np.float32))
    if ws.ndim != 1 or not np.all(np.isfinite(ws) & (ws > 0)):
        raise ValueError(f"W scale must be positive finite floats, not {w_scale!r}")
    return ((xs * ws).astype(np.float32) / ys).astype(np.float32)


def _broadcast_channel(name: str, values: np.ndarray, acc: np.ndarray, axis: int) -> np.ndarray:
    values = np.atleast_1d(values)
    if values.ndim != 1:
        raise ValueError(f"{_label(name)} must be a scalar or one value per channel, "
                         f"not shape {values.shape}")
    channels = acc.shape[axis]
    if values.shape[0] not in (1, channels):
        raise ValueError(f"{_label(name)} must have 1 or {channels} values (axis {axis}), "
                         f"not {values.shape[0]}")
    shape = [1] * acc.ndim
    shape[axis] = values.shape[0]
    return values.reshape(shape)


def requantize_fp32(acc: np.ndarray, scale, *, zero_point: int, qmin: int = INT8_MIN,
                    qmax: int = INT8_MAX, axis: int = -1) -> np.ndarray:
    """y = clip(round_half_to_even(float32(acc) * scale[c]) + zero_point, qmin, qmax) as int8.

    ``scale`` is float32, one value or one per channel along ``axis``. The product is one
    float32 multiplication (rounded to nearest even), then rounded to an integer half-to-even.
    """
    check_array("acc", acc, np.int32)
    scale = np.asarray(scale)
    if scale.dtype != np.float32:
        raise TypeError(f"Scale must be float32, not {scale.dtype}")
    if not np.all(np.isfinite(scale)):
        raise ValueError("Scale must be finite")
    zero_point = check_int("zero point", zero_point, minimum=INT8_MIN, maximum=INT8_MAX)
    _check_range("output", qmin, qmax)
    axis = check_int("axis", axis, minimum=-acc.ndim, maximum=acc.ndim - 1) if acc.ndim else 0
    s = _broadcast_channel("scale", scale, acc, axis) if acc.ndim else scale.reshape(())
    product = acc.astype(np.float32) * s  # float32 x float32 -> float32, rounded to nearest even
    rounded = np.rint(product).astype(np.float64) + zero_point
    return np.clip(rounded, qmin, qmax).astype(np.int8)


# Requantisation, fixed mode (TFLite / gemmlowp) --------------------------------------------------

def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: (int32 multiplier in [2^30, 2^31), shift) with
    real = multiplier * 2^(shift - 31). A positive shift is a left shift."""
    if isinstance(real_multiplier, bool) or not isinstance(real_multiplier, (int, float, np.floating)):
        raise TypeError(f"Real multiplier must be a float, not {real_multiplier!r}")
    real = float(real_multiplier)
    if not math.isfinite(real) or real < 0:
        raise ValueError(f"Real multiplier must be a non-negative finite float, not {real!r}")
    if real == 0.0:
        return 0, 0
    mantissa, shift = math.frexp(real)
    scaled = mantissa * (1 << 31)  # exact (a power-of-two scaling), at most 22 fraction bits
    q = math.floor(scaled + 0.5)  # std::round: half away from zero (scaled > 0); + 0.5 is exact
    if q == 1 << 31:
        q //= 2
        shift += 1
    if shift < -31:  # TFLite flushes multipliers this small to zero
        return 0, 0
    if shift > 30:
        raise ValueError(f"Real multiplier must be below 2^30, not {real!r}")
    return int(q), int(shift)


def saturating_rounding_doubling_high_mul(a: np.ndarray, b) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul on int32: (2ab + 2^31 nudge) / 2^32,
    dividing with truncation toward zero; INT32_MIN * INT32_MIN saturates to INT32_MAX."""
    check_array("a", a, np.int32)
    b = _check_int_values("b", b, minimum=INT32_MIN, maximum=INT32_MAX)
    a64 = a.astype(np.int64)
    ab = a64 * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    total = ab + nudge
    quotient = np.where(total >= 0, total >> 31, -((-total) >> 31))  # truncate toward zero
    overflow = (a64 == INT32_MIN) & (b == INT32_MIN)
    return np.where(overflow, INT32_MAX, quotient).astype(np.int32)


def rounding_divide_by_pot(x: np.ndarray, exponent) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: x / 2^exponent rounded half away from zero."""
    check_array("x", x, np.int32)
    exponent = _check_int_values("exponent", exponent, minimum=0, maximum=31)
    x64 = x.astype(np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x64 & mask
    threshold = (mask >> 1) + (x64 < 0)
    return ((x64 >> exponent) + (remainder > threshold)).astype(np.int32)


def multiply_by_quantized_multiplier(x: np.ndarray, multiplier, shift) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier:
    RoundingDivideByPOT(SRDHM(x << left_shift, multiplier), right_shift).

    The left shift wraps in 32 bits (the hardware's shifter); TFLite leaves that case undefined.
    """
    check_array("x", x, np.int32)
    multiplier = _check_int_values("multiplier", multiplier, minimum=0, maximum=INT32_MAX)
    shift = _check_int_values("shift", shift, minimum=-31, maximum=30)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    shifted = wrap_int32(x.astype(np.int64) << left)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier), right)


def requantize_fixed(acc: np.ndarray, multiplier, shift, *, zero_point: int,
                     qmin: int = INT8_MIN, qmax: int = INT8_MAX, axis: int = -1) -> np.ndarray:
    """y = clip(MultiplyByQuantizedMultiplier(acc, m[c], s[c]) + zero_point, qmin, qmax)."""
    check_array("acc", acc, np.int32)
    zero_point = check_int("zero point", zero_point, minimum=INT8_MIN, maximum=INT8_MAX)
    _check_range("output", qmin, qmax)
    multiplier = _check_int_values("multiplier", multiplier, minimum=0, maximum=INT32_MAX)
    shift = _check_int_values("shift", shift, minimum=-31, maximum=30)
    m = _broadcast_channel("multiplier", multiplier, acc, axis)
    s = _broadcast_channel("shift", shift, acc, axis)
    scaled = multiply_by_quantized_multiplier(acc, m, s).astype(np.int64)
    return np.clip(scaled + zero_point, qmin, qmax).astype(np.int8)


# Elementwise add with rescale -------------------------------------------------------------------

def _float32_operand(name: str, value) -> np.ndarray:
    values = np.asarray(value)
    if values.dtype.kind not in "iuf":
        raise TypeError(f"{_label(name)} must be a real number or array, not {value!r}")
    return values.astype(np.float32)


def fma_f32(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """float32 fused multiply-add x * y + z with a single rounding (to nearest even).

    ``x * y`` must be exact in float64 (true for an 8-bit integer times a float32). The sum is
    computed in float64 rounded to odd, which then rounds to float32 exactly once.
    Operands that are not float32 are first rounded to float32.
    """
    x, y, z = (_float32_operand(name, v) for name, v in (("x", x), ("y", y), ("z", z)))
    try:
        xy_shape = np.broadcast_shapes(x.shape, y.shape)
    except ValueError:
        raise ValueError(f"Y must broadcast with x of shape {x.shape}, not shape {y.shape}") from None
    try:
        np.broadcast_shapes(xy_shape, z.shape)
    except ValueError:
        raise ValueError(f"Z must broadcast with x * y of shape {xy_shape}, not shape {z.shape}") from None
    p = x.astype(np.float64) * y.astype(np.float64)
    z64 = z.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is +-inf, as in float32
        s = p + z64
        bp = s - z64
        err = (p - bp) + (z64 - (s - bp))  # TwoSum: s + err == p + z exactly
        even = (np.asarray(s).view(np.int64) & 1) == 0
        toward = np.where(err > 0, np.inf, -np.inf)
        s = np.where((err != 0) & even, np.nextafter(s, toward), s)
        return s.astype(np.float32)


def add_fp32_params(*, a_scale, a_zero_point: int, b_scale, b_zero_point: int, c_scale,
                    c_zero_point: int) -> tuple[np.float32, np.float32, np.float32]:
    """Host constants (SA, SB, F) of onnxruntime's QLinearAdd, on raw codes:
    SA = f32(a_scale / c_scale), SB = f32(b_scale / c_scale),
    F = f32(c_zp - fma(SA, a_zp, f32(SB * b_zp))). Zero points are raw codes (0..255 for uint8).
    """
    sa = np.float32(np.float32(check_scale("a scale", a_scale)) / np.float32(check_scale("c scale", c_scale)))
    sb = np.float32(np.float32(check_scale("b scale", b_scale)) / np.float32(c_scale))
    for name, zp in (("a zero point", a_zero_point), ("b zero point", b_zero_point),
                     ("c zero point", c_zero_point)):
        check_int(name, zp, minimum=INT8_MIN, maximum=255)
    sb_zb = np.float32(sb * np.float32(b_zero_point))
    inner = fma_f32(np.float32(a_zero_point), sa, sb_zb)
    f = np.float32(np.float32(c_zero_point) - inner)
    return sa, sb, f


def add_fp32(a: np.ndarray, b: np.ndarray, sa, sb, f, *, qmin: int, qmax: int) -> np.ndarray:
    """y = clip(round_half_to_even(fma(a, SA, fma(b, SB, F))), qmin, qmax) on raw codes.

    ``a`` and ``b`` are raw codes (int8 or uint8 arrays of the same shape); the result is an
    int32 array of raw output codes (the caller stores uint8 codes as code - 128).
    """
    if not isinstance(a, np.ndarray) or a.dtype not in (np.int8, np.uint8):
        raise TypeError(f"A must be an int8 or uint8 array, not {getattr(a, 'dtype', type(a))}")
    if not isinstance(b, np.ndarray) or b.dtype not in (np.int8, np.uint8):
        raise TypeError(f"B must be an int8 or uint8 array, not {getattr(b, 'dtype', type(b))}")
    if a.shape != b.shape:
        raise ValueError(f"B must have the shape of a {a.shape}, not {b.shape}")
    check_int("qmin", qmin, minimum=INT8_MIN, maximum=255)
    check_int("qmax", qmax, minimum=qmin, maximum=255)
    inner = fma_f32(b.astype(np.float32), np.float32(sb), np.float32(f))
    total = fma_f32(a.astype(np.float32), np.float32(sa), inner)
    # Clip in float: an infinite total (an overflowing inner sum) saturates by its sign.
    return np.clip(np.rint(total.astype(np.float64)), qmin, qmax).astype(np.int32)


ADD_FIXED_LEFT_SHIFT = 20


def add_fixed_params(*, a_scale, b_scale, c_scale) -> dict[str, int]:
    """TFLite's quantised-add constants (left_shift 20, multipliers below one)."""
    a_scale, b_scale, c_scale = (check_scale(n, v) for n, v in
                                 (("a scale", a_scale), ("b scale", b_scale), ("c scale", c_scale)))
    twice_max = 2 * max(a_scale, b_scale)
    ma, sa = quantize_multiplier(a_scale / twice_max)
    mb, sb = quantize_multiplier(b_scale / twice_max)
    mo, so = quantize_multiplier(twice_max / ((1 << ADD_FIXED_LEFT_SHIFT) * c_scale))
    return dict(left_shift=ADD_FIXED_LEFT_SHIFT, a_multiplier=ma, a_shift=sa, b_multiplier=mb,
                b_shift=sb, out_multiplier=mo, out_shift=so)


def add_fixed(a: np.ndarray, b: np.ndarray, *, a_zero_point: int, b_zero_point: int,
              c_zero_point: int, left_shift: int, a_multiplier: int, a_shift: int,
              b_multiplier: int, b_shift: int, out_multiplier: int, out_shift: int,
              qmin: int = INT8_MIN, qmax: int = INT8_MAX) -> np.ndarray:
    """TFLite AddElementwise on int8 codes (zero points in the same int8 domain)."""
    check_array("a", a, np.int8)
    check_array("b", b, np.int8)
    if a.shape != b.shape:
        raise ValueError(f"B must have the shape of a {a.shape}, not {b.shape}")
    left_shift = check_int("left shift", left_shift, minimum=0, maximum=24)
    for name, zp in (("a zero point", a_zero_point), ("b zero point", b_zero_point),
                     ("c zero point", c_zero_point)):
        check_int(name, zp, minimum=INT8_MIN, maximum=INT8_MAX)
    _check_range("output", qmin, qmax)
    shifted_a = wrap_int32((a.astype(np.int64) - a_zero_point) << left_shift)
    shifted_b = wrap_int32((b.astype(np.int64) - b_zero_point) << left_shift)
    scaled_a = multiply_by_quantized_multiplier(shifted_a, a_multiplier, a_shift)
    scaled_b = multiply_by_quantized_multiplier(shifted_b, b_multiplier, b_shift)
    raw_sum = wrap_int32(scaled_a.astype(np.int64) + scaled_b)
    out = multiply_by_quantized_multiplier(raw_sum, out_multiplier, out_shift).astype(np.int64)
    return np.clip(out + c_zero_point, qmin, qmax).astype(np.int8)


# Pooling ----------------------------------------------------------------------------------------

def max_pool2d(x: np.ndarray, *, kernel, stride=1, pads=0) -> np.ndarray:
    """Max over each window of an int8 NCHW tensor; padding never wins (ONNX MaxPool)."""
    check_array("x", x, np.int8, ndim=4)
    kernel = _pair("kernel", kernel)
    stride = _pair("stride", stride)
    pads = _pads4(pads)
    if max(pads[0], pads[2]) >= kernel[0] or max(pads[1], pads[3]) >= kernel[1]:
        raise ValueError(f"Pads must be smaller than the kernel {kernel}, not {pads}")
    # -128 never exceeds a real value, and every window holds at least one real value.
    xp = _pad_nchw(x, pads, INT8_MIN)
    _check_window(kernel, xp.shape)
    return _windows(xp, kernel, stride).max(axis=(4, 5))


def sum_pool2d(x: np.ndarray, *, kernel, stride=1, pads=0, pad_value: int = 0) -> np.ndarray:
    """Exact int32 window sums of an int8 NCHW tensor, padded with ``pad_value``.

    Average pooling is this sum minus count * zero point, requantised with the fp32 scale
    f32(s_in / (count * s_out)) (:func:`global_average_pool_scale`).
    """
    check_array("x", x, np.int8, ndim=4)
    kernel = _pair("kernel", kernel)
    stride = _pair("stride", stride)
    pads = _pads4(pads)
    pad_value = check_int("pad value", pad_value, minimum=INT8_MIN, maximum=INT8_MAX)
    xp = _pad_nchw(x.astype(np.int64), pads, pad_value)
    _check_window(kernel, xp.shape)
    return _windows(xp, kernel, stride).sum(axis=(4, 5)).astype(np.int32)


def global_average_pool_scale(*, x_scale, y_scale, count: int) -> np.float32:
    """The fp32 requantisation scale of an average over ``count`` values: f32(s_in / (N * s_out))."""
    count = check_int("count", count, minimum=1)
    return np.float32(np.float32(check_scale("x scale", x_scale))
                      / np.float32(np.float32(count) * np.float32(check_scale("y scale", y_scale))))
