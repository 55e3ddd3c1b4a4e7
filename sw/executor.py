"""Running a compiled model on a device, layer by layer, with a per-layer performance report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .compiler import CompiledLayer, CompiledModel
from .runtime import Device, Program, RunStats

__all__ = ["LayerReport", "RunReport", "LoadedModel", "dram_size_for", "run_onnx"]


@dataclass(frozen=True)
class LayerReport:
    name: str
    op: str
    cycles: int
    macs: int           # the layer's own multiply-accumulates (what the network needs)
    array_macs: int     # the MAC counter: every PE of every streamed row, padding lanes too
    utilisation: float  # macs / (rows * cols * cycles)
    dram_read_bytes: int
    dram_write_bytes: int
    compute_cycles: int  # cycles the compute unit was busy (MATMUL and VECTOR)
    vector_cycles: int   # of which VECTOR (requantisation, softmax, layernorm, GELU, add, max)
    instructions: int
    bound_cycles: int
    naive_cycles: int | None

    @classmethod
    def from_stats(cls, compiled: CompiledLayer, stats: RunStats) -> LayerReport:
        macs = compiled.macs
        return cls(name=compiled.name, op=compiled.op, cycles=stats.cycles, macs=macs,
                   array_macs=stats.macs,
                   utilisation=macs / (stats.config.pes * stats.cycles) if stats.cycles else 0.0,
                   dram_read_bytes=stats.counters["dram_read_bytes"],
                   dram_write_bytes=stats.counters["dram_write_bytes"],
                   compute_cycles=stats.counters["busy_compute"],
                   vector_cycles=stats.counters["busy_vector"],
                   instructions=len(compiled.instructions),
                   bound_cycles=compiled.bounds["bound_cycles"],
                   naive_cycles=compiled.bounds.get("naive_cycles"))

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class RunReport:
    config: str
    backend: str
    layers: tuple[LayerReport, ...]

    @property
    def total_cycles(self) -> int:
        return sum(layer.cycles for layer in self.layers)

    @property
    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    def utilisation(self, pes: int) -> float:
        return self.total_macs / (pes * self.total_cycles) if self.total_cycles else 0.0

    def as_dict(self, pes: int) -> dict:
        """The run report of DESIGN section 8."""
        return {"config": self.config, "backend": self.backend,
                "total_cycles": self.total_cycles, "total_macs": self.total_macs,
                "utilisation": self.utilisation(pes),
                "dram_read_bytes": sum(layer.dram_read_bytes for layer in self.layers),
                "dram_write_bytes": sum(layer.dram_write_bytes for layer in self.layers),
                "layers": [layer.as_dict() for layer in self.layers]}

    def table(self, pes: int) -> str:
        header = (f"{'layer':<28} {'op':<14} {'cycles':>10} {'MACs':>12} {'util':>6} "
                  f"{'DRAM rd':>9} {'DRAM wr':>9}")
        lines = [header, "-" * len(header)]
        for layer in self.layers:
            lines.append(f"{layer.name[:28]:<28} {layer.op[:14]:<14} {layer.cycles:>10,} "
                         f"{layer.macs:>12,} {layer.utilisation:>6.1%} "
                         f"{layer.dram_read_bytes:>9,} {layer.dram_write_bytes:>9,}")
        lines.append("-" * len(header))
        lines.append(f"{'total':<28} {'':<14} {self.total_cycles:>10,} {self.total_macs:>12,} "
                     f"{self.utilisation(pes):>6.1%} "
                     f"{sum(x.dram_read_bytes for x in self.layers):>9,} "
                     f"{sum(x.dram_write_bytes for x in self.layers):>9,}")
        return "\n".join(lines)


def dram_size_for(compiled: CompiledModel) -> int:
    """A DRAM size (a power of two, at least 1 MiB) that holds the model's image."""
    need = compiled.image.size + (1 << 16)
    size = 1 << 20
    while size < need:
        size *= 2
    return size


class LoadedModel:
    """A compiled model written into a device's DRAM, ready to run inputs through."""

    def __init__(self, compiled: CompiledModel, device: Device):
        self.compiled = compiled
        self.device = device
        for compiled_layer in compiled.layers:  # refuses another configuration, with the reason
            device.check_program(Program(compiled.config, compiled_layer.instructions,
                                         compiled_layer.name))
        self.base = device.allocator.allocate(compiled.image.size, alignment=4096)
        for address, data in compiled.relocated(self.base):
            device.write_dram(address, data)

    def address(self, tensor) -> int:
        return self.base + self.compiled.address(tensor)

    def host_values(self, host_inputs: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
        """The host part of the graph (the attention mask from ``attention_mask``), evaluated by
        onnxruntime before the first layer."""
        model = self.compiled.network.host_model
        if model is None:
            return {}
        import onnxruntime

        host_inputs = host_inputs or {}
        names = [i.name for i in model.graph.input]
        missing = [name for name in names if name not in host_inputs]
        if missing:
            raise ValueError(f"The model also needs input {', '.join(map(repr, missing))} "
                             f"(e.g. the attention mask): pass it with --input NAME=FILE.npy "
                             f"or in an .npz file")
        session = onnxruntime.InferenceSession(model.SerializeToString(),
                                               providers=["CPUExecutionProvider"])
        values = session.run(None, {name: np.asarray(host_inputs[name]) for name in names})
        return dict(zip([o.name for o in model.graph.output], values, strict=True))

    def run_codes(self, codes: np.ndarray, *, host_inputs: dict[str, np.ndarray] | None = None,
                  real_input: np.ndarray | None = None,
                  progress: Callable[[int, int, LayerReport], None] | None = None
                  ) -> tuple[np.ndarray, RunReport]:
        """Quantised input codes (ONNX layout) -> quantised output codes, and the report.
        ``host_inputs``: the model's other inputs (float, e.g. ``attention_mask``);
        ``real_input``: the float input, for the int32 residual copy (``residual="int32"``;
        by default the dequantised codes)."""
        network = self.compiled.network
        self.device.write_dram(self.address(network.input), self.compiled.input_bytes(codes))
        if network.residual_input is not None:
            real = network.input.quant.dequantize(codes) if real_input is None else real_input
            self.device.write_dram(self.address(network.residual_input),
                                   network.residual_input.quantize(real).tobytes())
        for offset, data in self.compiled.host_segments(self.host_values(host_inputs),
                                                        batch=codes.shape[0]):
            self.device.write_dram(self.base + offset, data)
        reports = []
        count = len(self.compiled.layers)
        for index, compiled_layer in enumerate(self.compiled.layers):
            stats = self.device.execute(
                program_address=self.base + compiled_layer.program_offset,
                instruction_count=len(compiled_layer.instructions), name=compiled_layer.name)
            reports.append(LayerReport.from_stats(compiled_layer, stats))
            if progress is not None:
                progress(index + 1, count, reports[-1])
        output = network.output
        stored = np.frombuffer(self.device.read_dram(self.address(output), output.size), np.int8)
        report = RunReport(config=self.compiled.config.name, backend=self.device.backend,
                           layers=tuple(reports))
        return output.from_storage(stored), report

    def run(self, x: np.ndarray, **kwargs) -> tuple[np.ndarray, RunReport]:
        """The model's input as onnxruntime takes it -> its output as onnxruntime returns it."""
        network = self.compiled.network
        codes = network.input.quant.quantize(x) if network.input_float else x
        y, report = self.run_codes(codes, real_input=x if network.input_float else None, **kwargs)
        return (network.output.quant.dequantize(y) if network.output_float else y), report


def run_onnx(model, x: np.ndarray, *, backend: str = "golden", config="default",
             requant: str = "fp32", trace=None, progress=None, quiet: bool = False,
             host_inputs: dict[str, np.ndarray] | None = None, residual: str = "int8"
             ) -> tuple[np.ndarray, RunReport, CompiledModel]:
    """Import, compile and run an int8 ONNX model on a new device: the float output (as
    onnxruntime returns it), the per-layer report and the compiled model. ``host_inputs``: the
    model's other inputs (e.g. ``attention_mask``); ``residual``: ``int8`` (the graph's
    quantisation) or ``int32`` (residual sums and layernorm inputs at accumulator precision,
    :mod:`sw.precision`)."""
    from golden.config import get_config

    from .compiler import compile_network
    from .onnx_import import import_onnx
    from .precision import RESIDUAL_MODES, keep_residuals_int32
    from .runtime import open_device

    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        raise TypeError(f"The input must be a float32 numpy array, not "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    config = get_config(config)
    network = import_onnx(model, input_shape=x.shape)
    if residual not in RESIDUAL_MODES:
        raise ValueError(f"Residual mode must be one of {RESIDUAL_MODES}, not {residual!r}")
    if residual == "int32":
        keep_residuals_int32(network)
    compiled = compile_network(network, config, requant=requant)
    with open_device(backend, config, dram_size=dram_size_for(compiled), trace=trace,
                     quiet=quiet) as device:
        y, report = LoadedModel(compiled, device).run(x, progress=progress,
                                                      host_inputs=host_inputs)
    return y, report, compiled
