"""Small float CNNs built with onnx.helper and quantised by onnxruntime's quantize_static.

These are the models the SDK tests run: every op and shape the CNN compiler supports (odd
channel counts, 7x7 and 9x9 maps, strides 1 and 2, 1x1 to 7x7 kernels, depthwise, pooling,
residual add, fused ReLU/ReLU6, a classifier head), in both ONNX formats.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class _Builder:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.initializers = [], []
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def constant(self, array: np.ndarray, prefix: str) -> str:
        name = self.name(prefix)
        self.initializers.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], **attributes) -> str:
        output = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def conv(self, x: str, cin: int, cout: int, kernel: int, *, stride=1, pad=None, groups=1):
        pad = kernel // 2 if pad is None else pad
        fan_in = cin // groups * kernel * kernel
        w = self.rng.normal(0, 1.4 / np.sqrt(fan_in), (cout, cin // groups, kernel, kernel))
        b = self.rng.normal(0, 0.1, cout)
        return self.node("Conv", [x, self.constant(w, "w"), self.constant(b, "b")],
                         kernel_shape=[kernel, kernel], strides=[stride, stride],
                         pads=[pad] * 4 if isinstance(pad, int) else list(pad), group=groups)

    def gemm(self, x: str, k: int, n: int):
        w = self.rng.normal(0, 1.0 / np.sqrt(k), (n, k))
        return self.node("Gemm", [x, self.constant(w, "fc_w"),
                                  self.constant(self.rng.normal(0, 0.1, n), "fc_b")], transB=1)

    def relu6(self, x: str):
        return self.node("Clip", [x, self.constant(np.array(0.0), "lo"),
                                  self.constant(np.array(6.0), "hi")])

    def model(self, x_shape, y_shape):
        graph = helper.make_graph(
            self.nodes, "cnn",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *x_shape[1:]])],
            [helper.make_tensor_value_info(self.nodes[-1].output[0], TensorProto.FLOAT,
                                           ["N", *y_shape[1:]])],
            self.initializers)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                 ir_version=8)


def cnn_model(seed: int = 0):
    """ResNet/MobileNet-like blocks on a 3 x 9 x 9 input, ending in a 5-way classifier."""
    b = _Builder(seed)
    x = b.node("Relu", [b.conv("input", 3, 8, 3)])                 # 3x3, 9x9 map
    x = b.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])  # 5x5
    y = b.relu6(b.conv(x, 8, 12, 3, stride=2))                      # 3x3 stride 2 -> 3x3 map
    y = b.relu6(b.conv(y, 12, 12, 3, groups=12))                    # depthwise
    y = b.conv(y, 12, 8, 1)                                         # 1x1 pointwise, no act
    skip = b.conv(x, 8, 8, 1, stride=2, pad=0)                      # 1x1 stride 2 projection
    x = b.node("Relu", [b.node("Add", [y, skip])])                  # residual add
    x = b.node("GlobalAveragePool", [x])
    x = b.node("Flatten", [x], axis=1)
    b.gemm(x, 8, 5)
    return b.model((2, 3, 9, 9), (2, 5))


def stem_model(seed: int = 0):
    """A strided 7x7 stem, a 5x5 conv, average pooling and a flattened classifier on a 7x7 map."""
    b = _Builder(seed)
    x = b.node("Relu", [b.conv("input", 3, 6, 7, stride=2, pad=3)])   # 13x13 -> 7x7
    x = b.node("Relu", [b.conv(x, 6, 5, 5)])
    x = b.node("AveragePool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
               count_include_pad=1)                                  # 7x7 -> 4x4
    x = b.node("Flatten", [x], axis=1)
    b.gemm(x, 5 * 4 * 4, 7)
    return b.model((1, 3, 13, 13), (1, 7))


MODELS = {"cnn": (cnn_model, (2, 3, 9, 9)), "stem": (stem_model, (1, 3, 13, 13))}


def quantize(model, *, fmt: str, activations: str, per_channel: bool, calibration: np.ndarray,
             path):
    """quantize_static with onnxruntime's defaults for everything not named here."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": calibration[i:i + 1]} for i in range(len(calibration))])

        def get_next(self):
            return next(self.batches, None)

    float_path = str(path) + ".float.onnx"
    import onnx

    onnx.save(model, float_path)
    quantize_static(float_path, str(path), Reader(),
                    quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
                    activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
                    weight_type=QuantType.QInt8, per_channel=per_channel)
    return str(path)
