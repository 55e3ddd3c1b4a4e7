"""The span side of a 2D DMA instruction (LOAD, STORE): the checks, the span plan, the walker.

A LOAD or STORE moves ``rows`` x ``cols`` elements of ``E = elem_len * itemsize`` bytes (itemsize
1 for the scratchpad, 4 for the accumulator); element ``(r, c)`` lives at DRAM byte
``dram_addr + r * dram_row_stride + c * dram_elem_stride``. The DMA engines move *spans* of
consecutive bytes (``rtl/dma_layouts.py``), so the instruction becomes one of two span plans:

- **row spans**, when a DRAM row is contiguous (``dram_elem_stride == E``) and elements sit at
  fixed places in the engines' ``B``-byte chunks (``E`` divides ``B``, or is a multiple of it):
  one span of ``cols * E`` bytes per row. Chunk ``k`` of a row then holds whole elements
  (``B / E`` of them) or a whole ``B``-byte piece of one, so the units cut elements from the chunk
  stream with a fixed byte offset, and AXI sees long bursts.
- **element spans** otherwise: one span of ``E`` bytes per element. Every element starts at byte 0
  of its first chunk (the engines realign), so any alignment, stride (0 broadcasts) or overlap
  works; each span is at least one AXI burst.

:func:`plan_transfer` computes the checks and the plan from an instruction's fields in three
steps, one per cycle, so that no multiplier or wide sum sits in front of a comparison: the
products as the command is taken, their sums, then the comparisons; :class:`SpanWalker` issues
the plan's spans in order.
"""

from dataclasses import dataclass

from amaranth import Cat, Module, Mux, Signal, Value, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.config import NpuConfig
from golden.isa import Memory

from .dma_layouts import SPAN_LENGTH_BITS, span_layout
from .isa_layouts import ErrorCode

__all__ = ["SPAN_COUNT_BITS", "SpanWalker", "TransferPlan", "plan_transfer", "span_plan_layout"]

#: Spans of one instruction: at most 1023 x 1023 elements.
SPAN_COUNT_BITS = 20
#: Widest DRAM byte address arithmetic: 32-bit address + 1022 row strides of 24 bits + ...
_DRAM_END_BITS = 36
#: The count x stride products are split at this bit of the stride (MULT18X18D operands).
_STRIDE_SPLIT = 17


def span_plan_layout(config: NpuConfig) -> data.StructLayout:
    """``rows`` x ``per_row`` spans of ``length`` bytes; span ``(r, c)`` starts at
    ``addr + r * row_stride + c * span_stride``."""
    return data.StructLayout({
        "addr": config.axi_addr_width,
        "row_stride": 24,
        "span_stride": 16,
        "rows": 10,
        "per_row": 10,
        "length": SPAN_LENGTH_BITS,
    })


@dataclass(frozen=True)
class TransferPlan:
    """What :func:`plan_transfer` returns; every member is valid from the second cycle after
    the one in which the command is taken (the unit's CHECK cycle) on, while ``ins`` and
    ``block_rows`` hold still.

    - ``error``: ``ILLEGAL_INSTRUCTION``, ``SRAM_OUT_OF_RANGE`` or ``BUS_ERROR`` (a byte at or past
      ``2 ** axi_addr_width``), in the golden machine's order, else ``NONE``;
    - ``spans``: the span plan (:func:`span_plan_layout`);
    - ``row_mode``: one span per DRAM row (else one per element);
    - ``elem_bytes``: ``E``; ``last_part``: ``ceil(E / B) - 1``, the index of an element's last
      chunk outside packed rows;
    - ``packed``: row spans with ``E < B``, several elements per chunk;
    - ``keep``: ``row_bytes`` bits, bit ``i`` set for ``i < E`` (the element's bytes of a row);
    - ``accumulator``: the instruction's memory is the accumulator.
    """

    error: Value
    spans: Value
    row_mode: Value
    elem_bytes: Value
    last_part: Value
    packed: Value
    keep: Value
    accumulator: Value


def _elem_bytes(fields):
    return Mux(fields.mem == Memory.ACCUMULATOR, fields.elem_len << 2, fields.elem_len)


def plan_transfer(m: Module, *, config: NpuConfig, command, take, ins, block_rows,
                  row_bytes: int, illegal_fields=0) -> TransferPlan:
    """Checks and span plan of a LOAD/STORE.

    ``command``: the command payload (a view of the format layout), taken when ``take`` is high;
    ``ins``: the same fields in the unit's register, loaded from ``command`` in that cycle.
    ``block_rows``: a pair of registered factors, valid from the cycle after ``take`` on, whose
    product is the number of SRAM rows the instruction touches from ``sram_addr`` on.
    ``row_bytes``: width of the ``keep`` mask. ``illegal_fields``: the unit's own
    ILLEGAL_INSTRUCTION conditions on ``ins`` (the LOAD's lane fields).

    1. As the command is taken, from its fields: the DRAM products ``rows * dram_row_stride``
       (in two parts, split at bit :data:`_STRIDE_SPLIT` of the stride), ``cols *
       dram_elem_stride`` and ``cols * elem_len``, and ``dram_addr + E - dram_row_stride -
       dram_elem_stride - 1`` and ``depth - sram_addr``; registered.
    2. The last DRAM byte, ``dram_addr + (rows - 1) * dram_row_stride + (cols - 1) *
       dram_elem_stride + E - 1`` (a sum of those), the SRAM rows (``block_rows``' product) and
       the field checks; registered.
    3. The comparisons: the SRAM rows against ``depth - sram_addr``, the last byte against
       ``2 ** axi_addr_width``, and the error code.
    """
    bus_bytes = config.axi_data_bytes
    log_bus = bus_bytes.bit_length() - 1
    addr_bits = config.axi_addr_width

    def depth_of(fields):
        return Mux(fields.mem == Memory.ACCUMULATOR, config.accumulator_depth,
                   config.scratchpad_depth)

    # Step 1 (the cycle the command is taken).
    c = command
    rows_by_stride_low = Signal(10 + _STRIDE_SPLIT)
    rows_by_stride_high = Signal(10 + 24 - _STRIDE_SPLIT)
    cols_by_stride = Signal(26)
    cols_by_len = Signal(19)
    dram_base = Signal(signed(_DRAM_END_BITS))
    sram_room = Signal(signed(18))      # SRAM rows from sram_addr to the end of the memory
    with m.If(take):
        m.d.sync += [
            rows_by_stride_low.eq(c.rows * c.dram_row_stride[:_STRIDE_SPLIT]),
            rows_by_stride_high.eq(c.rows * c.dram_row_stride[_STRIDE_SPLIT:]),
            cols_by_stride.eq(c.cols * c.dram_elem_stride),
            cols_by_len.eq(c.cols * c.elem_len),
            dram_base.eq(c.dram_addr + _elem_bytes(c) - c.dram_row_stride - c.dram_elem_stride
                         - 1),
            sram_room.eq(depth_of(c) - c.sram_addr),
        ]

    # Step 2 (PLAN).
    accumulator = ins.mem == Memory.ACCUMULATOR
    elem_bytes_now = Signal(11)
    m.d.comb += elem_bytes_now.eq(_elem_bytes(ins))
    width = Mux(accumulator, config.cols, config.rows)
    power_of_two = (elem_bytes_now & (elem_bytes_now - 1)[:11]) == 0
    aligned = (power_of_two & (elem_bytes_now <= bus_bytes)) | (elem_bytes_now[:log_bus] == 0)

    last_byte_high = Signal(_DRAM_END_BITS - addr_bits)   # bits of the last byte past the bus
    block = Signal(22)
    illegal = Signal()
    row_mode = Signal()
    elem_bytes = Signal(11)
    last_part = Signal(range(row_bytes // bus_bytes + 1))
    packed = Signal()
    keep = Signal(row_bytes)
    last_byte = Signal(_DRAM_END_BITS)
    m.d.comb += last_byte.eq(dram_base + rows_by_stride_low
                             + (rows_by_stride_high << _STRIDE_SPLIT) + cols_by_stride)
    m.d.sync += [
        last_byte_high.eq(last_byte[addr_bits:]),
        block.eq(block_rows[0] * block_rows[1]),
        illegal.eq((ins.rows == 0) | (ins.cols == 0) | (ins.elem_len == 0)
                   | (ins.elem_len > width) | illegal_fields),
        row_mode.eq((ins.dram_elem_stride == elem_bytes_now) & aligned),
        elem_bytes.eq(elem_bytes_now),
        last_part.eq((elem_bytes_now - 1) >> log_bus),
        packed.eq((ins.dram_elem_stride == elem_bytes_now) & aligned
                  & (elem_bytes_now < bus_bytes)),
        keep.eq(Cat(elem_bytes_now > i for i in range(row_bytes))),
    ]

    # Step 3 (CHECK).
    out_of_range = block > sram_room
    past_bus = last_byte_high != 0
    error = Signal(ErrorCode)
    m.d.comb += error.eq(Mux(illegal, ErrorCode.ILLEGAL_INSTRUCTION,
                             Mux(out_of_range, ErrorCode.SRAM_OUT_OF_RANGE,
                                 Mux(past_bus, ErrorCode.BUS_ERROR, ErrorCode.NONE))))
    row_length = Signal(SPAN_LENGTH_BITS)
    m.d.comb += row_length.eq(Mux(accumulator, cols_by_len << 2, cols_by_len))
    spans = Signal(span_plan_layout(config))
    m.d.comb += [
        spans.addr.eq(ins.dram_addr),
        spans.row_stride.eq(ins.dram_row_stride),
        spans.span_stride.eq(ins.dram_elem_stride),
        spans.rows.eq(ins.rows),
        spans.per_row.eq(Mux(row_mode, 1, ins.cols)),
        spans.length.eq(Mux(row_mode, row_length, elem_bytes)),
    ]
    return TransferPlan(error=error, spans=spans, row_mode=row_mode, elem_bytes=elem_bytes,
                        last_part=last_part, packed=packed, keep=keep,
                        accumulator=accumulator)


class SpanWalker(wiring.Component):
    """Issues the spans of a plan (:func:`span_plan_layout`) on ``spans``, row by row.

    ``prepare`` (one cycle, while nothing is offered) takes ``plan`` and clears ``issued``;
    ``start`` (in the same cycle or later) begins the walk: from the next cycle on one span is
    offered per cycle while ``spans`` is ready (the span register refills in the cycle its span
    is taken). They are separate so that ``start`` can come late in its cycle (after the
    checks) and drive only one flip-flop. ``stop`` holds back further spans (a span already
    offered stays offered until taken, as streams require); ``flush`` drops everything at once.
    ``issued`` counts the spans taken since ``prepare``; ``busy`` is high while spans remain to
    be offered (and not stopped) or one is offered.
    """

    def __init__(self, config: NpuConfig):
        self.config = config
        super().__init__({
            "prepare": In(1),
            "start": In(1),
            "plan": In(span_plan_layout(config)),
            "stop": In(1),
            "flush": In(1),
            "spans": Out(stream.Signature(span_layout(config))),
            "issued": Out(SPAN_COUNT_BITS),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        plan = Signal(span_plan_layout(self.config))
        walking = Signal()
        # Spans still to come after the current one, in its row and in the plan's other rows
        # (down counters, so that the ends are zero checks, not compares behind an adder).
        cols_left = Signal(10)
        rows_left = Signal(10)
        row_addr = Signal(self.config.axi_addr_width)
        addr = Signal(self.config.axi_addr_width)
        spans = self.spans

        load = walking & ~self.stop & (~spans.valid | spans.ready)
        m.d.comb += self.busy.eq((walking & ~self.stop) | spans.valid)
        with m.If(self.stop):  # the remaining spans are abandoned
            m.d.sync += walking.eq(0)
        with m.If(spans.valid & spans.ready):
            m.d.sync += [spans.valid.eq(0), self.issued.eq(self.issued + 1)]
        with m.If(load):
            m.d.sync += [spans.valid.eq(1), spans.payload.addr.eq(addr),
                         spans.payload.length.eq(plan.length)]
            with m.If(cols_left != 0):
                m.d.sync += [cols_left.eq(cols_left - 1), addr.eq(addr + plan.span_stride)]
            with m.Else():
                next_row = row_addr + plan.row_stride
                m.d.sync += [cols_left.eq(plan.per_row - 1), rows_left.eq(rows_left - 1),
                             row_addr.eq(next_row), addr.eq(next_row)]
                with m.If(rows_left == 0):
                    m.d.sync += walking.eq(0)
        with m.If(self.prepare):
            m.d.sync += [plan.eq(self.plan), cols_left.eq(self.plan.per_row - 1),
                         rows_left.eq(self.plan.rows - 1),
                         row_addr.eq(self.plan.addr), addr.eq(self.plan.addr),
                         self.issued.eq(0)]
        with m.If(self.start):
            m.d.sync += walking.eq(1)
        with m.If(self.flush):
            m.d.sync += [walking.eq(0), spans.valid.eq(0)]
        return m
