"""The integer network the compiler lowers: quantised tensors and the layers between them.

The ONNX importer (:mod:`sw.onnx_import`) produces a :class:`Network`; the compiler
(:mod:`sw.compiler`) turns each layer into an NPU program. Everything here is already integer:
weights are int8 with their zero point subtracted, biases int32, requantisation scales float32
in onnxruntime's order. Activations live in DRAM as NHWC int8 (a uint8 tensor as ``q - 128``,
DESIGN section 3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from golden.quant import check_array

__all__ = ["Quantization", "Tensor", "WideTensor", "Conv", "Add", "MaxPool", "Attention",
           "LayerNorm", "ResidualLayerNorm", "Gelu", "Layer", "Network", "layer_tensors"]


@dataclass(frozen=True)
class Quantization:
    """``real = scale * (code - zero_point)``; ``dtype`` is uint8 or int8 (raw ONNX codes)."""

    scale: np.float32
    zero_point: int
    dtype: np.dtype

    def __post_init__(self):
        object.__setattr__(self, "scale", np.float32(self.scale))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        if self.dtype not in (np.dtype(np.uint8), np.dtype(np.int8)):
            raise TypeError(f"Quantised tensors must be uint8 or int8, not {self.dtype}")
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"Scale must be a positive finite float, not {self.scale!r}")
        info = np.iinfo(self.dtype)
        if not info.min <= int(self.zero_point) <= info.max:
            raise ValueError(f"Zero point must be a {self.dtype} value, not {self.zero_point}")
        object.__setattr__(self, "zero_point", int(self.zero_point))

    @property
    def unsigned(self) -> bool:
        return self.dtype == np.dtype(np.uint8)

    @property
    def stored_zero_point(self) -> int:
        """The zero point in the int8 storage domain (uint8 codes are stored as code - 128)."""
        return self.zero_point - 128 if self.unsigned else self.zero_point

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """onnxruntime's QuantizeLinear: saturate(round_half_even(x / scale) + zero_point)."""
        info = np.iinfo(self.dtype)
        scaled = np.rint(np.asarray(x, np.float32) / self.scale).astype(np.float64)
        return np.clip(scaled + self.zero_point, info.min, info.max).astype(self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        """onnxruntime's DequantizeLinear: float32(q - zero_point) * scale."""
        return (q.astype(np.int32) - self.zero_point).astype(np.float32) * self.scale

    def to_stored(self, q: np.ndarray) -> np.ndarray:
        return (q.astype(np.int16) - 128).astype(np.int8) if self.unsigned else q.astype(np.int8)

    def from_stored(self, stored: np.ndarray) -> np.ndarray:
        return (stored.astype(np.int16) + 128).astype(np.uint8) if self.unsigned else stored


@dataclass(eq=False)
class Tensor:
    """An activation in DRAM: NHWC int8, ``shape`` = (N, H, W, C).

    ``onnx_shape`` is the shape the model sees; a sequence (N, S, C) is stored as (N, 1, S, C).
    A ``channel_major`` sequence is stored transposed, (N, C, S): the layout of the value
    projection that attention reads as the weights of ``P @ V``. A tensor flattened from
    (N, C, H, W) keeps its NHWC storage; ``flattened_from`` = (C, H, W) records it, so that a
    following dense layer permutes its weights instead of the data moving.
    """

    name: str
    shape: tuple[int, int, int, int]
    quant: Quantization
    onnx_shape: tuple[int, ...]
    flattened_from: tuple[int, int, int] | None = None
    #: A view (Flatten, Reshape) shares the DRAM of the tensor it views.
    base: Tensor | None = None
    channel_major: bool = False

    @property
    def storage(self) -> Tensor:
        return self if self.base is None else self.base.storage

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size

    def to_storage(self, q: np.ndarray) -> np.ndarray:
        """ONNX-layout codes -> the NHWC int8 bytes the NPU reads."""
        if tuple(q.shape) != tuple(self.onnx_shape):
            raise ValueError(f"Tensor {self.name!r} must have shape {self.onnx_shape}, "
                             f"not {tuple(q.shape)}")
        stored = self.quant.to_stored(q)
        if self.channel_major:
            stored = stored.transpose(0, 2, 1)
        elif len(self.onnx_shape) == 4:
            stored = stored.transpose(0, 2, 3, 1)
        elif self.flattened_from is not None:
            c, h, w = self.flattened_from
            stored = stored.reshape(-1, c, h, w).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(stored).reshape(self.shape)

    def from_storage(self, stored: np.ndarray) -> np.ndarray:
        """NHWC int8 bytes -> ONNX-layout codes."""
        if self.channel_major:
            n, _, s, c = self.shape
            stored = stored.reshape(n, c, s).transpose(0, 2, 1)
        elif len(self.onnx_shape) == 4:
            stored = stored.reshape(self.shape)
            stored = stored.transpose(0, 3, 1, 2)
        elif self.flattened_from is not None:
            c, h, w = self.flattened_from
            stored = stored.reshape(-1, h, w, c).transpose(0, 3, 1, 2)
        return np.ascontiguousarray(self.quant.from_stored(stored.reshape(self.onnx_shape)))


@dataclass(eq=False)
class WideTensor:
    """An int32 activation in DRAM, (N, 1, S, C) like a sequence Tensor: ``real = scale * value``.
    The residual stream at accumulator precision (``residual="int32"``)."""

    name: str
    shape: tuple[int, int, int, int]
    scale: float

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return 4 * self.size

    @property
    def storage(self) -> WideTensor:
        return self

    def quantize(self, x: np.ndarray) -> np.ndarray:
        steps = np.rint(np.asarray(x, np.float64) / self.scale)
        return np.clip(steps, -2**31, 2**31 - 1).astype(np.int32).reshape(self.shape)


@dataclass(eq=False)
class Conv:
    """Convolution, dense layer (a 1x1 convolution) or average pooling (ones as weights).

    ``weights`` (O, I / groups, KH, KW) int8 with the weight zero point already subtracted;
    ``bias`` int32 per output channel (without the input zero-point correction, which the
    compiler folds in); ``scale`` the float32 fp32-mode requantisation scale per output channel
    and ``real_multiplier`` the same ratio in float64 for the fixed (TFLite) mode.
    ``clip`` is (lo, hi) in the output's stored domain (a fused ReLU or ReLU6).
    """

    name: str
    op: str
    input: Tensor
    output: Tensor
    weights: np.ndarray
    bias: np.ndarray
    scale: np.ndarray
    real_multiplier: np.ndarray
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    groups: int = 1
    clip: tuple[int, int] = (-128, 127)

    def __post_init__(self):
        check_array("weights", self.weights, np.int8, ndim=4)
        check_array("bias", self.bias, np.int32, ndim=1)
        out_channels = self.weights.shape[0]
        for name, value, dtype in (("bias", self.bias, np.int32), ("scale", self.scale, np.float32),
                                   ("real multiplier", self.real_multiplier, np.float64)):
            check_array(name, value, dtype, ndim=1)
            if value.shape[0] != out_channels:
                raise ValueError(f"{self.name}: {name} must have {out_channels} values, "
                                 f"not {value.shape[0]}")

    @property
    def kernel(self) -> tuple[int, int]:
        return self.weights.shape[2], self.weights.shape[3]

    @property
    def macs(self) -> int:
        n, oh, ow, o = self.output.shape
        return n * oh * ow * o * int(np.prod(self.weights.shape[1:]))


@dataclass(eq=False)
class Add:
    """Elementwise quantised add of two tensors of the same shape (QLinearAdd)."""

    name: str
    a: Tensor
    b: Tensor
    output: Tensor
    clip: tuple[int, int] = (-128, 127)
    op: str = "Add"
    macs: int = 0


@dataclass(eq=False)
class MaxPool:
    """Max pooling; the output keeps the input's quantisation."""

    name: str
    input: Tensor
    output: Tensor
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[int, int, int, int]
    op: str = "MaxPool"
    macs: int = 0


@dataclass(eq=False)
class Attention:
    """The core of multi-head attention, ``softmax(Q K^T * scale + mask) @ V`` for every head.

    ``q`` and ``k`` are (N, S, H) token-major, ``v`` the same shape stored ``channel_major``;
    head ``h`` is channels ``h * H / heads`` onwards of each. ``score_scale`` is the real value
    of one accumulator step of ``Q K^T`` including the 1/sqrt(d) factor (what the softmax reads);
    ``probs`` the quantisation of the softmax output (the graph's); ``output`` (N, S, H) has the
    heads merged. ``mask`` names the host-computed additive mask value (N, 1, 1, S) in the ONNX
    graph, or None.
    """

    name: str
    q: Tensor
    k: Tensor
    v: Tensor
    output: Tensor
    heads: int
    score_scale: float
    probs: Quantization
    mask: str | None = None
    op: str = "Attention"

    @property
    def macs(self) -> int:
        n, _, s, h = self.output.shape
        return 2 * n * s * s * h


@dataclass(eq=False)
class LayerNorm:
    """Layer normalisation over the channels of every token (``golden.intops.layernorm``)."""

    name: str
    input: Tensor
    output: Tensor
    gamma: np.ndarray
    beta: np.ndarray
    epsilon: float
    op: str = "LayerNormalization"
    macs: int = 0


@dataclass(eq=False)
class ResidualLayerNorm:
    """Layer normalisation of a residual sum kept at accumulator precision: the sum of
    ``multiplier * (code - zero_point)`` over the int8 ``terms`` plus the int32 ``wide`` tensor
    (or None), in units of ``unit_scale``, normalised without rounding it to int8 first."""

    name: str
    terms: list[tuple[Tensor, int]]
    wide: WideTensor | None
    output: Tensor
    gamma: np.ndarray
    beta: np.ndarray
    epsilon: float
    unit_scale: float
    op: str = "AddLayerNorm"
    macs: int = 0


@dataclass(eq=False)
class Gelu:
    """GELU elementwise (``golden.intops.gelu``)."""

    name: str
    input: Tensor
    output: Tensor
    op: str = "Gelu"
    macs: int = 0


Layer = Conv | Add | MaxPool | Attention | LayerNorm | ResidualLayerNorm | Gelu


@dataclass(eq=False)
class Network:
    """Layers in execution order, from ``input`` to ``output``."""

    input: Tensor
    output: Tensor
    layers: list[Layer] = field(default_factory=list)
    #: ONNX names of the graph's float input and output (what `npu run` reads and writes).
    input_name: str = "input"
    output_name: str = "output"
    #: True when the graph's output is float (a DequantizeLinear at the edge).
    output_float: bool = True
    #: True when the graph's input is float (a QuantizeLinear at the edge).
    input_float: bool = True
    #: The part of the ONNX graph the host evaluates before the first layer (the attention
    #: mask from an ``attention_mask`` input): a model from the other graph inputs to the
    #: values the layers name, or None.
    host_model: object = None
    #: The input again at int32 (``residual="int32"``): the host quantises it for the residual.
    residual_input: WideTensor | None = None

    @property
    def tensors(self) -> list[Tensor]:
        seen, result = set(), []
        for tensor in [self.input, self.output] + [t for layer in self.layers for t in layer_tensors(layer)]:
            if id(tensor) not in seen:
                seen.add(id(tensor))
                result.append(tensor)
        return result


def layer_tensors(layer: Layer) -> list[Tensor]:
    if isinstance(layer, Add):
        return [layer.a, layer.b, layer.output]
    if isinstance(layer, Attention):
        return [layer.q, layer.k, layer.v, layer.output]
    if isinstance(layer, ResidualLayerNorm):
        return [t for t, _ in layer.terms] + ([layer.wide] if layer.wide else []) + [layer.output]
    return [layer.input, layer.output]
