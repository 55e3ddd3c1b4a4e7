"""Train and quantise a small int8 CNN for the scikit-learn digits data set.

Reproducible (fixed seeds, pure numpy training, no torch/tensorflow). Writes, next to this file:

  digits_cnn_float.onnx     float32 model exported with onnx.helper
  digits_cnn_int8.onnx      quantize_static, QOperator, uint8 activations, int8 per-channel weights
  digits_cnn_int8_qdq.onnx  quantize_static, QDQ, int8 activations, int8 per-tensor weights
  digits_test.npz           held-out test set: images float32 (n, 1, 8, 8) in [0, 1], labels int64

Needs scikit-learn only for this script (the data set and the stratified split); the demo that uses the
outputs does not:

    .venv/bin/pip install scikit-learn
    .venv/bin/python models/digits/train.py

Model (NCHW input "input" [N, 1, 8, 8], output "logits" [N, 10]):
    Conv 3x3 pad 1 (1->16) + bias, Relu, MaxPool 2x2/2 (-> 16x4x4),
    Conv 3x3 pad 1 (16->32) + bias, Relu, Flatten (axis 1, NCHW order, 512), Gemm 512->10 (transB=1).
"""

from __future__ import annotations

import collections
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)

HERE = Path(__file__).resolve().parent
FLOAT_PATH = HERE / "digits_cnn_float.onnx"
INT8_PATH = HERE / "digits_cnn_int8.onnx"
QDQ_PATH = HERE / "digits_cnn_int8_qdq.onnx"
TEST_PATH = HERE / "digits_test.npz"

SEED = 0
EPOCHS = 40
BATCH = 32
LR = 2e-3
WEIGHT_DECAY = 1e-4
N_CALIB = 200
OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; every onnxruntime >= 1.20 loads it


# ----------------------------------------------------------------------------------------------------------
# data


def load_data():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=SEED, stratify=y)
    return (
        np.ascontiguousarray(x_tr, dtype=np.float32),
        y_tr.astype(np.int64),
        np.ascontiguousarray(x_te, dtype=np.float32),
        y_te.astype(np.int64),
    )


# ----------------------------------------------------------------------------------------------------------
# numpy layers (3x3 convolutions with padding 1 and stride 1 only)


def im2col3x3(x):
    """(N, C, H, W) -> (N*H*W, C*9), columns ordered (c, kh, kw) like an ONNX Conv weight."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    patches = np.empty((n, c, 3, 3, h, w), dtype=x.dtype)
    for kh in range(3):
        for kw in range(3):
            patches[:, :, kh, kw] = xp[:, :, kh : kh + h, kw : kw + w]
    return patches.transpose(0, 4, 5, 1, 2, 3).reshape(n * h * w, c * 9)


def col2im3x3(dcols, shape):
    """Adjoint of im2col3x3: (N*H*W, C*9) -> (N, C, H, W)."""
    n, c, h, w = shape
    d = dcols.reshape(n, h, w, c, 3, 3).transpose(0, 3, 4, 5, 1, 2)
    dxp = np.zeros((n, c, h + 2, w + 2), dtype=dcols.dtype)
    for kh in range(3):
        for kw in range(3):
            dxp[:, :, kh : kh + h, kw : kw + w] += d[:, :, kh, kw]
    return dxp[:, :, 1:-1, 1:-1]


def conv_forward(x, w, b):
    n, _, h, wd = x.shape
    f = w.shape[0]
    cols = im2col3x3(x)
    out = cols @ w.reshape(f, -1).T + b
    return out.reshape(n, h, wd, f).transpose(0, 3, 1, 2), cols


def conv_backward(dout, cols, x_shape, w):
    f = w.shape[0]
    d = dout.transpose(0, 2, 3, 1).reshape(-1, f)
    dw = (d.T @ cols).reshape(w.shape)
    db = d.sum(axis=0)
    dx = col2im3x3(d @ w.reshape(f, -1), x_shape)
    return dx, dw, db


def maxpool_forward(x):
    n, c, h, w = x.shape
    win = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
    idx = win.argmax(axis=-1)
    out = np.take_along_axis(win, idx[..., None], axis=-1)[..., 0]
    return out, idx


def maxpool_backward(dout, idx, x_shape):
    n, c, h, w = x_shape
    dwin = np.zeros((n, c, h // 2, w // 2, 4), dtype=dout.dtype)
    np.put_along_axis(dwin, idx[..., None], dout[..., None], axis=-1)
    return dwin.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(x_shape)


def init_params(rng):
    def he(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    return {
        "conv1_w": he((16, 1, 3, 3), 9),
        "conv1_b": np.zeros(16, np.float32),
        "conv2_w": he((32, 16, 3, 3), 144),
        "conv2_b": np.zeros(32, np.float32),
        "fc_w": he((10, 512), 512) * np.float32(0.5),
        "fc_b": np.zeros(10, np.float32),
    }


def forward(p, x, keep=False):
    z1, cols1 = conv_forward(x, p["conv1_w"], p["conv1_b"])
    a1 = np.maximum(z1, 0)
    m1, idx1 = maxpool_forward(a1)
    z2, cols2 = conv_forward(m1, p["conv2_w"], p["conv2_b"])
    a2 = np.maximum(z2, 0)
    flat = a2.reshape(a2.shape[0], -1)
    logits = flat @ p["fc_w"].T + p["fc_b"]
    if not keep:
        return logits
    return logits, (x, cols1, z1, a1, idx1, m1, cols2, z2, a2, flat)


def loss_and_grads(p, x, y):
    logits, (x, cols1, z1, a1, idx1, m1, cols2, z2, a2, flat) = forward(p, x, keep=True)
    n = x.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -logp[np.arange(n), y].mean()
    dlogits = np.exp(logp)
    dlogits[np.arange(n), y] -= 1
    dlogits /= n

    g = {}
    g["fc_w"] = dlogits.T @ flat
    g["fc_b"] = dlogits.sum(axis=0)
    da2 = (dlogits @ p["fc_w"]).reshape(a2.shape)
    dz2 = da2 * (z2 > 0)
    dm1, g["conv2_w"], g["conv2_b"] = conv_backward(dz2, cols2, m1.shape, p["conv2_w"])
    da1 = maxpool_backward(dm1, idx1, a1.shape)
    dz1 = da1 * (z1 > 0)
    _, g["conv1_w"], g["conv1_b"] = conv_backward(dz1, cols1, x.shape, p["conv1_w"])
    return float(loss), g


def check_gradients(rng):
    """Finite-difference check of the manual backprop on a tiny batch (float64)."""
    p = {k: v.astype(np.float64) for k, v in init_params(rng).items()}
    for k in ("conv1_b", "conv2_b", "fc_b"):
        p[k] = rng.standard_normal(p[k].shape) * 0.1
    x = rng.random((3, 1, 8, 8))
    y = np.array([1, 4, 7])
    _, g = loss_and_grads(p, x, y)
    eps = 1e-6
    for name, arr in p.items():
        flat = arr.reshape(-1)
        for i in rng.choice(flat.size, size=min(5, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + eps
            lp, _ = loss_and_grads(p, x, y)
            flat[i] = old - eps
            lm, _ = loss_and_grads(p, x, y)
            flat[i] = old
            num = (lp - lm) / (2 * eps)
            ana = g[name].reshape(-1)[i]
            assert abs(num - ana) <= 1e-5 + 1e-4 * abs(num), (name, i, num, ana)


def train(x_tr, y_tr, x_te, y_te):
    rng = np.random.default_rng(SEED)
    check_gradients(np.random.default_rng(SEED + 1))
    p = init_params(rng)
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(v) for k, v in p.items()}
    b1, b2, eps = 0.9, 0.999, 1e-8
    step = 0
    n = x_tr.shape[0]
    steps_per_epoch = (n + BATCH - 1) // BATCH
    total = EPOCHS * steps_per_epoch
    for epoch in range(EPOCHS):
        order = rng.permutation(n)
        losses = []
        for s in range(0, n, BATCH):
            idx = order[s : s + BATCH]
            loss, g = loss_and_grads(p, x_tr[idx], y_tr[idx])
            losses.append(loss)
            step += 1
            lr = LR * 0.5 * (1 + np.cos(np.pi * (step - 1) / total))  # cosine decay
            for k in p:
                gk = g[k].astype(np.float32)
                if k.endswith("_w"):
                    gk = gk + np.float32(WEIGHT_DECAY) * p[k]
                m[k] = b1 * m[k] + (1 - b1) * gk
                v[k] = b2 * v[k] + (1 - b2) * gk * gk
                mh = m[k] / (1 - b1**step)
                vh = v[k] / (1 - b2**step)
                p[k] = (p[k] - lr * mh / (np.sqrt(vh) + eps)).astype(np.float32)
        if epoch % 5 == 4 or epoch == EPOCHS - 1:
            acc = (forward(p, x_te).argmax(1) == y_te).mean()
            print(f"epoch {epoch + 1:3d}  loss {np.mean(losses):.4f}  test acc {acc:.4f}")
    return p


# ----------------------------------------------------------------------------------------------------------
# ONNX export and quantisation


def export_onnx(p, path):
    inits = [numpy_helper.from_array(np.ascontiguousarray(v, dtype=np.float32), name=k) for k, v in p.items()]
    nodes = [
        helper.make_node(
            "Conv",
            ["input", "conv1_w", "conv1_b"],
            ["conv1"],
            name="conv1",
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            strides=[1, 1],
        ),
        helper.make_node("Relu", ["conv1"], ["relu1"], name="relu1"),
        helper.make_node("MaxPool", ["relu1"], ["pool1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node(
            "Conv",
            ["pool1", "conv2_w", "conv2_b"],
            ["conv2"],
            name="conv2",
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            strides=[1, 1],
        ),
        helper.make_node("Relu", ["conv2"], ["relu2"], name="relu2"),
        helper.make_node("Flatten", ["relu2"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="npu-digits"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


class DigitsReader(CalibrationDataReader):
    def __init__(self, images, batch=20):
        self.batches = [images[i : i + batch] for i in range(0, len(images), batch)]
        self.it = iter(self.batches)

    def get_next(self):
        b = next(self.it, None)
        return None if b is None else {"input": b}

    def rewind(self):
        self.it = iter(self.batches)


def preprocess(src, tmpdir):
    """onnxruntime's recommended pre-processing (ONNX shape inference + onnxruntime graph optimisation).

    Symbolic shape inference is skipped: it needs sympy (not in the project's env) and brings nothing for a
    static CNN whose only symbolic dimension is the batch; skipping it always keeps the outputs the same
    whether or not sympy happens to be installed. Falls back to the plain model if pre-processing fails.
    """
    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        dst = os.path.join(tmpdir, "pre.onnx")
        quant_pre_process(str(src), dst, skip_symbolic_shape=True)
        return dst
    except Exception as e:  # noqa: BLE001
        print(f"quant_pre_process failed, quantising the unprocessed model: {e!r}")
        return str(src)


def quantise(src, calib, tmpdir):
    pre = preprocess(src, tmpdir)
    quantize_static(
        pre,
        str(INT8_PATH),
        DigitsReader(calib),
        quant_format=QuantFormat.QOperator,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    quantize_static(
        pre,
        str(QDQ_PATH),
        DigitsReader(calib),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=False,
    )


def session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_logits(path, x):
    return session(path).run(["logits"], {"input": x})[0]


def describe(path):
    m = onnx.load(str(path))
    ops = collections.Counter(n.op_type for n in m.graph.node)
    io = [(v.name, TensorProto.DataType.Name(v.type.tensor_type.elem_type)) for v in m.graph.input]
    oo = [(v.name, TensorProto.DataType.Name(v.type.tensor_type.elem_type)) for v in m.graph.output]
    print(f"  {path.name}: {path.stat().st_size} bytes, inputs {io}, outputs {oo}")
    print(f"    ops {dict(ops)}")


def main():
    t0 = time.time()
    x_tr, y_tr, x_te, y_te = load_data()
    print(f"train {x_tr.shape}, test {x_te.shape}")
    p = train(x_tr, y_tr, x_te, y_te)
    print(f"trained in {time.time() - t0:.1f} s")

    ref = forward(p, x_te)
    float_acc = (ref.argmax(1) == y_te).mean()

    export_onnx(p, FLOAT_PATH)
    got = ort_logits(FLOAT_PATH, x_te)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    print("onnxruntime float output matches the numpy forward pass")

    np.savez_compressed(TEST_PATH, images=x_te.astype(np.float32), labels=y_te.astype(np.int64))

    with tempfile.TemporaryDirectory() as tmpdir:
        quantise(FLOAT_PATH, x_tr[:N_CALIB], tmpdir)

    accs = {"float (numpy)": float_acc, "float (onnxruntime)": (got.argmax(1) == y_te).mean()}
    for path in (INT8_PATH, QDQ_PATH):
        q = ort_logits(path, x_te)
        accs[path.name] = (q.argmax(1) == y_te).mean()
        agree = (q.argmax(1) == ref.argmax(1)).mean()
        print(f"{path.name}: top-1 agreement with float {agree:.4f}")

    print(f"test set: {len(y_te)} images")
    for k, a in accs.items():
        print(f"  accuracy {k:28s} {a:.4f}")
    for path in (FLOAT_PATH, INT8_PATH, QDQ_PATH):
        describe(path)
    print(f"total {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
