"""The `npu` command line (DESIGN section 8)."""

from __future__ import annotations

import argparse
import json
import sys

from golden import isa
from golden.config import PRESETS, get_config

DESCRIPTION = """\
An int8 systolic-array NPU: RTL, golden model and SDK.

commands:
  npu info [--config NAME] [--json]     configuration and derived figures
  npu demo [--config NAME] [--backend rtl|golden] [--images N]
                                        the digits CNN on the RTL, against onnxruntime
  npu verilog [--config NAME] [-o FILE] one self-contained Verilog file, top module `npu`
  npu run MODEL.onnx --input [NAME=]X.npy [--backend rtl|golden] [--config NAME] [--output Y.npy]
          [--report FILE.json] [--trace FILE.fst] [--requant fp32|fixed] [--residual int8|int32]
          [--compare]
                                        run an int8 ONNX model on the NPU, per-layer table
  npu bench sim [--config NAME] [--json FILE] [--fresh]
                                        simulated cycles/s of the Verilator model, build time
  npu bench cnn [--config NAME] [--backend rtl|golden] [--json FILE] [--plot FILE.png]
                                        conv layers of real networks: cycles, utilisation, bounds
  npu bench transformer [--config NAME] [--backend rtl|golden] [--json FILE] [--plot FILE.png]
                                        a BERT-style encoder layer at S = 16, 64, 128
  npu synth [--config NAME] [--target ecp5-85k|xc7a100t] [--json FILE]
                                        FPGA resources, Fmax and fit (yowasp yosys/nextpnr)
"""


class UserError(Exception):
    """A mistake of the user's: reported as one line on stderr, exit status 2."""


def _add_config(parser: argparse.ArgumentParser):
    parser.add_argument("--config", default="default", choices=list(PRESETS),
                        help="hardware configuration (default: default)")


def cmd_info(args) -> int:
    config = get_config(args.config)
    figures = config.as_dict()
    figures["instruction_formats_bits"] = {
        op.name: sum(f.width for f in isa.HEADER + fields) for op, fields in isa.FORMATS.items()}
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"NPU configuration {config.name!r}")
    print(f"  systolic array       {config.rows} x {config.cols} = {config.pes} int8 MACs/cycle")
    print(f"  scratchpad           {config.scratchpad_depth} rows x {config.rows} B = "
          f"{config.scratchpad_bytes // 1024} KiB")
    print(f"  accumulator          {config.accumulator_depth} rows x {config.cols} x int32 = "
          f"{config.accumulator_bytes // 1024} KiB")
    print(f"  AXI4 master          {config.axi_data_width}-bit data, {config.axi_addr_width}-bit address")
    print(f"  instruction          {config.instruction_width} bits; queues {config.queue_depth} deep")
    print(f"  vector rows          up to {config.vector_max_length} elements (softmax, layernorm)")
    lanes = config.vector_lanes
    print(f"  vector unit          {lanes} lane{'s' if lanes > 1 else ''} (elements per cycle)")
    print(f"  watchdog             {config.watchdog_cycles} cycles")
    return 0


def cmd_demo(args) -> int:
    from sw.demo import run_digits_demo

    return 0 if run_digits_demo(get_config(args.config), backend=args.backend,
                                limit=args.images) else 1


def cmd_verilog(args) -> int:
    import shutil
    from pathlib import Path

    from rtl.npu import Npu
    from sim.verilog import generate_verilog

    config = get_config(args.config)
    print(f"npu verilog: elaborating the {config.name} NPU ({config.rows}x{config.cols})...",
          file=sys.stderr)
    path = generate_verilog(lambda: Npu(config), name="npu", key=("Npu", config))
    if args.output == "-":
        sys.stdout.write(path.read_text())
    else:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, output)
        print(f"npu verilog: wrote {output} (top module npu, {output.stat().st_size // 1024} KiB)",
              file=sys.stderr)
    return 0


def cmd_run(args) -> int:
    from pathlib import Path

    import numpy as np

    from sw.compiler import CompileError
    from sw.executor import run_onnx
    from sw.onnx_import import OnnxImportError, load_model
    from sw.runtime import NpuError

    config = get_config(args.config)
    model = load_model(args.model)
    graph_inputs = [i.name for i in model.graph.input
                    if i.name not in {init.name for init in model.graph.initializer}]
    inputs: dict[str, np.ndarray] = {}
    for item in args.input:
        name, _, path = item.rpartition("=") if "=" in item else ("", "", item)
        input_path = Path(path)
        if not input_path.is_file():
            raise UserError(f"input file {path!r} does not exist (save one with numpy.save)")
        loaded = np.load(input_path)
        arrays = dict(loaded) if isinstance(loaded, np.lib.npyio.NpzFile) \
            else {name or graph_inputs[0]: loaded}
        for key, value in arrays.items():
            if key not in graph_inputs:
                raise UserError(f"{path}: the model has no input {key!r}; its inputs are "
                                f"{', '.join(graph_inputs)}")
            if value.dtype != np.float32:
                raise UserError(f"{path}: input {key!r} must be float32 (as onnxruntime takes "
                                f"it), not {value.dtype}; convert it with x.astype(numpy.float32)")
            inputs[key] = value
    if graph_inputs[0] not in inputs:
        raise UserError(f"the model's input {graph_inputs[0]!r} is missing: pass --input X.npy")
    x = inputs[graph_inputs[0]]
    host_inputs = {k: v for k, v in inputs.items() if k != graph_inputs[0]}

    def progress(done: int, total: int, layer) -> None:
        print(f"npu run: [{done}/{total}] {layer.name} ({layer.op}): {layer.cycles:,} cycles, "
              f"{layer.utilisation:.1%} utilisation", file=sys.stderr, flush=True)

    print(f"npu run: {args.model} on the {args.backend} backend of the {config.name} NPU "
          f"({config.rows}x{config.cols}), input {x.shape}", file=sys.stderr)
    try:
        y, report, compiled = run_onnx(model, x, backend=args.backend, config=config,
                                       requant=args.requant, trace=args.trace, progress=progress,
                                       host_inputs=host_inputs, residual=args.residual)
    except (OnnxImportError, CompileError, ValueError) as error:
        raise UserError(f"{args.model}: {error}") from None
    except NpuError as error:
        raise UserError(f"the NPU stopped: {error}") from None
    print(report.table(config.pes))
    if args.compare:
        import onnxruntime as ort

        session = ort.InferenceSession(model.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        expected = session.run(None, inputs)[0]
        difference = np.abs(y.astype(np.float64) - expected.astype(np.float64))
        scale = float(compiled.network.output.quant.scale) if compiled.network.output_float else 1
        cosine = float(np.dot(y.reshape(-1), expected.reshape(-1)) /
                       (np.linalg.norm(y) * np.linalg.norm(expected)))
        print(f"onnxruntime: {'bit-exact' if np.array_equal(y, expected) else 'DIFFERS'} "
              f"(max |difference| {difference.max():.6g} = {difference.max() / scale:.3g} LSB, "
              f"{np.count_nonzero(difference)} of {difference.size} values differ, cosine "
              f"similarity {cosine:.6f})")
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        np.save(output, y)
        print(f"npu run: wrote {output} {y.shape} {y.dtype}", file=sys.stderr)
    if args.report:
        output = Path(args.report)
        output.parent.mkdir(parents=True, exist_ok=True)
        body = report.as_dict(config.pes)
        body.update(model=str(args.model), requant=args.requant, residual=args.residual)
        output.write_text(json.dumps(body, indent=2) + "\n")
        print(f"npu run: wrote {output}", file=sys.stderr)
    return 0


def cmd_synth(args) -> int:
    from pathlib import Path

    from sw.synth import SynthError, format_report, synthesize_npu

    try:
        report = synthesize_npu(get_config(args.config), target=args.target)
    except SynthError as error:
        raise UserError(str(error)) from None
    print(format_report(report))
    if args.json:
        output = Path(args.json)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report.as_json(), indent=2) + "\n")
        print(f"npu synth: wrote {output}", file=sys.stderr)
    return 0


def cmd_bench(args) -> int:
    from pathlib import Path

    config = get_config(args.config)
    if args.suite == "sim":
        if args.plot:
            raise UserError("bench sim has no plot; use --json")
        from sim.bench_sim import bench_sim

        result = bench_sim(config, fresh=args.fresh)
    elif args.suite == "transformer":
        from sw.bench_transformer import bench_transformer, plot_transformer

        print(f"npu bench transformer: one encoder layer (hidden 384, 12 heads, FFN 1536) on the "
              f"{args.backend} backend of the {config.name} NPU ({config.rows}x{config.cols})",
              file=sys.stderr)
        result = bench_transformer(config, backend=args.backend)
        if args.plot:
            plot = Path(args.plot)
            plot.parent.mkdir(parents=True, exist_ok=True)
            plot_transformer(result, plot)
            print(f"npu bench: wrote {plot}", file=sys.stderr)
    else:
        from sw.bench_cnn import bench_cnn, plot_utilisation

        print(f"npu bench cnn: conv layers of real networks on the {args.backend} backend of the "
              f"{config.name} NPU ({config.rows}x{config.cols})", file=sys.stderr)
        result = bench_cnn(config, backend=args.backend)
        if args.plot:
            plot = Path(args.plot)
            plot.parent.mkdir(parents=True, exist_ok=True)
            plot_utilisation(result, plot, pes=config.pes)
            print(f"npu bench: wrote {plot}", file=sys.stderr)
    if args.json:
        output = Path(args.json)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2) + "\n")
        print(f"npu bench: wrote {output}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="npu", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = commands.add_parser("info", help="configuration and derived figures")
    _add_config(info)
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=cmd_info)
    demo = commands.add_parser("demo", help="the main job, on shipped data")
    demo.add_argument("--config", default="small", choices=list(PRESETS),
                      help="hardware configuration (default: small)")
    demo.add_argument("--backend", default="rtl", choices=["rtl", "golden"],
                      help="rtl: the Verilator model (default); golden: the golden model")
    demo.add_argument("--images", type=int, default=None, metavar="N",
                      help="classify only the first N test images")
    demo.set_defaults(func=cmd_demo)
    verilog = commands.add_parser("verilog", help="write the NPU as one Verilog file")
    _add_config(verilog)
    verilog.add_argument("-o", "--output", default="npu.v",
                         help="output file, - for stdout (default: npu.v)")
    verilog.set_defaults(func=cmd_verilog)
    run = commands.add_parser("run", help="run an int8 ONNX model on the NPU")
    run.add_argument("model", metavar="MODEL.onnx", help="int8 model (onnxruntime quantize_static)")
    run.add_argument("--input", required=True, action="append", metavar="[NAME=]X.npy",
                     help="float32 input, as onnxruntime takes it: X.npy for the model's first "
                          "input, NAME=X.npy for another (e.g. attention_mask=mask.npy), or an "
                          ".npz with one array per input name; repeat for several")
    run.add_argument("--backend", default="rtl", choices=["rtl", "golden"],
                     help="rtl: the Verilator model; golden: the golden model (default: rtl)")
    _add_config(run)
    run.add_argument("--output", metavar="Y.npy", help="write the float output here")
    run.add_argument("--report", metavar="FILE.json", help="write the run report as JSON")
    run.add_argument("--trace", metavar="FILE.fst", help="rtl: write an FST waveform of the run")
    run.add_argument("--requant", default="fp32", choices=["fp32", "fixed"],
                     help="fp32: bit-exact with onnxruntime; fixed: TFLite-style integer "
                          "multipliers (default: fp32)")
    run.add_argument("--residual", default="int8", choices=["int8", "int32"],
                     help="transformers: int8 keeps the graph's quantised residual sums; int32 "
                          "keeps residual sums and layernorm inputs at accumulator precision "
                          "(better with outlier channels) (default: int8)")
    run.add_argument("--compare", action="store_true",
                     help="also run onnxruntime on the input and report the difference")
    run.set_defaults(func=cmd_run)
    bench = commands.add_parser("bench", help="benchmarks (sim: simulator speed, cnn: conv "
                                              "layers, transformer: an encoder layer)")
    bench.add_argument("suite", choices=["sim", "cnn", "transformer"],
                       help="sim: cycles/s of the Verilator model and its build time; cnn: conv "
                            "layers of ResNet/MobileNet against the performance bounds, and two "
                            "MobileNet blocks with activations on chip and through DRAM; "
                            "transformer: a BERT-style encoder layer at sequence lengths 16, 64 "
                            "and 128, and the vector unit's softmax/layernorm/GELU throughput")
    bench.add_argument("--backend", default="rtl", choices=["rtl", "golden"],
                       help="cnn, transformer: rtl (measured cycles, default) or golden "
                            "(cost-model estimate)")
    bench.add_argument("--plot", metavar="FILE.png",
                       help="cnn: utilisation per layer; transformer: matmul/vector cycles")
    _add_config(bench)
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    bench.add_argument("--fresh", action="store_true",
                       help="delete the cached Verilator build first (time a cold build)")
    bench.set_defaults(func=cmd_bench)
    synth = commands.add_parser("synth", help="FPGA resources, Fmax and fit of the Verilog")
    _add_config(synth)
    from sw.synth import TARGETS

    synth.add_argument("--target", default="ecp5-85k", choices=list(TARGETS),
                       help="ecp5-85k: yosys + nextpnr out of context; xc7a100t: yosys only "
                            "(default: ecp5-85k)")
    synth.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    synth.set_defaults(func=cmd_synth)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (UserError, ValueError, TypeError, OSError) as error:
        if args.debug:
            raise
        print(f"npu {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
