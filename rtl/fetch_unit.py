"""The fetch unit: reads the program from DRAM into a small instruction buffer.

At ``start`` it takes the program's byte address and instruction count. It asks its DMA reader
for spans of whole instructions, never more than the buffer has room for (so instruction data
never waits on the shared AXI read channel and blocks the load unit behind it), assembles each
instruction from ``instruction_bytes / bus bytes`` chunks and offers it, with its index, on
``instructions``. A chunk that came back with a bus error marks its instruction ``error``.
``flush`` drops everything (the DMA reader is flushed at the same time).
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.config import NpuConfig

from .compute_unit import INDEX_BITS
from .dma_layouts import read_chunk_layout, span_layout

__all__ = ["FetchUnit", "fetched_layout"]

#: Instructions the buffer holds (and the most one span asks for).
BUFFER_DEPTH = 8


def fetched_layout(config: NpuConfig) -> data.StructLayout:
    return data.StructLayout({"word": config.instruction_width, "index": INDEX_BITS, "error": 1})


class FetchUnit(wiring.Component):
    def __init__(self, config: NpuConfig):
        self.config = config
        super().__init__({
            "start": In(1),
            "program_addr": In(config.axi_addr_width),
            "program_length": In(INDEX_BITS),
            "spans": Out(stream.Signature(span_layout(config))),
            "chunks": In(stream.Signature(read_chunk_layout(config))),
            "instructions": Out(stream.Signature(fetched_layout(config))),
            "flush": In(1),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        word_bits, bus_bits = cfg.instruction_width, cfg.axi_data_width
        chunks_per_word = max(1, word_bits // bus_bits)
        assert word_bits % bus_bits == 0, "an instruction must be a whole number of bus beats"

        m.submodules.buffer = buffer = fifo.SyncFIFO(width=fetched_layout(cfg).size,
                                                     depth=BUFFER_DEPTH)
        m.d.comb += [self.instructions.valid.eq(buffer.r_rdy & ~self.flush),
                     self.instructions.payload.eq(buffer.r_data)]

        address = Signal(cfg.axi_addr_width)
        to_request = Signal(INDEX_BITS)      # instructions not yet asked for
        requested = Signal(range(BUFFER_DEPTH + 1))  # asked for, not yet in the buffer
        index = Signal(INDEX_BITS)
        # Kept in registers so that the span is two LUT levels from flip-flops:
        room = Signal(range(BUFFER_DEPTH + 1), init=BUFFER_DEPTH)  # depth - level - requested
        few = Signal(range(BUFFER_DEPTH + 1))   # min(to_request, BUFFER_DEPTH)

        # Ask for as many instructions as the buffer can still take.
        count = Signal(range(BUFFER_DEPTH + 1))
        m.d.comb += count.eq(Mux(few < room, few, room))
        m.d.comb += [self.spans.valid.eq((count != 0) & ~self.flush),
                     self.spans.payload.addr.eq(address),
                     self.spans.payload.length.eq(count * cfg.instruction_bytes)]
        asked = self.spans.valid & self.spans.ready

        # Assemble instructions from chunks.
        word = Signal(word_bits)
        part = Signal(range(chunks_per_word))
        error = Signal()
        chunk = self.chunks.payload
        complete = Signal()
        m.d.comb += [self.chunks.ready.eq(buffer.w_rdy | self.flush),
                     complete.eq(self.chunks.valid & self.chunks.ready & (part == chunks_per_word - 1)
                                 & ~self.flush)]
        assembled = Signal(fetched_layout(cfg))
        m.d.comb += [assembled.word.eq(word),
                     assembled.word[(chunks_per_word - 1) * bus_bits:].eq(chunk.data),
                     assembled.index.eq(index), assembled.error.eq(error | chunk.error),
                     buffer.w_data.eq(assembled), buffer.w_en.eq(complete)]
        with m.If(self.chunks.valid & self.chunks.ready):
            with m.If(part == chunks_per_word - 1):
                m.d.sync += [part.eq(0), error.eq(0), index.eq(index + 1)]
            with m.Else():
                for p in range(chunks_per_word - 1):
                    with m.If(part == p):
                        m.d.sync += word[p * bus_bits:(p + 1) * bus_bits].eq(chunk.data)
                m.d.sync += [part.eq(part + 1), error.eq(error | chunk.error)]

        asked_count = count & asked.replicate(len(count))
        popped = buffer.r_en & buffer.r_rdy
        m.d.sync += [requested.eq(requested + asked_count - complete),
                     room.eq(room - asked_count + popped)]
        # min(to_request - count, BUFFER_DEPTH) without a compare behind the subtraction: with
        # to_request >= 2 * BUFFER_DEPTH it is BUFFER_DEPTH, else its low bits decide.
        low_bits = (2 * BUFFER_DEPTH - 1).bit_length()
        low_left = Signal(low_bits)
        m.d.comb += low_left.eq(to_request[:low_bits] - count)
        with m.If(asked):
            m.d.sync += [address.eq(address + count * cfg.instruction_bytes),
                         to_request.eq(to_request - count)]
            with m.If((to_request[low_bits:] == 0) & (low_left < BUFFER_DEPTH)):
                m.d.sync += few.eq(low_left)
            with m.Else():
                m.d.sync += few.eq(BUFFER_DEPTH)
        with m.If(self.start | self.flush):
            length = self.program_length
            m.d.sync += [address.eq(self.program_addr), to_request.eq(length),
                         few.eq(Mux(length < BUFFER_DEPTH, length, BUFFER_DEPTH)),
                         requested.eq(0), index.eq(0), part.eq(0), error.eq(0),
                         room.eq(BUFFER_DEPTH - buffer.level + popped - complete)]
        with m.If(self.flush):
            m.d.sync += [to_request.eq(0), few.eq(0)]
        m.d.comb += buffer.r_en.eq(self.instructions.ready | self.flush)
        m.d.comb += self.idle.eq((requested == 0) & (to_request == 0))
        return m
