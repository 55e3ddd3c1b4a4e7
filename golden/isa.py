"""The instruction set, defined once: opcodes, enumerations and field tables.

Every instruction is one little-endian word of ``NpuConfig.instruction_width`` bits (256 in all
presets). Fields are packed from bit 0 upwards in the order of the tables below: first the common
header (opcode and the four dependency-token flags), then the opcode's own fields. Unused high
bits are zero. ``rtl/`` builds its ``amaranth.lib.data`` layouts from these tables and ``sw/``
encodes with :func:`encode`; nothing else restates an opcode number or a field width.

See ``docs/isa.md`` for the semantics of every instruction.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "Opcode", "Memory", "VectorFunct", "RequantMode", "Unit", "ErrorCode", "Field", "HEADER",
    "FORMATS", "INSTRUCTION_BITS", "Instruction", "encode", "decode", "encode_program",
    "decode_program", "unit_of",
]


class Opcode(enum.IntEnum):
    """Opcode 0 is illegal on purpose: running into zeroed memory stops with an error."""

    LOAD = 1
    STORE = 2
    MATMUL = 3
    VECTOR = 4
    SYNC = 5
    FINISH = 6


class Memory(enum.IntEnum):
    SCRATCHPAD = 0
    ACCUMULATOR = 1


class VectorFunct(enum.IntEnum):
    REQUANT = 0    # accumulator -> scratchpad, per-channel scale, zero point, clip
    ADD = 1        # scratchpad + scratchpad -> scratchpad, with rescale (QLinearAdd)
    MAX = 2        # elementwise max of two scratchpad operands (max pooling, one tap at a time)
    SOFTMAX = 3    # accumulator rows -> scratchpad, integer softmax over each group
    LAYERNORM = 4  # accumulator rows -> scratchpad, integer layernorm over each group
    GELU = 5       # accumulator -> scratchpad, integer GELU, elementwise


class RequantMode(enum.IntEnum):
    FP32 = 0   # float32 scale, round half to even (onnxruntime)
    FIXED = 1  # int32 multiplier and shift (TFLite / gemmlowp)


class Unit(enum.IntEnum):
    """The three execution units; token flags name a unit's neighbours in this order."""

    LOAD = 0
    COMPUTE = 1
    STORE = 2


class ErrorCode(enum.IntEnum):
    """The error field of the STATUS register (and of a golden-machine result)."""

    NONE = 0
    ILLEGAL_INSTRUCTION = 1  # unknown opcode or funct, a field out of its legal range
    SRAM_OUT_OF_RANGE = 2    # a scratchpad or accumulator row past the configured depth
    BUS_ERROR = 3            # an AXI error response (SLVERR/DECERR), e.g. a DRAM address out of range
    DEADLOCK = 4             # no unit can make progress (the watchdog in hardware)
    MISSING_FINISH = 5       # the program ended without FINISH


@dataclass(frozen=True)
class Field:
    name: str
    width: int
    signed: bool = False
    doc: str = ""

    @property
    def minimum(self) -> int:
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def maximum(self) -> int:
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1


HEADER: tuple[Field, ...] = (
    Field("opcode", 4, doc="Opcode"),
    Field("pop_prev", 1, doc="wait for (and consume) a token from the previous unit"),
    Field("pop_next", 1, doc="wait for (and consume) a token from the next unit"),
    Field("push_prev", 1, doc="when done, send a token to the previous unit"),
    Field("push_next", 1, doc="when done, send a token to the next unit"),
)

_SRAM_ADDR = 16
_COUNT = 10
_STRIDE = 16


def _walk(prefix: str, what: str) -> tuple[Field, ...]:
    return (
        Field(f"{prefix}_addr", _SRAM_ADDR, doc=f"first {what} row"),
        Field(f"{prefix}_outer_stride", _STRIDE, doc=f"{what} rows between outer-loop steps"),
        Field(f"{prefix}_inner_stride", _STRIDE, doc=f"{what} rows between inner-loop steps"),
    )


_LOOPS = (
    Field("outer_count", _COUNT, doc="outer loop count (at least 1)"),
    Field("inner_count", _COUNT, doc="inner loop count (at least 1)"),
)

_DMA = (
    Field("mem", 1, doc="Memory: 0 scratchpad, 1 accumulator"),
    Field("sram_addr", _SRAM_ADDR, doc="first SRAM row"),
    Field("dram_addr", 32, doc="DRAM byte address of the first element"),
    Field("rows", _COUNT, doc="rows of the 2D block (at least 1)"),
    Field("cols", _COUNT, doc="elements per row of the 2D block (at least 1)"),
    Field("elem_len", 9, doc="values per element, 1 .. SRAM row width; the rest of the row is 0"),
    Field("dram_row_stride", 24, doc="DRAM bytes between rows (0 broadcasts)"),
    Field("dram_elem_stride", 16, doc="DRAM bytes between elements of a row"),
)

FORMATS: dict[Opcode, tuple[Field, ...]] = {
    Opcode.LOAD: _DMA + (
        Field("pad_top", 4, doc="padding rows above"),
        Field("pad_bottom", 4, doc="padding rows below"),
        Field("pad_left", 4, doc="padding elements left of each row"),
        Field("pad_right", 4, doc="padding elements right of each row"),
        Field("pad_value", 8, signed=True, doc="value of every lane of a padding element"),
        Field("lane_offset", 8, doc="scratchpad: the lane an element's first value goes to"),
        Field("merge", 1, doc="scratchpad: 1 writes only the element's lanes, keeping the rest"),
    ),
    Opcode.STORE: _DMA,
    Opcode.MATMUL: (
        Field("accumulate", 1, doc="1: add to the accumulator rows, 0: overwrite them"),
        Field("load_weights", 1, doc="1: load a new weight tile, 0: keep the array's weights"),
        Field("weight_addr", _SRAM_ADDR, doc="first of cols scratchpad rows of the weight tile"),
    ) + _LOOPS + _walk("input", "scratchpad") + _walk("acc", "accumulator"),
    Opcode.VECTOR: (
        Field("funct", 4, doc="VectorFunct"),
        Field("mode", 1, doc="RequantMode: 0 fp32, 1 fixed"),
        Field("a_unsigned", 1, doc="ADD: operand a holds uint8 codes (stored as code - 128)"),
        Field("b_unsigned", 1, doc="ADD: operand b holds uint8 codes (stored as code - 128)"),
        Field("out_unsigned", 1, doc="ADD: the output holds uint8 codes (stored as code - 128)"),
        Field("bias", 1, doc="REQUANT, fp32 mode: add the int32 section after the scales first"),
    ) + _LOOPS + _walk("a", "operand a") + _walk("b", "operand b") + _walk("out", "output") + (
        Field("out_lane", 8, doc="lane of the output row where each group starts"),
        Field("length", 16, doc="elements per group (at least 1)"),
        Field("param_addr", _SRAM_ADDR, doc="first accumulator row of the parameters"),
        Field("out_zp", 8, signed=True, doc="output zero point (stored int8 domain)"),
        Field("clip_lo", 8, signed=True, doc="lower clip bound of the output (stored domain)"),
        Field("clip_hi", 8, signed=True, doc="upper clip bound of the output (stored domain)"),
    ),
    Opcode.SYNC: (),
    Opcode.FINISH: (),
}

INSTRUCTION_BITS: int = max(sum(f.width for f in HEADER + fields) for fields in FORMATS.values())


def unit_of(opcode: Opcode) -> Unit | None:
    """The unit that executes an opcode; None for the barriers SYNC and FINISH."""
    return {Opcode.LOAD: Unit.LOAD, Opcode.STORE: Unit.STORE, Opcode.MATMUL: Unit.COMPUTE,
            Opcode.VECTOR: Unit.COMPUTE}.get(opcode)


class Instruction:
    """One instruction: an opcode and its named fields (missing fields are 0).

    >>> Instruction(Opcode.MATMUL, accumulate=1, inner_count=16).accumulate
    1
    """

    __slots__ = ("opcode", "fields")

    def __init__(self, opcode: Opcode, /, **fields: int):
        try:
            opcode = Opcode(opcode)
        except ValueError:
            raise ValueError(f"Opcode must be one of {[o.name for o in Opcode]}, "
                             f"not {opcode!r}") from None
        known = {f.name: f for f in HEADER[1:] + FORMATS[opcode]}
        for name, value in fields.items():
            if name not in known:
                raise ValueError(f"Field must be one of {sorted(known)} for {opcode.name}, "
                                 f"not {name!r}")
            field = known[name]
            if not isinstance(value, int) or isinstance(value, bool) and field.width > 1:
                raise TypeError(f"Field {name!r} of {opcode.name} must be an integer, "
                                f"not {value!r}")
            value = int(value)
            if not field.minimum <= value <= field.maximum:
                raise ValueError(f"Field {name!r} of {opcode.name} must be between "
                                 f"{field.minimum} and {field.maximum}, not {value!r}")
            fields[name] = value
        self.opcode = opcode
        self.fields = {name: fields.get(name, 0) for name in known}

    def __getattr__(self, name: str) -> int:
        if name in self.__slots__:  # not set yet (an error inside __init__)
            raise AttributeError(name)
        try:
            return self.fields[name]
        except KeyError:
            raise AttributeError(f"{self.opcode.name} has no field {name!r}") from None

    def replace(self, **changes: int) -> Instruction:
        return Instruction(self.opcode, **{**self.fields, **changes})

    def __eq__(self, other):
        return (isinstance(other, Instruction) and self.opcode == other.opcode
                and self.fields == other.fields)

    def __hash__(self):
        return hash((self.opcode, tuple(self.fields.items())))

    def __repr__(self):
        nonzero = ", ".join(f"{k}={v}" for k, v in self.fields.items() if v)
        return f"Instruction({self.opcode.name}{', ' if nonzero else ''}{nonzero})"


def encode(instruction: Instruction) -> int:
    """The instruction as an unsigned integer of INSTRUCTION_BITS bits."""
    word, offset = 0, 0
    values = {"opcode": int(instruction.opcode), **instruction.fields}
    for field in HEADER + FORMATS[instruction.opcode]:
        word |= (values[field.name] & ((1 << field.width) - 1)) << offset
        offset += field.width
    return word


class DecodeError(ValueError):
    """An instruction word that no legal instruction encodes to."""


def decode(word: int) -> Instruction:
    """The instruction a word encodes; raises DecodeError for an unknown opcode."""
    if not isinstance(word, int) or word < 0:
        raise TypeError(f"Word must be a non-negative integer, not {word!r}")
    raw_opcode = word & ((1 << HEADER[0].width) - 1)
    try:
        opcode = Opcode(raw_opcode)
    except ValueError:
        raise DecodeError(f"Opcode must be one of {[int(o) for o in Opcode]}, "
                          f"not {raw_opcode}") from None
    fields, offset = {}, HEADER[0].width
    for field in HEADER[1:] + FORMATS[opcode]:
        value = (word >> offset) & ((1 << field.width) - 1)
        if field.signed and value >> (field.width - 1):
            value -= 1 << field.width
        fields[field.name] = value
        offset += field.width
    if word >> offset:
        raise DecodeError(f"Bits above bit {offset} of a {opcode.name} word must be zero")
    return Instruction(opcode, **fields)


def encode_program(instructions, *, instruction_bytes: int) -> bytes:
    """Instructions as the bytes the NPU fetches from DRAM (little-endian words)."""
    words = []
    for index, instruction in enumerate(instructions):
        if not isinstance(instruction, Instruction):
            raise TypeError(f"Instruction {index} must be an Instruction, not {instruction!r}")
        words.append(encode(instruction).to_bytes(instruction_bytes, "little"))
    return b"".join(words)


def decode_program(data: bytes, *, instruction_bytes: int) -> list[int]:
    """Raw instruction words of a program image (decode each with :func:`decode`)."""
    if len(data) % instruction_bytes:
        raise ValueError(f"Program length must be a multiple of {instruction_bytes} bytes, "
                         f"not {len(data)}")
    return [int.from_bytes(data[i:i + instruction_bytes], "little")
            for i in range(0, len(data), instruction_bytes)]


def field_tables_markdown() -> str:
    """The field tables of docs/isa.md, generated from the tables above (a test keeps the
    document and the code in step)."""
    lines = []
    for opcode, fields in FORMATS.items():
        lines += [f"### {opcode.name} (opcode {int(opcode)})", "",
                  "| bits | field | width | signed | meaning |", "|---|---|---|---|---|"]
        offset = 0
        for field in HEADER + fields:
            bits = f"{offset}" if field.width == 1 else f"{offset}..{offset + field.width - 1}"
            lines.append(f"| {bits} | `{field.name}` | {field.width} | "
                         f"{'yes' if field.signed else ''} | {field.doc} |")
            offset += field.width
        lines += ["", f"{offset} bits used; the rest of the word is zero.", ""]
    return "\n".join(lines)
