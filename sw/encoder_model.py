"""A float BERT-style encoder layer built with onnx.helper, and its int8 QDQ quantisation.

This is the model the transformer tests and ``npu bench transformer`` run, and the shape of
model a user brings: what ``torch.onnx.export`` writes for one ``BertLayer`` (MatMul + Add
projections, Reshape/Transpose to heads, a scaled ``Q @ K^T`` plus an additive attention mask,
Softmax, ``P @ V``, output projection, residual Add, LayerNormalization, an FFN with GELU in its
Erf form (or the opset-20 ``Gelu`` op), a second residual Add and LayerNormalization).

The model has two inputs: ``input`` (N, S, hidden) and ``attention_mask`` (N, S), 1 for a token
to attend to and 0 for padding. The graph turns the mask into the additive ``-10000`` form
itself, as Hugging Face models do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["EncoderShape", "encoder_layer_model", "realistic_inputs", "quantize_encoder",
           "MASK_NEGATIVE"]

OPSET = 17
#: Weight scale of the two projections that write into the residual stream.
UPDATE_GAIN = 0.3
#: The additive mask value of a padded key (Hugging Face's convention).
MASK_NEGATIVE = -10000.0


@dataclass(frozen=True)
class EncoderShape:
    hidden: int = 384
    heads: int = 12
    ffn: int = 1536
    seq: int = 128

    def __post_init__(self):
        if self.hidden % self.heads:
            raise ValueError(f"Hidden size {self.hidden} must be a multiple of heads {self.heads}")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def macs(self) -> int:
        """MACs of one sequence: four projections, Q K^T, P V, the two FFN matmuls."""
        s, h, f = self.seq, self.hidden, self.ffn
        return 4 * s * h * h + 2 * s * s * h + 2 * s * h * f


def encoder_layer_model(shape: EncoderShape, *, seed: int = 0, gelu: str = "erf",
                        outlier_channel: int | None = None, outlier_gain: float = 100.0):
    """The float ONNX model of one encoder layer with random (seeded) weights.

    ``gelu``: ``"erf"`` (the form ``torch.onnx.export`` writes before opset 20) or ``"op"``
    (the opset-20 ``Gelu`` op). ``outlier_channel``: the residual stream carries one channel
    ``outlier_gain`` times larger than the rest (it comes with the input, see
    :func:`realistic_inputs`), and the first layernorm's gamma scales it back down, as a
    layer that normalises the outlier away.
    """
    from onnx import TensorProto, helper, numpy_helper

    if gelu not in ("erf", "op"):
        raise ValueError(f"GELU form must be 'erf' or 'op', not {gelu!r}")
    rng = np.random.default_rng(seed)
    h, nh, dh, f = shape.hidden, shape.heads, shape.head_dim, shape.ffn
    nodes, inits = [], []

    def const(array, name):
        inits.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    def int_const(values, name):
        inits.append(numpy_helper.from_array(np.asarray(values, np.int64), name))
        return name

    def node(op, inputs, output, **attributes):
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def linear(x, k, n, prefix, gain=1.0):
        w = rng.normal(0, gain / np.sqrt(k), (k, n))
        b = rng.normal(0, 0.05, n)
        y = node("MatMul", [x, const(w, f"{prefix}.weight")], f"{prefix}.matmul")
        return node("Add", [y, const(b, f"{prefix}.bias")], f"{prefix}.out")

    def layernorm(x, prefix, gamma, beta):
        return node("LayerNormalization", [x, const(gamma, f"{prefix}.gamma"),
                                           const(beta, f"{prefix}.beta")], f"{prefix}.out",
                    axis=-1, epsilon=1e-12)

    heads_shape = int_const([0, 0, nh, dh], "heads_shape")
    merged_shape = int_const([0, 0, h], "merged_shape")

    def to_heads(x, prefix, perm):
        r = node("Reshape", [x, heads_shape], f"{prefix}.heads")
        return node("Transpose", [r], f"{prefix}.transposed", perm=perm)

    # The additive mask: (1 - mask) * -10000, shaped (N, 1, 1, S).
    inverted = node("Sub", [const(1.0, "one"), "attention_mask"], "mask.inverted")
    additive = node("Mul", [inverted, const(MASK_NEGATIVE, "mask.negative")], "mask.additive")
    mask4 = node("Unsqueeze", [additive, int_const([1, 2], "mask_axes")], "mask.extended")

    q = to_heads(linear("input", h, h, "query"), "query", [0, 2, 1, 3])
    k = to_heads(linear("input", h, h, "key"), "key", [0, 2, 3, 1])
    v = to_heads(linear("input", h, h, "value"), "value", [0, 2, 1, 3])
    scores = node("MatMul", [q, k], "attention.scores")
    scaled = node("Div", [scores, const(np.sqrt(dh), "attention.sqrt_d")], "attention.scaled")
    masked = node("Add", [scaled, mask4], "attention.masked")
    probs = node("Softmax", [masked], "attention.probs", axis=-1)
    context = node("MatMul", [probs, v], "attention.context")
    context = node("Transpose", [context], "attention.context_t", perm=[0, 2, 1, 3])
    context = node("Reshape", [context, merged_shape], "attention.merged")
    # The blocks add updates a few times smaller than the residual stream, as trained
    # transformers do.
    attn = linear(context, h, h, "attention.output", UPDATE_GAIN)
    h1 = node("Add", [attn, "input"], "attention.residual")
    gamma1 = rng.normal(1, 0.1, h)
    if outlier_channel is not None:
        gamma1[outlier_channel] /= outlier_gain
    y1 = layernorm(h1, "attention.layernorm", gamma1, rng.normal(0, 0.05, h))
    hidden = linear(y1, h, f, "intermediate")
    if gelu == "op":
        g = node("Gelu", [hidden], "intermediate.gelu")
    else:
        half = node("Div", [hidden, const(np.sqrt(2.0), "sqrt2")], "gelu.div")
        erf = node("Erf", [half], "gelu.erf")
        one_plus = node("Add", [erf, const(1.0, "gelu.one")], "gelu.add")
        product = node("Mul", [hidden, one_plus], "gelu.mul")
        g = node("Mul", [product, const(0.5, "gelu.half")], "intermediate.gelu")
    ffn = linear(g, f, h, "output", UPDATE_GAIN)
    h2 = node("Add", [ffn, y1], "output.residual")
    out = layernorm(h2, "output.layernorm", rng.normal(1, 0.1, h), rng.normal(0, 0.05, h))
    nodes[-1].output[0] = "output"
    del out
    graph = helper.make_graph(
        nodes, "encoder_layer",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", shape.seq, h]),
         helper.make_tensor_value_info("attention_mask", TensorProto.FLOAT, ["N", shape.seq])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", shape.seq, h])],
        inits)
    opset = 20 if gelu == "op" else OPSET
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    return model


def realistic_inputs(shape: EncoderShape, *, batch: int = 1, seed: int = 0,
                     padded: int = 0, outlier_channel: int | None = None,
                     outlier_gain: float = 100.0) -> dict[str, np.ndarray]:
    """Layer-normalised activations (mean 0, variance 1 per token, as the output of the previous
    layer), with the last ``padded`` tokens masked out; an outlier channel scaled by
    ``outlier_gain``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (batch, shape.seq, shape.hidden))
    x = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)
    if outlier_channel is not None:
        x[..., outlier_channel] *= outlier_gain
    mask = np.ones((batch, shape.seq), np.float32)
    if padded:
        mask[:, shape.seq - padded:] = 0
    return {"input": x.astype(np.float32), "attention_mask": mask}


def quantize_encoder(model, calibration: list[dict[str, np.ndarray]], *, per_channel: bool = False,
                     activations: str = "uint8"):
    """``onnxruntime.quantization.quantize_static`` in QDQ format, int8 weights, as a user runs
    it (``docs/sdk.md``)."""
    import tempfile
    from pathlib import Path

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(calibration)

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp, "float.onnx"), Path(tmp, "int8.onnx")
        onnx.save(model, source)
        quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8 if activations == "uint8"
                        else QuantType.QInt8, weight_type=QuantType.QInt8,
                        per_channel=per_channel)
        return onnx.load(str(target))
