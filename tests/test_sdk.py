"""int8 ONNX models end to end: import, compile, run, against onnxruntime (DESIGN section 3).

Models are float CNNs built with onnx.helper (tests/onnx_models.py) and quantised by
onnxruntime's quantize_static in both formats, with uint8 and int8 activations and per-channel
and per-tensor weights; plus the committed digits CNN. The reference is onnxruntime itself
(CPU, default graph optimisations), so an expected value never comes from this project's code.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_models import MODELS, quantize

from sw.cli import main as npu_main
from sw.executor import run_onnx
from sw.onnx_import import OnnxImportError, import_onnx

DIGITS = Path(__file__).resolve().parent.parent / "models" / "digits"
FORMATS = ["qoperator", "qdq"]


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """quantize_static results, made once per module (a second or so each)."""
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime's pre-processing advice
    folder = tmp_path_factory.mktemp("models")
    cache = {}

    def get(name: str, fmt: str, activations: str, per_channel: bool) -> str:
        key = (name, fmt, activations, per_channel)
        if key not in cache:
            builder, shape = MODELS[name]
            calibration = np.random.default_rng(1).normal(0, 1, (16, *shape[1:])).astype(np.float32)
            cache[key] = quantize(builder(), fmt=fmt, activations=activations,
                                  per_channel=per_channel, calibration=calibration,
                                  path=folder / f"{'_'.join(map(str, key))}.onnx")
        return cache[key]

    return get


def onnxruntime_output(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
@pytest.mark.parametrize("activations", ["uint8", "int8"])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", list(MODELS))
def test_golden_is_bit_exact_with_onnxruntime(quantized, name, fmt, activations, per_channel):
    path = quantized(name, fmt, activations, per_channel)
    _, shape = MODELS[name]
    x = np.random.default_rng(7).normal(0, 1, shape).astype(np.float32)
    expected = onnxruntime_output(path, x)
    assert np.unique(expected).size > 3  # the outputs are not all saturated
    for config in ("tiny", "default"):
        y, report, compiled = run_onnx(onnx.load(path), x, backend="golden", config=config)
        np.testing.assert_array_equal(y, expected)
    assert len(report.layers) == {"cnn": 9, "stem": 4}[name]  # every layer ran on the NPU


def test_both_formats_cover_the_ops(quantized):
    """What the quantised test models contain (so the tests above cover these ops)."""
    seen = set()
    for name in MODELS:
        for fmt in FORMATS:
            seen |= {n.op_type for n in onnx.load(quantized(name, fmt, "uint8", True)).graph.node}
    assert {"QLinearConv", "QGemm", "QLinearAdd", "QLinearGlobalAveragePool",
            "QLinearAveragePool", "MaxPool", "Flatten", "Conv", "Gemm", "Add",
            "GlobalAveragePool", "AveragePool", "QuantizeLinear", "DequantizeLinear"} <= seen


def test_fixed_requantisation_is_within_one_step_of_onnxruntime(quantized):
    """--requant fixed (TFLite multipliers): not bit-exact, but each output within 1 LSB on a
    single-layer model (one requantisation)."""
    rng = np.random.default_rng(3)
    b_nodes = [helper.make_node("Conv", ["input", "w", "b"], ["y"], kernel_shape=[3, 3],
                                pads=[1, 1, 1, 1])]
    graph = helper.make_graph(
        b_nodes, "conv", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 6, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 7, 8, 8])],
        [numpy_helper.from_array(rng.normal(0, 0.2, (7, 6, 3, 3)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.normal(0, 0.1, 7).astype(np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    calibration = rng.normal(0, 1, (8, 6, 8, 8)).astype(np.float32)
    path = quantize(model, fmt="qoperator", activations="uint8", per_channel=True,
                    calibration=calibration, path=_tmp(quantized) / "conv.onnx")
    x = rng.normal(0, 1, (2, 6, 8, 8)).astype(np.float32)
    expected = onnxruntime_output(path, x)
    y, _, compiled = run_onnx(onnx.load(path), x, backend="golden", config="tiny", requant="fixed")
    lsb = float(compiled.network.output.quant.scale)
    steps = np.abs(y.astype(np.float64) - expected) / lsb
    assert steps.max() <= 1.0 + 1e-6
    assert np.count_nonzero(steps) < 0.05 * steps.size


def _tmp(quantized):
    return Path(quantized("cnn", "qoperator", "uint8", True)).parent


def test_digits_models_match_onnxruntime_bit_exactly():
    data = np.load(DIGITS / "digits_test.npz")
    x = data["images"][:40]
    for name in ("digits_cnn_int8.onnx", "digits_cnn_int8_qdq.onnx"):
        expected = onnxruntime_output(DIGITS / name, x)
        y, report, _ = run_onnx(onnx.load(DIGITS / name), x, backend="golden", config="small")
        np.testing.assert_array_equal(y, expected)
        assert (y.argmax(1) == data["labels"][:40]).mean() > 0.9


def test_unsupported_op_is_refused_with_the_node_and_the_supported_ops(quantized):
    model = onnx.load(quantized("cnn", "qdq", "uint8", True))
    victim = next(n for n in model.graph.node if n.op_type == "GlobalAveragePool")
    victim.op_type = "GlobalLpPool"
    with pytest.raises(OnnxImportError) as error:
        import_onnx(model, input_shape=MODELS["cnn"][1])
    message = str(error.value)
    assert repr(victim.name) in message and "GlobalLpPool" in message and "QLinearConv" in message


def test_unsupported_attribute_is_refused(quantized):
    model = onnx.load(quantized("cnn", "qoperator", "uint8", True))
    conv = next(n for n in model.graph.node if n.op_type == "QLinearConv")
    conv.attribute.append(helper.make_attribute("dilations", [2, 2]))
    with pytest.raises(OnnxImportError, match=f"{conv.name}.*dilations must be 1"):
        import_onnx(model, input_shape=MODELS["cnn"][1])


def test_npu_run_writes_output_and_report(tmp_path, capsys):
    data = np.load(DIGITS / "digits_test.npz")
    x = data["images"][:4]
    np.save(tmp_path / "x.npy", x)
    status = npu_main(["run", str(DIGITS / "digits_cnn_int8.onnx"), "--input", str(tmp_path / "x.npy"),
                       "--backend", "golden", "--config", "tiny", "--output", str(tmp_path / "y.npy"),
                       "--report", str(tmp_path / "r.json"), "--compare"])
    assert status == 0
    out = capsys.readouterr()
    assert "bit-exact" in out.out and "[4/4]" in out.err
    y = np.load(tmp_path / "y.npy")
    np.testing.assert_array_equal(y, onnxruntime_output(DIGITS / "digits_cnn_int8.onnx", x))
    report = json.loads((tmp_path / "r.json").read_text())
    assert {"total_cycles", "total_macs", "utilisation", "dram_read_bytes", "dram_write_bytes",
            "layers"} <= set(report)
    assert [layer["op"] for layer in report["layers"]] == ["QLinearConv", "MaxPool",
                                                           "QLinearConv", "QGemm"]
    assert report["total_cycles"] == sum(layer["cycles"] for layer in report["layers"]) > 0
    # 8x8x16 conv1 (9 MACs each), conv2 4x4x32 (144 each), fc 512x10, per image.
    assert report["total_macs"] == 4 * (64 * 16 * 9 + 16 * 32 * 144 + 512 * 10)


def test_npu_run_errors_are_one_line(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float64))
    status = npu_main(["run", str(DIGITS / "digits_cnn_int8.onnx"), "--input",
                       str(tmp_path / "x.npy"), "--backend", "golden"])
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "float32" in err[0]
    status = npu_main(["run", str(tmp_path / "missing.onnx"), "--input", str(tmp_path / "x.npy")])
    assert status == 2


@pytest.mark.parametrize("fmt", FORMATS)
def test_rtl_runs_the_models_like_golden_and_onnxruntime(quantized, fmt):
    """The Verilator model of `tiny` runs every layer: outputs identical to golden and to
    onnxruntime, and the same MAC counts per layer."""
    path = quantized("cnn", fmt, "uint8" if fmt == "qoperator" else "int8", True)
    x = np.random.default_rng(11).normal(0, 1, MODELS["cnn"][1]).astype(np.float32)
    model = onnx.load(path)
    y_rtl, rtl, _ = run_onnx(model, x, backend="rtl", config="tiny", quiet=True)
    y_golden, golden, _ = run_onnx(model, x, backend="golden", config="tiny")
    np.testing.assert_array_equal(y_rtl, y_golden)
    np.testing.assert_array_equal(y_rtl, onnxruntime_output(path, x))
    assert [layer.array_macs for layer in rtl.layers] == [layer.array_macs for layer in golden.layers]
    assert all(layer.cycles > 0 for layer in rtl.layers)


def test_rtl_runs_the_digits_model():
    data = np.load(DIGITS / "digits_test.npz")
    x = data["images"][:6]
    path = DIGITS / "digits_cnn_int8.onnx"
    y, report, _ = run_onnx(onnx.load(path), x, backend="rtl", config="tiny", quiet=True)
    np.testing.assert_array_equal(y, onnxruntime_output(path, x))


def test_qdq_reducemean_runs_as_integer_global_pooling():
    """DequantizeLinear -> ReduceMean(H, W) -> QuantizeLinear runs in float32 in onnxruntime; the
    NPU maps it to the integer global average pool, which differs by at most 1 LSB (the bound
    tests/test_golden_vs_onnxruntime.py establishes for this op)."""
    rng = np.random.default_rng(4)
    constants = {"s_in": np.float32(0.05), "z_in": np.uint8(120), "s_out": np.float32(0.01),
                 "z_out": np.uint8(128)}
    nodes = [helper.make_node("QuantizeLinear", ["input", "s_in", "z_in"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s_in", "z_in"], ["dq"]),
             helper.make_node("ReduceMean", ["dq"], ["mean"], axes=[2, 3], keepdims=1),
             helper.make_node("QuantizeLinear", ["mean", "s_out", "z_out"], ["q_mean"]),
             helper.make_node("DequantizeLinear", ["q_mean", "s_out", "z_out"], ["y"])]
    graph = helper.make_graph(
        nodes, "mean", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 5, 7, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5, 1, 1])],
        [numpy_helper.from_array(np.array(v), k) for k, v in constants.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = rng.normal(0, 2, (3, 5, 7, 7)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"input": x})[0]
    y, report, _ = run_onnx(model, x, backend="golden", config="tiny")
    assert [layer.op for layer in report.layers] == ["GlobalAveragePool"]
    steps = np.abs(y.astype(np.float64) - expected) / 0.01
    assert steps.max() <= 1.0 + 1e-3
    assert np.unique(expected).size > 4
