"""golden/quant.py against onnxruntime's CPU kernels (DESIGN section 3, verification level 1).

Every test builds a one-operator ONNX model with ``onnx.helper``, runs it in onnxruntime on the
CPU with graph optimisations off, and compares the result bit for bit with a composition of the
golden functions. Expected values never come from golden alone: onnxruntime is the reference.

Random data alone rarely tells two float orders apart (a one-ulp difference in a scale moves an
output only when the product lies within a few millionths of a .5 boundary), so several tests
*construct* their data: they search for accumulators (or codes) on which plausible wrong orders
(``requant_variants``, ``add_variant``, ``gap_variants``) give a different answer from golden,
feed exactly those to onnxruntime, and assert both that golden matches onnxruntime and that every
wrong order does not. Those tests fail if golden rounds in another order, not only if it is
grossly wrong.

Caveat (onnxruntime's documentation, not checked here): on x86 CPUs with AVX2 but without VNNI,
the u8s8 kernels use VPMADDUBSW, which can saturate pairs of products in int16, so full-range
uint8 x int8 data may then differ from exact integer arithmetic. These tests were written and run
on a CPU with AVX512-VNNI.
"""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from golden import quant

F32 = np.float32
OPSET = 21
IR_VERSION = 10
DTYPES = [np.uint8, np.int8]
DTYPE_IDS = ["uint8", "int8"]


# onnxruntime plumbing ---------------------------------------------------------------------------

def run_onnx(nodes, feeds: dict[str, np.ndarray], initializers: dict[str, np.ndarray], out_dtype):
    """Run a graph of ``nodes`` (output "y") on the CPU, without graph optimisations."""
    nodes = nodes if isinstance(nodes, list) else [nodes]
    graph = helper.make_graph(
        nodes, "single_op",
        [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for name, v in feeds.items()],
        [helper.make_tensor_value_info("y", helper.np_dtype_to_tensor_dtype(np.dtype(out_dtype)), None)],
        [numpy_helper.from_array(np.asarray(v), name) for name, v in initializers.items()])
    model = helper.make_model(graph, ir_version=IR_VERSION, opset_imports=[
        helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)])
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    (y,) = session.run(None, feeds)
    assert y.dtype == np.dtype(out_dtype)
    return y


def qrange(dtype) -> tuple[int, int]:
    return (0, 255) if dtype == np.uint8 else (-128, 127)


def to_int8(codes: np.ndarray) -> np.ndarray:
    """The golden model's int8 domain: uint8 codes become q - 128 (DESIGN section 3)."""
    return quant.uint8_to_int8(codes) if codes.dtype == np.uint8 else codes


def zp_int8(zero_point: int, dtype) -> int:
    return int(zero_point) - 128 if dtype == np.uint8 else int(zero_point)


def from_int8(y: np.ndarray, dtype) -> np.ndarray:
    return quant.int8_to_uint8(y) if dtype == np.uint8 else y


def random_codes(rng, dtype, shape) -> np.ndarray:
    lo, hi = qrange(dtype)
    return rng.integers(lo, hi + 1, shape).astype(dtype)


def tie_count(acc: np.ndarray, scale: np.ndarray, axis: int) -> int:
    """Elements whose float32 product lands exactly on k + 0.5 (round-half-to-even matters)."""
    shape = [1] * acc.ndim
    shape[axis] = -1
    product = (acc.astype(F32) * np.asarray(scale, F32).reshape(shape)).astype(np.float64)
    return int(np.count_nonzero(product - np.floor(product) == 0.5))


def assert_mostly_unsaturated(y: np.ndarray):
    """Random-data tests must exercise the rounding, not only the clipping."""
    lo, hi = qrange(y.dtype)
    assert np.count_nonzero((y > lo) & (y < hi)) > y.size // 3


# Plausible wrong orders, used only to prove that constructed data tells them apart ---------------

def _scale_f64_once(xs, ws, ys):
    return (np.float64(xs) * np.asarray(ws, np.float64) / np.float64(ys)).astype(F32)


def _scale_x_times_w_over_y(xs, ws, ys):
    return (F32(xs) * (np.asarray(ws, F32) / F32(ys)).astype(F32)).astype(F32)


def _scale_x_over_y_times_w(xs, ws, ys):
    return (F32(F32(xs) / F32(ys)) * np.asarray(ws, F32)).astype(F32)


def _scale_reciprocal(xs, ws, ys):
    return ((F32(xs) * np.asarray(ws, F32)).astype(F32) * F32(F32(1) / F32(ys))).astype(F32)


ALT_SCALES = {"float64 rounded once": _scale_f64_once, "x * (w / y)": _scale_x_times_w_over_y,
              "(x / y) * w": _scale_x_over_y_times_w, "(x * w) * (1 / y)": _scale_reciprocal}


def requant_variant(acc: np.ndarray, scale: np.ndarray, zero_point: int, *, axis: int,
                    product: str = "float32", ties: str = "even") -> np.ndarray:
    """An independent numpy requantisation with a selectable product precision and tie rule."""
    shape = [1] * acc.ndim
    shape[axis] = -1
    scale = np.asarray(scale, F32).reshape(shape)
    if product == "float32":
        p = (acc.astype(F32) * scale).astype(np.float64)
    else:
        p = acc.astype(np.float64) * scale.astype(np.float64)
    rounded = np.rint(p) if ties == "even" else np.sign(p) * np.floor(np.abs(p) + 0.5)
    return np.clip(rounded + zero_point, -128, 127).astype(np.int8)


def requant_with(scale: np.ndarray, *, axis: int, product: str = "float32", ties: str = "even"):
    """f(acc, zero_point) requantising with a fixed scale and rule."""
    return lambda acc, zero_point: requant_variant(acc, scale, zero_point, axis=axis, product=product,
                                                   ties=ties)


def requant_variants(xs, ws, ys, *, axis: int):
    """name -> f(acc, zero_point) for every wrong order of the fp32 requantisation."""
    golden = quant.fp32_requant_scale(xs, ws, ys)
    variants = {name: requant_with(fn(xs, ws, ys), axis=axis) for name, fn in ALT_SCALES.items()}
    variants["product rounded in float64"] = requant_with(golden, axis=axis, product="float64")
    variants["ties away from zero"] = requant_with(golden, axis=axis, ties="away")
    return variants


def discriminating_accs(rng, scale: np.ndarray, variants_for, *, rows: int, limit: int):
    """(rows, C) int64 accumulators for output zero point 0. Per channel c: values on which some
    variant of ``variants_for(c)`` (functions of a (n, 1) accumulator) disagrees with golden,
    exact float32 ties, then random fill. Also returns how many discriminating values each
    variant has."""
    channels = scale.shape[0]
    acc = np.empty((rows, channels), np.int64)
    found = {}
    for c in range(channels):
        top = min(limit, int(127.4 / float(scale[c])))
        candidates = np.arange(-top, top + 1, dtype=np.int64)
        column = candidates[:, None]
        reference = quant.requantize_fp32(column.astype(np.int32), scale[c:c + 1], zero_point=0)[:, 0]
        picks = []
        for name, variant in variants_for(c).items():
            hits = candidates[variant(column, 0)[:, 0] != reference]
            found[name] = found.get(name, 0) + hits.size
            picks.extend(hits[:4].tolist())
        product = (candidates.astype(F32) * scale[c]).astype(np.float64)
        picks.extend(candidates[product - np.floor(product) == 0.5][:8].tolist())
        picks = picks[:rows]
        acc[:, c] = np.concatenate([picks, rng.choice(candidates, rows - len(picks))])
    return acc, found


def search_discriminating(draw, *, attempts: int = 150) -> list[dict]:
    """Draws (``draw(rng)``, seeded) that together separate every variant from golden: each kept
    draw separates at least one variant no earlier kept draw did."""
    rng = np.random.default_rng(1234)
    cases, covered = [], set()
    for _ in range(attempts):
        case = draw(rng)
        new = {name for name, count in case["found"].items() if count} - covered
        if new:
            cases.append(case)
            covered |= new
        if covered == set(case["found"]):
            return cases
    raise AssertionError(f"no draws separate {set(case['found']) - covered} from golden")


def count_rejections(variants, acc_int8_domain, y_ort_int8_domain, tally: dict[str, int]):
    """Add to ``tally`` how often each wrong order disagrees with onnxruntime on this data."""
    for name, variant in variants.items():
        differs = np.count_nonzero(variant(acc_int8_domain.astype(np.int64), 0) != y_ort_int8_domain)
        tally[name] = tally.get(name, 0) + differs


def assert_all_rejected(tally: dict[str, int]):
    assert tally and all(tally.values()), f"the data cannot tell golden from: {tally}"


# QLinearConv ------------------------------------------------------------------------------------

def onnx_qlinearconv(x, x_scale, x_zp, w, w_scale, y_scale, y_zp, bias, *, stride, pads, groups,
                     weights_initializer=True):
    dtype = x.dtype
    w_scale = np.asarray(w_scale, F32)
    initializers = dict(x_scale=F32(x_scale), x_zero_point=np.array(x_zp, dtype), w_scale=w_scale,
                        w_zero_point=np.zeros(w_scale.shape, np.int8), y_scale=F32(y_scale),
                        y_zero_point=np.array(y_zp, dtype))
    feeds = {"x": x}
    (initializers if weights_initializer else feeds)["w"] = w
    inputs = ["x", "x_scale", "x_zero_point", "w", "w_scale", "w_zero_point", "y_scale", "y_zero_point"]
    if bias is not None:
        initializers["bias"] = bias
        inputs.append("bias")
    node = helper.make_node("QLinearConv", inputs, ["y"], strides=[stride, stride], pads=list(pads),
                            group=groups, kernel_shape=list(w.shape[2:]))
    return run_onnx(node, feeds, initializers, dtype)


def conv_accumulator(x, x_zp, w, bias, *, stride, pads, groups) -> np.ndarray:
    """Golden int32 accumulator (int8 domain): conv with zero-point padding plus folded bias."""
    xz = zp_int8(x_zp, x.dtype)
    raw = quant.conv2d(to_int8(x), w, stride=stride, pads=pads, pad_value=xz, groups=groups)
    folded = quant.fold_zero_point(bias, w, xz)
    return quant.wrap_int32(raw.astype(np.int64) + folded.reshape(1, -1, 1, 1))


def golden_qlinearconv(x, x_scale, x_zp, w, w_scale, y_scale, y_zp, bias, *, stride, pads, groups):
    acc = conv_accumulator(x, x_zp, w, bias, stride=stride, pads=pads, groups=groups)
    scale = quant.fp32_requant_scale(x_scale, w_scale, y_scale)
    y = quant.requantize_fp32(acc, scale, zero_point=zp_int8(y_zp, x.dtype), axis=1)
    return from_int8(y, x.dtype)


CONV_CASES = {  # batch, in channels, height, width, out channels, kernel, stride, pads, groups
    "3x3_pad1": (1, 3, 6, 6, 4, 3, 1, (1, 1, 1, 1), 1),
    "3x3_s2_pad_bottom_right": (1, 5, 8, 8, 6, 3, 2, (0, 0, 1, 1), 1),
    "3x3_s2_pad_asymmetric": (1, 3, 9, 7, 5, 3, 2, (1, 2, 0, 1), 1),
    "1x1": (1, 7, 5, 5, 5, 1, 1, (0, 0, 0, 0), 1),
    "5x5_s2_pad2": (1, 3, 9, 9, 4, 5, 2, (2, 2, 2, 2), 1),
    "7x7_s2_pad3": (1, 3, 11, 11, 3, 7, 2, (3, 3, 3, 3), 1),
    "depthwise_3x3": (1, 6, 7, 7, 6, 3, 1, (1, 1, 1, 1), 6),
    "depthwise_s2_odd": (1, 5, 8, 8, 5, 3, 2, (1, 1, 1, 1), 5),
    "depthwise_multiplier2": (1, 3, 6, 6, 6, 3, 1, (1, 1, 1, 1), 3),
    "grouped": (1, 6, 5, 5, 4, 3, 1, (1, 1, 1, 1), 2),
    "batch2": (2, 3, 6, 6, 5, 3, 1, (1, 1, 1, 1), 1),
}


def random_conv(rng, dtype, case, *, per_channel):
    n, c, h, w_, o, k, stride, pads, groups = CONV_CASES[case]
    lo, hi = qrange(dtype)
    x = random_codes(rng, dtype, (n, c, h, w_))
    w = rng.integers(-128, 128, (o, c // groups, k, k)).astype(np.int8)
    x_zp, y_zp = int(rng.integers(lo, hi + 1)), int(rng.integers(lo + 64, hi - 63))
    x_scale = F32(rng.uniform(0.005, 0.05))
    w_scale = rng.uniform(0.001, 0.01, o).astype(F32) if per_channel else F32(rng.uniform(0.001, 0.01))
    acc_std = math.sqrt(c // groups * k * k) * 74.0 * 74.0  # std of (x - zp) * w summed over a window
    y_scale = F32(x_scale * float(np.median(w_scale)) * acc_std / 50.0)  # outputs spread, tails clip
    bias = rng.integers(-int(acc_std), int(acc_std), o).astype(np.int32)
    return dict(x=x, x_scale=x_scale, x_zp=x_zp, w=w, w_scale=w_scale, y_scale=y_scale, y_zp=y_zp,
                bias=bias, stride=stride, pads=pads, groups=groups)


@pytest.mark.parametrize("weights", ["initializer", "graph_input"])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_qlinearconv_random(case, dtype, per_channel, seed, weights):
    rng = np.random.default_rng([seed, list(CONV_CASES).index(case), int(per_channel), DTYPES.index(dtype)])
    args = random_conv(rng, dtype, case, per_channel=per_channel)
    y = onnx_qlinearconv(**args, weights_initializer=weights == "initializer")
    np.testing.assert_array_equal(y, golden_qlinearconv(**args))
    assert_mostly_unsaturated(y)


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_qlinearconv_rounding_ties(dtype, per_channel):
    """Power-of-two scales make every odd accumulator times 0.5 an exact tie."""
    rng = np.random.default_rng(7)
    lo, hi = qrange(dtype)
    x_zp, y_zp = (lo + hi + 1) // 2 + 3, (lo + hi + 1) // 2 - 5
    x = (x_zp + rng.integers(-4, 5, (2, 4, 6, 6))).astype(dtype)
    w = rng.integers(-4, 5, (6, 4, 3, 3)).astype(np.int8)
    w_scale = (F32(2.0) ** -rng.integers(2, 5, 6)).astype(F32) if per_channel else F32(0.125)
    args = dict(x=x, x_scale=F32(0.0625), x_zp=x_zp, w=w, w_scale=w_scale, y_scale=F32(2.0 ** -5), y_zp=y_zp,
                bias=rng.integers(-30, 30, 6).astype(np.int32), stride=1, pads=(1, 1, 1, 1), groups=1)
    y = onnx_qlinearconv(**args)
    np.testing.assert_array_equal(y, golden_qlinearconv(**args))
    acc = conv_accumulator(x, x_zp, w, args["bias"], stride=1, pads=(1, 1, 1, 1), groups=1)
    scale = quant.fp32_requant_scale(args["x_scale"], w_scale, args["y_scale"])
    assert tie_count(acc, scale, axis=1) > acc.size // 8
    away = requant_variant(acc, scale, zp_int8(y_zp, dtype), axis=1, ties="away")
    assert np.count_nonzero(from_int8(away, dtype) != y) > 0  # ties-away rounding would fail here


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_qlinearconv_saturates_both_ends(dtype):
    rng = np.random.default_rng(11)
    args = random_conv(rng, dtype, "3x3_pad1", per_channel=True)
    args["y_scale"] = F32(args["y_scale"] / 8)
    y = onnx_qlinearconv(**args)
    np.testing.assert_array_equal(y, golden_qlinearconv(**args))
    lo, hi = qrange(dtype)
    assert np.count_nonzero(y == lo) > 5 and np.count_nonzero(y == hi) > 5


def digit_inputs(acc: np.ndarray, parts: int) -> np.ndarray:
    """int8 digits d (..., parts) with acc = d[0] + 127 * (d[1] + ... + d[parts - 1])."""
    high = np.rint(acc / 127.0).astype(np.int64)
    digits = [acc - 127 * high]
    for _ in range(parts - 1):
        digit = np.clip(high, -128, 127)
        digits.append(digit)
        high = high - digit
    assert not np.any(high), "accumulator out of the digits' range"
    return np.stack(digits, axis=-1)


DIGIT_WEIGHTS = [1, 127, 127]
DIGIT_LIMIT = 127 * 127 * 2 + 63


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_qlinearconv_scale_order_constructed(dtype):
    """A grouped 1x1 convolution (three input channels per output, weights 1, 127, 127) puts a
    chosen accumulator at every output, so the accumulators can be ones where the scale order,
    the float32 product rounding and the tie rule all matter."""
    channels, positions = 16, 64

    def draw(rng):
        x_scale, y_scale = F32(rng.uniform(0.01, 0.05)), F32(rng.uniform(0.02, 0.2))
        w_scale = (rng.uniform(1.0, 2.0, channels) * float(y_scale / x_scale) * 0.004).astype(F32)
        scale = quant.fp32_requant_scale(x_scale, w_scale, y_scale)
        acc, found = discriminating_accs(
            rng, scale, lambda c: requant_variants(x_scale, w_scale[c:c + 1], y_scale, axis=-1),
            rows=positions, limit=DIGIT_LIMIT)
        return dict(x_scale=x_scale, w_scale=w_scale, y_scale=y_scale, acc=acc, found=found)

    tally = {}
    zero = 128 if dtype == np.uint8 else 0  # zero point 0 in the int8 domain
    w = np.tile(np.array(DIGIT_WEIGHTS, np.int8).reshape(1, 3, 1, 1), (channels, 1, 1, 1))
    for case in search_discriminating(draw):
        acc = case["acc"]  # (positions, channels)
        digits = digit_inputs(acc, len(DIGIT_WEIGHTS))  # (positions, channels, 3)
        x_int8 = digits.transpose(1, 2, 0).reshape(1, channels * 3, 8, 8).astype(np.int8)
        x = quant.int8_to_uint8(x_int8) if dtype == np.uint8 else x_int8
        args = dict(x=x, x_scale=case["x_scale"], x_zp=zero, w=w, w_scale=case["w_scale"],
                    y_scale=case["y_scale"], y_zp=zero, bias=None, stride=1, pads=(0, 0, 0, 0),
                    groups=channels)
        y = onnx_qlinearconv(**args)
        golden_acc = conv_accumulator(x, zero, w, None, stride=1, pads=(0, 0, 0, 0), groups=channels)
        np.testing.assert_array_equal(golden_acc.reshape(channels, positions).T, acc)  # construction check
        np.testing.assert_array_equal(y, golden_qlinearconv(**args))
        variants = requant_variants(case["x_scale"], case["w_scale"], case["y_scale"], axis=1)
        count_rejections(variants, golden_acc, to_int8(y), tally)
    assert_all_rejected(tally)


# QLinearMatMul and QGemm -------------------------------------------------------------------------

def golden_gemm(a, a_scale, a_zp, b_nk, b_scale, y_scale, y_zp, bias):
    """Golden int8-domain gemm: a (M, K) codes times b_nk (N, K) int8, bias (N,) or (M, N)."""
    az = zp_int8(a_zp, a.dtype)
    acc = quant.matmul(to_int8(a), np.ascontiguousarray(b_nk.T)).astype(np.int64)
    acc += quant.fold_zero_point(None, b_nk, az)[None, :]
    if bias is not None:
        acc += bias
    acc = quant.wrap_int32(acc)
    scale = quant.fp32_requant_scale(a_scale, b_scale, y_scale)
    y = quant.requantize_fp32(acc, scale, zero_point=zp_int8(y_zp, a.dtype), axis=-1)
    return acc, from_int8(y, a.dtype)


def onnx_qlinearmatmul(a, a_scale, a_zp, b_kn, b_scale, y_scale, y_zp):
    node = helper.make_node("QLinearMatMul", ["a", "a_scale", "a_zero_point", "b", "b_scale", "b_zero_point",
                                              "y_scale", "y_zero_point"], ["y"])
    return run_onnx(node, {"a": a}, dict(
        a_scale=F32(a_scale), a_zero_point=np.array(a_zp, a.dtype), b=b_kn, b_scale=F32(b_scale),
        b_zero_point=np.array(0, np.int8), y_scale=F32(y_scale), y_zero_point=np.array(y_zp, a.dtype)),
        a.dtype)


def onnx_qgemm(a, a_scale, a_zp, b_nk, b_scale, y_scale, y_zp, bias):
    b_scale = np.asarray(b_scale, F32)
    node = helper.make_node("QGemm", ["a", "a_scale", "a_zero_point", "b", "b_scale", "b_zero_point", "c",
                                      "y_scale", "y_zero_point"], ["y"], domain="com.microsoft", transB=1)
    return run_onnx(node, {"a": a}, dict(
        a_scale=F32(a_scale), a_zero_point=np.array(a_zp, a.dtype), b=b_nk, b_scale=b_scale,
        b_zero_point=np.zeros(b_scale.shape, np.int8), c=bias, y_scale=F32(y_scale),
        y_zero_point=np.array(y_zp, a.dtype)), a.dtype)


def random_gemm(rng, dtype, *, m, k, n, per_channel):
    lo, hi = qrange(dtype)
    a = random_codes(rng, dtype, (m, k))
    b_nk = rng.integers(-128, 128, (n, k)).astype(np.int8)
    a_zp, y_zp = int(rng.integers(lo, hi + 1)), int(rng.integers(lo + 64, hi - 63))
    a_scale = F32(rng.uniform(0.005, 0.05))
    b_scale = rng.uniform(0.001, 0.01, n).astype(F32) if per_channel else F32(rng.uniform(0.001, 0.01))
    acc_std = math.sqrt(k) * 74.0 * 74.0
    y_scale = F32(a_scale * float(np.median(b_scale)) * acc_std / 50.0)
    bias = rng.integers(-int(acc_std), int(acc_std), n).astype(np.int32)
    return dict(a=a, a_scale=a_scale, a_zp=a_zp, b_nk=b_nk, b_scale=b_scale, y_scale=y_scale, y_zp=y_zp,
                bias=bias)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_qlinearmatmul_random(dtype, seed):
    rng = np.random.default_rng([seed, 100, DTYPES.index(dtype)])
    args = random_gemm(rng, dtype, m=6, k=37, n=9, per_channel=False)
    y = onnx_qlinearmatmul(args["a"], args["a_scale"], args["a_zp"], np.ascontiguousarray(args["b_nk"].T),
                           args["b_scale"], args["y_scale"], args["y_zp"])
    _, expected = golden_gemm(**{**args, "bias": None})
    np.testing.assert_array_equal(y, expected)
    assert_mostly_unsaturated(y)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_qgemm_random(dtype, seed):
    rng = np.random.default_rng([seed, 200, DTYPES.index(dtype)])
    args = random_gemm(rng, dtype, m=5, k=33, n=7, per_channel=True)
    y = onnx_qgemm(**args)
    np.testing.assert_array_equal(y, golden_gemm(**args)[1])
    assert_mostly_unsaturated(y)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_qgemm_saturates_both_ends(dtype):
    rng = np.random.default_rng(5)
    args = random_gemm(rng, dtype, m=8, k=40, n=6, per_channel=True)
    args["y_scale"] = F32(args["y_scale"] / 8)
    y = onnx_qgemm(**args)
    np.testing.assert_array_equal(y, golden_gemm(**args)[1])
    lo, hi = qrange(dtype)
    assert np.count_nonzero(y == lo) > 3 and np.count_nonzero(y == hi) > 3


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_qgemm_requant_constructed(dtype):
    """A equal to its zero point makes the accumulator exactly the (M, N) int32 C input, so
    QGemm requantises any chosen accumulator: ties, and values that separate the orders."""
    channels, rows = 12, 64

    def draw(rng):
        a_scale, y_scale = F32(rng.uniform(0.01, 0.05)), F32(rng.uniform(0.02, 0.2))
        b_scale = (rng.uniform(1.0, 2.0, channels) * float(y_scale / a_scale) * 0.002).astype(F32)
        scale = quant.fp32_requant_scale(a_scale, b_scale, y_scale)
        acc, found = discriminating_accs(
            rng, scale, lambda c: requant_variants(a_scale, b_scale[c:c + 1], y_scale, axis=-1),
            rows=rows, limit=1 << 20)
        return dict(a_scale=a_scale, b_scale=b_scale, y_scale=y_scale, acc=acc, found=found)

    rng = np.random.default_rng(3)
    zero = 128 if dtype == np.uint8 else 0
    tally = {}
    for case in search_discriminating(draw):
        a_zp = int(rng.integers(*qrange(dtype)))
        args = dict(a=np.full((rows, 5), a_zp, dtype), a_scale=case["a_scale"], a_zp=a_zp,
                    b_nk=rng.integers(-128, 128, (channels, 5)).astype(np.int8), b_scale=case["b_scale"],
                    y_scale=case["y_scale"], y_zp=zero, bias=case["acc"].astype(np.int32))
        y = onnx_qgemm(**args)
        acc, expected = golden_gemm(**args)
        np.testing.assert_array_equal(acc, case["acc"])  # construction check
        np.testing.assert_array_equal(y, expected)
        variants = requant_variants(case["a_scale"], case["b_scale"], case["y_scale"], axis=-1)
        count_rejections(variants, acc, to_int8(y), tally)
    assert_all_rejected(tally)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_qlinearmatmul_requant_constructed(dtype):
    """Per-tensor scale; a block-diagonal B with weights 1, 127, 127 lets every (row, column) of A
    choose its accumulator."""
    columns, rows = 8, 64

    def draw(rng):
        a_scale, y_scale = F32(rng.uniform(0.01, 0.05)), F32(rng.uniform(0.02, 0.2))
        b_scale = F32(rng.uniform(1.0, 2.0) * float(y_scale / a_scale) * 0.004)
        scale = np.repeat(quant.fp32_requant_scale(a_scale, b_scale, y_scale), columns)
        acc, found = discriminating_accs(
            rng, scale, lambda c: requant_variants(a_scale, np.array([b_scale]), y_scale, axis=-1),
            rows=rows, limit=DIGIT_LIMIT)
        return dict(a_scale=a_scale, b_scale=b_scale, y_scale=y_scale, acc=acc, found=found)

    parts = len(DIGIT_WEIGHTS)
    zero = 128 if dtype == np.uint8 else 0
    b_nk = np.zeros((columns, columns * parts), np.int8)
    for col in range(columns):
        b_nk[col, col * parts:(col + 1) * parts] = DIGIT_WEIGHTS
    tally = {}
    for case in search_discriminating(draw):
        a_int8 = digit_inputs(case["acc"], parts).reshape(rows, columns * parts).astype(np.int8)
        a = quant.int8_to_uint8(a_int8) if dtype == np.uint8 else a_int8
        y = onnx_qlinearmatmul(a, case["a_scale"], zero, np.ascontiguousarray(b_nk.T), case["b_scale"],
                               case["y_scale"], zero)
        acc, expected = golden_gemm(a, case["a_scale"], zero, b_nk, case["b_scale"], case["y_scale"], zero,
                                    None)
        np.testing.assert_array_equal(acc, case["acc"])  # construction check
        np.testing.assert_array_equal(y, expected)
        variants = requant_variants(case["a_scale"], np.array([case["b_scale"]]), case["y_scale"], axis=-1)
        count_rejections(variants, acc, to_int8(y), tally)
    assert_all_rejected(tally)


# QLinearAdd ---------------------------------------------------------------------------------------

def code_grid(dtype) -> tuple[np.ndarray, np.ndarray]:
    """Every (a, b) pair of codes, as two (256, 256) arrays."""
    lo, _ = qrange(dtype)
    codes = np.arange(lo, lo + 256)
    return (np.repeat(codes, 256).reshape(256, 256).astype(dtype),
            np.tile(codes, 256).reshape(256, 256).astype(dtype))


def onnx_qlinearadd(a, b, p):
    dtype = a.dtype
    node = helper.make_node("QLinearAdd", ["a", "a_scale", "a_zero_point", "b", "b_scale", "b_zero_point",
                                           "c_scale", "c_zero_point"], ["y"], domain="com.microsoft")
    return run_onnx(node, {"a": a, "b": b}, dict(
        a_scale=F32(p["a_scale"]), a_zero_point=np.array(p["a_zero_point"], dtype), b_scale=F32(p["b_scale"]),
        b_zero_point=np.array(p["b_zero_point"], dtype), c_scale=F32(p["c_scale"]),
        c_zero_point=np.array(p["c_zero_point"], dtype)), dtype)


def golden_qlinearadd(a, b, p):
    sa, sb, f = quant.add_fp32_params(**p)
    lo, hi = qrange(a.dtype)
    return quant.add_fp32(a, b, sa, sb, f, qmin=lo, qmax=hi)


def random_add_params(rng, dtype, *, low=0.005, high=0.1):
    lo, hi = qrange(dtype)
    scales = rng.uniform(low, high, 3).astype(F32)
    zps = rng.integers(lo, hi + 1, 3)
    return dict(a_scale=scales[0], a_zero_point=int(zps[0]), b_scale=scales[1], b_zero_point=int(zps[1]),
                c_scale=scales[2], c_zero_point=int(zps[2]))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_qlinearadd_exhaustive_random(dtype, seed):
    """Every pair of codes, random scales and zero points."""
    p = random_add_params(np.random.default_rng([seed, 300, DTYPES.index(dtype)]), dtype)
    a, b = code_grid(dtype)
    y = onnx_qlinearadd(a, b, p)
    np.testing.assert_array_equal(y.astype(np.int32), golden_qlinearadd(a, b, p))


ADD_TIE_SCALES = [(0.5, 0.25, 1.0), (0.125, 0.125, 0.25), (0.75, 0.25, 0.5)]


@pytest.mark.parametrize("scales", ADD_TIE_SCALES, ids=["a.5_b.25_c1", "a.125_b.125_c.25", "a.75_b.25_c.5"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_qlinearadd_rounding_ties(dtype, scales):
    lo, hi = qrange(dtype)
    mid = (lo + hi + 1) // 2
    p = dict(a_scale=scales[0], a_zero_point=mid + 7, b_scale=scales[1], b_zero_point=mid - 3,
             c_scale=scales[2], c_zero_point=mid + 1)
    a, b = code_grid(dtype)
    y = onnx_qlinearadd(a, b, p).astype(np.int32)
    expected = golden_qlinearadd(a, b, p)
    np.testing.assert_array_equal(y, expected)
    exact = ((a.astype(np.float64) - p["a_zero_point"]) * p["a_scale"]
             + (b.astype(np.float64) - p["b_zero_point"]) * p["b_scale"]) / p["c_scale"] + p["c_zero_point"]
    inside = (exact > lo) & (exact < hi)
    ties = inside & (exact - np.floor(exact) == 0.5)
    assert np.count_nonzero(ties) > 1000
    away = np.sign(exact) * np.floor(np.abs(exact) + 0.5)  # ties away from zero: wrong on half the ties
    assert np.count_nonzero((away != y) & ties) > 100


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_qlinearadd_saturates_both_ends(dtype):
    p = random_add_params(np.random.default_rng(9), dtype)
    p["c_scale"] = F32(p["c_scale"] / 16)
    lo, hi = qrange(dtype)
    p["c_zero_point"] = (lo + hi + 1) // 2
    a, b = code_grid(dtype)
    y = onnx_qlinearadd(a, b, p).astype(np.int32)
    np.testing.assert_array_equal(y, golden_qlinearadd(a, b, p))
    assert np.count_nonzero(y == lo) > 1000 and np.count_nonzero(y == hi) > 1000


def _add_variant_f(p, sa, sb, kind):
    az, bz, cz = (F32(p[k]) for k in ("a_zero_point", "b_zero_point", "c_zero_point"))
    if kind == "F without fma":
        return F32(cz - F32(F32(sa * az) + F32(sb * bz)))
    return F32(cz - quant.fma_f32(bz, sb, F32(sa * az)))  # the other product fused


def add_variant(a, b, p, kind):
    """A plausible wrong order of onnxruntime's QLinearAdd (raw codes, DESIGN section 3)."""
    sa, sb, f = quant.add_fp32_params(**p)
    lo, hi = qrange(a.dtype)
    af, bf = a.astype(F32), b.astype(F32)
    if kind in ("F without fma", "F with the other product fused"):
        f = _add_variant_f(p, sa, sb, kind)
        total = quant.fma_f32(af, sa, quant.fma_f32(bf, sb, f))
    elif kind == "element without fma":
        total = (af * sa).astype(F32) + ((bf * sb).astype(F32) + f).astype(F32)
    elif kind == "element fmas swapped":
        total = quant.fma_f32(bf, sb, quant.fma_f32(af, sa, f))
    elif kind == "dequantise, add, requantise":
        dq_a = ((af - F32(p["a_zero_point"])) * F32(p["a_scale"])).astype(F32)
        dq_b = ((bf - F32(p["b_zero_point"])) * F32(p["b_scale"])).astype(F32)
        total = ((dq_a + dq_b).astype(F32) / F32(p["c_scale"])).astype(F32) + F32(p["c_zero_point"])
    else:
        raise AssertionError(kind)
    total = np.asarray(total, F32).astype(np.float64)
    return np.clip(np.rint(total), lo, hi).astype(np.int32)


ADD_VARIANTS = ["F without fma", "F with the other product fused", "element without fma",
                "element fmas swapped", "dequantise, add, requantise"]


@pytest.mark.parametrize("kind", ADD_VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_qlinearadd_float_order_constructed(dtype, kind):
    """Search scales and zero points on which ``kind`` differs from golden somewhere on the code
    grid; onnxruntime must then agree with golden and not with ``kind``."""
    a, b = code_grid(dtype)
    rng = np.random.default_rng([400, ADD_VARIANTS.index(kind), DTYPES.index(dtype)])
    for _ in range(400):
        p = random_add_params(rng, dtype, low=0.01, high=0.05)
        if kind.startswith("F "):
            sa, sb, f = quant.add_fp32_params(**p)
            if _add_variant_f(p, sa, sb, kind) == f:
                continue
        expected = golden_qlinearadd(a, b, p)
        alternative = add_variant(a, b, p, kind)
        if np.any(alternative != expected):
            break
    else:
        raise AssertionError(f"no parameters separate golden from '{kind}'")
    y = onnx_qlinearadd(a, b, p).astype(np.int32)
    np.testing.assert_array_equal(y, expected)
    assert np.any(alternative != y)


# Global average pooling -------------------------------------------------------------------------

def golden_global_average_pool(x, x_scale, x_zp, y_scale, y_zp):
    count = x.shape[2] * x.shape[3]
    total = quant.sum_pool2d(to_int8(x), kernel=x.shape[2:]).astype(np.int64)
    acc = quant.wrap_int32(total - count * zp_int8(x_zp, x.dtype))
    scale = quant.global_average_pool_scale(x_scale=x_scale, y_scale=y_scale, count=count)
    return acc, from_int8(quant.requantize_fp32(acc, scale, zero_point=zp_int8(y_zp, x.dtype)), x.dtype)


def onnx_qlinear_global_average_pool(x, x_scale, x_zp, y_scale, y_zp):
    node = helper.make_node("QLinearGlobalAveragePool", ["x", "x_scale", "x_zero_point", "y_scale",
                                                         "y_zero_point"], ["y"], domain="com.microsoft",
                            channels_last=0)
    return run_onnx(node, {"x": x}, dict(x_scale=F32(x_scale), x_zero_point=np.array(x_zp, x.dtype),
                                         y_scale=F32(y_scale), y_zero_point=np.array(y_zp, x.dtype)), x.dtype)


def onnx_dq_reducemean_q(x, x_scale, x_zp, y_scale, y_zp):
    nodes = [helper.make_node("DequantizeLinear", ["x", "x_scale", "x_zero_point"], ["dq"]),
             helper.make_node("ReduceMean", ["dq", "axes"], ["mean"], keepdims=1),
             helper.make_node("QuantizeLinear", ["mean", "y_scale", "y_zero_point"], ["y"])]
    return run_onnx(nodes, {"x": x}, dict(x_scale=F32(x_scale), x_zero_point=np.array(x_zp, x.dtype),
                                          y_scale=F32(y_scale), y_zero_point=np.array(y_zp, x.dtype),
                                          axes=np.array([2, 3], np.int64)), x.dtype)


GAP_SHAPES = [(2, 5, 7, 7), (1, 9, 4, 6), (1, 3, 1, 1), (2, 4, 10, 10)]


@pytest.mark.parametrize("shape", GAP_SHAPES, ids=["x".join(map(str, s)) for s in GAP_SHAPES])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_qlinear_global_average_pool_random(dtype, seed, shape):
    rng = np.random.default_rng([seed, 500, DTYPES.index(dtype), GAP_SHAPES.index(shape)])
    lo, hi = qrange(dtype)
    x = random_codes(rng, dtype, shape)
    x_zp, y_zp = (int(v) for v in rng.integers(lo, hi + 1, 2))
    x_scale = F32(rng.uniform(0.01, 0.1))
    y_scale = F32(x_scale * rng.uniform(0.1, 0.5))  # the mean of uniform codes varies little
    y = onnx_qlinear_global_average_pool(x, x_scale, x_zp, y_scale, y_zp)
    np.testing.assert_array_equal(y, golden_global_average_pool(x, x_scale, x_zp, y_scale, y_zp)[1])


def _gap_alternative_scales(x_scale, y_scale, count):
    xs, ys, n = F32(x_scale), F32(y_scale), F32(count)
    return {"(x / y) / N": F32(F32(xs / ys) / n), "(x / N) / y": F32(F32(xs / n) / ys),
            "float64 rounded once": F32(np.float64(xs) / (count * np.float64(ys))),
            "x * (1 / (N * y))": F32(xs * F32(F32(1) / F32(n * ys)))}


def gap_variants(x_scale, y_scale, count):
    golden = quant.global_average_pool_scale(x_scale=x_scale, y_scale=y_scale, count=count)
    variants = {name: (lambda acc, zp, s=s: requant_variant(acc, np.array([s]), zp, axis=-1))
                for name, s in _gap_alternative_scales(x_scale, y_scale, count).items()}
    mean_scale = F32(F32(x_scale) / F32(y_scale))

    def mean_first(acc, zp):  # average in float32 first, then rescale
        mean = (acc.astype(F32) / F32(count)).astype(F32)
        return np.clip(np.rint((mean * mean_scale).astype(np.float64)) + zp, -128, 127).astype(np.int8)

    variants["mean first, then x / y"] = mean_first
    variants["product rounded in float64"] = lambda acc, zp: requant_variant(
        acc, np.array([golden]), zp, axis=-1, product="float64")
    variants["ties away from zero"] = lambda acc, zp: requant_variant(acc, np.array([golden]), zp, axis=-1,
                                                                      ties="away")
    return variants


def inputs_with_sums(sums: np.ndarray, height: int, width: int) -> np.ndarray:
    """int8 (1, C, H, W) whose per-channel sums are ``sums`` (values differ by at most 1)."""
    count = height * width
    base = np.floor_divide(sums, count)
    extra = (np.arange(count)[None, :] < (sums - base * count)[:, None]).astype(np.int64)
    values = base[:, None] + extra
    assert values.min() >= -128 and values.max() <= 127
    return values.reshape(1, -1, height, width).astype(np.int8)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_qlinear_global_average_pool_scale_order_constructed(dtype):
    """15x15 sums (225, not a power of two, so no order is exact by accident) chosen where the
    scale order, the product rounding and the tie rule matter."""
    height = width = 15
    count = height * width

    def draw(rng):
        x_scale = F32(rng.uniform(0.01, 0.1))
        y_scale = F32(x_scale * rng.uniform(0.95, 1.1))  # the largest means reach about +-127
        scale = np.array([quant.global_average_pool_scale(x_scale=x_scale, y_scale=y_scale, count=count)])
        acc, found = discriminating_accs(rng, scale, lambda c: gap_variants(x_scale, y_scale, count),
                                         rows=48, limit=126 * count)
        return dict(x_scale=x_scale, y_scale=y_scale, acc=acc[:, 0], found=found)

    zero = 128 if dtype == np.uint8 else 0
    tally = {}
    for case in search_discriminating(draw):
        x_int8 = inputs_with_sums(case["acc"], height, width)
        x = quant.int8_to_uint8(x_int8) if dtype == np.uint8 else x_int8
        y = onnx_qlinear_global_average_pool(x, case["x_scale"], zero, case["y_scale"], zero)
        acc, expected = golden_global_average_pool(x, case["x_scale"], zero, case["y_scale"], zero)
        np.testing.assert_array_equal(acc.ravel(), case["acc"])  # construction check
        np.testing.assert_array_equal(y, expected)
        variants = gap_variants(case["x_scale"], case["y_scale"], count)
        count_rejections(variants, acc.reshape(-1, 1), to_int8(y).reshape(-1, 1), tally)
    assert_all_rejected(tally)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_dq_reducemean_q_within_one_lsb(dtype):
    """DequantizeLinear -> ReduceMean -> QuantizeLinear runs in float32 in onnxruntime (the sum of
    dequantised values, a division, a division by y_scale), so it is NOT bit-exact with the integer
    sum formulation: on sums constructed to lie on or next to ties it differs by at most 1 LSB.
    That bound is what this test asserts. (QLinearGlobalAveragePool itself is bit-exact, above.)"""
    rng = np.random.default_rng([600, DTYPES.index(dtype)])
    height = width = 7
    count = height * width
    exact = total = 0
    for _ in range(6):
        x_scale = F32(rng.uniform(0.01, 0.1))
        y_scale = F32(x_scale * rng.uniform(0.3, 1.5))
        scale = quant.global_average_pool_scale(x_scale=x_scale, y_scale=y_scale, count=count)
        candidates = np.arange(-120 * count, 120 * count)
        product = (candidates.astype(F32) * scale).astype(np.float64)
        near = candidates[np.abs(product - np.floor(product) - 0.5) < 2e-3]
        sums = np.concatenate([near[:96], rng.integers(-120 * count, 120 * count, 32)])
        x_int8 = inputs_with_sums(sums, height, width)
        x = quant.int8_to_uint8(x_int8) if dtype == np.uint8 else x_int8
        zero = 128 if dtype == np.uint8 else 0
        y = onnx_dq_reducemean_q(x, x_scale, zero, y_scale, zero)
        _, expected = golden_global_average_pool(x, x_scale, zero, y_scale, zero)
        difference = np.abs(y.astype(np.int64) - expected.astype(np.int64))
        assert difference.max() <= 1
        exact += np.count_nonzero(difference == 0)
        total += difference.size
    assert exact >= 0.9 * total  # off by one only near ties


# MaxPool --------------------------------------------------------------------------------------

POOL_CASES = {  # shape, kernel, stride, pads (top, left, bottom, right)
    "3x3_s2_pad1": ((1, 4, 9, 9), (3, 3), 2, (1, 1, 1, 1)),
    "2x2_s2": ((2, 3, 8, 8), (2, 2), 2, (0, 0, 0, 0)),
    "3x3_s1_pad_asymmetric": ((1, 5, 6, 7), (3, 3), 1, (0, 1, 2, 0)),
    "3x2_s1": ((1, 3, 5, 6), (3, 2), 1, (1, 0, 1, 1)),
    "5x5_s3_pad2": ((1, 2, 11, 10), (5, 5), 3, (2, 2, 2, 2)),
}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_maxpool(case, dtype, seed):
    shape, kernel, stride, pads = POOL_CASES[case]
    rng = np.random.default_rng([seed, 700, DTYPES.index(dtype), list(POOL_CASES).index(case)])
    lo, hi = qrange(dtype)
    x = random_codes(rng, dtype, shape)
    x.flat[rng.choice(x.size, 6, replace=False)] = [lo, lo, lo, hi, hi, hi]
    if seed == 1:
        x[:, 0] = lo  # a channel of minima: padding must not win even there
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=list(kernel), strides=[stride, stride],
                            pads=list(pads))
    y = run_onnx(node, {"x": x}, {}, dtype)
    expected = from_int8(quant.max_pool2d(to_int8(x), kernel=kernel, stride=stride, pads=pads), dtype)
    np.testing.assert_array_equal(y, expected)
