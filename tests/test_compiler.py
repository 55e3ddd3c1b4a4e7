"""The CNN compiler on the golden machine against golden/quant.py (numpy), layer by layer.

Expected results come from ``quant.conv2d`` / ``max_pool2d`` / ``add_fp32`` etc., which
tests/test_golden_vs_onnxruntime.py checks against onnxruntime; the compiler's tiling, padding,
K-splitting and token pipelining are what is under test here. Shapes are chosen to force every
path of the tiler on the small SRAMs of `tiny` (several tiles, K split into parts, weights
streamed instead of resident) as well as the simple ones.
"""

from __future__ import annotations

import numpy as np
import pytest

from golden import quant
from golden.config import get_config
from golden.isa import Instruction, Opcode
from sw.compiler import REQUANT_MODES, CompileError, Step, compile_network, pipeline
from sw.executor import LoadedModel, dram_size_for
from sw.graph import Add, Conv, MaxPool, Network, Quantization, Tensor
from sw.runtime import open_device


def nchw_tensor(name, n, c, h, w, quantization):
    return Tensor(name, (n, h, w, c), quantization, (n, c, h, w))


def run_network(network, config, *, requant="fp32", backend="golden", codes=None, chain=True):
    compiled = compile_network(network, get_config(config), requant=requant, chain=chain)
    with open_device(backend, config, dram_size=dram_size_for(compiled), quiet=True) as device:
        y, report = LoadedModel(compiled, device).run_codes(codes)
    return y, report, compiled


def random_codes(rng, quantization, shape):
    info = np.iinfo(quantization.dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(quantization.dtype)


def conv_layer(rng, x, *, name="conv", cout, kernel, stride, pads, groups=1, clip=None):
    """A convolution of ``x`` with random weights and an output scale that keeps it unsaturated."""
    n, h, w, cin = x.shape
    qx = x.quant
    zero = 128 if qx.unsigned else 0
    fan_in = cin // groups * kernel * kernel
    w_scale = rng.uniform(0.002, 0.01, cout).astype(np.float32)
    qy = Quantization(np.float32(qx.scale * np.median(w_scale) * np.sqrt(fan_in) * 74 * 74 / 50),
                      zero + int(rng.integers(-30, 30)), qx.dtype)
    pt, pl, pb, pr = pads
    oh, ow = (h + pt + pb - kernel) // stride + 1, (w + pl + pr - kernel) // stride + 1
    y = nchw_tensor(f"{name}_out", n, cout, oh, ow, qy)
    weights = rng.integers(-127, 128, (cout, cin // groups, kernel, kernel)).astype(np.int8)
    bias = rng.integers(-3000 * fan_in, 3000 * fan_in, cout).astype(np.int32)
    scale = quant.fp32_requant_scale(qx.scale, w_scale, qy.scale)
    real = np.float64(qx.scale) * w_scale.astype(np.float64) / np.float64(qy.scale)
    return Conv(name, "Conv", x, y, weights, bias, scale, real, (stride, stride), pads, groups,
                clip or (-128, 127))


def conv_network(rng, *, n, cin, h, w, cout, kernel, stride, pads, groups, dtype, clip=None):
    zero = 128 if dtype == np.uint8 else 0
    qx = Quantization(np.float32(rng.uniform(0.01, 0.05)), zero + int(rng.integers(-20, 20)), dtype)
    x = nchw_tensor("x", n, cin, h, w, qx)
    layer = conv_layer(rng, x, cout=cout, kernel=kernel, stride=stride, pads=pads, groups=groups,
                       clip=clip)
    return Network(x, layer.output, [layer]), layer


def expected_conv(layer: Conv, codes, *, requant):
    qx, qy = layer.input.quant, layer.output.quant
    acc = quant.conv2d(qx.to_stored(codes), layer.weights, stride=layer.stride, pads=layer.pads,
                       pad_value=qx.stored_zero_point, groups=layer.groups)
    bias = quant.fold_zero_point(layer.bias, layer.weights, qx.stored_zero_point)
    acc = quant.wrap_int32(acc.astype(np.int64) + bias[None, :, None, None])
    lo, hi = layer.clip
    if requant == "fp32":
        y = quant.requantize_fp32(acc, layer.scale, zero_point=qy.stored_zero_point, axis=1,
                                  qmin=lo, qmax=hi)
    else:
        pairs = [quant.quantize_multiplier(float(m)) for m in layer.real_multiplier]
        y = quant.requantize_fixed(acc, np.array([p[0] for p in pairs]),
                                   np.array([p[1] for p in pairs]),
                                   zero_point=qy.stored_zero_point, axis=1, qmin=lo, qmax=hi)
    return qy.from_stored(y)


CONV_CASES = {  # config, n, cin, h, w, cout, kernel, stride, pads, groups
    "3x3_pad1": ("tiny", 1, 3, 6, 6, 4, 3, 1, (1, 1, 1, 1), 1),
    "3x3_s2_asymmetric_batch2": ("tiny", 2, 5, 8, 7, 6, 3, 2, (0, 0, 1, 1), 1),
    "depthwise": ("tiny", 1, 6, 7, 7, 6, 3, 1, (1, 1, 1, 1), 6),
    "depthwise_multiplier2": ("tiny", 1, 3, 6, 6, 6, 3, 1, (1, 1, 1, 1), 3),
    "grouped": ("tiny", 1, 6, 5, 5, 4, 3, 1, (1, 1, 1, 1), 2),
    "7x7_s2_stem": ("tiny", 1, 3, 11, 11, 3, 7, 2, (3, 3, 3, 3), 1),
    "1x1_pixelwise": ("tiny", 3, 7, 5, 5, 9, 1, 1, (0, 0, 0, 0), 1),
    "3x3_several_tiles": ("tiny", 1, 9, 30, 30, 10, 3, 1, (1, 1, 1, 1), 1),
    "3x3_k_split_streamed": ("tiny", 1, 64, 6, 6, 8, 3, 1, (1, 1, 1, 1), 1),
    "7x7_s2_packed_batch2_several_tiles": ("small", 2, 3, 40, 37, 20, 7, 2, (3, 2, 2, 3), 1),
    "5x5_s2": ("small", 2, 16, 14, 14, 16, 5, 2, (2, 2, 2, 2), 1),
    "3x3_64ch": ("default", 1, 64, 14, 14, 64, 3, 1, (1, 1, 1, 1), 1),
    "3x3_packed_two_k_tiles": ("default", 1, 3, 9, 9, 20, 3, 1, (1, 1, 1, 1), 1),
    "2x2_s2_packed_one_k_tile": ("default", 1, 3, 8, 8, 5, 2, 2, (0, 0, 0, 0), 1),
}


@pytest.mark.parametrize("requant", ["fp32", "fixed"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8], ids=["uint8", "int8"])
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv_matches_golden_quant(case, dtype, requant):
    config, n, cin, h, w, cout, kernel, stride, pads, groups = CONV_CASES[case]
    rng = np.random.default_rng([list(CONV_CASES).index(case), int(dtype == np.uint8)])
    network, layer = conv_network(rng, n=n, cin=cin, h=h, w=w, cout=cout, kernel=kernel,
                                  stride=stride, pads=pads, groups=groups, dtype=dtype)
    codes = random_codes(rng, layer.input.quant, layer.input.onnx_shape)
    y, report, compiled = run_network(network, config, requant=requant, codes=codes)
    expected = expected_conv(layer, codes, requant=requant)
    assert np.unique(expected).size > 8  # not saturated: the test can tell values apart
    np.testing.assert_array_equal(y, expected)
    assert report.layers[0].macs == layer.macs


def test_the_tiler_takes_every_path():
    """The cases above really cover several tiles, a K split, streamed weights and packed taps
    (in fp32 mode; fixed mode takes the per-tap path)."""
    plans = {}
    for case in ("3x3_several_tiles", "3x3_k_split_streamed", "3x3_pad1", "7x7_s2_stem",
                 "7x7_s2_packed_batch2_several_tiles", "grouped", "3x3_packed_two_k_tiles",
                 "2x2_s2_packed_one_k_tile"):
        config, n, cin, h, w, cout, kernel, stride, pads, groups = CONV_CASES[case]
        network, _ = conv_network(np.random.default_rng(0), n=n, cin=cin, h=h, w=w, cout=cout,
                                  kernel=kernel, stride=stride, pads=pads, groups=groups,
                                  dtype=np.int8)
        for mode in REQUANT_MODES:
            plans[case, mode] = compile_network(network, get_config(config),
                                                requant=mode).layers[0].plan
    assert plans["3x3_several_tiles", "fp32"]["tile"][0] < 30
    streamed = plans["3x3_k_split_streamed", "fp32"]
    assert streamed["k_chunks_per_part"] < streamed["k_chunks"]
    assert not streamed["weights_resident"]
    assert plans["grouped", "fp32"]["weights_resident"] and plans["grouped", "fp32"]["steps"] == 2
    # 3 channels: 3x3 taps in 7 K tiles of 4 lanes, 7x7 taps in 37; on small (8 lanes) 19
    assert plans["3x3_pad1", "fp32"]["k_tiles"] == 7 and plans["7x7_s2_stem", "fp32"]["k_tiles"] == 37
    packed = plans["7x7_s2_packed_batch2_several_tiles", "fp32"]
    assert packed["k_tiles"] == 19 and packed["n_tiles"] == 3 and packed["steps"] > 30
    assert not any(plans[case, "fixed"].get("tap_packed") for case in ("3x3_pad1", "7x7_s2_stem"))
    # no more K tiles than the two computed n-tile by n-tile before each REQUANT
    assert plans["3x3_packed_two_k_tiles", "fp32"]["k_tiles"] == 2
    assert plans["2x2_s2_packed_one_k_tile", "fp32"]["k_tiles"] == 1
    assert all(plans[case, "fp32"]["tap_packed"]
               for case in ("3x3_packed_two_k_tiles", "2x2_s2_packed_one_k_tile"))


def test_fused_relu6_clip():
    rng = np.random.default_rng(5)
    network, layer = conv_network(rng, n=1, cin=5, h=6, w=6, cout=6, kernel=3, stride=1,
                                  pads=(1, 1, 1, 1), groups=1, dtype=np.uint8, clip=(-100, 20))
    codes = random_codes(rng, layer.input.quant, layer.input.onnx_shape)
    y, _, _ = run_network(network, "tiny", codes=codes)
    expected = expected_conv(layer, codes, requant="fp32")
    np.testing.assert_array_equal(y, expected)
    assert y.min() == 28 and y.max() == 148  # both clip bounds hit (stored + 128)


@pytest.mark.parametrize("config", ["tiny", "small"])
@pytest.mark.parametrize("case", [((1, 5, 9, 9), (3, 3), 2, (1, 1, 1, 1)),
                                  ((2, 6, 8, 7), (2, 2), 2, (0, 0, 0, 0)),
                                  ((1, 3, 40, 40), (3, 3), 1, (1, 1, 1, 1))])
def test_max_pool(case, config):
    shape, kernel, stride, pads = case
    rng = np.random.default_rng(list(shape))
    q = Quantization(np.float32(0.1), 3, np.int8)
    n, c, h, w = shape
    oh = (h + pads[0] + pads[2] - kernel[0]) // stride + 1
    ow = (w + pads[1] + pads[3] - kernel[1]) // stride + 1
    x, y = nchw_tensor("x", n, c, h, w, q), nchw_tensor("y", n, c, oh, ow, q)
    network = Network(x, y, [MaxPool("pool", x, y, kernel, (stride, stride), pads)])
    codes = random_codes(rng, q, shape)
    out, _, _ = run_network(network, config, codes=codes)
    np.testing.assert_array_equal(out, quant.max_pool2d(codes, kernel=kernel, stride=stride,
                                                        pads=pads))


@pytest.mark.parametrize("requant", ["fp32", "fixed"])
@pytest.mark.parametrize("shape", [(1, 5, 3, 3), (2, 16, 7, 9)])
def test_residual_add(shape, requant):
    rng = np.random.default_rng(list(shape))
    qa = Quantization(np.float32(0.03), 140, np.uint8)
    qb = Quantization(np.float32(0.05), 120, np.uint8)
    qc = Quantization(np.float32(0.07), 128, np.uint8)
    a, b = nchw_tensor("a", *shape, qa), nchw_tensor("b", *shape, qb)
    c = nchw_tensor("c", *shape, qc)
    network = Network(a, c, [Add("add", a, b, c)])
    a_codes, b_codes = random_codes(rng, qa, shape), random_codes(rng, qb, shape)
    # b is written by a first layer: place it by running a network whose input is b.
    compiled = compile_network(network, get_config("tiny"), requant=requant)
    with open_device("golden", "tiny", dram_size=dram_size_for(compiled)) as device:
        loaded = LoadedModel(compiled, device)
        device.write_dram(loaded.address(b), b.to_storage(b_codes).tobytes())
        out, _ = loaded.run_codes(a_codes)
    if requant == "fp32":
        sa, sb, f = quant.add_fp32_params(a_scale=qa.scale, a_zero_point=qa.zero_point,
                                          b_scale=qb.scale, b_zero_point=qb.zero_point,
                                          c_scale=qc.scale, c_zero_point=qc.zero_point)
        expected = quant.add_fp32(a_codes, b_codes, sa, sb, f, qmin=0, qmax=255).astype(np.uint8)
    else:
        params = quant.add_fixed_params(a_scale=qa.scale, b_scale=qb.scale, c_scale=qc.scale)
        expected = qc.from_stored(quant.add_fixed(
            qa.to_stored(a_codes), qb.to_stored(b_codes), a_zero_point=qa.stored_zero_point,
            b_zero_point=qb.stored_zero_point, c_zero_point=qc.stored_zero_point, **params))
    np.testing.assert_array_equal(out, expected)


def test_pipeline_tokens_balance():
    """Every token pushed is popped: two steps ahead at most, none left over at the end."""
    load = Instruction(Opcode.LOAD, rows=1, cols=1, elem_len=1)
    compute = Instruction(Opcode.MATMUL, outer_count=1, inner_count=1)
    store = Instruction(Opcode.STORE, rows=1, cols=1, elem_len=1)
    for count in range(1, 6):
        steps = [Step([load], [compute, compute], [store] if u % 2 else []) for u in range(count)]
        program = pipeline(steps)
        pushes = {(a, b): 0 for a in ("load", "compute", "store") for b in ("prev", "next")}
        unit = {Opcode.LOAD: "load", Opcode.MATMUL: "compute", Opcode.STORE: "store"}
        for ins in program[:-1]:
            for direction in ("prev", "next"):
                pushes[unit[ins.opcode], direction] += getattr(ins, f"push_{direction}")
                pushes[unit[ins.opcode], direction] -= 0
        pops = {(u, d): sum(getattr(i, f"pop_{d}") for i in program[:-1] if unit[i.opcode] == u)
                for u in ("load", "compute", "store") for d in ("prev", "next")}
        assert pushes["load", "next"] == pops["compute", "prev"]
        assert pushes["compute", "prev"] == pops["load", "next"]
        assert pushes["compute", "next"] == pops["store", "prev"]
        assert pushes["store", "prev"] == pops["compute", "next"]
        assert program[-1].opcode == Opcode.FINISH


def test_a_layer_too_large_is_refused_clearly():
    rng = np.random.default_rng(0)
    network, _ = conv_network(rng, n=1, cin=4, h=600, w=600, cout=4, kernel=15, stride=1,
                              pads=(7, 7, 7, 7), groups=1, dtype=np.int8)
    with pytest.raises(CompileError, match="conv: .*does not fit the tiny SRAMs"):
        compile_network(network, get_config("tiny"))


def test_bench_cnn_reports_every_case_with_its_bounds(tmp_path):
    from sw.bench_cnn import ConvCase, bench_cnn, mobilenet_blocks, plot_utilisation

    cases = (ConvCase("3x3", 8, 10, 8, 3), ConvCase("dw", 8, 9, 8, 3, depthwise=True),
             ConvCase("stem", 3, 15, 8, 7, stride=2))
    lines = []
    summary = bench_cnn(get_config("tiny"), backend="golden", cases=cases,
                        chain=mobilenet_blocks("blocks", 5, 8), out=lines.append)
    assert summary["config"] == "tiny" and 0 < summary["utilisation"] <= 1
    assert [case["name"] for case in summary["cases"]] == ["3x3", "dw", "stem"]
    for case in summary["cases"]:
        assert {"cycles", "macs", "utilisation", "bound_cycles", "naive_cycles"} <= set(case)
        assert case["cycles"] >= case["bound_cycles"] > 0
        assert case["utilisation"] == pytest.approx(case["macs"] / (16 * case["cycles"]))
    assert summary["cases"][0]["macs"] == 10 * 10 * 8 * 8 * 9
    # 5x5x8 activations: the depthwise layers' outputs (no borders: 1x1 readers) stay on chip;
    # pw1's would need borders for dw2, and filling them would take longer than pw1 computes.
    chain = summary["chain"]
    assert chain["on_chip"]["activations_on_chip"] == ["dw0_out", "dw2_out"]
    assert chain["dram"]["activations_on_chip"] == []
    # Not written and read back: at least the two activations' stores (5 x 5 x 8 bytes each)
    assert chain["dram"]["dram_bytes"] - chain["on_chip"]["dram_bytes"] >= 2 * 5 * 5 * 8
    plot_utilisation(summary, tmp_path / "cnn.png", pes=16)
    assert (tmp_path / "cnn.png").stat().st_size > 10_000


def chain_network(rng, *, n=2, h=6, w=6, dtype=np.uint8):
    """conv 3x3 -> depthwise 3x3 -> conv 3x3 stride 2 -> max pool 2x2 (padded) -> conv 1x1:
    odd channel counts (several channel groups and output-channel tiles on `tiny`), zero
    points for the convolutions' borders and -128 for the pool's."""
    zero = 128 if dtype == np.uint8 else 0
    x = nchw_tensor("x", n, 5, h, w, Quantization(np.float32(0.03), zero - 7, dtype))
    conv1 = conv_layer(rng, x, name="conv1", cout=6, kernel=3, stride=1, pads=(1, 1, 1, 1),
                       clip=(zero - 128 + 3, 127))
    dw = conv_layer(rng, conv1.output, name="dw", cout=6, kernel=3, stride=1, pads=(1, 1, 1, 1),
                    groups=6)
    conv3 = conv_layer(rng, dw.output, name="conv3", cout=7, kernel=3, stride=2,
                       pads=(1, 0, 0, 1))
    _, c, ph, pw = conv3.output.onnx_shape
    pooled = nchw_tensor("pooled", n, c, ph, pw, conv3.output.quant)
    pool = MaxPool("pool", conv3.output, pooled, (2, 2), (1, 1), (0, 0, 1, 1))
    conv5 = conv_layer(rng, pooled, name="conv5", cout=9, kernel=1, stride=1, pads=(0, 0, 0, 0))
    layers = [conv1, dw, conv3, pool, conv5]
    return Network(x, conv5.output, layers), layers


def expected_chain(layers, codes, *, requant):
    for layer in layers:
        if isinstance(layer, MaxPool):
            q = layer.input.quant
            codes = q.from_stored(quant.max_pool2d(q.to_stored(codes), kernel=layer.kernel,
                                                   stride=layer.stride, pads=layer.pads))
        else:
            codes = expected_conv(layer, codes, requant=requant)
    return codes


@pytest.mark.parametrize("requant", ["fp32", "fixed"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8], ids=["uint8", "int8"])
def test_layers_chained_on_chip_match_golden_quant(dtype, requant):
    rng = np.random.default_rng([7, int(dtype == np.uint8)])
    network, layers = chain_network(rng, dtype=dtype)
    codes = random_codes(rng, network.input.quant, network.input.onnx_shape)
    expected = expected_chain(layers, codes, requant=requant)
    y, report, compiled = run_network(network, "tiny", requant=requant, codes=codes)
    assert np.unique(expected).size > 8
    np.testing.assert_array_equal(y, expected)
    # The activations between layers stay on chip with the borders their readers need, except
    # dw's: filling its borders (7 x 7 rows a plane) would take longer than dw computes.
    assert set(compiled.on_chip) == {"conv1_out", "conv3_out", "pooled"}
    assert compiled.on_chip["conv1_out"].pads == (1, 1, 1, 1)
    assert compiled.on_chip["conv3_out"].pads == (0, 0, 1, 1)
    assert compiled.on_chip["conv3_out"].pad_value == -128
    assert [(layer.plan["input_on_chip"], layer.plan["output_on_chip"])
            for layer in compiled.layers] == [(False, True), (True, False), (False, True),
                                              (True, True), (True, False)]
    assert sum(layer.dram_write_bytes for layer in report.layers) == \
        network.output.nbytes + layers[1].output.nbytes
    # Through DRAM: the same result, with every activation written and read back.
    y_dram, dram, unchained = run_network(network, "tiny", requant=requant, codes=codes,
                                          chain=False)
    np.testing.assert_array_equal(y_dram, expected)
    assert not unchained.on_chip
    assert sum(layer.dram_write_bytes for layer in dram.layers) == sum(
        layer.output.nbytes for layer in layers)


def test_activations_that_do_not_fit_go_through_dram():
    rng = np.random.default_rng(11)
    # 9x9 images: conv1's output on chip (2 groups x 2 images x 11 x 11 rows with its borders)
    # and dw's (2 x 2 x 10 x 10) are more than half of tiny's 1024 scratchpad rows together.
    network, layers = chain_network(rng, h=9, w=9)
    compiled = compile_network(network, get_config("tiny"))
    assert list(compiled.on_chip) == ["conv1_out", "conv3_out", "pooled"]
    codes = random_codes(rng, network.input.quant, network.input.onnx_shape)
    y, _, _ = run_network(network, "tiny", codes=codes)
    np.testing.assert_array_equal(y, expected_chain(layers, codes, requant="fp32"))
    # An 11x11 kernel on a 2x2 image: with the first convolution's output on chip (12 x 12
    # rows), its weight tiles (121 x 4 rows) fit neither resident in half of the rest nor
    # streamed (two blocks); it is compiled again with that activation in DRAM. With a 3x3
    # kernel it stays on chip. (The first convolution has 128 input channels: it computes long
    # enough for the border fill, FILL_COST.)
    x = nchw_tensor("x", 1, 128, 2, 2, Quantization(np.float32(0.02), 3, np.int8))
    codes = random_codes(rng, x.quant, x.onnx_shape)
    for kernel, on_chip in ((3, ["first_out"]), (11, [])):
        first = conv_layer(rng, x, name="first", cout=4, kernel=3, stride=1, pads=(1, 1, 1, 1))
        wide = conv_layer(rng, first.output, name="wide", cout=4, kernel=kernel, stride=1,
                          pads=(kernel // 2,) * 4)
        network = Network(x, wide.output, [first, wide])
        y, _, compiled = run_network(network, "tiny", codes=codes)
        assert list(compiled.on_chip) == on_chip
        np.testing.assert_array_equal(y, expected_chain([first, wide], codes, requant="fp32"))


def test_chained_layers_on_the_rtl_match_golden():
    rng = np.random.default_rng(13)
    network, layers = chain_network(rng, dtype=np.int8)
    codes = random_codes(rng, network.input.quant, network.input.onnx_shape)
    y_rtl, rtl, compiled = run_network(network, "tiny", backend="rtl", codes=codes)
    y_golden, golden, _ = run_network(network, "tiny", codes=codes)
    assert len(compiled.on_chip) == 3
    np.testing.assert_array_equal(y_rtl, y_golden)
    np.testing.assert_array_equal(y_rtl, expected_chain(layers, codes, requant="fp32"))
    assert [x.array_macs for x in rtl.layers] == [x.array_macs for x in golden.layers]


def test_loads_far_ahead_of_their_step_do_not_deadlock_the_rtl():
    """A depthwise layer with 12 channel chunks on `tiny`: a tile's input LOADs belong to a step
    12 steps after the one before that loads. Spread over those steps, ahead of the compute
    their first LOAD waits for, they filled the load queue and stopped fetch before it (the RTL
    deadlocked; the golden machine, without queue limits, did not)."""
    rng = np.random.default_rng(3)
    network, layer = conv_network(rng, n=1, cin=48, h=20, w=20, cout=48, kernel=3, stride=1,
                                  pads=(1, 1, 1, 1), groups=48, dtype=np.uint8)
    codes = random_codes(rng, layer.input.quant, layer.input.onnx_shape)
    y, _, compiled = run_network(network, "tiny", backend="rtl", codes=codes)
    assert compiled.layers[0].plan["n_tiles"] == 12
    np.testing.assert_array_equal(y, expected_conv(layer, codes, requant="fp32"))
