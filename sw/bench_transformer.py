"""`npu bench transformer`: one BERT-style encoder layer (hidden 384, 12 heads, FFN 1536) at
sequence lengths 16, 64 and 128, and the vector unit's row operations on their own.

Each encoder layer is the float model of :mod:`sw.encoder_model` quantised by onnxruntime
(QDQ), imported and compiled like a user's model, and run on the chosen backend (the RTL by
default). Its output is checked bit for bit against the golden backend, and its cosine
similarity to the float model is reported. Cycles split into matmul and vector work with the
hardware's own counters (BUSY_COMPUTE, BUSY_VECTOR).
"""

from __future__ import annotations

import time

import numpy as np

from golden import intops
from golden.config import NpuConfig
from golden.isa import Instruction, Memory, Opcode, VectorFunct
from golden.machine import parameter_rows

from .compiler import _load_contiguous_rows, compile_network
from .encoder_model import EncoderShape, encoder_layer_model, quantize_encoder, realistic_inputs
from .executor import LoadedModel, RunReport, dram_size_for
from .onnx_import import import_onnx
from .runtime import Program, open_device

__all__ = ["TRANSFORMER_SEQUENCES", "bench_transformer", "vector_throughput",
           "plot_transformer", "cosine"]

TRANSFORMER_SEQUENCES = (16, 64, 128)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _run(compiled, backend: str, inputs: dict) -> tuple[np.ndarray, RunReport]:
    network = compiled.network
    config = compiled.config
    with open_device(backend, config, dram_size=dram_size_for(compiled), quiet=True) as device:
        return LoadedModel(compiled, device).run(
            inputs[network.input_name],
            host_inputs={k: v for k, v in inputs.items() if k != network.input_name})


def encoder_case(shape: EncoderShape, *, seed: int = 0, padded: int | None = None):
    """The quantised model, the run inputs (with ``padded`` masked tokens, default S / 8) and
    the float model's output."""
    import onnxruntime

    padded = shape.seq // 8 if padded is None else padded
    model = encoder_layer_model(shape, seed=seed)
    calibration = [realistic_inputs(shape, seed=1000 + i, padded=padded) for i in range(4)]
    quantized = quantize_encoder(model, calibration)
    inputs = realistic_inputs(shape, seed=seed, padded=padded)
    reference = onnxruntime.InferenceSession(model.SerializeToString()).run(None, inputs)[0]
    return quantized, inputs, reference


def bench_transformer(config: NpuConfig, *, backend: str = "rtl", sequences=TRANSFORMER_SEQUENCES,
                      shape: EncoderShape | None = None, out=print) -> dict:
    """Run the encoder layer (``shape``, default hidden 384, 12 heads, FFN 1536) at every
    sequence length; the JSON of DESIGN section 8."""
    shape = shape or EncoderShape()
    results = []
    for seq in sequences:
        case = EncoderShape(hidden=shape.hidden, heads=shape.heads, ffn=shape.ffn, seq=seq)
        quantized, inputs, reference = encoder_case(case)
        network = import_onnx(quantized, input_shape=inputs["input"].shape)
        compiled = compile_network(network, config)
        started = time.perf_counter()
        y, report = _run(compiled, backend, inputs)
        seconds = time.perf_counter() - started
        if backend != "golden":
            expected, _ = _run(compiled, "golden", inputs)
            np.testing.assert_array_equal(y, expected, err_msg=f"sequence {seq}: the {backend} "
                                          f"backend differs from golden")
        cycles = report.total_cycles
        vector = sum(layer.vector_cycles for layer in report.layers)
        matmul = sum(layer.compute_cycles - layer.vector_cycles for layer in report.layers)
        result = dict(name=f"encoder_h{case.hidden}_heads{case.heads}_ffn{case.ffn}_seq{seq}",
                      seq=seq, cycles=cycles, macs=report.total_macs,
                      utilisation=report.utilisation(config.pes),
                      matmul_cycles=matmul, vector_cycles=vector,
                      matmul_share=matmul / cycles, vector_share=vector / cycles,
                      cosine_vs_float=cosine(y, reference),
                      dram_read_bytes=sum(x.dram_read_bytes for x in report.layers),
                      dram_write_bytes=sum(x.dram_write_bytes for x in report.layers),
                      layers=[layer.as_dict() for layer in report.layers],
                      wall_seconds=round(seconds, 2))
        results.append(result)
        out(f"  seq {seq:>4}: {cycles:>10,} cycles  {result['utilisation']:6.1%} utilisation  "
            f"matmul {result['matmul_share']:5.1%}  vector {result['vector_share']:5.1%}  "
            f"cosine vs float {result['cosine_vs_float']:.4f}  ({seconds:.1f} s)")
    total_macs = sum(r["macs"] for r in results)
    total_cycles = sum(r["cycles"] for r in results)
    throughput = vector_throughput(config, backend=backend)
    for name, figure in throughput.items():
        out(f"  {name:<9} {figure['cycles_per_element']:.3f} cycles per element "
            f"({figure['rows']} rows of {figure['length']})")
    return dict(config=config.name, backend=backend,
                utilisation=total_macs / (config.pes * total_cycles) if total_cycles else 0.0,
                cases=results, vector_ops=throughput)


def vector_throughput(config: NpuConfig, *, backend: str = "rtl", rows: int = 64) -> dict:
    """Cycles per row element of VECTOR SOFTMAX (rows of 128), LAYERNORM (rows of
    min(384, vector_max_length)) and GELU (groups of 8 accumulator rows), measured with the
    BUSY_VECTOR counter over ``rows`` groups of random accumulator values."""
    c = config.cols
    rng = np.random.default_rng(0)
    ln_length = min(384, config.vector_max_length) // c * c
    cases = {
        "softmax": (min(128, config.vector_max_length), VectorFunct.SOFTMAX,
                    [intops.softmax_params(input_scale=1e-3, output_scale=1 / 256,
                                           output_zero_point=-128)]),
        "layernorm": (ln_length, VectorFunct.LAYERNORM, None),
        "gelu": (8 * c, VectorFunct.GELU,
                 [intops.gelu_params(input_scale=1e-3, output_scale=0.03,
                                     output_zero_point=-100)]),
    }
    results = {}
    with open_device(backend, config, dram_size=1 << 22, quiet=True) as device:
        for name, (length, funct, sections) in cases.items():
            if sections is None:
                p = intops.layernorm_params(input_scale=1e-3, gamma=np.ones(length),
                                            beta=np.zeros(length), output_scale=0.05,
                                            output_zero_point=0)
                k = intops.LAYERNORM_CONST_COUNT
                sections = [p[:k], p[k:k + length], p[k + length:]]
            params = parameter_rows(config, *sections).astype(np.int32)
            per_group = -(-length // c)
            groups = max(1, min(rows, (config.accumulator_depth - len(params)) // per_group))
            row_count = groups * per_group
            data = rng.integers(-20000, 20000, (row_count, c)).astype(np.int32)
            address = device.allocator.allocate(data.nbytes + params.nbytes)
            device.write_dram(address, data.tobytes() + params.tobytes())
            loads = _load_contiguous_rows(mem=Memory.ACCUMULATOR, sram_addr=0, dram_addr=address,
                                          rows=row_count + len(params), row_bytes=4 * c,
                                          elem_len=c)
            loads[-1] = loads[-1].replace(push_next=1)
            program = [
                *loads,
                Instruction(Opcode.VECTOR, funct=funct, outer_count=1, inner_count=groups,
                            a_addr=0, a_inner_stride=per_group, out_addr=0,
                            out_inner_stride=-(-length // config.rows), length=length,
                            param_addr=row_count, clip_lo=-128, clip_hi=127, pop_prev=1),
                Instruction(Opcode.FINISH),
            ]
            stats = device.run(Program(config, program, f"vector {name}"))
            device.allocator.free(address)
            elements = groups * length
            results[name] = dict(length=length, rows=groups,
                                 vector_cycles=stats.counters["busy_vector"],
                                 cycles_per_element=stats.counters["busy_vector"] / elements)
    return results


def plot_transformer(summary: dict, path) -> None:
    """Stacked bars per sequence length: matmul, vector and other cycles, with utilisation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = summary["cases"]
    labels = [f"seq {c['seq']}" for c in cases]
    matmul = np.array([c["matmul_cycles"] for c in cases], float)
    vector = np.array([c["vector_cycles"] for c in cases], float)
    other = np.array([c["cycles"] for c in cases], float) - matmul - vector
    figure, axes = plt.subplots(figsize=(7, 4.5))
    axes.bar(labels, matmul / 1e6, label="compute unit: matmul", color="#1f77b4")
    axes.bar(labels, vector / 1e6, bottom=matmul / 1e6, label="compute unit: vector",
             color="#ff7f0e")
    axes.bar(labels, other / 1e6, bottom=(matmul + vector) / 1e6,
             label="compute idle (DMA, tokens, fetch)", color="#cccccc")
    for i, case in enumerate(cases):
        axes.text(i, case["cycles"] / 1e6, f"{case['utilisation']:.0%} MAC util.", ha="center",
                  va="bottom", fontsize=9)
    axes.set_ylabel("million cycles")
    axes.set_title(f"npu bench transformer: one encoder layer, {summary['config']} "
                   f"({summary['backend']})")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
