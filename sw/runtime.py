"""The runtime: one ``Device`` interface in front of the golden machine and the RTL.

A device has a DRAM (with a simple allocator for tensors and programs), the NPU's registers
(``golden.registers``) and runs programs the way a driver does: it writes the program into DRAM,
PROGRAM_ADDR, PROGRAM_LENGTH and CTRL.START, waits for the interrupt, and reads STATUS,
ERROR_INDEX and the performance counters back.

- ``golden``: :class:`golden.machine.Machine` behind an emulation of the register map. Cycle
  counts are the golden cost model's estimates; counters the golden machine does not model
  (stalls) read 0.
- ``rtl``: the Verilator model of the ``npu`` top level with its C++ DRAM model
  (:mod:`sim.rtl_sim`); every number is the hardware's.

Before the first run the driver reads the configuration registers (ID, VERSION, CONFIG_HASH,
ROWS, ...) and refuses a program compiled for another configuration. A hardware error raises
:class:`NpuError` (error code, faulting instruction, counters) and a run that does not finish in
its cycle limit raises :class:`CycleLimitError`; the device is usable afterwards (the RTL device
resets the NPU after a cycle limit, the DRAM keeps its contents).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from golden import registers as regmap
from golden.config import NpuConfig, get_config
from golden.isa import ErrorCode, Instruction, encode_program
from golden.machine import Machine

__all__ = ["Program", "RunStats", "NpuError", "CycleLimitError", "ConfigMismatchError",
           "DramAllocator", "Device", "GoldenDevice", "RtlDevice", "open_device", "BACKENDS"]

BACKENDS = ("golden", "rtl")
DEFAULT_CYCLE_LIMIT = 50_000_000
_REG = {reg.name: reg for reg in regmap.REGISTERS}
#: Registers whose reset value is a configuration attribute (ROWS: rows, ..., WATCHDOG).
_CONFIG_ATTRIBUTES = {reg.name: reg.reset for reg in regmap.REGISTERS
                      if isinstance(reg.reset, str) and reg.reset != "config_hash"}


def _bit(register: str, field: str) -> int:
    return 1 << regmap.field(register, field).lsb


def _field(value: int, register: str, field: str) -> int:
    f = regmap.field(register, field)
    return (value & f.mask) >> f.lsb


# Programs and results ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Program:
    """Instructions compiled for one configuration (a device refuses any other)."""

    config: NpuConfig
    instructions: tuple[Instruction, ...]
    name: str = "program"

    def __post_init__(self):
        if not isinstance(self.config, NpuConfig):
            raise TypeError(f"Config must be an NpuConfig, not {self.config!r}")
        object.__setattr__(self, "instructions", tuple(self.instructions))
        if not self.instructions:
            raise ValueError(f"Program {self.name!r} must have at least one instruction")

    def image(self) -> bytes:
        return encode_program(self.instructions, instruction_bytes=self.config.instruction_bytes)

    def __len__(self) -> int:
        return len(self.instructions)


@dataclass(frozen=True)
class RunStats:
    """The performance counters of one run (lower-case counter names, e.g. ``macs``)."""

    config: NpuConfig
    counters: dict[str, int]

    @property
    def cycles(self) -> int:
        return self.counters["cycles"]

    @property
    def macs(self) -> int:
        return self.counters["macs"]

    @property
    def utilisation(self) -> float:
        """MACs / (rows x cols x cycles): the fraction of the array's peak used."""
        return self.macs / (self.config.pes * self.cycles) if self.cycles else 0.0


class NpuError(RuntimeError):
    """The NPU stopped a program with an error (STATUS.ERROR, ERROR_INDEX)."""

    def __init__(self, message: str, *, code: ErrorCode | None, index: int | None,
                 stats: RunStats | None = None, program: str = "program"):
        super().__init__(message)
        self.code, self.index, self.stats, self.program = code, index, stats, program


class CycleLimitError(NpuError):
    """A program did not finish within its cycle limit (the device was reset afterwards)."""


class ConfigMismatchError(ValueError):
    """A program compiled for one configuration was given to hardware of another."""


# DRAM allocation ---------------------------------------------------------------------------------

class DramAllocator:
    """First-fit allocation of DRAM regions (aligned, by default to 64 bytes) with free.

    ``base`` keeps the low addresses free (address 0 stays unused, so that a zero address in a
    program is a bug that shows).
    """

    def __init__(self, *, size: int, base: int = 0x1000, alignment: int = 64):
        if not isinstance(size, int) or size <= base:
            raise ValueError(f"DRAM size must be an integer larger than {base:#x}, not {size!r}")
        self.size, self.alignment = size, alignment
        self._free: list[tuple[int, int]] = [(base, size)]  # sorted (begin, end)
        self._used: dict[int, int] = {}                     # begin -> end

    def allocate(self, size: int, *, alignment: int | None = None) -> int:
        """The address of a new region of ``size`` bytes."""
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"Allocation size must be a positive integer, not {size!r}")
        align = alignment or self.alignment
        for i, (begin, end) in enumerate(self._free):
            start = -(-begin // align) * align
            if start + size <= end:
                pieces = [(b, e) for b, e in ((begin, start), (start + size, end)) if e > b]
                self._free[i:i + 1] = pieces
                self._used[start] = start + size
                return start
        raise MemoryError(f"Out of device DRAM: no free region of {size} bytes in "
                          f"{self.size:#x} bytes (free {self.free_bytes}); free tensors or open "
                          f"the device with a larger dram_size")

    def free(self, address: int) -> None:
        if address not in self._used:
            raise ValueError(f"Address {address:#x} is not an allocated region")
        end = self._used.pop(address)
        self._free.append((address, end))
        self._free.sort()
        merged = [self._free[0]]
        for begin, stop in self._free[1:]:
            if begin == merged[-1][1]:
                merged[-1] = (merged[-1][0], stop)
            else:
                merged.append((begin, stop))
        self._free = merged

    @property
    def free_bytes(self) -> int:
        return sum(end - begin for begin, end in self._free)


# Devices -----------------------------------------------------------------------------------------

class Device(ABC):
    """DRAM, registers and program runs of one NPU; see the module docstring."""

    backend: str

    def __init__(self, *, dram_size: int, opened_config: NpuConfig):
        self.dram_size = dram_size
        self.allocator = DramAllocator(size=dram_size)
        self._opened_config = opened_config
        self._config: NpuConfig | None = None
        self.config_hash: int | None = None

    # What a backend provides.
    @abstractmethod
    def write_dram(self, address: int, data) -> None: ...

    @abstractmethod
    def read_dram(self, address: int, size: int) -> bytes: ...

    @abstractmethod
    def _read(self, offset: int) -> int: ...

    @abstractmethod
    def _write(self, offset: int, value: int) -> None: ...

    @abstractmethod
    def _wait_for_irq(self, cycle_limit: int) -> bool:
        """True when the run ended (the IRQ is up), False after ``cycle_limit`` cycles."""

    @abstractmethod
    def _recover(self) -> None:
        """Make the NPU idle again after a run that hit its cycle limit."""

    def close(self) -> None:
        """Release what the backend holds (the RTL model and its waveform file)."""
        self._config = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # Registers.
    def read_register(self, name: str) -> int:
        return self._read(regmap.register(name).offset)

    def write_register(self, name: str, value: int) -> None:
        self._write(regmap.register(name).offset, value)

    def read_counter(self, name: str) -> int:
        low = self.read_register(f"{name}_LO")  # latches HI
        return low | self.read_register(f"{name}_HI") << 32

    def read_counters(self) -> dict[str, int]:
        return {counter.name.lower(): self.read_counter(counter.name) for counter in regmap.COUNTERS}

    @property
    def config(self) -> NpuConfig:
        """The configuration read from the hardware's registers (checked once)."""
        if self._config is None:
            self._config = self._discover()
        return self._config

    def _discover(self) -> NpuConfig:
        ident = self.read_register("ID")
        if ident != regmap.ID_MAGIC:
            raise RuntimeError(f"No NPU at the {self.backend} device: ID reads {ident:#010x}, "
                               f"expected {regmap.ID_MAGIC:#010x}")
        major = _field(self.read_register("VERSION"), "VERSION", "MAJOR")
        if major != regmap.VERSION_MAJOR:
            raise RuntimeError(f"The NPU's register map is version {major}, this driver knows "
                               f"version {regmap.VERSION_MAJOR}: update the project")
        values = {attribute: self.read_register(name) for name, attribute in _CONFIG_ATTRIBUTES.items()}
        self.config_hash = self.read_register("CONFIG_HASH")
        return self._expected_config(values)

    def _expected_config(self, values: dict) -> NpuConfig:
        """The preset (or the configuration given when opening) that matches the registers."""
        candidates = [self._opened_config] + [get_config(name) for name in ("tiny", "small", "default")]
        for candidate in candidates:
            if regmap.config_hash(candidate) == self.config_hash:
                return candidate
        return NpuConfig(name="discovered", **values)

    def check_program(self, program: Program) -> None:
        if not isinstance(program, Program):
            raise TypeError(f"Program must be a sw.runtime.Program, not {program!r}")
        _ = self.config  # reads the configuration registers on first use
        if regmap.config_hash(program.config) != self.config_hash:
            theirs, ours = dataclasses.asdict(program.config), dataclasses.asdict(self.config)
            differences = ", ".join(f"{key} {theirs[key]} (hardware {ours[key]})"
                                    for key in theirs if key != "name" and theirs[key] != ours[key])
            raise ConfigMismatchError(
                f"Program {program.name!r} was compiled for the {program.config.name} "
                f"configuration but the {self.backend} device is {self.config.name}: "
                f"{differences or 'configuration hash differs'}; compile it with --config "
                f"{self.config.name}")

    # Running programs.
    def run(self, program: Program, *, cycle_limit: int = DEFAULT_CYCLE_LIMIT) -> RunStats:
        """Write ``program`` to DRAM, run it, free it; the counters of the run."""
        self.check_program(program)
        image = program.image()
        address = self.allocator.allocate(len(image))
        try:
            self.write_dram(address, image)
            return self.execute(program_address=address, instruction_count=len(program),
                                cycle_limit=cycle_limit, name=program.name)
        finally:
            self.allocator.free(address)

    def execute(self, *, program_address: int, instruction_count: int,
                cycle_limit: int = DEFAULT_CYCLE_LIMIT, name: str = "program") -> RunStats:
        """Run the program already in DRAM at ``program_address``; the counters of the run."""
        _ = self.config
        irq = _bit("CTRL", "IRQ_ENABLE")
        self.write_register("PROGRAM_ADDR", program_address)
        self.write_register("PROGRAM_LENGTH", instruction_count)
        self.write_register("CTRL", irq | _bit("CTRL", "CLEAR"))
        self.write_register("CTRL", irq | _bit("CTRL", "START"))
        if not self._wait_for_irq(cycle_limit):
            stats = RunStats(self.config, self.read_counters())
            self._recover()
            raise CycleLimitError(
                f"{name} did not finish within {cycle_limit} cycles on the {self.backend} "
                f"device (the NPU was reset; DRAM is kept): raise cycle_limit, or look for a "
                f"program that waits forever", code=None, index=None, stats=stats, program=name)
        status = self.read_register("STATUS")
        index = self.read_register("ERROR_INDEX")
        stats = RunStats(self.config, self.read_counters())
        self.write_register("CTRL", irq | _bit("CTRL", "CLEAR"))  # clears ERROR_INDEX too
        code = ErrorCode(_field(status, "STATUS", "ERROR"))
        if code != ErrorCode.NONE:
            raise NpuError(f"{name} stopped with {code.name} at instruction {index} on the "
                           f"{self.backend} device{self._error_detail()}",
                           code=code, index=index, stats=stats, program=name)
        return stats

    def _error_detail(self) -> str:
        return ""

    # Tensors.
    def write_tensor(self, array: np.ndarray) -> int:
        """Allocate a region, copy ``array`` (C order) into it; its address."""
        data = np.ascontiguousarray(array)
        address = self.allocator.allocate(max(1, data.nbytes))
        self.write_dram(address, data.tobytes())
        return address

    def read_tensor(self, address: int, shape: Sequence[int], dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        size = int(np.prod(shape)) * dtype.itemsize
        return np.frombuffer(self.read_dram(address, size), dtype).reshape(shape).copy()

    def free(self, address: int) -> None:
        self.allocator.free(address)


class GoldenDevice(Device):
    """The golden machine behind the register map (runs finish at START)."""

    backend = "golden"

    def __init__(self, config: NpuConfig, *, dram_size: int = 1 << 24):
        super().__init__(dram_size=dram_size, opened_config=config)
        self.machine = Machine(config, dram_size=dram_size)
        self._registers = {reg.offset: regmap.reset_value(reg, config) for reg in regmap.REGISTERS}
        self._counters = {counter.name: 0 for counter in regmap.COUNTERS}
        self._message = ""

    def write_dram(self, address: int, data) -> None:
        self.machine.write_dram(address, data)

    def read_dram(self, address: int, size: int) -> bytes:
        return self.machine.read_dram(address, size)

    def _read(self, offset: int) -> int:
        for counter in regmap.COUNTERS:
            low = regmap.register(f"{counter.name}_LO").offset
            if offset in (low, low + 4):
                value = self._counters[counter.name]
                return value & 0xFFFF_FFFF if offset == low else value >> 32
        return self._registers.get(offset, 0)

    def _write(self, offset: int, value: int) -> None:
        reg = next((r for r in regmap.REGISTERS if r.offset == offset), None)
        if reg is None or reg.access == regmap.Access.RO:
            return
        if reg.name != "CTRL":
            self._registers[offset] = value & 0xFFFF_FFFF
            return
        status = _REG["STATUS"].offset
        self._registers[offset] = value & _bit("CTRL", "IRQ_ENABLE")
        if value & _bit("CTRL", "CLEAR"):
            self._registers[status] = 0
            self._registers[_REG["ERROR_INDEX"].offset] = 0
        if value & _bit("CTRL", "START"):
            self._start()

    def _start(self):
        result = self.machine.run(program_address=self._registers[_REG["PROGRAM_ADDR"].offset],
                                  instruction_count=self._registers[_REG["PROGRAM_LENGTH"].offset])
        counters = result.counters
        self._counters = {counter.name: getattr(counters, counter.name.lower(), 0)
                          for counter in regmap.COUNTERS}
        self._registers[_REG["STATUS"].offset] = (_bit("STATUS", "DONE") |
                                                  int(result.error) << regmap.field("STATUS", "ERROR").lsb)
        self._registers[_REG["ERROR_INDEX"].offset] = result.error_index or 0
        self._message = result.message

    def _wait_for_irq(self, cycle_limit: int) -> bool:
        return self._counters["CYCLES"] <= cycle_limit

    def _recover(self) -> None:
        self._registers[_REG["STATUS"].offset] = 0

    def _error_detail(self) -> str:
        return f" ({self._message})" if self._message else ""


class RtlDevice(Device):
    """The Verilator model of the NPU (:class:`sim.rtl_sim.RtlSimulator`)."""

    backend = "rtl"

    def __init__(self, config: NpuConfig, *, dram_size: int = 1 << 24, trace: str | Path | None = None,
                 quiet: bool = False, gate_vector_clock: bool = True):
        from sim.rtl_sim import RtlSimulator

        super().__init__(dram_size=dram_size, opened_config=config)
        self.simulator = RtlSimulator(config, dram_size=dram_size, trace=trace, quiet=quiet,
                                      gate_vector_clock=gate_vector_clock)

    def write_dram(self, address: int, data) -> None:
        if isinstance(data, np.ndarray):
            data = np.ascontiguousarray(data).tobytes()
        self.simulator.write_dram(address, data)

    def read_dram(self, address: int, size: int) -> bytes:
        return self.simulator.read_dram(address, size)

    def _read(self, offset: int) -> int:
        return self.simulator.read_register(offset)[0]

    def _write(self, offset: int, value: int) -> None:
        self.simulator.write_register(offset, value)

    def _wait_for_irq(self, cycle_limit: int) -> bool:
        return self.simulator.run_until_irq(cycle_limit)

    def _recover(self) -> None:
        self.simulator.reset()

    def close(self) -> None:
        self.simulator.close()


def open_device(backend: str = "golden", config: NpuConfig | str = "default", *,
                dram_size: int = 1 << 24, trace: str | Path | None = None,
                quiet: bool = False) -> Device:
    """A ``golden`` or ``rtl`` device of ``config`` with ``dram_size`` bytes of DRAM.

    ``trace`` (rtl only): write an FST waveform of everything the device runs to this file.
    """
    if isinstance(config, str):
        config = get_config(config)
    if backend == "golden":
        if trace is not None:
            raise ValueError("A waveform (trace) needs the rtl backend, not golden")
        return GoldenDevice(config, dram_size=dram_size)
    if backend == "rtl":
        return RtlDevice(config, dram_size=dram_size, trace=trace, quiet=quiet)
    raise ValueError(f"Backend must be one of {list(BACKENDS)}, not {backend!r}")
