"""Splits DMA spans into AXI4 INCR bursts: the address half of both DMA engines.

A span (``length`` >= 1 bytes from any byte address ``addr``) covers the bus words (*beats*)
from ``addr // B`` to ``(addr + length - 1) // B`` (B = the bus width in bytes). The splitter
walks them in bursts of full-width beats, each as long as possible but at most 256 beats and
never crossing a 4 KiB boundary (AXI4's two rules for INCR bursts), and hands each burst out as
``{addr, len, last}``: the beat-aligned byte address, the AXI length field (beats - 1) and
whether it is the span's last burst.

One burst per cycle: a span whose last burst leaves this cycle lets the next span in at the same
edge, so one-burst spans also go at one per cycle. The ``bursts`` payload comes from a register
and is held until taken, as an AXI address channel requires.

The next burst's length comes from registers: the beats to the next 4 KiB boundary and
``min(256, that)`` are kept up to date as bursts go, so that deciding whether the rest of the span
fits is one short comparison.

``flush`` drops the span being split (no further bursts of it); a burst already in the output
register stays there until taken, since an AXI master may not withdraw ``arvalid``/``awvalid``.
Spans of length 0 are accepted and dropped (no burst).
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.config import NpuConfig

from .dma_layouts import SPAN_LENGTH_BITS, span_layout

__all__ = ["BurstSplitter", "burst_layout", "span_beats"]

#: AXI4 limits for INCR bursts.
MAX_BURST_BEATS = 256
PAGE_BYTES = 4096


def burst_layout(config: NpuConfig) -> data.StructLayout:
    """One burst: ``addr`` (beat-aligned byte address), ``len`` (beats - 1, the AXI ``*len``
    field), ``last`` (the span's last burst)."""
    return data.StructLayout({"addr": config.axi_addr_width, "len": 8, "last": 1})


def span_beats(config: NpuConfig):
    """The shape of a count of beats of one span (one more than the longest span needs)."""
    return range(((1 << SPAN_LENGTH_BITS) + 2 * config.axi_data_bytes) // config.axi_data_bytes)


def _log2(value: int) -> int:
    return value.bit_length() - 1


class BurstSplitter(wiring.Component):
    """``spans`` in, ``bursts`` out (see the module docstring); ``busy`` while a span is being
    split or a burst waits in the output register."""

    def __init__(self, config: NpuConfig):
        if not isinstance(config, NpuConfig):
            raise TypeError(f"Config must be an NpuConfig, not {config!r}")
        self.config = config
        super().__init__({
            "spans": In(stream.Signature(span_layout(config))),
            "bursts": Out(stream.Signature(burst_layout(config))),
            "flush": In(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        B = cfg.axi_data_bytes
        log_b = _log2(B)
        page_beats = PAGE_BYTES // B
        beat_bits = cfg.axi_addr_width - log_b
        cap_max = min(MAX_BURST_BEATS, page_beats)    # the longest burst there can be

        cur = Signal(beat_bits)                    # next beat address (byte address / B)
        rest = Signal(span_beats(cfg))             # beats of the span not yet in a burst, - 1
        page_left = Signal(range(page_beats + 1))  # beats from cur to the next 4 KiB boundary
        cap = Signal(range(cap_max + 1))           # min(256, page_left): the longest next burst
        active = Signal()

        # The burst: ``cap`` beats, or the rest of the span when that fits (``final``, kept in a
        # register with the others).
        final = Signal()

        def fits(rest_beats, limit):   # rest_beats < limit, limit a short value
            bits = len(limit)
            return (rest_beats[bits:] == 0) & (rest_beats[:bits] < limit)

        out = self.bursts
        free = ~out.valid | out.ready
        issue = active & free
        m.d.comb += [
            self.spans.ready.eq(~active | (free & final)),
            self.busy.eq(active | out.valid),
        ]

        def cap_of(beats_to_page):
            return Mux(beats_to_page > MAX_BURST_BEATS, MAX_BURST_BEATS, beats_to_page)

        # After a burst of ``cap`` beats (whether or not it was the last: a new span reloads
        # everything), the 4 KiB boundary is ``MAX_BURST_BEATS`` nearer or has been reached.
        crossed = page_left <= MAX_BURST_BEATS    # (page_left == cap)
        next_rest = Signal.like(rest)
        next_page_left = Signal.like(page_left)
        next_cap = Signal.like(cap)
        m.d.comb += next_rest.eq(rest - cap)
        if page_beats > MAX_BURST_BEATS:
            m.d.comb += [
                next_page_left.eq(Mux(crossed, page_beats, page_left - MAX_BURST_BEATS)),
                next_cap.eq(Mux(crossed, MAX_BURST_BEATS, cap_of(page_left - MAX_BURST_BEATS))),
            ]
        else:  # every burst but a span's last ends at a boundary
            m.d.comb += [next_page_left.eq(page_beats), next_cap.eq(page_beats)]
        # The burst after this one is the span's last if rest - cap < next_cap.
        two_bursts = Signal(range(2 * cap_max + 1))
        m.d.comb += two_bursts.eq(cap + next_cap)

        with m.If(out.ready):
            m.d.sync += out.valid.eq(0)
        with m.If(issue):
            m.d.sync += [
                out.valid.eq(1),
                out.payload.addr.eq(cur << log_b),
                out.payload.len.eq(Mux(final, rest, cap - 1)),
                out.payload.last.eq(final),
                cur.eq(cur + cap),
                rest.eq(next_rest),
                page_left.eq(next_page_left),
                cap.eq(next_cap),
                final.eq(fits(rest, two_bursts)),
            ]
            with m.If(final):
                m.d.sync += active.eq(0)

        span = self.spans.payload
        offset = span.addr[:log_b] if log_b else 0
        first_page_left = page_beats - span.addr[log_b:log_b + _log2(page_beats)]
        first_rest = Signal.like(rest)
        first_cap = Signal.like(cap)
        m.d.comb += [first_rest.eq((offset + span.length - 1) >> log_b),
                     first_cap.eq(cap_of(first_page_left))]
        with m.If(self.spans.valid & self.spans.ready & (span.length != 0)):
            m.d.sync += [
                cur.eq(span.addr[log_b:]),
                rest.eq(first_rest),
                page_left.eq(first_page_left),
                cap.eq(first_cap),
                final.eq(fits(first_rest, first_cap)),
                active.eq(1),
            ]
        with m.If(self.flush):
            m.d.sync += active.eq(0)
        return m
