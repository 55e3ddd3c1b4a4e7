"""The whole NPU at Verilator speed: the ``npu`` top level and the C++ harness
(``sim/npu_harness.cpp``: DRAM model, AXI4-Lite host, run-until-IRQ) in one shared library,
loaded with ctypes. No Python runs per cycle.

The model's top level is ``npu_sim`` (:mod:`sim.sim_wrapper`): the ``npu`` with registered inputs,
so that Verilator evaluates the NPU's logic once per clock cycle; the harness drives it so that the
NPU sees exactly the inputs it would see with its own ports driven (same cycles, same counters).

The library is built on first use and cached under ``.npu_cache/rtl_sim/`` by a hash of the
NPU's Verilog (which covers the configuration and every RTL and golden source it is built from),
the wrapper generator, the harness source and the build flags; a change to any of them builds a
new one. A cold build takes about 20 s (``tiny``) to 45 s (``default``) on an idle 2-core machine,
once; a message on stderr says so. Tracing (FST waveforms) is a separate build, made only when a
trace is asked for.

Verilator runs single-threaded (threads are much slower on these 2-core machines) and only the
ports are visible (no ``--public-flat-rw``). The build flags trade a little model speed for a much
shorter build (docs/simulation.md has the measurements): ``-fno-merge-cond-motion`` (Verilator's
statement motion for merging conditions took 40 of its 57 s on ``default``; the merging itself
stays), ``--output-split-cfuncs 1000`` (functions of at most about 1000 statements: g++ compiles
the model several times faster; smaller splits make the model slower), ``-O3`` for the code that
runs every cycle and ``-O0`` for the code that runs once (construction, initial values, the first
settling of the combinational logic: about half of the C++).
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

from golden.config import NpuConfig

from . import sim_wrapper
from .cocotb_runner import VERILATOR_WARNINGS
from .sim_wrapper import WRAPPER_TOP, wrapper_verilog, zero_fill_loops
from .toolchain import ToolchainError, cache_dir, verilator_env
from .verilog import generate_verilog

__all__ = ["RtlSimulator", "build_simulator", "simulator_library", "AXI_RESP"]

HARNESS = Path(__file__).resolve().parent / "npu_harness.cpp"
LIBRARY = "libnpusim.so"

VERILATOR_FLAGS = ("--cc", "--exe", "--build", "-O3", "--x-assign", "fast", "--x-initial", "fast",
                   "--noassert", "-Wno-fatal", *(f"-Wno-{w}" for w in VERILATOR_WARNINGS),
                   "--top-module", WRAPPER_TOP, "--prefix", "Vnpu", "-j", "2",
                   "-fno-merge-cond-motion", "--output-split-cfuncs", "1000")
#: verilated.mk's optimisation levels: OPT_FAST for the code that runs every cycle (and the
#: harness), OPT_SLOW for the code that runs once, OPT_GLOBAL for Verilator's runtime library.
MAKE_FLAGS = ("OPT_FAST=-O3", "OPT_SLOW=-O0", "OPT_GLOBAL=-O2")
CXX_FLAGS = ("-fPIC",)

#: AXI response codes by name (the harness's error injection answers one of them).
AXI_RESP = {"OKAY": 0, "EXOKAY": 1, "SLVERR": 2, "DECERR": 3}


def _build_key(verilog_text: str, config: NpuConfig, trace: bool) -> str:
    digest = hashlib.sha256()
    for part in (verilog_text, Path(sim_wrapper.__file__).read_text(), HARNESS.read_text(),
                 VERILATOR_FLAGS, MAKE_FLAGS, CXX_FLAGS, config.axi_data_bytes, trace):
        digest.update(repr(part).encode() + b"\0")
    return digest.hexdigest()[:16]


def _npu_verilog(config: NpuConfig, gate_vector_clock: bool) -> str:
    """The text of the NPU's Verilog (generated once per design and configuration, cached)."""
    if not isinstance(config, NpuConfig):
        raise TypeError(f"Config must be an NpuConfig, not {config!r}")

    def npu():
        from rtl.npu import Npu  # only when the Verilog is not cached yet

        return Npu(config, gate_vector_clock=gate_vector_clock)

    key = ("Npu", config, f"gate_vector_clock={gate_vector_clock}")
    return generate_verilog(npu, name="npu", key=key).read_text()


def _library(config: NpuConfig, text: str, trace: bool, gate_vector_clock: bool) -> Path:
    flavour = ("trace" if trace else "fast") + ("" if gate_vector_clock else "-ungated")
    key = _build_key(text, config, trace)
    return cache_dir() / "rtl_sim" / f"npu-{config.name}-{flavour}-{key}" / "obj" / LIBRARY


def simulator_library(config: NpuConfig, *, trace: bool = False,
                      gate_vector_clock: bool = True) -> Path:
    """Where the shared library of the NPU in ``config`` is (or will be) cached."""
    return _library(config, _npu_verilog(config, gate_vector_clock), trace, gate_vector_clock)


def build_simulator(config: NpuConfig, *, trace: bool = False, quiet: bool = False,
                    gate_vector_clock: bool = True) -> Path:
    """The shared library of the NPU in ``config`` (built now if it is not cached yet).

    ``gate_vector_clock`` (see :class:`rtl.npu.Npu`): on by default, it makes the model several
    times faster; off, the model is built from the same Verilog as an FPGA (slower, same cycles).
    """
    text = _npu_verilog(config, gate_vector_clock)
    library = _library(config, text, trace, gate_vector_clock)
    build_dir = library.parent.parent
    if library.exists():
        return library
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same library
        if library.exists():
            return library
        env = verilator_env()  # raises ToolchainError without g++ or Verilator
        if shutil.which("make", path=env["PATH"]) is None:
            raise ToolchainError("No `make` found: Verilator's --build needs it. On Debian, "
                                 "`apt-get install make`")
        if not quiet:
            print(f"Building the Verilator model of the {config.name} NPU "
                  f"({config.rows}x{config.cols}{', with FST tracing' if trace else ''}); this "
                  f"takes up to a minute or two, once (cached in {build_dir})...",
                  file=sys.stderr, flush=True)
        start = time.perf_counter()
        source, wrapper = build_dir / "npu.v", build_dir / f"{WRAPPER_TOP}.v"
        source.write_text(zero_fill_loops(text))
        wrapper.write_text(wrapper_verilog(text))
        cxx = [*CXX_FLAGS, f"-DAXI_BYTES={config.axi_data_bytes}"]
        trace_args = ["--trace-fst"] if trace else []
        if trace:
            cxx.append("-DNPU_TRACE")
        command = ["verilator", *VERILATOR_FLAGS, *trace_args, "-Mdir", "obj", "-o", LIBRARY,
                   *(arg for flag in cxx for arg in ("-CFLAGS", flag)),
                   *(arg for flag in MAKE_FLAGS for arg in ("-MAKEFLAGS", flag)),
                   "-LDFLAGS", "-shared", str(source), str(wrapper), str(HARNESS)]
        result = subprocess.run(command, cwd=build_dir, env=env, capture_output=True, text=True)
        if result.returncode != 0 or not library.exists():
            log = build_dir / "build.log"
            log.write_text(result.stdout + result.stderr)
            raise ToolchainError(f"Building the Verilator model failed (exit {result.returncode}); "
                                 f"the log is {log}:\n{result.stderr[-2000:]}")
        seconds = time.perf_counter() - start
        (build_dir / "build_seconds").write_text(f"{seconds:.1f}\n")
        if not quiet:
            print(f"Built in {seconds:.0f} s.", file=sys.stderr, flush=True)
    return library


_u64, _u32, _int, _ptr = ctypes.c_uint64, ctypes.c_uint32, ctypes.c_int, ctypes.c_void_p
_SIGNATURES = {  # name: (result, arguments); keep in step with the extern "C" block
    "npu_sim_create": (_ptr, [_u64]),
    "npu_sim_destroy": (None, [_ptr]),
    "npu_sim_axi_bytes": (_int, []),
    "npu_sim_has_trace": (_int, []),
    "npu_sim_trace_open": (_int, [_ptr, ctypes.c_char_p]),
    "npu_sim_trace_close": (None, [_ptr]),
    "npu_sim_set_dram_timing": (None, [_ptr, _u32, _u32, _u32, _u32]),
    "npu_sim_set_backpressure": (None, [_ptr, _u64, _u32]),
    "npu_sim_inject_error": (None, [_ptr, _u64, _u64, _int, _int, _u32]),
    "npu_sim_clear_errors": (None, [_ptr]),
    "npu_sim_dram_size": (_u64, [_ptr]),
    "npu_sim_dram_write": (_int, [_ptr, _u64, ctypes.c_char_p, _u64]),
    "npu_sim_dram_read": (_int, [_ptr, _u64, ctypes.c_void_p, _u64]),
    "npu_sim_reg_write": (_int, [_ptr, _u32, _u32, _u32]),
    "npu_sim_reg_read": (_int, [_ptr, _u32, ctypes.POINTER(_u32), _u32]),
    "npu_sim_run": (_int, [_ptr, _u64]),
    "npu_sim_step": (None, [_ptr, _u64]),
    "npu_sim_reset": (None, [_ptr, _u32]),
    "npu_sim_cycles": (_u64, [_ptr]),
    "npu_sim_irq": (_int, [_ptr]),
}

_loaded: dict[Path, ctypes.CDLL] = {}


def _load(path: Path) -> ctypes.CDLL:
    if path not in _loaded:
        library = ctypes.CDLL(str(path))
        for name, (result, arguments) in _SIGNATURES.items():
            function = getattr(library, name)
            function.restype, function.argtypes = result, arguments
        _loaded[path] = library
    return _loaded[path]


class RtlSimulator:
    """One NPU instance with its own DRAM (``dram_size`` bytes, zeroed) behind the AXI4 port.

    ``trace``: an FST file that records every signal of the run (slower; a separate build).
    The DRAM answers each burst ``read_latency``/``write_latency`` cycles after its address and
    moves up to ``bytes_per_cycle`` per cycle in each direction; ``set_backpressure`` adds seeded
    random pauses on every AXI channel; ``inject_error`` makes bursts that touch an address range
    answer SLVERR or DECERR (bursts past the end of DRAM always answer SLVERR).
    ``gate_vector_clock=False`` builds the model without the vector unit's clock gate, from the
    same Verilog as an FPGA build (slower; every cycle and output the same).
    """

    REGISTER_TIMEOUT = 1000  # cycles an AXI4-Lite access may take before it counts as hung

    def __init__(self, config: NpuConfig, *, dram_size: int = 1 << 24, trace: str | Path | None = None,
                 quiet: bool = False, gate_vector_clock: bool = True):
        if not isinstance(dram_size, int) or dram_size <= 0:
            raise ValueError(f"DRAM size must be a positive integer, not {dram_size!r}")
        self.config = config
        self._handle = None
        self._lib = _load(build_simulator(config, trace=trace is not None, quiet=quiet,
                                          gate_vector_clock=gate_vector_clock))
        self._handle = self._lib.npu_sim_create(dram_size)
        self.dram_size = dram_size
        self.trace_path = None
        if trace is not None:
            self.trace_path = Path(trace)
            self.trace_path.parent.mkdir(parents=True, exist_ok=True)
            if self._lib.npu_sim_trace_open(self._handle, str(self.trace_path).encode()) != 0:
                raise OSError(f"Cannot open the waveform file {self.trace_path} for writing")

    # Life cycle ------------------------------------------------------------------------------
    def close(self) -> None:
        """Flush the waveform (if any) and free the model."""
        if self._handle:
            self._lib.npu_sim_destroy(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()

    # DRAM --------------------------------------------------------------------------------------
    def _check_range(self, address: int, size: int):
        if address < 0 or size < 0 or address + size > self.dram_size:
            raise ValueError(f"DRAM range {address:#x}+{size} is outside the simulated DRAM of "
                             f"{self.dram_size:#x} bytes: make it larger (dram_size=)")

    def write_dram(self, address: int, data: bytes) -> None:
        data = bytes(data)
        self._check_range(address, len(data))
        self._lib.npu_sim_dram_write(self._handle, address, data, len(data))

    def read_dram(self, address: int, size: int) -> bytes:
        self._check_range(address, size)
        buffer = ctypes.create_string_buffer(size)
        self._lib.npu_sim_dram_read(self._handle, address, buffer, size)
        return buffer.raw

    def set_dram_timing(self, *, read_latency: int = 16, write_latency: int = 8,
                        bytes_per_cycle: int | None = None, max_outstanding: int = 16) -> None:
        bytes_per_cycle = self.config.axi_data_bytes if bytes_per_cycle is None else bytes_per_cycle
        for name, value, minimum in (("Read latency", read_latency, 0),
                                     ("Write latency", write_latency, 0),
                                     ("Bytes per cycle", bytes_per_cycle, 1),
                                     ("Max outstanding", max_outstanding, 1)):
            if not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer of at least {minimum}, not {value!r}")
        self._lib.npu_sim_set_dram_timing(self._handle, read_latency, write_latency,
                                          bytes_per_cycle, max_outstanding)

    def set_backpressure(self, *, seed: int, probability: float) -> None:
        if not 0 <= probability < 1:
            raise ValueError(f"Probability must be in [0, 1), not {probability!r}")
        self._lib.npu_sim_set_backpressure(self._handle, seed, round(probability * 1000))

    def inject_error(self, *, begin: int, end: int, reads: bool = True, writes: bool = True,
                     resp: str = "SLVERR") -> None:
        if resp not in ("SLVERR", "DECERR"):
            raise ValueError(f"Resp must be 'SLVERR' or 'DECERR', not {resp!r}")
        self._lib.npu_sim_inject_error(self._handle, begin, end, int(reads), int(writes),
                                       AXI_RESP[resp])

    def clear_errors(self) -> None:
        self._lib.npu_sim_clear_errors(self._handle)

    # Host interface ----------------------------------------------------------------------------
    def write_register(self, offset: int, value: int) -> int:
        """AXI4-Lite write; returns BRESP (0 OKAY, 2 SLVERR)."""
        resp = self._lib.npu_sim_reg_write(self._handle, offset, value & 0xFFFF_FFFF,
                                           self.REGISTER_TIMEOUT)
        if resp < 0:
            raise TimeoutError(f"The NPU did not answer a register write at {offset:#x} within "
                               f"{self.REGISTER_TIMEOUT} cycles")
        return resp

    def read_register(self, offset: int) -> tuple[int, int]:
        """AXI4-Lite read; returns (data, RRESP)."""
        value = _u32()
        resp = self._lib.npu_sim_reg_read(self._handle, offset, ctypes.byref(value),
                                          self.REGISTER_TIMEOUT)
        if resp < 0:
            raise TimeoutError(f"The NPU did not answer a register read at {offset:#x} within "
                               f"{self.REGISTER_TIMEOUT} cycles")
        return value.value, resp

    def run_until_irq(self, max_cycles: int) -> bool:
        """Clock until the IRQ is high (True) or ``max_cycles`` have passed (False)."""
        return bool(self._lib.npu_sim_run(self._handle, max_cycles))

    def step(self, cycles: int) -> None:
        self._lib.npu_sim_step(self._handle, cycles)

    def reset(self, cycles: int = 4) -> None:
        """Hold the NPU's reset for ``cycles`` cycles; the DRAM keeps its contents, bursts in
        flight are dropped."""
        self._lib.npu_sim_reset(self._handle, cycles)

    @property
    def cycles(self) -> int:
        """Cycles clocked since the model was created (reset included)."""
        return self._lib.npu_sim_cycles(self._handle)

    @property
    def irq(self) -> bool:
        return bool(self._lib.npu_sim_irq(self._handle))
