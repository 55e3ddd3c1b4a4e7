"""Import of int8 ONNX models (onnxruntime ``quantize_static``, QOperator and QDQ formats).

The importer walks the graph in order and keeps, for every ONNX value, what it is on the NPU:

- ``_Codes``: a quantised activation in DRAM (a :class:`sw.graph.Tensor`);
- ``_Dequantized``: the float view of such a tensor (after a DequantizeLinear, QDQ format);
- ``_QuantConst``: a quantised constant and its DequantizeLinear (weights and biases, QDQ);
- ``_Pending``: a float op over dequantised values (Conv, MatMul, Gemm, Add, pooling) that
  becomes an integer layer when the QuantizeLinear after it gives its output quantisation; a
  Relu or Clip in between becomes the layer's output clip.

Transformer layers (QDQ format) use two more mechanisms:

- ``_Lazy``: the QuantizeLinear of a pending op is not built at once. When the next float op
  can be fused into it on the NPU (the bias Add after a projection MatMul; the 1/sqrt(d) scaling,
  the additive mask and the Softmax after ``Q @ K^T``; ``@ V`` after the Softmax; the pieces of
  the Erf form of GELU), the fused op keeps the intermediate in int32 and the graph's rounding
  point in between is skipped. Otherwise the layer is built when its codes are first used.
- ``_HeadView``: Reshape (N, S, H) -> (N, S, heads, d) and the head Transposes are views of
  the same bytes; the value projection that ``P @ V`` reads is built channel-major instead.
- ``_Host``: a value computed only from the other graph inputs (the attention mask) is
  evaluated by the host before the first layer (onnxruntime runs that part of the graph).

QOperator nodes (QLinearConv, QLinearMatMul, QGemm, QLinearAdd, QLinearGlobalAveragePool,
QLinearAveragePool) become layers directly. MaxPool, Flatten and Reshape work on either form
(max commutes with dequantisation; Flatten and Reshape are views of the same bytes).
Everything else is refused with an error that names the node, the op and what is supported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from golden import quant

from .graph import Add, Attention, Conv, Gelu, LayerNorm, MaxPool, Network, Quantization, Tensor

__all__ = ["OnnxImportError", "SUPPORTED_OPS", "import_onnx", "load_model"]

SUPPORTED_OPS = (
    "QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd",
    "QLinearGlobalAveragePool", "QLinearAveragePool", "Conv", "MatMul", "Gemm", "Add",
    "GlobalAveragePool", "AveragePool", "ReduceMean", "MaxPool", "Relu", "Clip", "Flatten",
    "Reshape", "Identity", "Transpose", "Softmax", "LayerNormalization", "Gelu", "Div", "Mul",
    "Erf",
)


def _close(value: float, expected: float) -> bool:
    """A GELU constant (sqrt 2, 1, 0.5), allowing for its quantisation in a QDQ graph."""
    return abs(value - expected) <= 1e-3 * expected


class OnnxImportError(ValueError):
    """A model the NPU cannot run, with the node and the reason."""


@dataclass
class _Codes:
    tensor: Tensor


@dataclass
class _Dequantized:
    tensor: Tensor


@dataclass
class _QuantConst:
    codes: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int = 1


@dataclass
class _FloatInput:
    name: str
    shape: tuple[int, ...]


@dataclass
class _Pending:
    """A float op over dequantised values, waiting for its QuantizeLinear.

    ``kind`` names what later float ops may fuse into it (``parts`` holds the operands):
    ``linear`` (MatMul with constant weights), ``scores`` (``Q @ K^T`` with its scaling and
    mask), ``probs`` (their Softmax), ``gelu-*`` (stages of the Erf form of GELU), ``op``
    (anything else).
    """

    build: object   # callable(output name, quantisation, clips, channel_major) -> layer
    clips: list = field(default_factory=list)  # (lo, hi) float bounds of Relu/Clip after it
    kind: str = "op"
    parts: dict = field(default_factory=dict)


@dataclass(eq=False)
class _Lazy:
    """The quantised output of a pending op, built into a layer when first needed."""

    pending: _Pending
    quant: Quantization
    name: str
    built: dict = field(default_factory=dict)  # channel_major -> Tensor


@dataclass(eq=False)
class _HeadView:
    """A (N, S, H) tensor seen per head: ``order`` is ``nshd`` (after the Reshape), ``nhsd``
    (Q, V) or ``nhds`` (K transposed)."""

    source: object  # Tensor | _Lazy
    heads: int
    order: str

    @property
    def quant(self) -> Quantization:
        return self.source.quant


@dataclass
class _Host:
    """A value the host computes from the other graph inputs before the first layer."""

    name: str


def load_model(path: str | Path):
    import onnx

    path = Path(path)
    if not path.is_file():
        raise OnnxImportError(f"Model file {str(path)!r} does not exist")
    try:
        return onnx.load(str(path))
    except Exception as error:  # onnx raises DecodeError, ValueError, ...
        raise OnnxImportError(f"Could not read {str(path)!r} as an ONNX model: {error}") from None


def _attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _where(node) -> str:
    return f"node {node.name or '(unnamed)'!r} ({node.op_type})"


def _conv_output(size: int, kernel: int, stride: int, before: int, after: int) -> int:
    return (size + before + after - kernel) // stride + 1


class _Importer:
    def __init__(self, model, input_shape):
        from onnx import numpy_helper

        self.model = model
        self.graph = model.graph
        self.constants = {i.name: numpy_helper.to_array(i) for i in self.graph.initializer}
        self.values: dict[str, object] = {}
        self.layers = []
        self.input_shape = tuple(int(d) for d in input_shape)
        self.network_input: Tensor | None = None
        self.input_float = True
        self.counter = 0

    # Helpers ----------------------------------------------------------------------------------
    def fail(self, node, message: str):
        raise OnnxImportError(f"{_where(node)}: {message}")

    def const(self, node, name: str, what: str) -> np.ndarray:
        if name not in self.constants:
            self.fail(node, f"{what} ({name!r}) must be a constant initializer")
        return self.constants[name]

    def scalar_quant(self, node, scale_name: str, zp_name: str | None, what: str) -> Quantization:
        scale = self.const(node, scale_name, f"the {what} scale")
        if zp_name:
            zero_point = self.const(node, zp_name, f"the {what} zero point")
        else:
            zero_point = np.array(0, np.uint8)
        if scale.size != 1 or zero_point.size != 1:
            self.fail(node, f"the {what} must be quantised per tensor (one scale and zero point)")
        if zero_point.dtype not in (np.uint8, np.int8):
            self.fail(node, f"the {what} must be uint8 or int8, not {zero_point.dtype}")
        return Quantization(np.float32(scale.reshape(())), int(zero_point.reshape(())),
                            zero_point.dtype)

    def value(self, node, name: str):
        if name in self.values:
            return self.values[name]
        if name in self.constants:
            self.fail(node, f"input {name!r} is a constant where an activation is expected")
        self.fail(node, f"input {name!r} was not produced by a supported node")

    def resolve(self, node, x, *, channel_major: bool = False) -> Tensor:
        """The tensor of a codes value, building a lazy layer if needed."""
        if isinstance(x, _HeadView):
            self.fail(node, f"a per-head view ({x.order}) can only feed the attention MatMuls")
        if not isinstance(x, _Lazy):
            if channel_major:
                self.fail(node, "the V operand of P @ V must come straight from a projection "
                                "(MatMul with constant weights, its bias Add, Reshape, Transpose)")
            return x
        if channel_major not in x.built:
            if channel_major and x.pending.kind not in ("linear", "linear-bias"):
                self.fail(node, "the V operand of P @ V must be the output of a projection "
                                "(MatMul with constant weights and its bias Add)")
            layer = x.pending.build(x.name, x.quant, x.pending.clips, channel_major)
            self.layers.append(layer)
            x.built[channel_major] = layer.output
        return x.built[channel_major]

    def codes(self, node, name: str) -> Tensor:
        value = self.value(node, name)
        if not isinstance(value, _Codes):
            self.fail(node, f"input {name!r} must be a quantised tensor")
        return self.resolve(node, value.tensor)

    def dequantized(self, node, name: str) -> Tensor:
        value = self.value(node, name)
        if not isinstance(value, _Dequantized):
            self.fail(node, f"input {name!r} must be the DequantizeLinear of a quantised "
                            f"activation (QDQ format)")
        return self.resolve(node, value.tensor)

    def fusable(self, name: str, *kinds: str) -> _Pending | None:
        """The pending op behind ``name`` (directly, or through its QuantizeLinear and
        DequantizeLinear) if it is one of ``kinds``."""
        value = self.values.get(name)
        if isinstance(value, _Dequantized) and isinstance(value.tensor, _Lazy):
            value = value.tensor.pending
        if isinstance(value, _Pending) and value.kind in kinds and not value.clips:
            return value
        return None

    def float_const(self, name: str) -> np.ndarray | None:
        """A constant operand as float64 (an initializer, or the DequantizeLinear of one)."""
        if name in self.constants:
            return self.constants[name].astype(np.float64)
        value = self.values.get(name)
        if isinstance(value, _QuantConst):
            zp = np.asarray(value.zero_point, np.float64)
            scale = np.asarray(value.scale, np.float64)
            if zp.size > 1:
                shape = [1] * value.codes.ndim
                shape[value.axis] = zp.size
                zp, scale = zp.reshape(shape), scale.reshape(shape)
            return (value.codes.astype(np.float64) - zp) * scale
        return None

    def new_tensor(self, name: str, onnx_shape, quant_: Quantization) -> Tensor:
        onnx_shape = tuple(int(d) for d in onnx_shape)
        if len(onnx_shape) == 4:
            n, c, h, w = onnx_shape
            shape = (n, h, w, c)
        elif len(onnx_shape) == 3:
            n, s, c = onnx_shape
            shape = (n, 1, s, c)
        elif len(onnx_shape) == 2:
            shape = (onnx_shape[0], 1, 1, onnx_shape[1])
        else:
            raise OnnxImportError(f"Tensor {name!r} has shape {onnx_shape}: only NCHW (4D), "
                                  f"sequences (N, S, features) and (N, features) activations "
                                  f"are supported")
        return Tensor(name, shape, quant_, onnx_shape)

    # Layer builders ---------------------------------------------------------------------------
    def weights_int8(self, node, codes: np.ndarray, zero_point: np.ndarray, axis: int) -> np.ndarray:
        """Weight codes minus their zero point, which must fit int8."""
        zp = np.asarray(zero_point).astype(np.int64)
        if zp.size > 1:
            shape = [1] * codes.ndim
            shape[axis] = zp.size
            zp = zp.reshape(shape)
        effective = codes.astype(np.int64) - zp
        if effective.min() < -128 or effective.max() > 127:
            self.fail(node, "weights minus their zero point must fit int8: quantise the weights "
                            "as int8 (weight_type=QuantType.QInt8)")
        return effective.astype(np.int8)

    def conv_layer(self, node, *, x: Tensor, w_codes, w_scale, w_zp, bias, output_name: str,
                   y_quant: Quantization, clip, attributes: dict) -> Conv:
        if w_codes.ndim != 4:
            self.fail(node, f"only 2D convolutions are supported (weights of shape {w_codes.shape})")
        n, c, h, w = x.onnx_shape
        o, cg, kh, kw = w_codes.shape
        if attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            self.fail(node, "auto_pad is not supported; export the model with explicit pads")
        if any(d != 1 for d in attributes.get("dilations", [1, 1])):
            self.fail(node, f"dilations must be 1, not {attributes['dilations']}")
        groups = int(attributes.get("group", 1))
        if c % groups or o % groups or cg * groups != c:
            self.fail(node, f"group {groups} does not match {c} input and {o} output channels")
        sh, sw = attributes.get("strides", [1, 1])
        pt, pl, pb, pr = attributes.get("pads", [0, 0, 0, 0])
        oh, ow = _conv_output(h, kh, sh, pt, pb), _conv_output(w, kw, sw, pl, pr)
        weights = self.weights_int8(node, w_codes, w_zp, 0)
        w_scale = np.broadcast_to(np.asarray(w_scale, np.float32).reshape(-1), (o,)).copy()
        y = self.new_tensor(output_name, (n, o, oh, ow), y_quant)
        return Conv(node.name or output_name, node.op_type, x, y, weights,
                    np.zeros(o, np.int32) if bias is None else bias.astype(np.int32),
                    quant.fp32_requant_scale(x.quant.scale, w_scale, y_quant.scale),
                    _real_multiplier(x.quant.scale, w_scale, y_quant.scale),
                    (int(sh), int(sw)), (int(pt), int(pl), int(pb), int(pr)), groups,
                    self.clip(y_quant, clip))

    def dense_layer(self, node, *, x: Tensor, w_codes, w_scale, w_zp, w_axis: int, bias,
                    output_name: str, y_quant: Quantization, clip,
                    channel_major: bool = False) -> Conv:
        """x (M, K) or (N, S, K) @ W (K, N) as a 1x1 convolution; W per output column (axis 1).
        ``channel_major``: the output is stored transposed (the V of attention)."""
        if len(x.onnx_shape) not in (2, 3) or w_codes.ndim != 2 \
                or w_codes.shape[0] != x.onnx_shape[-1]:
            self.fail(node, f"needs an input (M, K) or (N, S, K) and constant weights (K, N); "
                            f"got {x.onnx_shape} and {w_codes.shape}")
        k, n_out = w_codes.shape
        weights = self.weights_int8(node, w_codes, w_zp, w_axis).T  # (N, K)
        if x.flattened_from is not None:  # K in NCHW order -> the NHWC order of the bytes
            c, h, w = x.flattened_from
            weights = weights.reshape(n_out, c, h, w).transpose(0, 2, 3, 1).reshape(n_out, k)
        w_scale = np.broadcast_to(np.asarray(w_scale, np.float32).reshape(-1), (n_out,)).copy()
        y = self.new_tensor(output_name, (*x.onnx_shape[:-1], n_out), y_quant)
        y.channel_major = channel_major
        return Conv(node.name or output_name, "MatMul" if node.op_type == "Add" else node.op_type, x, y,
                    np.ascontiguousarray(weights).reshape(n_out, k, 1, 1),
                    np.zeros(n_out, np.int32) if bias is None else bias.astype(np.int32).reshape(-1),
                    quant.fp32_requant_scale(x.quant.scale, w_scale, y_quant.scale),
                    _real_multiplier(x.quant.scale, w_scale, y_quant.scale),
                    clip=self.clip(y_quant, clip))

    def pool_layer(self, node, *, x: Tensor, kernel, stride, pads, output_name: str,
                   y_quant: Quantization, clip, global_pool: bool) -> Conv:
        """Average pooling: a depthwise convolution with a kernel of ones (padding counted)."""
        n, c, h, w = x.onnx_shape
        kh, kw = (h, w) if global_pool else kernel
        count = kh * kw
        oh, ow = _conv_output(h, kh, stride[0], pads[0], pads[2]), \
            _conv_output(w, kw, stride[1], pads[1], pads[3])
        y = self.new_tensor(output_name, (n, c, oh, ow), y_quant)
        scale = quant.global_average_pool_scale(x_scale=x.quant.scale, y_scale=y_quant.scale,
                                                count=count)
        real = np.float64(x.quant.scale) / (count * np.float64(y_quant.scale))
        return Conv(node.name or output_name, "GlobalAveragePool" if global_pool else "AveragePool",
                    x, y, np.ones((c, 1, kh, kw), np.int8), np.zeros(c, np.int32),
                    np.full(c, scale, np.float32), np.full(c, real, np.float64),
                    tuple(int(s) for s in stride), tuple(int(p) for p in pads), c,
                    self.clip(y_quant, clip))

    def clip(self, y_quant: Quantization, clips) -> tuple[int, int]:
        """Float clip bounds (Relu, Clip) in the output's stored int8 domain."""
        lo, hi = -128, 127
        for low, high in clips or []:
            if low is not None:
                lo = max(lo, int(y_quant.to_stored(y_quant.quantize(np.float32(low)))))
            if high is not None:
                hi = min(hi, int(y_quant.to_stored(y_quant.quantize(np.float32(high)))))
        return lo, max(lo, hi)

    def pool_attributes(self, node, attributes):
        kernel = tuple(attributes.get("kernel_shape", []))
        if len(kernel) != 2:
            self.fail(node, f"needs a 2D kernel_shape, not {kernel}")
        if attributes.get("ceil_mode", 0):
            self.fail(node, "ceil_mode=1 is not supported")
        if any(d != 1 for d in attributes.get("dilations", [1, 1])):
            self.fail(node, "dilations must be 1")
        if attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            self.fail(node, "auto_pad is not supported; export the model with explicit pads")
        stride = tuple(attributes.get("strides", [1, 1]))
        pads = tuple(attributes.get("pads", [0, 0, 0, 0]))
        return kernel, stride, pads

    def average_pool(self, node, x: Tensor, attributes, *, global_pool: bool):
        if global_pool:
            return dict(kernel=None, stride=(1, 1), pads=(0, 0, 0, 0), global_pool=True)
        kernel, stride, pads = self.pool_attributes(node, attributes)
        if any(pads) and not attributes.get("count_include_pad", 0):
            self.fail(node, "average pooling with padding needs count_include_pad=1 (the NPU "
                            "divides every window by the kernel size)")
        return dict(kernel=kernel, stride=stride, pads=pads, global_pool=False)

    # The walk ---------------------------------------------------------------------------------
    def run(self) -> Network:
        graph = self.graph
        inputs = [i for i in graph.input if i.name not in self.constants]
        if not inputs or len(graph.output) != 1:
            raise OnnxImportError(f"The model must have an input and one output, not "
                                  f"{len(inputs)} and {len(graph.output)}")
        self.values[inputs[0].name] = _FloatInput(inputs[0].name, self.input_shape)
        for extra in inputs[1:]:  # e.g. attention_mask: evaluated by the host
            self.values[extra.name] = _Host(extra.name)
        for node in graph.node:
            operands = [self.values.get(name) for name in node.input
                        if name and name not in self.constants
                        and not isinstance(self.values.get(name), _QuantConst)]
            if operands and all(isinstance(v, _Host) for v in operands):
                for name in node.output:
                    self.values[name] = _Host(name)
                continue
            handler = getattr(self, f"op_{node.op_type}", None)
            if handler is None or node.domain not in ("", "ai.onnx", "com.microsoft"):
                raise OnnxImportError(
                    f"{_where(node)}: op {node.op_type!r} (domain {node.domain or 'ai.onnx'!r}) "
                    f"is not supported; the NPU runs {', '.join(SUPPORTED_OPS)}")
            handler(node, _attributes(node))
        output = self.values.get(graph.output[0].name)
        if isinstance(output, (_Dequantized, _Codes)):
            out_tensor = self.resolve(graph.node[-1], output.tensor)
            output_float = isinstance(output, _Dequantized)
        else:
            raise OnnxImportError(f"The model output {graph.output[0].name!r} must be a quantised "
                                  f"tensor or its DequantizeLinear")
        if self.network_input is None:
            raise OnnxImportError("The model input must feed a QuantizeLinear")
        if not self.layers:
            raise OnnxImportError("The model has no layer the NPU computes")
        return Network(input=self.network_input, output=out_tensor, layers=self.layers,
                       input_name=inputs[0].name, output_name=graph.output[0].name,
                       output_float=output_float, input_float=self.input_float,
                       host_model=self.host_model([i.name for i in inputs[1:]]))

    def host_model(self, host_inputs: list[str]):
        """The part of the graph from the other inputs to the host values the layers use."""
        wanted = sorted({layer.mask for layer in self.layers
                         if isinstance(layer, Attention) and layer.mask})
        if not wanted:
            return None
        from onnx import TensorProto, helper

        producers = {out: node for node in self.graph.node for out in node.output}
        needed, stack = [], list(wanted)
        seen = set()
        while stack:
            name = stack.pop()
            if name in seen or name not in producers:
                continue
            seen.add(name)
            node = producers[name]
            needed.append(node)
            stack += [i for i in node.input if i]
        nodes = [node for node in self.graph.node if node in needed]  # graph order
        used = {i for node in nodes for i in node.input}
        graph = helper.make_graph(
            nodes, "host", [i for i in self.graph.input if i.name in host_inputs],
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in wanted],
            [i for i in self.graph.initializer if i.name in used])
        return helper.make_model(graph, opset_imports=self.model.opset_import,
                                 ir_version=self.model.ir_version)

    # Edges and QDQ ----------------------------------------------------------------------------
    def op_QuantizeLinear(self, node, attributes):
        source = self.values.get(node.input[0])
        y_quant = self.scalar_quant(node, node.input[1], node.input[2] if len(node.input) > 2
                                    and node.input[2] else None, "output")
        if isinstance(source, _FloatInput):
            if self.network_input is not None:
                self.fail(node, "the model input is quantised twice")
            self.network_input = self.new_tensor(node.output[0], source.shape, y_quant)
            self.values[node.output[0]] = _Codes(self.network_input)
        elif isinstance(source, _Pending):
            self.values[node.output[0]] = _Codes(_Lazy(source, y_quant, node.output[0]))
        elif isinstance(source, _Dequantized):
            if source.tensor.quant != y_quant:
                self.fail(node, "requantising a tensor to other parameters without an op in "
                                "between is not supported")
            self.values[node.output[0]] = _Codes(source.tensor)
        else:
            self.fail(node, f"input {node.input[0]!r} must be the model input or a float op "
                            f"over dequantised tensors")

    def op_DequantizeLinear(self, node, attributes):
        name = node.input[0]
        if name in self.constants:
            scale = self.const(node, node.input[1], "the scale")
            zp = (self.const(node, node.input[2], "the zero point") if len(node.input) > 2
                  and node.input[2] else np.zeros_like(scale, dtype=self.constants[name].dtype))
            self.values[node.output[0]] = _QuantConst(self.constants[name], scale, zp,
                                                      int(attributes.get("axis", 1)))
            return
        value = self.value(node, name)
        if not isinstance(value, _Codes):
            self.fail(node, f"input {name!r} must be a quantised tensor")
        tensor = value.tensor  # a Tensor, a _Lazy or a _HeadView: kept as it is
        quant_ = self.scalar_quant(node, node.input[1], node.input[2] if len(node.input) > 2
                                   and node.input[2] else None, "input")
        if quant_ != tensor.quant:
            self.fail(node, "dequantises with other parameters than the tensor was quantised with")
        self.values[node.output[0]] = _Dequantized(tensor)

    def quant_const(self, node, name: str, what: str) -> _QuantConst:
        value = self.values.get(name)
        if not isinstance(value, _QuantConst):
            self.fail(node, f"{what} ({name!r}) must be a DequantizeLinear of a constant "
                            f"(quantise the model with quantize_static)")
        return value

    def bias_codes(self, node, name: str | None) -> np.ndarray | None:
        if not name:
            return None
        bias = self.quant_const(node, name, "the bias")
        if bias.codes.dtype != np.int32:
            self.fail(node, "the bias must be quantised to int32")
        return bias.codes

    def pending(self, node, build, kind: str = "op", **parts):
        self.values[node.output[0]] = _Pending(build, kind=kind, parts=parts)

    def op_Conv(self, node, attributes):
        x = self.dequantized(node, node.input[0])
        w = self.quant_const(node, node.input[1], "the weights")
        bias = self.bias_codes(node, node.input[2] if len(node.input) > 2 else None)
        self.pending(node, lambda out, yq, clips, channel_major: self.conv_layer(
            node, x=x, w_codes=w.codes, w_scale=w.scale, w_zp=w.zero_point, bias=bias,
            output_name=out, y_quant=yq, clip=clips, attributes=attributes))

    def op_MatMul(self, node, attributes):
        if not isinstance(self.values.get(node.input[1]), _QuantConst):
            self.attention_matmul(node)
            return
        x = self.dequantized(node, node.input[0])
        w = self.quant_const(node, node.input[1], "the second MatMul operand")
        self.linear(node, x, w, bias=None)

    def linear(self, node, x: Tensor, w: _QuantConst, bias: np.ndarray | None):
        self.pending(node, lambda out, yq, clips, channel_major: self.dense_layer(
            node, x=x, w_codes=w.codes, w_scale=w.scale, w_zp=w.zero_point, w_axis=1, bias=bias,
            output_name=out, y_quant=yq, clip=clips, channel_major=channel_major),
            kind="linear" if bias is None else "linear-bias", x=x, w=w)

    # Attention --------------------------------------------------------------------------------
    def head_view(self, node, name: str) -> _HeadView | None:
        value = self.values.get(name)
        if isinstance(value, _Dequantized) and isinstance(value.tensor, _HeadView):
            return value.tensor
        return None

    def attention_matmul(self, node):
        """Q @ K^T (two head views) or P @ V (the fused softmax and a head view)."""
        probs = self.fusable(node.input[0], "probs")
        b = self.head_view(node, node.input[1])
        if probs is not None and b is not None and b.order == "nhsd":
            quantized = self.values[node.input[0]]
            if not isinstance(quantized, _Dequantized):
                self.fail(node, "the Softmax output must be quantised (QuantizeLinear and "
                                "DequantizeLinear before P @ V)")
            parts = dict(probs.parts, v=b, probs_quant=quantized.tensor.quant)
            self.pending(node, lambda out, yq, clips, channel_major: self.context_output(
                node, out, yq, parts), kind="context", **parts)
            return
        a = self.head_view(node, node.input[0])
        if a is None or b is None or (a.order, b.order) != ("nhsd", "nhds") \
                or a.heads != b.heads:
            self.fail(node, "a MatMul of two activations is supported as attention: Q @ K^T "
                            "with both operands reshaped and transposed to heads "
                            "(perm [0, 2, 1, 3] and [0, 2, 3, 1]), then scaling, mask and "
                            "Softmax, then @ V")
        self.pending(node, self.unfused("Q @ K^T must feed a Softmax (optionally scaled and "
                                        "masked in between)"),
                     kind="scores", q=a, k=b, divisor=1.0, mask=None)

    def unfused(self, message: str):
        def build(out, yq, clips, channel_major):
            raise OnnxImportError(f"Value {out!r}: {message}; the NPU fuses these ops and "
                                  f"cannot produce this intermediate on its own")
        return build

    def rescaled_scores(self, node, scores: _Pending, factor: float):
        self.pending(node, scores.build, kind="scores",
                     **dict(scores.parts, divisor=scores.parts["divisor"] / factor))

    def op_Softmax(self, node, attributes):
        scores = self.fusable(node.input[0], "scores")
        if scores is None:
            self.fail(node, "Softmax is supported on attention scores (Q @ K^T, scaled and "
                            "masked)")
        if int(attributes.get("axis", -1)) not in (-1, 3):
            self.fail(node, f"Softmax must be over the last axis, not {attributes['axis']}")
        self.pending(node, self.unfused("the attention probabilities must feed P @ V"),
                     kind="probs", **scores.parts)

    def context_output(self, node, output_name: str, y_quant: Quantization, parts) -> Attention:
        """The fused attention: the merged (N, S, H) context (the Transpose and Reshape that
        follow are views of it)."""
        q, k, v = parts["q"], parts["k"], parts["v"]
        q_t, k_t = self.resolve(node, q.source), self.resolve(node, k.source)
        v_t = self.resolve(node, v.source, channel_major=True)
        if not (q_t.onnx_shape == k_t.onnx_shape == v_t.onnx_shape) or len(q_t.onnx_shape) != 3:
            self.fail(node, f"Q, K and V must have the same shape (N, S, H), not "
                            f"{q_t.onnx_shape}, {k_t.onnx_shape}, {v_t.onnx_shape}")
        probs_quant = parts["probs_quant"]
        y = self.new_tensor(output_name, q_t.onnx_shape, y_quant)
        score_scale = float(q_t.quant.scale) * float(k_t.quant.scale) / parts["divisor"]
        return Attention(node.name or output_name, q_t, k_t, v_t, y, q.heads, score_scale,
                         probs_quant, parts["mask"])

    def op_Gemm(self, node, attributes):
        x = self.dequantized(node, node.input[0])
        w = self.quant_const(node, node.input[1], "the Gemm weights")
        self.check_gemm(node, attributes)
        bias = self.bias_codes(node, node.input[2] if len(node.input) > 2 else None)
        trans = int(attributes.get("transB", 0))
        codes, zp = (w.codes.T, w.zero_point) if trans else (w.codes, w.zero_point)
        self.pending(node, lambda out, yq, clips, channel_major: self.dense_layer(
            node, x=x, w_codes=codes, w_scale=w.scale, w_zp=zp, w_axis=1, bias=bias,
            output_name=out, y_quant=yq, clip=clips))

    def check_gemm(self, node, attributes):
        if attributes.get("transA", 0):
            self.fail(node, "transA=1 is not supported")
        if float(attributes.get("alpha", 1.0)) != 1.0 or float(attributes.get("beta", 1.0)) != 1.0:
            self.fail(node, "alpha and beta must be 1")

    def op_Add(self, node, attributes):
        for mine, other in ((0, 1), (1, 0)):
            this, that = node.input[mine], node.input[other]
            constant = self.float_const(that)
            linear = self.fusable(this, "linear")
            if linear is not None and constant is not None:
                self.linear_bias(node, linear, constant)
                return
            scores = self.fusable(this, "scores")
            if scores is not None and isinstance(self.values.get(that), _Host):
                if scores.parts["mask"] is not None:
                    self.fail(node, "attention scores take one mask")
                self.pending(node, scores.build, kind="scores",
                             **dict(scores.parts, mask=that))
                return
            erf = self.fusable(this, "gelu-erf")
            if erf is not None and constant is not None:
                if constant.size != 1 or not _close(float(constant.reshape(())), 1.0):
                    self.fail(node, "inside GELU, the Erf must be followed by adding 1")
                self.gelu_stage(node, "gelu-erf1", erf.parts["x"])
                return
        a = self.dequantized(node, node.input[0])
        b = self.dequantized(node, node.input[1])
        self.pending(node, lambda out, yq, clips, channel_major: self.add_layer(
            node, a, b, out, yq, clips))

    def linear_bias(self, node, linear: _Pending, bias: np.ndarray):
        """The projection's bias, fused: int32 in units of x_scale * w_scale (onnxruntime's
        bias quantisation) instead of the graph's int8 add after a requantisation."""
        x, w = linear.parts["x"], linear.parts["w"]
        n_out = w.codes.shape[1]
        if bias.size != n_out or any(d != 1 for d in bias.shape[:-1]):
            self.fail(node, f"the bias must be a vector of {n_out} values, not {bias.shape}")
        w_scale = np.broadcast_to(np.asarray(w.scale, np.float64).reshape(-1), (n_out,))
        step = np.float64(x.quant.scale) * w_scale
        codes = np.clip(np.rint(bias.reshape(-1) / step), -2**31, 2**31 - 1).astype(np.int32)
        self.linear(node, x, w, bias=codes)

    def scalar(self, node, name: str) -> float | None:
        constant = self.float_const(name)
        if constant is None:
            return None
        if constant.size != 1:
            self.fail(node, f"only a scalar constant is supported here, not shape {constant.shape}")
        return float(constant.reshape(()))

    def op_Div(self, node, attributes):
        divisor = self.scalar(node, node.input[1])
        scores = self.fusable(node.input[0], "scores")
        if scores is not None and divisor is not None:
            self.rescaled_scores(node, scores, 1.0 / divisor)
            return
        if divisor is not None and _close(divisor, np.sqrt(2)):
            self.gelu_stage(node, "gelu-div", self.dequantized(node, node.input[0]))
            return
        self.fail(node, "Div is supported as the scaling of attention scores or as x / sqrt(2) "
                        "inside GELU")

    def op_Erf(self, node, attributes):
        stage = self.fusable(node.input[0], "gelu-div")
        if stage is None:
            self.fail(node, "Erf is supported inside GELU: x * 0.5 * (1 + Erf(x / sqrt(2)))")
        self.gelu_stage(node, "gelu-erf", stage.parts["x"])

    def op_Mul(self, node, attributes):
        for mine, other in ((0, 1), (1, 0)):
            this, that = node.input[mine], node.input[other]
            factor = self.scalar(node, that) if self.float_const(that) is not None else None
            scores = self.fusable(this, "scores")
            if scores is not None and factor is not None:
                self.rescaled_scores(node, scores, factor)
                return
            if factor is not None and _close(factor, 0.5):
                stage = self.fusable(this, "gelu-x-erf1")
                if stage is not None:
                    self.gelu_stage(node, "gelu", stage.parts["x"])
                    return
                value = self.values.get(this)
                if isinstance(value, _Dequantized):
                    self.gelu_stage(node, "gelu-half-x", self.dequantized(node, this))
                    return
            for stage_kind, next_kind in (("gelu-erf1", "gelu-x-erf1"), ("gelu-half-x", None)):
                stage = self.fusable(this, stage_kind)
                if stage is None:
                    continue
                x = stage.parts["x"]
                if next_kind is None:  # (0.5 x) * (1 + erf)
                    erf1 = self.fusable(that, "gelu-erf1")
                    if erf1 is not None and erf1.parts["x"] is x:
                        self.gelu_stage(node, "gelu", x)
                        return
                elif isinstance(self.values.get(that), _Dequantized) \
                        and self.dequantized(node, that) is x:
                    self.gelu_stage(node, next_kind, x)
                    return
        self.fail(node, "Mul is supported as the scaling of attention scores or inside GELU "
                        "(x * 0.5 * (1 + Erf(x / sqrt(2))))")

    def gelu_stage(self, node, kind: str, x: Tensor):
        build = (lambda out, yq, clips, channel_major: self.gelu_layer(node, x, out, yq, clips)) \
            if kind == "gelu" else \
            self.unfused("the Erf form of GELU must be complete: x * 0.5 * (1 + Erf(x / sqrt(2)))")
        self.pending(node, build, kind=kind, x=x)

    def gelu_layer(self, node, x: Tensor, output_name, y_quant, clips) -> Gelu:
        if clips:
            self.fail(node, "a Relu or Clip after GELU is not supported")
        return Gelu(node.name or output_name, x, self.new_tensor(output_name, x.onnx_shape, y_quant))

    def op_Gelu(self, node, attributes):
        if attributes.get("approximate", "none") not in ("none", b"none"):
            self.fail(node, "only the exact GELU (approximate='none') is supported")
        self.gelu_stage(node, "gelu", self.dequantized(node, node.input[0]))

    def op_LayerNormalization(self, node, attributes):
        x = self.dequantized(node, node.input[0])
        if int(attributes.get("axis", -1)) not in (-1, len(x.onnx_shape) - 1):
            self.fail(node, "LayerNormalization must normalise over the last axis only")
        if len(node.output) > 1 and any(node.output[1:]):
            self.fail(node, "the Mean and InvStdDev outputs are not supported")
        channels = x.onnx_shape[-1]
        gamma = self.float_const(node.input[1])
        beta = self.float_const(node.input[2]) if len(node.input) > 2 and node.input[2] \
            else np.zeros(channels)
        if gamma is None or beta is None or gamma.size != channels or beta.size != channels:
            self.fail(node, f"scale and bias must be constant vectors of {channels} values")
        epsilon = float(attributes.get("epsilon", 1e-5))

        def build(out, yq, clips, channel_major):
            if clips:
                self.fail(node, "a Relu or Clip after LayerNormalization is not supported")
            return LayerNorm(node.name or out, x, self.new_tensor(out, x.onnx_shape, yq),
                             gamma.reshape(-1), beta.reshape(-1), epsilon)
        self.pending(node, build)

    def add_layer(self, node, a: Tensor, b: Tensor, output_name, y_quant, clips) -> Add:
        if a.onnx_shape != b.onnx_shape:
            self.fail(node, f"operands must have the same shape (no broadcasting), not "
                            f"{a.onnx_shape} and {b.onnx_shape}")
        y = self.new_tensor(output_name, a.onnx_shape, y_quant)
        y.flattened_from = a.flattened_from
        return Add(node.name or output_name, a, b, y, self.clip(y_quant, clips))

    def op_GlobalAveragePool(self, node, attributes):
        x = self.dequantized(node, node.input[0])
        self.pending(node, lambda out, yq, clips, channel_major: self.pool_layer(
            node, x=x, output_name=out, y_quant=yq, clip=clips,
            **self.average_pool(node, x, attributes, global_pool=True)))

    def op_AveragePool(self, node, attributes):
        x = self.dequantized(node, node.input[0])
        self.pending(node, lambda out, yq, clips, channel_major: self.pool_layer(
            node, x=x, output_name=out, y_quant=yq, clip=clips,
            **self.average_pool(node, x, attributes, global_pool=False)))

    def op_ReduceMean(self, node, attributes):
        x = self.dequantized(node, node.input[0])
        axes = attributes.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.const(node, node.input[1], "axes").tolist()
        if len(x.onnx_shape) != 4 or sorted(int(a) % 4 for a in axes or []) != [2, 3] \
                or not attributes.get("keepdims", 1):
            self.fail(node, "only ReduceMean over the spatial axes [2, 3] with keepdims=1 "
                            "(global average pooling) is supported")
        self.op_GlobalAveragePool(node, attributes)

    def op_Relu(self, node, attributes):
        self.activation(node, 0.0, None)

    def op_Clip(self, node, attributes):
        low = attributes.get("min")
        high = attributes.get("max")
        if len(node.input) > 1 and node.input[1]:
            low = float(self.const(node, node.input[1], "the Clip minimum"))
        if len(node.input) > 2 and node.input[2]:
            high = float(self.const(node, node.input[2], "the Clip maximum"))
        self.activation(node, low, high)

    def activation(self, node, low, high):
        source = self.values.get(node.input[0])
        if not isinstance(source, _Pending):
            self.fail(node, "a Relu or Clip must follow a Conv, MatMul, Gemm, Add or pooling "
                            "between DequantizeLinear and QuantizeLinear")
        self.values[node.output[0]] = _Pending(source.build, source.clips + [(low, high)])

    # QOperator --------------------------------------------------------------------------------
    def op_QLinearConv(self, node, attributes):
        x = self.codes(node, node.input[0])
        self.check_quant(node, x, node.input[1], node.input[2])
        w_codes = self.const(node, node.input[3], "the weights")
        w_scale = self.const(node, node.input[4], "the weight scale")
        w_zp = self.const(node, node.input[5], "the weight zero point")
        y_quant = self.scalar_quant(node, node.input[6], node.input[7], "output")
        bias = self.const(node, node.input[8], "the bias") if len(node.input) > 8 and node.input[8] \
            else None
        self.emit(self.conv_layer(node, x=x, w_codes=w_codes, w_scale=w_scale, w_zp=w_zp,
                                  bias=bias, output_name=node.output[0], y_quant=y_quant,
                                  clip=None, attributes=attributes))

    def op_QLinearMatMul(self, node, attributes):
        x = self.codes(node, node.input[0])
        self.check_quant(node, x, node.input[1], node.input[2])
        self.emit(self.dense_layer(
            node, x=x, w_codes=self.const(node, node.input[3], "the second operand"),
            w_scale=self.const(node, node.input[4], "its scale"),
            w_zp=self.const(node, node.input[5], "its zero point"), w_axis=1, bias=None,
            output_name=node.output[0],
            y_quant=self.scalar_quant(node, node.input[6], node.input[7], "output"), clip=None))

    def op_QGemm(self, node, attributes):
        x = self.codes(node, node.input[0])
        self.check_quant(node, x, node.input[1], node.input[2])
        self.check_gemm(node, attributes)
        if len(node.input) < 8 or not node.input[6]:
            self.fail(node, "a QGemm with a float output is not supported")
        w = self.const(node, node.input[3], "the weights")
        if attributes.get("transB", 0):
            w = w.T
        bias = self.const(node, node.input[6], "the bias") if node.input[6] else None
        self.emit(self.dense_layer(
            node, x=x, w_codes=w, w_scale=self.const(node, node.input[4], "the weight scale"),
            w_zp=self.const(node, node.input[5], "the weight zero point"), w_axis=1, bias=bias,
            output_name=node.output[0],
            y_quant=self.scalar_quant(node, node.input[7], node.input[8] if len(node.input) > 8
                                      else None, "output"), clip=None))

    def op_QLinearAdd(self, node, attributes):
        a = self.codes(node, node.input[0])
        self.check_quant(node, a, node.input[1], node.input[2])
        b = self.codes(node, node.input[3])
        self.check_quant(node, b, node.input[4], node.input[5])
        y_quant = self.scalar_quant(node, node.input[6], node.input[7], "output")
        self.emit(self.add_layer(node, a, b, node.output[0], y_quant, None))

    def op_QLinearGlobalAveragePool(self, node, attributes):
        if attributes.get("channels_last", 0):
            self.fail(node, "channels_last=1 is not supported")
        self.qlinear_pool(node, attributes, global_pool=True)

    def op_QLinearAveragePool(self, node, attributes):
        if attributes.get("channels_last", 0):
            self.fail(node, "channels_last=1 is not supported")
        self.qlinear_pool(node, attributes, global_pool=False)

    def qlinear_pool(self, node, attributes, *, global_pool: bool):
        x = self.codes(node, node.input[0])
        self.check_quant(node, x, node.input[1], node.input[2])
        y_quant = self.scalar_quant(node, node.input[3], node.input[4], "output")
        self.emit(self.pool_layer(node, x=x, output_name=node.output[0], y_quant=y_quant,
                                  clip=None, **self.average_pool(node, x, attributes,
                                                                 global_pool=global_pool)))

    def check_quant(self, node, tensor: Tensor, scale_name, zp_name):
        if self.scalar_quant(node, scale_name, zp_name, "input") != tensor.quant:
            self.fail(node, f"the quantisation of input {tensor.name!r} differs from the one "
                            f"it was produced with")

    def emit(self, layer):
        self.layers.append(layer)
        self.values[layer.output.name] = _Codes(layer.output)

    # Either form ------------------------------------------------------------------------------
    def unwrap(self, node):
        value = self.value(node, node.input[0])
        if not isinstance(value, (_Codes, _Dequantized)):
            self.fail(node, "works on quantised tensors only")
        return type(value)(self.resolve(node, value.tensor))

    def op_MaxPool(self, node, attributes):
        value = self.unwrap(node)
        if len(node.output) > 1 and node.output[1]:
            self.fail(node, "the Indices output is not supported")
        x = value.tensor
        if len(x.onnx_shape) != 4:
            self.fail(node, "needs an NCHW input")
        kernel, stride, pads = self.pool_attributes(node, attributes)
        if max(pads[0], pads[2]) >= kernel[0] or max(pads[1], pads[3]) >= kernel[1]:
            self.fail(node, "padding must be smaller than the kernel")
        n, c, h, w = x.onnx_shape
        y = self.new_tensor(node.output[0], (n, c, _conv_output(h, kernel[0], stride[0], pads[0], pads[2]),
                                             _conv_output(w, kernel[1], stride[1], pads[1], pads[3])),
                            x.quant)
        self.layers.append(MaxPool(node.name or node.output[0], x, y, tuple(kernel), tuple(stride),
                                   tuple(pads)))
        self.values[node.output[0]] = type(value)(y)

    def view(self, node, onnx_shape):
        value = self.unwrap(node)
        x = value.tensor
        onnx_shape = tuple(int(d) for d in onnx_shape)
        if onnx_shape == x.onnx_shape:
            self.values[node.output[0]] = value
            return
        if len(onnx_shape) != 2 or onnx_shape[0] != x.onnx_shape[0] \
                or int(np.prod(onnx_shape)) != int(np.prod(x.onnx_shape)):
            self.fail(node, f"only flattening to (N, features) is supported, not "
                            f"{x.onnx_shape} -> {onnx_shape}")
        flattened_from = None
        if len(x.onnx_shape) == 4 and x.onnx_shape[2:] != (1, 1):
            flattened_from = x.onnx_shape[1:]
        y = Tensor(node.output[0], (onnx_shape[0], 1, 1, onnx_shape[1]), x.quant, onnx_shape,
                   flattened_from, x)
        self.values[node.output[0]] = type(value)(y)

    def op_Transpose(self, node, attributes):
        value = self.value(node, node.input[0])
        perm = [int(p) for p in attributes.get("perm", [])]
        view = value.tensor if isinstance(value, (_Codes, _Dequantized)) else None
        orders = {("nshd", (0, 2, 1, 3)): "nhsd", ("nshd", (0, 2, 3, 1)): "nhds",
                  ("nhsd", (0, 2, 1, 3)): "nshd"}
        if isinstance(view, _HeadView) and (view.order, tuple(perm)) in orders:
            result = _HeadView(view.source, view.heads, orders[view.order, tuple(perm)])
        elif isinstance(view, _Lazy) and view.pending.kind == "context" \
                and perm == [0, 2, 1, 3]:
            result = _HeadView(view, view.pending.parts["q"].heads, "nshd")
        else:
            self.fail(node, f"Transpose is supported between a (N, S, heads, d) view and its "
                            f"per-head forms (perm [0, 2, 1, 3] or [0, 2, 3, 1]), not perm {perm}")
        self.values[node.output[0]] = type(value)(result)

    def split_heads(self, node, value, shape) -> bool:
        """Reshape (N, S, H) -> (N, S, heads, H / heads) and back: views."""
        x = value.tensor
        if isinstance(x, _HeadView) and x.order == "nshd" and len(shape) == 3:
            self.values[node.output[0]] = type(value)(x.source)  # heads merged again
            return True
        onnx_shape = x.onnx_shape if isinstance(x, Tensor) else None
        if isinstance(x, _Lazy):
            onnx_shape = self.lazy_shape(x)
        if onnx_shape is None or len(onnx_shape) != 3 or len(shape) != 4:
            return False
        n, s, h = onnx_shape
        if shape[:2] not in ([0, 0], [n, s], [-1, s], [n, -1]) or shape[2] <= 0 \
                or shape[2] * shape[3] != h and shape[3] != -1:
            self.fail(node, f"only splitting (N, S, H) into (N, S, heads, H / heads) is "
                            f"supported, not into {shape}")
        self.values[node.output[0]] = type(value)(_HeadView(x, int(shape[2]), "nshd"))
        return True

    def lazy_shape(self, lazy: _Lazy):
        parts = lazy.pending.parts
        if lazy.pending.kind in ("linear", "linear-bias"):
            return (*parts["x"].onnx_shape[:-1], parts["w"].codes.shape[1])
        return None

    def op_Flatten(self, node, attributes):
        x = self.unwrap(node).tensor
        if int(attributes.get("axis", 1)) != 1:
            self.fail(node, "only axis=1 is supported")
        self.view(node, (x.onnx_shape[0], int(np.prod(x.onnx_shape[1:]))))

    def op_Reshape(self, node, attributes):
        value = self.value(node, node.input[0])
        shape = [int(d) for d in self.const(node, node.input[1], "the shape")]
        if isinstance(value, (_Codes, _Dequantized)) and self.split_heads(node, value, shape):
            return
        x = self.unwrap(node).tensor
        shape = [x.onnx_shape[i] if d == 0 else d for i, d in enumerate(shape)]
        if shape.count(-1) == 1:
            known = int(np.prod([d for d in shape if d != -1]))
            shape[shape.index(-1)] = int(np.prod(x.onnx_shape)) // known
        self.view(node, shape)

    def op_Identity(self, node, attributes):
        self.values[node.output[0]] = self.value(node, node.input[0])


def _real_multiplier(x_scale, w_scale, y_scale) -> np.ndarray:
    return (np.float64(x_scale) * np.asarray(w_scale, np.float64)) / np.float64(y_scale)


def import_onnx(model, *, input_shape) -> Network:
    """The integer network of an int8 ONNX model for an input of ``input_shape``."""
    if isinstance(model, (str, Path)):
        model = load_model(model)
    return _Importer(model, input_shape).run()
