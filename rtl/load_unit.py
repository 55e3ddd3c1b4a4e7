"""The load unit: executes one ``LOAD`` instruction at a time, bit-exact with golden.machine.

A LOAD writes a padded block of ``(pad_top + rows + pad_bottom) x (pad_left + cols + pad_right)``
SRAM rows from ``sram_addr`` on, in order; inner element ``(r, c)`` takes its first ``elem_len``
lanes from DRAM (int8 for the scratchpad, little-endian int32 for the accumulator) and is 0 in the
others; every lane of a padding element is ``pad_value`` (sign-extended in the accumulator). In the
scratchpad an element's values start at lane ``lane_offset``, and with ``merge`` only the lanes
``lane_offset .. lane_offset + elem_len - 1`` of each row are written (the rest keep their value),
so that several LOADs can fill one row (a convolution's packed kernel taps).

1. **Check** (the three cycles after the command is taken, PLAN, CHECK and VERDICT; the products are
   computed as it is taken, :func:`rtl.span_walker.plan_transfer`): ``ILLEGAL_INSTRUCTION`` (rows or
   cols 0, ``elem_len`` outside 1 .. row width, ``lane_offset + elem_len`` past the row, a lane
   field in an accumulator LOAD), then ``SRAM_OUT_OF_RANGE`` (the block past the
   memory's depth), then ``BUS_ERROR`` for a DRAM byte past the end of the address space, in the
   golden machine's order. A failing instruction touches nothing.
2. **Spans**: a :class:`SpanWalker` asks the DmaReader for one span per DRAM row when the row is
   contiguous and elements sit at fixed places in the chunks, else one span per element (see
   ``rtl/span_walker.py``). Padding needs no reads. The walker runs ahead of the writer, as far
   as the DmaReader takes spans.
3. **Writer**: walks the block's SRAM rows in order, one row per cycle when its data is there
   (where the row is, padding or inner, last of a row or of the block, is kept in flip-flops). A
   padding row needs nothing; an element takes its bytes from the chunk stream: with ``E`` (the
   element's bytes) at most ``B`` (the bus bytes) from one chunk at a byte offset (0 with element
   spans; ``B / E`` elements per chunk with row spans), else from ``ceil(E / B)`` chunks, one per
   cycle, gathered in a row buffer. The row, masked to its first ``E`` bytes, goes to a write
   queue of two rows that holds it until the port is ready (the accumulator's DMA port yields to
   the array's write-backs, the scratchpad's is shared with the vector unit); the writer goes on
   while the queue has room, so the chunk stream's ``ready`` does not wait on the port's.

Throughput: padding rows and elements of at most ``B`` bytes write one SRAM row per cycle once
their chunks are there; elements of more than ``B`` bytes take ``ceil(E / B)`` cycles (the bus
rate). With element spans the rate is the DmaReader's span rate.

A chunk with ``error`` gives ``BUS_ERROR``: no row is written from then on, no further span is
issued, and the unit consumes the chunks of every span it has issued (counting ``last``) before
``done``; earlier rows of the block may have been written (the golden machine writes none).
``flush`` abandons the instruction at once (the top level flushes the DMA engines with it):
the unit returns to idle with no ``done``, accepting and dropping any chunk offered meanwhile.
``idle`` is high when no instruction is in the unit.
"""

from amaranth import Array, Cat, Module, Mux, ResetInserter, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.config import NpuConfig
from golden.isa import Memory, Opcode

from .dma_layouts import read_chunk_layout, span_layout
from .isa_layouts import ErrorCode, format_layout
from .ports import WritePortSignature
from .span_walker import SPAN_COUNT_BITS, SpanWalker, plan_transfer

__all__ = ["LoadUnit", "dma_done_layout"]

dma_done_layout = data.StructLayout({"error": ErrorCode})

#: Padded block dimensions: 1023 + 2 * 15 rows or elements.
_BLOCK_BITS = 11


class LoadUnit(wiring.Component):
    """``command``: the fields of one LOAD; ``done``: its error code once every row is written.
    ``spans``/``chunks``: to and from a DmaReader. ``spad_write``/``acc_write``: the memories'
    DMA write ports (``ready`` may be low)."""

    def __init__(self, config: NpuConfig):
        self.config = config
        spad_row = data.ArrayLayout(signed(8), config.rows)
        acc_row = data.ArrayLayout(signed(32), config.cols)
        super().__init__({
            "command": In(stream.Signature(format_layout(Opcode.LOAD))),
            "done": Out(stream.Signature(dma_done_layout)),
            "spans": Out(stream.Signature(span_layout(config))),
            "chunks": In(stream.Signature(read_chunk_layout(config))),
            "spad_write": Out(WritePortSignature(addr_width=config.scratchpad_addr_width,
                                                 row_shape=spad_row, lanes=config.rows)),
            "acc_write": Out(WritePortSignature(addr_width=config.accumulator_addr_width,
                                                row_shape=acc_row, lanes=config.cols)),
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

        ins = Signal(format_layout(Opcode.LOAD))
        error = Signal(ErrorCode)
        faulted = Signal()

        accept = Signal()       # the command is taken (IDLE)
        command = self.command.payload
        height = Signal(_BLOCK_BITS)        # padded block rows
        row_len = Signal(_BLOCK_BITS)       # padded block columns
        row_stop = Signal(_BLOCK_BITS)      # the first bottom padding row
        col_stop = Signal(_BLOCK_BITS)      # the first right padding column
        with m.If(accept):
            m.d.sync += [height.eq(command.pad_top + command.rows + command.pad_bottom),
                         row_len.eq(command.pad_left + command.cols + command.pad_right),
                         row_stop.eq(command.pad_top + command.rows),
                         col_stop.eq(command.pad_left + command.cols)]
        # Scratchpad rows may be filled in parts: the element goes to lanes lane_offset ..
        # lane_offset + elem_len - 1 and, with merge, only those lanes are written.
        lane_fields_illegal = Mux(ins.mem == Memory.ACCUMULATOR,
                                  (ins.lane_offset != 0) | ins.merge,
                                  ins.lane_offset + ins.elem_len > spad_bytes)
        plan = plan_transfer(m, config=cfg, command=command, take=accept, ins=ins,
                             block_rows=(height, row_len), row_bytes=row_bytes,
                             illegal_fields=lane_fields_illegal)
        spad_lanes = Signal(spad_bytes)
        m.d.sync += spad_lanes.eq(Cat(~ins.merge | ((ins.lane_offset <= i)
                                                    & (i < ins.lane_offset + ins.elem_len))
                                      for i in range(spad_bytes)))

        m.submodules.walker = walker = SpanWalker(cfg)
        wiring.connect(m, wiring.flipped(self.spans), walker.spans)
        m.d.comb += [walker.plan.eq(plan.spans), walker.stop.eq(faulted),
                     walker.flush.eq(self.flush)]

        # Chunks: every one taken with ``last`` ends a span.
        chunk = self.chunks.payload
        take = Signal()
        m.d.comb += self.chunks.ready.eq(take)
        lasts = Signal(SPAN_COUNT_BITS)
        with m.If(self.chunks.valid & take & chunk.last):
            m.d.sync += lasts.eq(lasts + 1)

        # Write queue: two rows, so that taking a row depends on the queue's fill level alone,
        # not on the memory port's ``ready`` (which follows the vector unit's and the array's
        # writes in the same cycle). A row is written from the head the cycle after it is queued
        # when the port is free, as from a single write register.
        accumulator = plan.accumulator
        queued_row = data.StructLayout({"addr": 16, "data": 8 * row_bytes})
        m.submodules.write_queue = write_queue = ResetInserter(self.flush)(
            fifo.SyncFIFO(width=queued_row.size, depth=2))
        head = queued_row(write_queue.r_data)
        w_ready = Mux(accumulator, self.acc_write.ready, self.spad_write.ready)
        w_free = write_queue.w_rdy
        w_addr = Signal(16)     # the last queued row's address
        spad_row = head.data[:8 * spad_bytes]
        lane_shift = Signal(range(8 * spad_bytes))
        m.d.comb += lane_shift.eq(ins.lane_offset[:(spad_bytes - 1).bit_length()] << 3)
        for port, is_acc in ((self.spad_write, 0), (self.acc_write, 1)):
            m.d.comb += [port.en.eq(write_queue.r_rdy & (accumulator == is_acc)),
                         port.addr.eq(head.addr)]
        m.d.comb += [
            # Rotated, not shifted: a padding row (every lane pad_value) stays as it is, and a
            # data row has zeros in its top lanes (lane_offset + elem_len <= lanes).
            self.spad_write.data.eq((Cat(spad_row, spad_row) << lane_shift)
                                    [8 * spad_bytes:16 * spad_bytes]),
            self.spad_write.lanes.eq(spad_lanes),
            self.acc_write.data.eq(head.data[:8 * acc_bytes]),
            self.acc_write.lanes.eq(-1),
            write_queue.r_en.eq(w_ready),
        ]
        # The last row leaves the queue in this cycle, or it is empty.
        queue_draining = ~write_queue.r_rdy | ((write_queue.level == 1) & w_ready)
        load_row = Signal()
        row_value = Signal(8 * row_bytes)
        m.d.comb += [write_queue.w_en.eq(load_row),
                     write_queue.w_data.eq(Cat((w_addr + 1)[:16], row_value))]
        with m.If(load_row):
            m.d.sync += w_addr.eq(w_addr + 1)

        # Writer state (the instruction's fields hold still while it runs) ----------------------
        y = Signal(_BLOCK_BITS)
        x = Signal(_BLOCK_BITS)
        part = Signal(range(slots + 1))     # chunk of the current element (E > B)
        offset = Signal(range(bus_bytes))   # byte offset of the element in its chunk (E <= B)
        buffer = Array(Signal(8 * bus_bytes, name=f"piece{s}") for s in range(slots))
        elem_bytes = plan.elem_bytes
        # Registered from the plan (valid from RUN on):
        multi = Signal()                    # E > B: ceil(E / B) chunks per element
        fill_offset = Signal(range(bus_bytes))  # B - E: the offset of a chunk's last element
        m.d.sync += [multi.eq(elem_bytes > bus_bytes), fill_offset.eq(bus_bytes - elem_bytes)]
        last_part = plan.last_part
        keep = Cat(bit.replicate(8) for bit in plan.keep)
        spad_pad = Cat(ins.pad_value for _ in range(spad_bytes))
        acc_pad = Cat(Cat(ins.pad_value, ins.pad_value[7].replicate(24)) for _ in range(cfg.cols))
        pad_row = Mux(accumulator, acc_pad, spad_pad)

        # Where (x, y) is, in flip-flops updated with x and y, so that no comparison sits in front
        # of the row's handling.
        inner_rows = Signal()               # pad_top <= y < row_stop
        inner_cols = Signal()               # pad_left <= x < col_stop
        last_col = Signal()                 # x == row_len - 1
        last_row = Signal()                 # y == height - 1
        last_inner_col = Signal()           # x == col_stop - 1

        def col_flags(col):
            return [inner_cols.eq((col >= ins.pad_left) & (col < col_stop)),
                    last_col.eq(col == row_len - 1), last_inner_col.eq(col == col_stop - 1)]

        def row_flags(row):
            return [inner_rows.eq((row >= ins.pad_top) & (row < row_stop)),
                    last_row.eq(row == height - 1)]

        padding = ~(inner_rows & inner_cols)
        end_of_row = last_col
        end_of_block = last_col & last_row

        # The element's row from the current chunk.
        shifted = Signal(8 * bus_bytes)
        m.d.comb += shifted.eq(chunk.data >> (offset << 3))
        single = Signal(8 * row_bytes)
        m.d.comb += single.eq(shifted[:8 * row_bytes])
        gathered = Signal(8 * slots * bus_bytes)
        m.d.comb += gathered.eq(Cat(Mux(part == s, chunk.data, buffer[s]) for s in range(slots)))
        with m.If(padding):
            m.d.comb += row_value.eq(pad_row)
        with m.Elif(multi):
            m.d.comb += row_value.eq(gathered[:8 * row_bytes] & keep)
        with m.Else():
            m.d.comb += row_value.eq(single & keep)
        # With row spans, the chunk is used up after its last element or the DRAM row's last.
        chunk_used = ~plan.row_mode | (offset == fill_offset) | last_inner_col

        # Control ------------------------------------------------------------------------------
        m.d.comb += self.done.payload.error.eq(error)

        def flushable():
            with m.If(self.flush):  # (the write queue is emptied by its reset)
                m.d.comb += take.eq(1)
                m.next = "IDLE"

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [self.command.ready.eq(~self.flush), take.eq(1), self.idle.eq(1)]
                with m.If(self.command.valid & ~self.flush):
                    m.d.comb += accept.eq(1)
                    m.d.sync += [ins.eq(command), faulted.eq(0)]
                    m.next = "PLAN"
            with m.State("PLAN"):  # plan_transfer sums its products
                m.next = "CHECK"
                flushable()
            with m.State("CHECK"):
                m.d.comb += walker.prepare.eq(1)
                m.d.sync += [error.eq(plan.error), y.eq(0), x.eq(0), part.eq(0), offset.eq(0),
                             lasts.eq(0), w_addr.eq(ins.sram_addr - 1), *col_flags(0),
                             *row_flags(0)]
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
                with m.If(padding):
                    with m.If(w_free):
                        m.d.comb += load_row.eq(1)
                with m.Elif(self.chunks.valid):
                    with m.If(chunk.error):
                        m.d.comb += take.eq(1)
                        m.d.sync += [faulted.eq(1), error.eq(ErrorCode.BUS_ERROR)]
                        m.next = "DRAIN"
                    with m.Elif(multi & (part != last_part)):
                        m.d.comb += take.eq(1)
                        m.d.sync += [buffer[part].eq(chunk.data), part.eq(part + 1)]
                    with m.Elif(w_free):
                        m.d.comb += load_row.eq(1)
                        with m.If(multi):
                            m.d.comb += take.eq(1)
                            m.d.sync += part.eq(0)
                        with m.Elif(chunk_used):
                            m.d.comb += take.eq(1)
                            m.d.sync += offset.eq(0)
                        with m.Else():
                            m.d.sync += offset.eq(offset + elem_bytes)
                with m.If(load_row):
                    m.d.sync += [x.eq(x + 1), *col_flags(x + 1)]
                    with m.If(end_of_row):
                        m.d.sync += [x.eq(0), y.eq(y + 1), *col_flags(0), *row_flags(y + 1)]
                    with m.If(end_of_block):
                        m.next = "FINISH"
                flushable()
            with m.State("FINISH"):  # the last row leaves the write queue
                with m.If(queue_draining):
                    m.next = "DONE"
                flushable()
            with m.State("DRAIN"):  # after a bus error: the issued spans' chunks, no writes
                m.d.comb += take.eq(1)
                # (counted once taken: the compare waits a cycle, but has no adder before it)
                with m.If(~walker.busy & ~write_queue.r_rdy & (lasts == walker.issued)):
                    m.next = "DONE"
                flushable()
            with m.State("DONE"):
                m.d.comb += self.done.valid.eq(~self.flush)
                with m.If(self.done.ready & ~self.flush):
                    m.next = "IDLE"
                flushable()
        return m
