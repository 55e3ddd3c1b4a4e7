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

:func:`plan_transfer` computes the checks and the plan from an instruction's fields (two cycles:
products registered, then compared); :class:`SpanWalker` issues the plan's spans in order.
"""

from dataclasses import dataclass

from amaranth import Cat, Module, Mux, Signal, Value
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
    """What :func:`plan_transfer` returns; every member is valid two cycles after the
    instruction fields settle (one register stage for the products).

    - ``error``: ``ILLEGAL_INSTRUCTION``, ``SRAM_OUT_OF_RANGE`` or ``BUS_ERROR`` (a byte at or past
      ``2 ** axi_addr_width``), in the golden machine's order, else ``NONE``;
    - ``spans``: the span plan (:func:`span_plan_layout`);
    - ``row_mode``: one span per DRAM row (else one per element);
    - ``elem_bytes``: ``E``; ``parts``: ``ceil(E / B)``, chunks per element outside packed rows;
    - ``packed``: row spans with ``E < B``, several elements per chunk;
    - ``keep``: ``row_bytes`` bits, bit ``i`` set for ``i < E`` (the element's bytes of a row);
    - ``accumulator``: the instruction's memory is the accumulator.
    """

    error: Value
    spans: Value
    row_mode: Value
    elem_bytes: Value
    parts: Value
    packed: Value
    keep: Value
    accumulator: Value


def plan_transfer(m: Module, *, config: NpuConfig, ins, block_rows, row_bytes: int,
                  illegal_fields=0) -> TransferPlan:
    """Checks and span plan of the LOAD/STORE fields ``ins`` (a view of its format layout).

    ``block_rows``: a pair of factors whose product is the number of SRAM rows the instruction
    touches from ``sram_addr`` on. ``row_bytes``: width of the ``keep`` mask.
    ``illegal_fields``: the unit's own ILLEGAL_INSTRUCTION conditions (the LOAD's lane fields).
    """
    bus_bytes = config.axi_data_bytes
    log_bus = bus_bytes.bit_length() - 1

    accumulator = ins.mem == Memory.ACCUMULATOR
    elem_bytes = Signal(11)
    m.d.comb += elem_bytes.eq(Mux(accumulator, ins.elem_len << 2, ins.elem_len))
    width = Mux(accumulator, config.cols, config.rows)
    depth = Mux(accumulator, config.accumulator_depth, config.scratchpad_depth)
    illegal = ((ins.rows == 0) | (ins.cols == 0) | (ins.elem_len == 0) | (ins.elem_len > width)
               | illegal_fields)

    power_of_two = (elem_bytes & (elem_bytes - 1)[:11]) == 0
    aligned = (power_of_two & (elem_bytes <= bus_bytes)) | (elem_bytes[:log_bus] == 0)
    row_mode = (ins.dram_elem_stride == elem_bytes) & aligned

    # Register stage: the products.
    block = Signal(22)
    row_extent = Signal(34)
    col_extent = Signal(26)
    row_length = Signal(SPAN_LENGTH_BITS)
    keep = Signal(row_bytes)
    m.d.sync += [
        block.eq(block_rows[0] * block_rows[1]),
        row_extent.eq((ins.rows - 1)[:10] * ins.dram_row_stride),
        col_extent.eq((ins.cols - 1)[:10] * ins.dram_elem_stride),
        row_length.eq(ins.cols * elem_bytes),
        keep.eq(Cat(elem_bytes > i for i in range(row_bytes))),
    ]
    dram_end = Signal(_DRAM_END_BITS)  # one past the last byte
    m.d.comb += dram_end.eq(ins.dram_addr + row_extent + col_extent + elem_bytes)
    out_of_range = ins.sram_addr + block > depth
    past_bus = dram_end > (1 << config.axi_addr_width)

    error = Signal(ErrorCode)
    m.d.comb += error.eq(Mux(illegal, ErrorCode.ILLEGAL_INSTRUCTION,
                                  Mux(out_of_range, ErrorCode.SRAM_OUT_OF_RANGE,
                                      Mux(past_bus, ErrorCode.BUS_ERROR, ErrorCode.NONE))))
    spans = Signal(span_plan_layout(config))
    m.d.comb += [
        spans.addr.eq(ins.dram_addr),
        spans.row_stride.eq(ins.dram_row_stride),
        spans.span_stride.eq(ins.dram_elem_stride),
        spans.rows.eq(ins.rows),
        spans.per_row.eq(Mux(row_mode, 1, ins.cols)),
        spans.length.eq(Mux(row_mode, row_length, elem_bytes)),
    ]
    parts = Signal(range(row_bytes // bus_bytes + 2))
    m.d.comb += parts.eq((elem_bytes + (bus_bytes - 1)) >> log_bus)
    return TransferPlan(error=error, spans=spans, row_mode=row_mode, elem_bytes=elem_bytes,
                        parts=parts, packed=row_mode & (elem_bytes < bus_bytes), keep=keep,
                        accumulator=accumulator)


class SpanWalker(wiring.Component):
    """Issues the spans of a plan (:func:`span_plan_layout`) on ``spans``, row by row.

    ``start`` (one cycle) takes ``plan``; from the next cycle on one span is offered per cycle
    while ``spans`` is ready (the span register refills in the cycle its span is taken). ``stop``
    holds back further spans (a span already offered stays offered until taken, as streams
    require); ``flush`` drops everything at once. ``issued`` counts the spans taken since
    ``start``; ``busy`` is high while spans remain to be offered (and not stopped) or one is
    offered.
    """

    def __init__(self, config: NpuConfig):
        self.config = config
        super().__init__({
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
        row = Signal(10)
        col = Signal(10)
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
            with m.If(col + 1 < plan.per_row):
                m.d.sync += [col.eq(col + 1), addr.eq(addr + plan.span_stride)]
            with m.Else():
                next_row = row_addr + plan.row_stride
                m.d.sync += [col.eq(0), row.eq(row + 1), row_addr.eq(next_row),
                             addr.eq(next_row)]
                with m.If(row + 1 == plan.rows):
                    m.d.sync += walking.eq(0)
        with m.If(self.start):
            m.d.sync += [plan.eq(self.plan), walking.eq(1), row.eq(0), col.eq(0),
                         row_addr.eq(self.plan.addr), addr.eq(self.plan.addr),
                         self.issued.eq(0)]
        with m.If(self.flush):
            m.d.sync += [walking.eq(0), spans.valid.eq(0)]
        return m
