"""The DMA read engine: spans of DRAM bytes in, realigned chunks out, over an AXI4 read half.

Address side: a :class:`BurstSplitter` turns each span into INCR bursts of full-width beats
(``arsize`` = log2 B, B = the bus width in bytes), at most 256 beats each, none crossing a 4 KiB
boundary, one AR per cycle. Up to ``max_bursts`` bursts are outstanding (AR sent, last R beat
not yet in); ``arid`` is always 0, so the R beats come back in order.

Data side: a FIFO carries each span's shape (the byte offset ``o`` of its first byte in its
first beat, its last beat and last chunk indices, the byte count of its last chunk, whether it
has one beat, one chunk) from the address side to the R side (the FIFO's output is a register:
a shape is there two cycles after its span is taken, before the span's first R beat can come,
which follows its AR), which realigns the beats into chunks (``dma_layouts``): chunk k is
span bytes k * B .. k * B + B - 1 in its low bytes, that is bytes ``o`` .. B - 1 of beat k
followed by bytes 0 .. ``o`` - 1 of beat k + 1. The R side keeps the previous beat in a register
and shifts the pair {previous, incoming} right by ``o`` bytes, so it emits one chunk per beat:

- ``o`` = 0: chunk k is beat k;
- ``o`` > 0: the span's first beat is only stored (unless it is the span's only beat), every
  later beat completes the chunk before it, and when the last beat holds no byte beyond the last
  chunk (the span has as many beats as chunks), that last chunk comes from the stored beat alone
  in one extra cycle without an R beat.

So long spans stream at one chunk per cycle and one-chunk spans at one per cycle as long as
enough bursts are outstanding to cover the slave's latency. ``count`` is B except on the last
chunk, which has ``last``. An R beat answered SLVERR or DECERR marks ``error`` on every chunk
that holds bytes of it; the span still ends with ``last``. The chunk output is one register;
while ``chunks`` is not ready the R channel waits (``rready`` low).

``flush`` (held until ``idle``): drops the queued spans and any span offered meanwhile, issues
no new AR (an AR already presented stays until taken, as AXI requires), accepts and discards
the R beats of every outstanding burst and produces no chunks (a chunk waiting in the output
register is dropped too). ``idle`` is high when no burst is outstanding, nothing is queued and
no chunk is waiting. ``flush`` must stay high until ``idle`` rises, or the R beats still to come
would be taken for the next span's. ``read_bytes`` is the number of bytes handed to the user
this cycle (the performance counters). Spans of length 0 are accepted and dropped.
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.config import NpuConfig

from .axi import Axi4ReadSignature, AxiBurst
from .burst_splitter import BurstSplitter, span_beats
from .dma_layouts import read_chunk_layout, span_layout

__all__ = ["DmaReader"]


def _log2(value: int) -> int:
    return value.bit_length() - 1


class DmaReader(wiring.Component):
    """Reads spans of DRAM through an AXI4 read half (``bus``, master) and delivers them as
    chunks; see the module docstring. ``max_bursts``: bursts outstanding at most (AR sent, last
    R beat not yet received)."""

    def __init__(self, config: NpuConfig, *, max_bursts: int = 16):
        if not isinstance(config, NpuConfig):
            raise TypeError(f"Config must be an NpuConfig, not {config!r}")
        if not isinstance(max_bursts, int) or isinstance(max_bursts, bool) or max_bursts < 1:
            raise ValueError(f"Max bursts must be a positive integer, not {max_bursts!r}")
        self.config = config
        self.max_bursts = max_bursts
        super().__init__({
            "spans": In(stream.Signature(span_layout(config))),
            "chunks": Out(stream.Signature(read_chunk_layout(config))),
            "bus": Out(Axi4ReadSignature(addr_width=config.axi_addr_width,
                                         data_width=config.axi_data_width)),
            "flush": In(1),
            "idle": Out(1),
            "read_bytes": Out(range(config.axi_data_bytes + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        B = cfg.axi_data_bytes
        log_b = _log2(B)
        bus = self.bus
        flush = self.flush

        # Address side --------------------------------------------------------------------------
        m.submodules.splitter = splitter = BurstSplitter(cfg)
        shape_layout = data.StructLayout({
            "offset": range(B),               # byte offset of the span's first byte in its beat
            "last_beat": span_beats(cfg),
            "last_chunk": span_beats(cfg),
            "tail_count": range(B + 1),      # bytes of the last chunk
            "single_beat": 1,                 # last_beat == 0
            "single_chunk": 1,                # last_chunk == 0
        })
        m.submodules.shapes = shapes = fifo.SyncFIFOBuffered(width=shape_layout.size,
                                                             depth=self.max_bursts + 2)

        span = self.spans.payload
        offset = span.addr[:log_b]
        shape = shape_layout(shapes.w_data)
        m.d.comb += [
            shape.offset.eq(offset),
            shape.last_beat.eq((offset + span.length - 1) >> log_b),
            shape.last_chunk.eq((span.length - 1) >> log_b),
            shape.tail_count.eq((span.length - 1)[:log_b] + 1),
            shape.single_beat.eq(shape.last_beat == 0),
            shape.single_chunk.eq(shape.last_chunk == 0),
            splitter.spans.payload.eq(span),
            splitter.flush.eq(flush),
        ]
        nonempty = span.length != 0
        with m.If(flush):
            m.d.comb += self.spans.ready.eq(1)     # dropped
        with m.Else():
            m.d.comb += [
                splitter.spans.valid.eq(self.spans.valid & shapes.w_rdy),
                self.spans.ready.eq(splitter.spans.ready & shapes.w_rdy),
                shapes.w_en.eq(self.spans.valid & splitter.spans.ready & nonempty),
            ]

        outstanding = Signal(range(self.max_bursts + 1))
        room = outstanding != self.max_bursts
        burst = splitter.bursts.payload
        m.d.comb += [
            bus.arid.eq(0),
            bus.araddr.eq(burst.addr),
            bus.arlen.eq(burst.len),
            bus.arsize.eq(log_b),
            bus.arburst.eq(AxiBurst.INCR),
            bus.arvalid.eq(splitter.bursts.valid & room),
            splitter.bursts.ready.eq(bus.arready & room),
        ]
        ar_done = bus.arvalid & bus.arready
        r_done = bus.rvalid & bus.rready & bus.rlast
        m.d.sync += outstanding.eq(outstanding + ar_done - r_done)

        # Data side -----------------------------------------------------------------------------
        head = shape_layout(shapes.r_data)
        beat = Signal(span_beats(cfg))          # index of the next R beat in the span
        chunk = Signal(span_beats(cfg))         # index of the next chunk in the span
        # Registered facts about those indices, so that no index comparison sits in front of
        # ``rready`` or of the FIFO's read enable.
        first_beat = Signal(init=1)             # beat == 0
        first_chunk = Signal(init=1)            # chunk == 0
        next_is_last = Signal()                 # chunk == head.last_chunk, when not first_chunk
        prev = Signal(8 * B)                    # the span's previous beat
        prev_error = Signal()

        out = self.chunks
        out_valid = Signal()                    # the output register holds a chunk
        m.d.comb += out.valid.eq(out_valid & ~flush)
        advance = ~out_valid | out.ready
        aligned = head.offset == 0
        tail = Signal()                         # every beat in, the last chunk still to emit
        use_prev = ~aligned & ~first_beat
        emits = aligned | ~first_beat | head.single_beat
        r_error = bus.rresp[1]                  # SLVERR or DECERR
        last_chunk = Mux(first_chunk, head.single_chunk, next_is_last)

        take_r = Signal()                       # an R beat is accepted
        produce = Signal()                      # a chunk is loaded into the output register
        with m.If(flush):
            m.d.comb += [bus.rready.eq(1), shapes.r_en.eq(1)]
        with m.Elif(shapes.r_rdy):
            with m.If(tail):
                m.d.comb += produce.eq(advance)
            with m.Else():
                m.d.comb += [
                    bus.rready.eq(advance | ~emits),
                    take_r.eq(bus.rvalid & bus.rready),
                    produce.eq(take_r & emits),
                ]

        window = Cat(Mux(use_prev, prev, bus.rdata), bus.rdata)
        with m.If(out.ready):
            m.d.sync += out_valid.eq(0)
        with m.If(produce):
            m.d.sync += [
                out_valid.eq(1),
                out.payload.data.eq(window.bit_select(head.offset * 8, 8 * B)),
                out.payload.count.eq(Mux(last_chunk, head.tail_count, B)),
                out.payload.last.eq(last_chunk),
                out.payload.error.eq((use_prev & prev_error) | (take_r & r_error)),
                chunk.eq(chunk + 1),
                first_chunk.eq(0),
                next_is_last.eq(chunk + 1 == head.last_chunk),
            ]
        with m.If(take_r):
            m.d.sync += [beat.eq(beat + 1), prev.eq(bus.rdata), prev_error.eq(r_error),
                         first_beat.eq(0), tail.eq(beat == head.last_beat)]
        with m.If((produce & last_chunk) | flush):
            m.d.sync += [beat.eq(0), chunk.eq(0), first_beat.eq(1), first_chunk.eq(1),
                         tail.eq(0)]
        with m.If(produce & last_chunk):
            m.d.comb += shapes.r_en.eq(1)
        with m.If(flush):
            m.d.sync += out_valid.eq(0)

        m.d.comb += [
            self.read_bytes.eq(Mux(out.valid & out.ready, out.payload.count, 0)),
            self.idle.eq((outstanding == 0) & ~splitter.busy & (shapes.level == 0)
                         & ~out_valid),
        ]
        return m
