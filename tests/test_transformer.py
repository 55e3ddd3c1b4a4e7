"""Transformer encoder layers from ONNX (issue 7): import, compile, RTL == golden, accuracy
against the float model, the attention mask, errors, `npu run` and `npu bench transformer`.

The models are float BERT-style encoder layers built with onnx.helper (sw.encoder_model) and
quantised by onnxruntime's quantize_static in QDQ format, as a user would.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest

from sw.bench_transformer import bench_transformer, cosine, plot_transformer, vector_throughput
from sw.compiler import compile_network
from sw.encoder_model import EncoderShape, encoder_layer_model, quantize_encoder, realistic_inputs
from sw.executor import run_onnx
from sw.onnx_import import OnnxImportError, import_onnx

TINY = EncoderShape(hidden=32, heads=2, ffn=64, seq=10)


def _model(shape: EncoderShape, *, seed: int = 0, padded: int = 2, **kwargs):
    quant_kwargs = {k: kwargs.pop(k) for k in ("per_channel", "activations") if k in kwargs}
    model = encoder_layer_model(shape, seed=seed, **kwargs)
    outlier = {k: kwargs[k] for k in ("outlier_channel", "outlier_gain") if k in kwargs}
    calibration = [realistic_inputs(shape, seed=100 + i, padded=padded, **outlier)
                   for i in range(4)]
    return model, quantize_encoder(model, calibration, **quant_kwargs)


def _run(quantized, inputs, **kwargs):
    y, report, compiled = run_onnx(quantized, inputs["input"], quiet=True,
                                   host_inputs={"attention_mask": inputs["attention_mask"]},
                                   **kwargs)
    return y, report, compiled


def _float(model, inputs):
    return onnxruntime.InferenceSession(model.SerializeToString()).run(None, inputs)[0]


def test_import_maps_the_encoder_layer_to_integer_layers():
    _, quantized = _model(TINY)
    network = import_onnx(quantized, input_shape=(1, TINY.seq, TINY.hidden))
    ops = [layer.op for layer in network.layers]
    assert ops == ["MatMul", "MatMul", "MatMul", "Attention", "MatMul", "Add",
                   "LayerNormalization", "MatMul", "Gelu", "MatMul", "Add", "LayerNormalization"]
    value = network.layers[2]
    assert value.output.channel_major and not network.layers[0].output.channel_major
    attention = network.layers[3]
    assert attention.heads == TINY.heads and attention.mask is not None
    assert network.host_model is not None
    assert sum(layer.macs for layer in network.layers) == TINY.macs


@pytest.mark.parametrize("shape, options, residual", [
    (TINY, dict(), "int8"),
    (EncoderShape(hidden=32, heads=4, ffn=64, seq=13), dict(per_channel=True), "int8"),
    (EncoderShape(hidden=16, heads=2, ffn=32, seq=7), dict(activations="int8", gelu="op"), "int8"),
    (EncoderShape(hidden=32, heads=2, ffn=64, seq=9), dict(per_channel=True), "int32"),
])
def test_encoder_rtl_matches_golden(shape, options, residual):
    model, quantized = _model(shape, seed=shape.seq, **options)
    inputs = realistic_inputs(shape, seed=7, padded=3)
    y_golden, golden, _ = _run(quantized, inputs, backend="golden", config="tiny",
                               residual=residual)
    y_rtl, rtl, _ = _run(quantized, inputs, backend="rtl", config="tiny", residual=residual)
    np.testing.assert_array_equal(y_rtl, y_golden)
    assert [layer.array_macs for layer in rtl.layers] == [layer.array_macs for layer in golden.layers]
    assert all(0 < layer.vector_cycles <= layer.compute_cycles <= layer.cycles
               for layer in rtl.layers)
    assert cosine(y_rtl, _float(model, inputs)) > 0.98


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_encoder_cosine_against_float(seed, capsys):
    """Realistic (layer-normalised) inputs with padding: cosine >= 0.99 against the float
    model; onnxruntime's own int8 run of the same QDQ model is printed next to it."""
    shape = EncoderShape(hidden=64, heads=4, ffn=256, seq=32)
    model, quantized = _model(shape, seed=seed, padded=5)
    inputs = realistic_inputs(shape, seed=50 + seed, padded=5)
    y, _, _ = _run(quantized, inputs, backend="golden", config="default")
    reference = _float(model, inputs)
    ours = cosine(y, reference)
    ort_int8 = cosine(onnxruntime.InferenceSession(quantized.SerializeToString()).run(
        None, inputs)[0], reference)
    with capsys.disabled():
        print(f"\n  encoder seed {seed}: cosine vs float {ours:.5f} (onnxruntime int8 {ort_int8:.5f})")
    assert ours >= 0.99


@pytest.mark.parametrize("gain, error_ratio", [(10, 1 / 3), (100, 0.9)])
def test_int32_residual_beats_the_graphs_int8_on_an_outlier_channel(gain, error_ratio, capsys):
    """One residual channel `gain` times larger than the rest. The default mode keeps the
    graph's int8 residual sums (their scale is set by the outlier, so the other channels get a
    step or two); residual="int32" sums in the accumulator and wins. At 100x the int8 copy of
    the input that Q, K and V read (the same in both modes) limits both."""
    shape = EncoderShape(hidden=64, heads=4, ffn=256, seq=32)
    model, quantized = _model(shape, padded=4, outlier_channel=5, outlier_gain=gain)
    inputs = realistic_inputs(shape, seed=1, padded=4, outlier_channel=5, outlier_gain=gain)
    reference = _float(model, inputs)
    figures = {}
    for residual in ("int8", "int32"):
        y, _, compiled = _run(quantized, inputs, backend="golden", config="default",
                              residual=residual)
        figures[residual] = cosine(y, reference)
    ops = [layer.op for layer in compiled.network.layers]
    assert ops.count("AddLayerNorm") == 2 and "LayerNormalization" not in ops
    ort_int8 = cosine(onnxruntime.InferenceSession(quantized.SerializeToString()).run(
        None, inputs)[0], reference)
    with capsys.disabled():
        print(f"\n  outlier {gain}x: cosine vs float int8 residual {figures['int8']:.5f}, int32 "
              f"residual {figures['int32']:.5f} (onnxruntime int8 {ort_int8:.5f})")
    assert 1 - figures["int32"] < error_ratio * (1 - figures["int8"])


def test_padded_keys_are_masked_exactly():
    """Changing the padded tokens changes no output of the real tokens, bit for bit."""
    shape = EncoderShape(hidden=32, heads=2, ffn=64, seq=12)
    _, quantized = _model(shape, padded=4)
    inputs = realistic_inputs(shape, seed=3, padded=4)
    y, _, _ = _run(quantized, inputs, backend="golden", config="tiny")
    changed = dict(inputs, input=inputs["input"].copy())
    changed["input"][:, -4:] = np.random.default_rng(0).normal(0, 1, changed["input"][:, -4:].shape)
    y_changed, _, _ = _run(quantized, changed, backend="golden", config="tiny")
    np.testing.assert_array_equal(y[:, :-4], y_changed[:, :-4])
    assert not np.array_equal(y[:, -4:], y_changed[:, -4:])


def test_batch_of_two_sequences_with_different_masks():
    shape = EncoderShape(hidden=32, heads=2, ffn=64, seq=8)
    _, quantized = _model(shape)
    one = realistic_inputs(shape, seed=1, padded=0)
    two = realistic_inputs(shape, seed=2, padded=3)
    batch = {k: np.concatenate([one[k], two[k]]) for k in one}
    y, _, _ = _run(quantized, batch, backend="golden", config="tiny")
    y_one, _, _ = _run(quantized, one, backend="golden", config="tiny")
    y_two, _, _ = _run(quantized, two, backend="golden", config="tiny")
    np.testing.assert_array_equal(y, np.concatenate([y_one, y_two]))


def test_missing_mask_input_is_a_clear_error():
    _, quantized = _model(TINY)
    inputs = realistic_inputs(TINY, seed=0)
    with pytest.raises(ValueError, match="also needs input 'attention_mask'"):
        run_onnx(quantized, inputs["input"], backend="golden", config="tiny", quiet=True)


def test_unsupported_transformer_patterns_are_refused():
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4, 8])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 8])
    graph = helper.make_graph([helper.make_node("Erf", ["input"], ["output"], name="lonely")],
                              "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    rng = np.random.default_rng(0)
    calibration = [{"input": rng.normal(0, 1, (1, 4, 8)).astype(np.float32)} for _ in range(2)]
    from sw.encoder_model import quantize_encoder as quantize

    with pytest.raises(OnnxImportError, match=r"node 'lonely' \(Erf\): Erf is supported inside GELU"):
        import_onnx(quantize(model, calibration), input_shape=(1, 4, 8))


def test_layers_that_do_not_fit_are_refused():
    _, quantized = _model(EncoderShape(hidden=32, heads=2, ffn=64, seq=300))
    network = import_onnx(quantized, input_shape=(1, 300, 32))
    with pytest.raises(ValueError, match="vector_max_length"):
        compile_network(network, _config("tiny"))


def test_npu_run_with_attention_mask(tmp_path, capsys):
    from sw.cli import main

    _, quantized = _model(TINY)
    import onnx

    onnx.save(quantized, tmp_path / "encoder.onnx")
    inputs = realistic_inputs(TINY, seed=4, padded=2)
    np.save(tmp_path / "x.npy", inputs["input"])
    np.save(tmp_path / "mask.npy", inputs["attention_mask"])
    assert main(["run", str(tmp_path / "encoder.onnx"), "--input", str(tmp_path / "x.npy"),
                 "--input", f"attention_mask={tmp_path / 'mask.npy'}", "--backend", "golden",
                 "--config", "tiny", "--output", str(tmp_path / "y.npy"), "--compare"]) == 0
    out = capsys.readouterr().out
    assert "Attention" in out and "cosine similarity" in out
    expected, _, _ = _run(quantized, inputs, backend="golden", config="tiny")
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)


def test_bench_transformer_json_and_plot(tmp_path):
    shape = EncoderShape(hidden=32, heads=2, ffn=64)
    summary = bench_transformer(_config("small"), backend="golden", sequences=(8, 16), shape=shape,
                                out=lambda line: None)
    assert summary["config"] == "small" and len(summary["cases"]) == 2
    for case in summary["cases"]:
        assert case["macs"] == EncoderShape(hidden=32, heads=2, ffn=64, seq=case["seq"]).macs
        assert 0 < case["utilisation"] <= 1
        assert case["matmul_cycles"] + case["vector_cycles"] <= case["cycles"]
        assert case["cosine_vs_float"] > 0.98
    assert set(summary["vector_ops"]) == {"softmax", "layernorm", "gelu"}
    json.dumps(summary)
    plot_transformer(summary, tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 1000


def test_vector_throughput_on_the_rtl():
    """Cycles per element of the row operations, from the BUSY_VECTOR counter: each pass is
    one beat of `cols` elements per cycle, so three passes cost at least 3 / cols per element."""
    config = _config("tiny")
    figures = vector_throughput(config, backend="rtl", rows=8)
    for name, passes in (("softmax", 3), ("layernorm", 3), ("gelu", 1)):
        assert figures[name]["cycles_per_element"] >= passes / config.cols
    assert figures["gelu"]["cycles_per_element"] < 0.5


def _config(name):
    from golden.config import get_config

    return get_config(name)
