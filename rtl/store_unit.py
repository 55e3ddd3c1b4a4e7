"""The store unit: executes one ``STORE`` instruction at a time, bit-exact with golden.machine.

A STORE writes element ``(r, c)``, the first ``elem_len`` lanes of SRAM row
``sram_addr + r * cols + c`` (int8 from the scratchpad, little-endian int32 from the
accumulator), to DRAM byte ``dram_addr + r * dram_row_stride + c * dram_elem_stride`` onward.
Where elements overlap in DRAM the later one wins: the DmaWriter writes spans in order.

1. **Check** (the three cycles after the command is taken, PLAN, CHECK and VERDICT; the products are
   computed as it is taken, :func:`rtl.span_walker.plan_transfer`): ``ILLEGAL_INSTRUCTION`` (rows or
   cols 0, ``elem_len`` outside 1 .. row width), then ``SRAM_OUT_OF_RANGE`` (the rows past the
   memory's depth), then ``BUS_ERROR`` for a DRAM byte past the end of the address space, in the
   golden machine's order. A failing instruction touches nothing.
2. **Spans**: a :class:`SpanWalker` gives the DmaWriter one span per DRAM row when the row is
   contiguous and elements sit at fixed places in the chunks, else one span per element (see
   ``rtl/span_walker.py``).
3. **Data**: the SRAM rows are read in order, one per cycle while the chunk stream flows. A row
   read goes into a row register the cycle after (the block RAM's output is slow: nothing else
   sits behind it in that cycle) and stays there until it is used up; the next row waits on the
   read port meanwhile. With ``E`` (the element's bytes) below ``B`` (the bus bytes) in a row
   span, ``B / E`` elements are packed into each chunk (the DRAM row's last chunk may be
   partial); otherwise an element is ``ceil(E / B)`` chunks, the row's bytes
   from 0 on (bytes past the span's end are don't-care: the writer writes ``length`` bytes). The
   data path starts a span's chunks only once the span has been taken, so the DmaWriter always
   knows the span its chunks belong to. Chunks leave through a register.

Throughput: packed rows and elements of at most ``B`` bytes read one SRAM row per cycle while the
DmaWriter takes chunks (and, with element spans, a span per cycle); elements of more than ``B``
bytes take ``ceil(E / B)`` cycles (the bus rate). ``done`` comes once every span's ``span_done``
has arrived, so the data is in DRAM.

A ``span_done`` with ``error`` gives ``BUS_ERROR``: no further span is issued, the spans already
taken are completed (the DmaWriter expects all their chunks) and their ``span_done`` awaited,
then ``done``. Spans before and after the faulting one may have been written (the golden machine
writes nothing). ``flush`` abandons the instruction at once (the top level flushes the DMA
engines with it): the unit returns to idle with no ``done``. ``idle`` is high when no
instruction is in the unit.
"""

from amaranth import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.config import NpuConfig
from golden.isa import Opcode

from .dma_layouts import span_done_layout, span_layout, write_chunk_layout
from .isa_layouts import ErrorCode, format_layout
from .load_unit import dma_done_layout
from .ports import ReadPortSignature
from .span_walker import SPAN_COUNT_BITS, SpanWalker, plan_transfer

__all__ = ["StoreUnit"]


class StoreUnit(wiring.Component):
    """``command``: the fields of one STORE; ``done``: its error code once the data is in DRAM.
    ``spans``/``chunks``/``span_done``: to and from a DmaWriter. ``spad_read``/``acc_read``:
    plain synchronous read ports, the unit's own (data must hold while ``en`` is low)."""

    def __init__(self, config: NpuConfig):
        self.config = config
        spad_row = data.ArrayLayout(signed(8), config.rows)
        acc_row = data.ArrayLayout(signed(32), config.cols)
        super().__init__({
            "command": In(stream.Signature(format_layout(Opcode.STORE))),
            "done": Out(stream.Signature(dma_done_layout)),
            "spans": Out(stream.Signature(span_layout(config))),
            "chunks": Out(stream.Signature(write_chunk_layout(config))),
            "span_done": In(stream.Signature(span_done_layout())),
            "spad_read": Out(ReadPortSignature(addr_width=config.scratchpad_addr_width,
                                               row_shape=spad_row)),
            "acc_read": Out(ReadPortSignature(addr_width=config.accumulator_addr_width,
                                              row_shape=acc_row)),
            "flush": In(1),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        bus_bytes = cfg.axi_data_bytes
        spad_bytes, acc_bytes = cfg.rows, 4 * cfg.cols
        row_bytes = max(spad_bytes, acc_bytes)
        slots = -(-row_bytes // bus_bytes)  # bus-wide pieces of the widest row

        ins = Signal(format_layout(Opcode.STORE))
        error = Signal(ErrorCode)
        faulted = Signal()
        accept = Signal()       # the command is taken (IDLE)
        plan = plan_transfer(m, config=cfg, command=self.command.payload, take=accept, ins=ins,
                             block_rows=(ins.rows, ins.cols), row_bytes=row_bytes)
        accumulator = plan.accumulator
        elem_bytes = plan.elem_bytes

        m.submodules.walker = walker = SpanWalker(cfg)
        wiring.connect(m, wiring.flipped(self.spans), walker.spans)
        m.d.comb += [walker.plan.eq(plan.spans), walker.stop.eq(faulted),
                     walker.flush.eq(self.flush)]

        running = Signal()  # the data path and the span_done count are active (state RUN)
        dones = Signal(SPAN_COUNT_BITS)
        m.d.comb += self.span_done.ready.eq(1)  # stray ones (after a flush) are dropped
        with m.If(running & self.span_done.valid):
            m.d.sync += dones.eq(dones + 1)
            with m.If(self.span_done.payload.error):
                m.d.sync += [faulted.eq(1), error.eq(ErrorCode.BUS_ERROR)]

        # Chunk register -------------------------------------------------------------------------
        out_valid = Signal()
        out_data = Signal(8 * bus_bytes)
        m.d.comb += [self.chunks.valid.eq(out_valid), self.chunks.payload.data.eq(out_data)]
        out_free = ~out_valid | self.chunks.ready
        emit = Signal()
        emit_data = Signal(8 * bus_bytes)
        with m.If(out_valid & self.chunks.ready):
            m.d.sync += out_valid.eq(0)
        with m.If(emit):
            m.d.sync += [out_valid.eq(1), out_data.eq(emit_data)]

        # Data path ------------------------------------------------------------------------------
        in_flight = Signal()        # the read port holds a row not yet in the row register
        flight_last_col = Signal()  # ... and it is the last element of its DRAM row
        have_row = Signal()         # the row register holds the current element's row
        row_last_col = Signal()     # ... and it is the last element of its DRAM row
        part = Signal(range(slots + 1))
        offset = Signal(range(bus_bytes))
        pack = Signal(8 * bus_bytes)
        fetch_row = Signal(10)
        fetch_col = Signal(10)
        # Registered facts about them, so that no compare sits in front of the read enables:
        fetching = Signal()         # rows remain to be read
        col_is_last = Signal()      # fetch_col == cols - 1
        row_is_last = Signal()      # fetch_row == rows - 1
        read_addr = Signal(16)
        started = Signal(SPAN_COUNT_BITS)   # spans whose chunks the data path has begun

        spad_row = Signal.like(self.spad_read.data.as_value())
        acc_row = Signal.like(self.acc_read.data.as_value())
        row_data = Signal(8 * slots * bus_bytes)
        m.d.comb += row_data.eq(Mux(accumulator, acc_row, spad_row))
        pieces = Array(row_data[8 * bus_bytes * s:8 * bus_bytes * (s + 1)] for s in range(slots))
        keep = Signal(8 * bus_bytes)        # the element's bytes within one chunk
        m.d.comb += keep.eq(Cat(bit.replicate(8) for bit in plan.keep[:bus_bytes]))
        mask = Signal(8 * bus_bytes)
        m.d.comb += mask.eq(keep << (offset << 3))
        merged = Signal(8 * bus_bytes)
        m.d.comb += merged.eq((pack & ~mask) | ((row_data[:8 * bus_bytes] << (offset << 3)) & mask))
        fill_offset = Signal(range(bus_bytes))  # B - E: the offset of a chunk's last element
        m.d.sync += fill_offset.eq(bus_bytes - elem_bytes)  # (valid from RUN on)
        chunk_full = (offset == fill_offset) | row_last_col

        row_done = Signal()
        with m.If(running & have_row):
            with m.If(plan.packed):
                with m.If(~chunk_full):
                    m.d.comb += row_done.eq(1)
                    m.d.sync += [pack.eq(merged), offset.eq(offset + elem_bytes)]
                with m.Elif(out_free):
                    m.d.comb += [row_done.eq(1), emit.eq(1), emit_data.eq(merged)]
                    m.d.sync += offset.eq(0)
            with m.Elif(out_free):
                m.d.comb += [emit.eq(1), emit_data.eq(pieces[part])]
                with m.If(part == plan.last_part):
                    m.d.comb += row_done.eq(1)
                    m.d.sync += part.eq(0)
                with m.Else():
                    m.d.sync += part.eq(part + 1)

        starts_span = ~plan.row_mode | (fetch_col == 0)
        capture = Signal()          # the row on the read port moves into the row register
        m.d.comb += capture.eq(in_flight & (~have_row | row_done))
        with m.If(capture):
            m.d.sync += [have_row.eq(1), row_last_col.eq(flight_last_col),
                         spad_row.eq(self.spad_read.data.as_value()),
                         acc_row.eq(self.acc_read.data.as_value())]
        with m.Elif(row_done):
            m.d.sync += have_row.eq(0)

        fetch = Signal()
        m.d.comb += fetch.eq(running & (~in_flight | capture) & fetching
                             & (~starts_span | (started != walker.issued)))
        m.d.comb += [self.spad_read.addr.eq(read_addr), self.acc_read.addr.eq(read_addr),
                     self.spad_read.en.eq(fetch & ~accumulator),
                     self.acc_read.en.eq(fetch & accumulator)]
        with m.If(fetch):
            m.d.sync += [in_flight.eq(1), read_addr.eq(read_addr + 1),
                         flight_last_col.eq(col_is_last),
                         fetch_col.eq(fetch_col + 1), col_is_last.eq(fetch_col + 2 == ins.cols)]
            with m.If(col_is_last):
                m.d.sync += [fetch_col.eq(0), fetch_row.eq(fetch_row + 1),
                             col_is_last.eq(ins.cols == 1),
                             row_is_last.eq(fetch_row + 2 == ins.rows),
                             fetching.eq(~row_is_last)]
            with m.If(starts_span):
                m.d.sync += started.eq(started + 1)
        with m.Elif(capture):
            m.d.sync += in_flight.eq(0)

        # Control ------------------------------------------------------------------------------
        m.d.comb += self.done.payload.error.eq(error)

        def flushable():
            with m.If(self.flush):
                m.d.sync += [out_valid.eq(0), have_row.eq(0), in_flight.eq(0)]
                m.next = "IDLE"

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [self.command.ready.eq(~self.flush), self.idle.eq(1)]
                with m.If(self.command.valid & ~self.flush):
                    m.d.comb += accept.eq(1)
                    m.d.sync += [ins.eq(self.command.payload), faulted.eq(0)]
                    m.next = "PLAN"
            with m.State("PLAN"):  # plan_transfer sums its products
                m.next = "CHECK"
                flushable()
            with m.State("CHECK"):
                m.d.comb += walker.prepare.eq(1)
                m.d.sync += [error.eq(plan.error), dones.eq(0), started.eq(0), have_row.eq(0),
                             in_flight.eq(0), part.eq(0), offset.eq(0), fetch_row.eq(0),
                             fetch_col.eq(0), fetching.eq(1), col_is_last.eq(ins.cols == 1),
                             row_is_last.eq(ins.rows == 1),
                             read_addr.eq(ins.sram_addr)]
                m.next = "VERDICT"
                flushable()
            with m.State("VERDICT"):  # from the registered error code
                with m.If(error != ErrorCode.NONE):
                    m.next = "DONE"
                with m.Elif(~self.flush):
                    m.d.comb += walker.start.eq(1)
                    m.next = "RUN"
                flushable()
            with m.State("RUN"):
                m.d.comb += running.eq(~self.flush)
                with m.If(~walker.busy & (dones == walker.issued)):
                    m.next = "DONE"
                flushable()
            with m.State("DONE"):
                m.d.comb += self.done.valid.eq(~self.flush)
                with m.If(self.done.ready & ~self.flush):
                    m.next = "IDLE"
                flushable()
        return m
