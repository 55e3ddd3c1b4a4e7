"""`npu demo`: the project's main job on shipped data.

The int8 CNN in ``models/digits`` (trained on scikit-learn's digits by ``models/digits/train.py``
and quantised by onnxruntime's ``quantize_static``) classifies the 360 held-out test images on
the NPU's RTL (Verilator). The demo prints the NPU's accuracy next to onnxruntime's on the same
model, how many outputs agree bit for bit, and the cycles and utilisation per layer.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from golden.config import NpuConfig

MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "digits"
MODEL = MODEL_DIR / "digits_cnn_int8.onnx"
TEST_SET = MODEL_DIR / "digits_test.npz"


def run_digits_demo(config: NpuConfig, *, backend: str = "rtl", limit: int | None = None,
                    out=print) -> bool:
    """Classify the test images on the NPU; True when every output equals onnxruntime's."""
    import onnx
    import onnxruntime as ort

    from sw.executor import run_onnx

    data = np.load(TEST_SET)
    images, labels = data["images"][:limit], data["labels"][:limit]
    model = onnx.load(str(MODEL))
    out(f"npu demo: {MODEL.name}, an int8 CNN (QLinearConv, MaxPool, QLinearConv, QGemm) for "
        f"8x8 digits; {len(images)} held-out test images")
    out(f"running on the {backend} backend of the {config.name} NPU "
        f"({config.rows}x{config.cols} array)...")
    started = time.perf_counter()
    logits, report, _ = run_onnx(
        model, images, backend=backend, config=config,
        progress=lambda done, total, layer: out(f"  [{done}/{total}] {layer.name}: "
                                                f"{layer.cycles:,} cycles"))
    seconds = time.perf_counter() - started
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"input": images})[0]
    npu_accuracy = float(np.mean(logits.argmax(1) == labels))
    ort_accuracy = float(np.mean(expected.argmax(1) == labels))
    identical = int(np.all(logits == expected, axis=1).sum())
    out("")
    out(report.table(config.pes))
    out("")
    out(f"accuracy: NPU {npu_accuracy:.2%}, onnxruntime {ort_accuracy:.2%} "
        f"({len(images)} images)")
    out(f"outputs identical to onnxruntime: {identical} of {len(images)} images "
        f"({'bit-exact' if identical == len(images) else 'NOT bit-exact'})")
    out(f"{report.total_cycles:,} NPU cycles ({report.total_cycles / len(images):,.0f} per image), "
        f"{report.utilisation(config.pes):.1%} MAC utilisation; {seconds:.1f} s wall time "
        f"(the Verilator build included on a first run)")
    return identical == len(images)
