"""`npu bench cnn`: convolution layers of real networks on the NPU, against the bounds of
DESIGN section 6.

Each case is one quantised convolution with random int8 weights and inputs, compiled like any
imported layer and run on the chosen backend (the RTL by default: its cycle counts are the
measure; the golden backend gives the cost model's estimate). Every output is checked against
``golden.quant`` before its cycles are reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from golden import quant
from golden.config import NpuConfig

from .compiler import compile_network
from .executor import LoadedModel, dram_size_for
from .graph import Conv, Network, Quantization, Tensor
from .runtime import open_device

__all__ = ["ConvCase", "CNN_CASES", "ChainCase", "CHAIN_CASE", "conv_case_network",
           "chain_case_network", "mobilenet_blocks", "bench_cnn", "plot_utilisation"]


@dataclass(frozen=True)
class ConvCase:
    name: str
    channels_in: int
    size: int            # input height = width
    channels_out: int
    kernel: int
    stride: int = 1
    depthwise: bool = False

    @property
    def pad(self) -> int:
        return self.kernel // 2


CNN_CASES = (
    ConvCase("resnet_3x3_56x56x64", 64, 56, 64, 3),
    ConvCase("resnet_3x3_28x28x128", 128, 28, 128, 3),
    ConvCase("resnet_3x3_s2_56x56_64to128", 64, 56, 128, 3, stride=2),
    ConvCase("mobilenet_pointwise_1x1_28x28_128to256", 128, 28, 256, 1),
    ConvCase("mobilenet_depthwise_3x3_56x56x128", 128, 56, 128, 3, depthwise=True),
    ConvCase("stem_7x7_s2_224x224_3to64", 3, 224, 64, 7, stride=2),
)


def conv_case_network(case: ConvCase, *, seed: int = 0) -> tuple[Network, Conv]:
    """A one-layer network for ``case``: uint8 activations, per-channel int8 weights, scales that
    spread the outputs over the whole int8 range."""
    size = case.size
    qx = Quantization(np.float32(0.02), 128, np.uint8)
    x = Tensor("x", (1, size, size, case.channels_in), qx, (1, case.channels_in, size, size))
    layer = _case_layer(case, x, np.random.default_rng(seed), output_name="y")
    return Network(x, layer.output, [layer]), layer


def _case_layer(case: ConvCase, x: Tensor, rng, *, output_name: str) -> Conv:
    groups = case.channels_in if case.depthwise else 1
    fan_in = case.channels_in // groups * case.kernel ** 2
    qx = x.quant
    w_scale = rng.uniform(0.002, 0.01, case.channels_out).astype(np.float32)
    qy = Quantization(np.float32(qx.scale * np.median(w_scale) * np.sqrt(fan_in) * 74 * 74 / 50),
                      128, np.uint8)
    out = (case.size + 2 * case.pad - case.kernel) // case.stride + 1
    y = Tensor(output_name, (1, out, out, case.channels_out), qy, (1, case.channels_out, out, out))
    weights = rng.integers(-127, 128, (case.channels_out, case.channels_in // groups, case.kernel,
                                       case.kernel)).astype(np.int8)
    return Conv(case.name, "Conv", x, y, weights,
                rng.integers(-1000, 1000, case.channels_out).astype(np.int32),
                quant.fp32_requant_scale(qx.scale, w_scale, qy.scale),
                np.float64(qx.scale) * w_scale.astype(np.float64) / np.float64(qy.scale),
                (case.stride, case.stride), (case.pad,) * 4, groups, (0, 127))


@dataclass(frozen=True)
class ChainCase:
    """Layers one after the other (``cases``, each reading the previous one's output)."""

    name: str
    cases: tuple[ConvCase, ...]


def mobilenet_blocks(name: str, size: int, channels: int) -> ChainCase:
    """Two MobileNet blocks: depthwise 3x3, pointwise 1x1, depthwise 3x3, pointwise 1x1."""
    return ChainCase(name, tuple(
        ConvCase(f"{kind}{i}", channels, size, channels, 3 if kind == "dw" else 1,
                 depthwise=kind == "dw")
        for i, kind in enumerate(("dw", "pw", "dw", "pw"))))


#: Two MobileNet blocks (depthwise 3x3, pointwise 1x1) at 14x14x256: on `default` every
#: activation between the layers fits on chip.
CHAIN_CASE = mobilenet_blocks("mobilenet_2_blocks_14x14x256", 14, 256)


def chain_case_network(chain: ChainCase, *, seed: int = 0) -> tuple[Network, list[Conv]]:
    rng = np.random.default_rng(seed)
    first = chain.cases[0]
    x = Tensor("x", (1, first.size, first.size, first.channels_in),
               Quantization(np.float32(0.02), 128, np.uint8),
               (1, first.channels_in, first.size, first.size))
    layers = []
    for case in chain.cases:
        layers.append(_case_layer(case, layers[-1].output if layers else x, rng,
                                  output_name=f"{case.name}_out"))
    return Network(x, layers[-1].output, layers), layers


def _reference(layer: Conv, codes: np.ndarray) -> np.ndarray:
    qx, qy = layer.input.quant, layer.output.quant
    acc = quant.conv2d(qx.to_stored(codes), layer.weights, stride=layer.stride, pads=layer.pads,
                       pad_value=qx.stored_zero_point, groups=layer.groups)
    bias = quant.fold_zero_point(layer.bias, layer.weights, qx.stored_zero_point)
    acc = quant.wrap_int32(acc.astype(np.int64) + bias[None, :, None, None])
    return qy.from_stored(quant.requantize_fp32(acc, layer.scale, zero_point=qy.stored_zero_point,
                                                axis=1, qmin=layer.clip[0], qmax=layer.clip[1]))


def bench_cnn(config: NpuConfig, *, backend: str = "rtl", cases=CNN_CASES,
              chain: ChainCase | None = CHAIN_CASE, out=print) -> dict:
    """Run every case; the JSON of DESIGN section 8 (``cases`` with cycles, MACs, utilisation
    and bounds), and ``chain``: the chained layers with activations on chip and through
    DRAM."""
    results = []
    for index, case in enumerate(cases):
        network, layer = conv_case_network(case, seed=index)
        compiled = compile_network(network, config)
        codes = np.random.default_rng(100 + index).integers(
            0, 256, network.input.onnx_shape).astype(np.uint8)
        started = time.perf_counter()
        with open_device(backend, config, dram_size=dram_size_for(compiled), quiet=True) as device:
            y, report = LoadedModel(compiled, device).run_codes(codes)
        seconds = time.perf_counter() - started
        np.testing.assert_array_equal(y, _reference(layer, codes),
                                      err_msg=f"{case.name}: the NPU's output is wrong")
        stats, bounds = report.layers[0], compiled.layers[0].bounds
        result = dict(name=case.name, cycles=stats.cycles, macs=stats.macs,
                      utilisation=stats.utilisation, bound_cycles=bounds["bound_cycles"],
                      compute_floor_cycles=bounds["compute_floor_cycles"],
                      bandwidth_floor_cycles=bounds["bandwidth_floor_cycles"],
                      naive_cycles=bounds["naive_cycles"], depthwise=case.depthwise,
                      beats_naive=stats.cycles < bounds["naive_cycles"],
                      dram_read_bytes=stats.dram_read_bytes,
                      dram_write_bytes=stats.dram_write_bytes, wall_seconds=round(seconds, 2))
        results.append(result)
        out(f"  {case.name:<40} {stats.cycles:>11,} cycles  {stats.utilisation:6.1%}  "
            f"bound {bounds['bound_cycles']:>10,}  naive {bounds['naive_cycles']:>11,}  "
            f"({'beats' if result['beats_naive'] else 'DOES NOT beat'} naive; {seconds:.1f} s)")
    total_macs = sum(r["macs"] for r in results)
    total_cycles = sum(r["cycles"] for r in results)
    summary = dict(config=config.name, backend=backend,
                   utilisation=total_macs / (config.pes * total_cycles) if total_cycles else 0.0,
                   cases=results)
    out(f"  all cases: {summary['utilisation']:.1%} utilisation ({total_macs:,} MACs in "
        f"{total_cycles:,} cycles)")
    if chain is not None:
        summary["chain"] = bench_chain(config, chain, backend=backend, out=out)
    return summary


def bench_chain(config: NpuConfig, chain: ChainCase, *, backend: str, out=print) -> dict:
    """``chain`` compiled with its activations on chip where they fit, and through DRAM."""
    network, layers = chain_case_network(chain)
    codes = np.random.default_rng(200).integers(0, 256, network.input.onnx_shape).astype(np.uint8)
    expected = codes
    for layer in layers:
        expected = _reference(layer, expected)
    result = dict(name=chain.name, layers=len(layers), macs=sum(layer.macs for layer in layers))
    for label, on_chip in (("on_chip", True), ("dram", False)):
        compiled = compile_network(network, config, chain=on_chip)
        with open_device(backend, config, dram_size=dram_size_for(compiled), quiet=True) as device:
            y, report = LoadedModel(compiled, device).run_codes(codes)
        np.testing.assert_array_equal(y, expected,
                                      err_msg=f"{chain.name}: the NPU's output is wrong")
        moved = sum(x.dram_read_bytes + x.dram_write_bytes for x in report.layers)
        result[label] = dict(cycles=report.total_cycles,
                             utilisation=report.utilisation(config.pes), dram_bytes=moved,
                             activations_on_chip=list(compiled.on_chip))
        out(f"  {chain.name} ({label.replace('_', ' ')}): {report.total_cycles:,} cycles, "
            f"{report.utilisation(config.pes):.1%}, {moved:,} DRAM bytes; "
            f"{len(compiled.on_chip)} of {len(layers) - 1} activations on chip")
    return result


def plot_utilisation(summary: dict, path, *, pes: int) -> None:
    """Bar chart: utilisation per case, the bound's utilisation and the naive model's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = summary["cases"]
    names = [c["name"] for c in cases]
    measured = [c["utilisation"] for c in cases]
    bound = [c["macs"] / (pes * c["bound_cycles"]) for c in cases]
    naive = [c["macs"] / (pes * c["naive_cycles"]) for c in cases]
    positions = np.arange(len(cases))
    figure, axes = plt.subplots(figsize=(10, 4.8))
    axes.bar(positions - 0.27, bound, 0.27, label="bound (max of compute and bandwidth floors)",
             color="#cccccc")
    axes.bar(positions, measured, 0.27, label=f"NPU ({summary['backend']})", color="#1f77b4")
    axes.bar(positions + 0.27, naive, 0.27, label="naive weight-stationary model", color="#ff7f0e")
    axes.set_xticks(positions, names, rotation=20, ha="right", fontsize=8)
    axes.set_ylabel("MAC utilisation")
    axes.set_ylim(0, 1.05)
    axes.set_title(f"npu bench cnn: {summary['config']} configuration")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
