"""The NPU configuration: one frozen dataclass, everything else derived from it.

The array has ``rows`` x ``cols`` processing elements. A scratchpad row holds ``rows`` int8 values
(one input vector of the array, or one output channel's weights of a weight tile); an accumulator
row holds ``cols`` int32 values (one output vector of the array).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["NpuConfig", "PRESETS", "get_config"]


def _is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


@dataclass(frozen=True)
class NpuConfig:
    """Hardware parameters of one NPU build.

    All sizes are counted in the unit named by the field: SRAM depths in rows, bus widths in bits.
    """

    name: str = "custom"
    #: Systolic array rows: the length of an input vector (the reduction dimension K of a tile).
    rows: int = 16
    #: Systolic array columns: the length of an output vector (the N dimension of a tile).
    cols: int = 16
    #: Scratchpad depth in rows of ``rows`` int8 values.
    scratchpad_depth: int = 16384
    #: Accumulator depth in rows of ``cols`` int32 values.
    accumulator_depth: int = 4096
    #: Data width of the AXI4 master port to DRAM, in bits.
    axi_data_width: int = 128
    #: Address width of the AXI4 master port, in bits.
    axi_addr_width: int = 32
    #: Width of one encoded instruction, in bits.
    instruction_width: int = 256
    #: Depth of each of the load, compute and store instruction queues.
    queue_depth: int = 8
    #: Longest row (in elements) that softmax and layernorm reduce over.
    vector_max_length: int = 1024
    #: Elements the vector unit processes per cycle (its lanes; each function unit has this
    #: many). ``None``: as many as the array is narrow, ``min(rows, cols)``. Fewer lanes take
    #: less area (an FPGA build) and make VECTOR instructions take more cycles.
    vector_lanes: int | None = None
    #: Cycles without any unit making progress after which the watchdog stops the machine.
    watchdog_cycles: int = 1 << 20

    def __post_init__(self):
        def check(field: str, condition: bool, requirement: str):
            if not condition:
                value = getattr(self, field)
                raise ValueError(f"{_label(field)} must be {requirement}, not {value!r}")

        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Name must be a non-empty string, not {self.name!r}")
        def check_positive_integer(field: str):
            value = getattr(self, field)
            check(field, isinstance(value, int) and not isinstance(value, bool) and value > 0,
                  "a positive integer")

        for field in ("rows", "cols", "scratchpad_depth", "accumulator_depth", "axi_data_width",
                      "axi_addr_width", "instruction_width", "queue_depth", "vector_max_length",
                      "watchdog_cycles"):
            check_positive_integer(field)
        if self.vector_lanes is None:  # resolved here, so that the field always holds the count
            object.__setattr__(self, "vector_lanes", min(self.rows, self.cols))
        check_positive_integer("vector_lanes")
        for field in ("rows", "cols", "scratchpad_depth", "accumulator_depth", "queue_depth",
                      "vector_lanes"):
            check(field, _is_power_of_two(getattr(self, field)), "a power of two")
        check("rows", 2 <= self.rows <= 256, "between 2 and 256")
        check("cols", 2 <= self.cols <= 256, "between 2 and 256")
        check("vector_lanes", self.vector_lanes <= min(self.rows, self.cols),
              f"at most min(rows, cols) = {min(self.rows, self.cols)}")
        check("axi_data_width", self.axi_data_width in (32, 64, 128, 256, 512),
              "one of 32, 64, 128, 256, 512")
        check("axi_addr_width", 16 <= self.axi_addr_width <= 32, "between 16 and 32")
        check("instruction_width",
              self.instruction_width % self.axi_data_width == 0 or
              self.axi_data_width % self.instruction_width == 0,
              f"a multiple or a divisor of axi_data_width ({self.axi_data_width})")
        check("scratchpad_depth", self.scratchpad_depth <= 1 << 16, "at most 65536 rows")
        check("accumulator_depth", self.accumulator_depth <= 1 << 16, "at most 65536 rows")
        # One weight tile (cols rows) plus one tile of input vectors must fit in the scratchpad,
        # and the accumulator must hold one tile of outputs.
        check("scratchpad_depth", self.scratchpad_depth >= self.cols + self.rows,
              f"at least rows + cols = {self.rows + self.cols} (one weight tile and one input tile)")
        check("accumulator_depth", self.accumulator_depth >= self.rows,
              f"at least rows = {self.rows} (one output tile)")
        check("vector_max_length", self.vector_max_length % self.cols == 0,
              f"a multiple of cols ({self.cols})")
        from . import isa  # local import: isa depends on config only through this check

        check("instruction_width", self.instruction_width >= isa.INSTRUCTION_BITS,
              f"at least {isa.INSTRUCTION_BITS} (the widest instruction format)")

    # Derived quantities ---------------------------------------------------------------------

    @property
    def pes(self) -> int:
        """Number of processing elements (multiply-accumulate units)."""
        return self.rows * self.cols

    @property
    def scratchpad_row_bytes(self) -> int:
        return self.rows

    @property
    def accumulator_row_bytes(self) -> int:
        return 4 * self.cols

    @property
    def scratchpad_bytes(self) -> int:
        return self.scratchpad_depth * self.scratchpad_row_bytes

    @property
    def accumulator_bytes(self) -> int:
        return self.accumulator_depth * self.accumulator_row_bytes

    @property
    def axi_data_bytes(self) -> int:
        return self.axi_data_width // 8

    @property
    def instruction_bytes(self) -> int:
        return self.instruction_width // 8

    @property
    def scratchpad_addr_width(self) -> int:
        return (self.scratchpad_depth - 1).bit_length()

    @property
    def accumulator_addr_width(self) -> int:
        return (self.accumulator_depth - 1).bit_length()

    @property
    def dram_size_max(self) -> int:
        return 1 << self.axi_addr_width

    @property
    def peak_macs_per_cycle(self) -> int:
        return self.pes

    def replace(self, **changes) -> NpuConfig:
        """A copy with some fields changed (validated like any other configuration)."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        """Fields and derived figures, as plain JSON-able values."""
        fields = dataclasses.asdict(self)
        fields.update(
            pes=self.pes,
            scratchpad_bytes=self.scratchpad_bytes,
            accumulator_bytes=self.accumulator_bytes,
            axi_data_bytes=self.axi_data_bytes,
            instruction_bytes=self.instruction_bytes,
            peak_macs_per_cycle=self.peak_macs_per_cycle,
        )
        return fields


def _label(field: str) -> str:
    return field[0].upper() + field[1:].replace("_", " ")


PRESETS: dict[str, NpuConfig] = {
    "tiny": NpuConfig(name="tiny", rows=4, cols=4, scratchpad_depth=1024, accumulator_depth=512,
                      axi_data_width=64, vector_max_length=256),
    # small is the FPGA prototype's configuration (docs/fpga.md): one vector lane, so that it
    # fits the multipliers and LUTs of an ECP5-85F.
    "small": NpuConfig(name="small", rows=8, cols=8, scratchpad_depth=4096, accumulator_depth=1024,
                       axi_data_width=64, vector_max_length=512, vector_lanes=1),
    "default": NpuConfig(name="default", rows=16, cols=16, scratchpad_depth=16384,
                         accumulator_depth=4096, axi_data_width=128, vector_max_length=1024),
}


def get_config(name: str | NpuConfig) -> NpuConfig:
    """A preset by name (``tiny``, ``small``, ``default``); a configuration passes through."""
    if isinstance(name, NpuConfig):
        return name
    if name not in PRESETS:
        raise ValueError(f"Config must be one of {', '.join(PRESETS)}, not {name!r}")
    return PRESETS[name]
