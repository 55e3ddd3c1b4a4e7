"""The DMA write engine: spans and their chunks in, AXI4 write bursts out, one ``done`` per span.

Address side: a :class:`BurstSplitter` turns each span into INCR bursts of full-width beats
(``awsize`` = log2 B, B = the bus width in bytes), at most 256 beats each, none crossing a 4 KiB
boundary. An AW is sent as soon as its burst is known, before the data is there; up to
``max_bursts`` bursts are outstanding (AW sent, B response not yet in). ``awid`` is always 0.

Data side: the user sends ``ceil(length / B)`` chunks per span, in span order, chunk k holding
span bytes k * B .. k * B + B - 1 in its low bytes. With ``o`` the byte offset of the span's
first byte in its first beat, beat j of the span is bytes B - ``o`` .. B - 1 of chunk j - 1
followed by bytes 0 .. B - ``o`` - 1 of chunk j: the W side keeps the previous chunk in a
register and shifts the pair {previous, incoming} by B - ``o`` bytes. Beat j takes chunk j
(when the span has one), so it is one chunk per beat, except the span's last beat when it holds
only bytes of the previous chunk (the span has one beat more than chunks): that beat goes out
without taking a chunk. ``wstrb`` marks the span's bytes: the first and last beats may be
partial. W beats follow their AW (a burst's beats are sent only after its AW handshake) and
leave through a :class:`StreamRegister` (two beats), so that the W side's pace follows its fill
level, not ``wready`` in the same cycle. A FIFO with a registered output carries each span's
shape (``o``, its last beat, its last byte lane, whether it has a beat more than chunks)
from the address side to the W side; a shape is there two cycles after its span is taken,
before the span's first W beat can go (its AW comes first).

Responses: a FIFO remembers, per burst sent, whether it is its span's last; each B response
pops it, and the span's last one gives ``done`` with ``error`` set when any burst of the span
was answered SLVERR or DECERR.

``flush`` (held until ``idle``): every burst whose AW was sent is finished (its remaining W beats
go out with ``wstrb`` = 0) and its B response collected; the queued spans, any span or chunk
offered meanwhile and a ``done`` not yet taken are dropped, and no ``done`` is produced.
``idle`` is high when no burst is outstanding, nothing is queued and no ``done`` waits.
``written_bytes`` is the number of bytes written this cycle (the strobes of a W handshake), for
the performance counters. Spans of length 0 are accepted and dropped (no ``done``).
"""

from amaranth import C, Cat, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.config import NpuConfig

from .axi import Axi4WriteSignature, AxiBurst
from .burst_splitter import BurstSplitter, span_beats
from .dma_layouts import span_done_layout, span_layout, write_chunk_layout
from .stream_register import StreamRegister

__all__ = ["DmaWriter"]


def _log2(value: int) -> int:
    return value.bit_length() - 1


class DmaWriter(wiring.Component):
    """Writes spans to DRAM through an AXI4 write half (``bus``, master); see the module
    docstring. ``max_bursts``: bursts outstanding at most (AW sent, B response not yet
    received)."""

    def __init__(self, config: NpuConfig, *, max_bursts: int = 16):
        if not isinstance(config, NpuConfig):
            raise TypeError(f"Config must be an NpuConfig, not {config!r}")
        if not isinstance(max_bursts, int) or isinstance(max_bursts, bool) or max_bursts < 1:
            raise ValueError(f"Max bursts must be a positive integer, not {max_bursts!r}")
        self.config = config
        self.max_bursts = max_bursts
        super().__init__({
            "spans": In(stream.Signature(span_layout(config))),
            "chunks": In(stream.Signature(write_chunk_layout(config))),
            "done": Out(stream.Signature(span_done_layout())),
            "bus": Out(Axi4WriteSignature(addr_width=config.axi_addr_width,
                                          data_width=config.axi_data_width)),
            "flush": In(1),
            "idle": Out(1),
            "written_bytes": Out(range(config.axi_data_bytes + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        B = cfg.axi_data_bytes
        log_b = _log2(B)
        bus = self.bus
        flush = self.flush
        full_strobe = C((1 << B) - 1, B)

        # Address side --------------------------------------------------------------------------
        m.submodules.splitter = splitter = BurstSplitter(cfg)
        shape_layout = data.StructLayout({
            "offset": range(B),               # byte offset of the span's first byte in its beat
            "last_beat": span_beats(cfg),
            "extra_beat": 1,                  # one beat more than chunks: the last takes none
            "end_lane": range(B),             # byte lane of the span's last byte
            "single_beat": 1,                 # last_beat == 0
        })
        m.submodules.shapes = shapes = fifo.SyncFIFOBuffered(width=shape_layout.size,
                                                             depth=self.max_bursts + 2)

        span = self.spans.payload
        offset = span.addr[:log_b]
        shape = shape_layout(shapes.w_data)
        m.d.comb += [
            shape.offset.eq(offset),
            shape.last_beat.eq((offset + span.length - 1) >> log_b),
            shape.extra_beat.eq((offset + (span.length - 1)[:log_b])[log_b]),
            shape.end_lane.eq((offset + span.length - 1)[:log_b]),
            shape.single_beat.eq(shape.last_beat == 0),
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

        # Per burst sent: its length for the W side, and whether it ends its span for the B side.
        m.submodules.w_bursts = w_bursts = fifo.SyncFIFO(width=8, depth=self.max_bursts)
        m.submodules.b_bursts = b_bursts = fifo.SyncFIFO(width=1, depth=self.max_bursts)

        outstanding = Signal(range(self.max_bursts + 1))
        room = outstanding != self.max_bursts
        burst = splitter.bursts.payload
        m.d.comb += [
            bus.awid.eq(0),
            bus.awaddr.eq(burst.addr),
            bus.awlen.eq(burst.len),
            bus.awsize.eq(log_b),
            bus.awburst.eq(AxiBurst.INCR),
            bus.awvalid.eq(splitter.bursts.valid & room),
            splitter.bursts.ready.eq(bus.awready & room),
        ]
        aw_done = bus.awvalid & bus.awready
        b_done = bus.bvalid & bus.bready
        m.d.comb += [
            w_bursts.w_data.eq(burst.len),
            w_bursts.w_en.eq(aw_done),
            b_bursts.w_data.eq(burst.last),
            b_bursts.w_en.eq(aw_done),
        ]
        m.d.sync += outstanding.eq(outstanding + aw_done - b_done)

        # Data side -----------------------------------------------------------------------------
        head = shape_layout(shapes.r_data)
        beat = Signal(span_beats(cfg))          # index of the next beat in the span
        # Registered facts about it, so that no index comparison sits in front of the handshakes:
        first_beat = Signal(init=1)             # beat == 0
        next_is_last = Signal()                 # beat == head.last_beat, when not first_beat
        burst_beat = Signal(8)                  # index of the next beat in the burst
        prev = Signal(8 * B)                    # the span's previous chunk

        w_beats = StreamRegister(data.StructLayout({"data": 8 * B, "strb": B, "last": 1}))
        m.submodules.w_beats = w_beats
        m.d.comb += [bus.wvalid.eq(w_beats.outputs.valid), w_beats.outputs.ready.eq(bus.wready),
                     bus.wdata.eq(w_beats.outputs.payload.data),
                     bus.wstrb.eq(w_beats.outputs.payload.strb),
                     bus.wlast.eq(w_beats.outputs.payload.last)]
        advance = w_beats.inputs.ready
        burst_last = burst_beat == w_bursts.r_data
        span_last = Mux(first_beat, head.single_beat, next_is_last)
        wants_chunk = ~(span_last & head.extra_beat)
        take_chunk = Signal()
        produce = Signal()
        strobe = Signal(B)
        with m.If(flush):
            m.d.comb += [
                self.chunks.ready.eq(1),        # dropped
                shapes.r_en.eq(1),
                produce.eq(advance & w_bursts.r_rdy),
                strobe.eq(0),
            ]
        with m.Elif(w_bursts.r_rdy & shapes.r_rdy):
            m.d.comb += [
                self.chunks.ready.eq(advance & wants_chunk),
                take_chunk.eq(self.chunks.valid & self.chunks.ready),
                produce.eq(advance & (take_chunk | ~wants_chunk)),
                strobe.eq(Mux(first_beat, full_strobe << head.offset, full_strobe)
                          & Mux(span_last, full_strobe >> ~head.end_lane, full_strobe)),
            ]

        window = Cat(prev, self.chunks.payload.data)
        shift = Signal(range(B + 1))            # bytes of the previous chunk left out
        m.d.comb += shift.eq(B - head.offset)
        m.d.comb += [w_beats.inputs.valid.eq(produce),
                     w_beats.inputs.payload.data.eq(window.bit_select(shift * 8, 8 * B)),
                     w_beats.inputs.payload.strb.eq(strobe),
                     w_beats.inputs.payload.last.eq(burst_last)]
        with m.If(produce):
            m.d.sync += [
                burst_beat.eq(burst_beat + 1),
                beat.eq(beat + 1),
                first_beat.eq(0),
                next_is_last.eq(beat + 1 == head.last_beat),
            ]
            with m.If(burst_last):
                m.d.sync += burst_beat.eq(0)
                m.d.comb += w_bursts.r_en.eq(1)
            with m.If(span_last & ~flush):
                m.d.sync += [beat.eq(0), first_beat.eq(1)]
                m.d.comb += shapes.r_en.eq(1)
        with m.If(take_chunk):
            m.d.sync += prev.eq(self.chunks.payload.data)
        with m.If(flush):
            m.d.sync += [beat.eq(0), first_beat.eq(1)]

        # Responses -----------------------------------------------------------------------------
        span_error = Signal()
        done = self.done
        done_valid = Signal()                   # the done register holds a span's result
        m.d.comb += [done.valid.eq(done_valid & ~flush),
                     bus.bready.eq(flush | ~done_valid | done.ready)]
        with m.If(done.ready):
            m.d.sync += done_valid.eq(0)
        with m.If(b_done):
            m.d.comb += b_bursts.r_en.eq(1)
            m.d.sync += span_error.eq(span_error | bus.bresp[1])
            with m.If(b_bursts.r_data[0]):
                m.d.sync += [
                    done_valid.eq(1),
                    done.payload.error.eq(span_error | bus.bresp[1]),
                    span_error.eq(0),
                ]
        with m.If(flush):
            m.d.sync += [done_valid.eq(0), span_error.eq(0)]

        m.d.comb += [
            # (counted from the W register, not as the strobe is formed: that is a long path)
            self.written_bytes.eq(Mux(bus.wvalid & bus.wready,
                                      sum(bus.wstrb[i] for i in range(B)), 0)),
            self.idle.eq((outstanding == 0) & ~splitter.busy & (shapes.level == 0)
                         & ~done_valid),
        ]
        return m
