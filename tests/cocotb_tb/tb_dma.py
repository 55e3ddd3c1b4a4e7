"""cocotb testbench of the DMA engines (rtl.dma_reader.DmaReader, rtl.dma_writer.DmaWriter) and
the read arbiter (rtl.axi_read_arbiter.AxiReadArbiter), through tests/dma_test_top.py: two
readers behind the arbiter and one writer on one AXI4 port.

DRAM is cocotbext-axi's AxiRamRead/AxiRamWrite on a shared 64 KiB bytearray (addresses wrap, so
spans also use the high address bits), with two hooks: a read latency (cycles from an AR
handshake to the burst's first beat, pipelined across bursts) and *bad beats* (bus words whose
reads and writes fail: cocotbext-axi answers SLVERR, half of which a wrapper of its R and B
channels turns into DECERR, and does not write them).
A numpy copy of DRAM is the model. A monitor checks every AR and AW: INCR, full-width, aligned,
at most 256 beats, inside one 4 KiB page; it also counts bursts outstanding and checks
``read*_bytes``/``written_bytes`` against the handshakes.

Everything is sampled once per cycle after the falling edge (ReadOnly): a valid and ready seen
there is the handshake of the next rising edge.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from dataclasses import dataclass

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge
from cocotbext.axi import AxiBus, AxiRamRead, AxiRamWrite, AxiResp
from tb_common import ClockedTB

from rtl.dma_layouts import read_chunk_layout, span_layout

DRAM_BITS = 16
DRAM_SIZE = 1 << DRAM_BITS
PAGE = 4096
MAX_BEATS = 256


def field_slices(layout) -> dict[str, tuple[int, int]]:
    return {name: (field.offset, field.width) for name, field in layout}


def get_field(word: int, slices, name: str) -> int:
    offset, width = slices[name]
    return word >> offset & ((1 << width) - 1)


@dataclass
class Span:
    addr: int
    length: int
    data: bytes = b""          # writer: the bytes to write
    dropped: bool = False      # accepted while flush was high
    cycle: int = 0             # accepted in this cycle


def answer_some_errors_decerr(tb: TB, channel, field: str):
    """cocotbext-axi answers a failing access SLVERR; turn half of those into DECERR."""
    send = channel.send

    async def send_with_decerr(response):
        if getattr(response, field) == AxiResp.SLVERR and tb.rng.random() < 0.5:
            setattr(response, field, AxiResp.DECERR)
        await send(response)

    channel.send = send_with_decerr


class DramRead(AxiRamRead):
    """AxiRamRead with a read latency and failing (SLVERR or DECERR) bad beats."""

    def __init__(self, tb: TB, bus):
        self.tb = tb
        self.beats_left = 0
        super().__init__(bus, tb.dut.clk, tb.dut.rst, mem=tb.mem)
        answer_some_errors_decerr(tb, self.r_channel, "rresp")

    async def _read(self, address, length):
        tb = self.tb
        if self.beats_left == 0:  # a new burst: wait for its latency
            while not tb.ar_accepted:
                await RisingEdge(tb.dut.clk)
            cycle, self.beats_left = tb.ar_accepted.popleft()
            while tb.cycle < cycle + tb.latency:
                await RisingEdge(tb.dut.clk)
        self.beats_left -= 1
        address %= self.size
        if address // tb.B in tb.bad_beats:
            raise OSError("injected read error")
        return self.read(address, length)


class DramWrite(AxiRamWrite):
    """AxiRamWrite whose bad beats fail (SLVERR or DECERR) and are not written."""

    def __init__(self, tb: TB, bus):
        self.tb = tb
        super().__init__(bus, tb.dut.clk, tb.dut.rst, mem=tb.mem)
        answer_some_errors_decerr(tb, self.b_channel, "bresp")

    async def _write(self, address, data):
        address %= self.size
        if address // self.tb.B in self.tb.bad_beats:
            raise OSError("injected write error")
        self.write(address, data)


class ReaderPort:
    """The user side of one DmaReader: a span source and a chunk sink."""

    def __init__(self, tb: TB, prefix: str):
        dut = tb.dut
        self.tb = tb
        self.name = prefix
        self.spans_valid = getattr(dut, f"{prefix}_spans__valid")
        self.spans_ready = getattr(dut, f"{prefix}_spans__ready")
        self.spans_payload = getattr(dut, f"{prefix}_spans__payload")
        self.chunks_valid = getattr(dut, f"{prefix}_chunks__valid")
        self.chunks_ready = getattr(dut, f"{prefix}_chunks__ready")
        self.chunks_payload = getattr(dut, f"{prefix}_chunks__payload")
        self.bytes = getattr(dut, f"{prefix}_bytes")
        self.idle = getattr(dut, f"{prefix}_idle")
        self.spans_valid.value = 0
        self.chunks_ready.value = 0
        self.pending: deque[Span] = deque()
        self.offering: Span | None = None
        self.accepted: list[Span] = []
        self.chunks: list[tuple[bytes, int, int, int]] = []   # (data, count, last, error)
        self.chunk_cycles: list[int] = []
        self.span_idle = 0.0
        self.chunk_stall = 0.0

    def drive(self):
        rng = self.tb.rng
        if self.offering is None and self.pending and rng.random() >= self.span_idle:
            self.offering = self.pending.popleft()
            self.spans_payload.value = self.offering.addr | self.offering.length << self.tb.span_length_shift
        self.spans_valid.value = int(self.offering is not None)
        self.chunks_ready.value = int(rng.random() >= self.chunk_stall)

    def sample(self):
        tb = self.tb
        if self.offering is not None and self.spans_ready.value:
            self.offering.dropped = tb.flushing
            self.offering.cycle = tb.cycle
            self.accepted.append(self.offering)
            self.offering = None
        taken = 0
        if self.chunks_valid.value and self.chunks_ready.value:
            assert not tb.flushing, f"{self.name}: a chunk while flush is high"
            word = self.chunks_payload.value.to_unsigned()
            s = tb.read_chunk
            count = get_field(word, s, "count")
            data = get_field(word, s, "data").to_bytes(tb.B, "little")
            self.chunks.append((data[:count], count, get_field(word, s, "last"),
                                get_field(word, s, "error")))
            self.chunk_cycles.append(tb.cycle)
            taken = count
        assert self.bytes.value.to_unsigned() == taken, f"{self.name}_bytes"

    def clear(self):
        self.pending.clear()
        self.offering = None
        self.spans_valid.value = 0
        self.accepted, self.chunks, self.chunk_cycles = [], [], []


class WriterPort:
    """The user side of the DmaWriter: span and chunk sources, a done sink."""

    def __init__(self, tb: TB):
        dut = tb.dut
        self.tb = tb
        self.spans_valid, self.spans_ready = dut.write_spans__valid, dut.write_spans__ready
        self.spans_payload = dut.write_spans__payload
        self.chunks_valid, self.chunks_ready = dut.write_chunks__valid, dut.write_chunks__ready
        self.chunks_payload = dut.write_chunks__payload
        self.done_valid, self.done_ready = dut.write_done__valid, dut.write_done__ready
        self.done_payload = dut.write_done__payload
        self.idle = dut.write_idle
        for signal in (self.spans_valid, self.chunks_valid, self.done_ready):
            signal.value = 0
        self.pending: deque[Span] = deque()
        self.offering: Span | None = None
        self.pending_chunks: deque[int] = deque()
        self.chunk: int | None = None
        self.accepted: list[Span] = []
        self.done: list[int] = []
        self.done_cycles: list[int] = []
        self.chunks_sent = 0
        self.span_idle = self.chunk_idle = self.done_stall = 0.0

    def send(self, span: Span):
        """Queue a span and its chunks (the last one padded with junk that must not land)."""
        B = self.tb.B
        self.pending.append(span)
        padded = span.data + self.tb.rng.bytes(-len(span.data) % B)
        for k in range(0, len(padded), B):
            self.pending_chunks.append(int.from_bytes(padded[k:k + B], "little"))

    def drive(self):
        rng = self.tb.rng
        if self.offering is None and self.pending and rng.random() >= self.span_idle:
            self.offering = self.pending.popleft()
            self.spans_payload.value = self.offering.addr | self.offering.length << self.tb.span_length_shift
        self.spans_valid.value = int(self.offering is not None)
        if self.chunk is None and self.pending_chunks and rng.random() >= self.chunk_idle:
            self.chunk = self.pending_chunks.popleft()
            self.chunks_payload.value = self.chunk
        self.chunks_valid.value = int(self.chunk is not None)
        self.done_ready.value = int(rng.random() >= self.done_stall)

    def sample(self):
        tb = self.tb
        if self.offering is not None and self.spans_ready.value:
            self.offering.dropped = tb.flushing
            self.offering.cycle = tb.cycle
            self.accepted.append(self.offering)
            self.offering = None
        if self.chunk is not None and self.chunks_ready.value:
            self.chunk = None
            self.chunks_sent += 1
        if self.done_valid.value and self.done_ready.value:
            assert not tb.flushing, "a done while flush is high"
            self.done.append(int(self.done_payload.value))
            self.done_cycles.append(tb.cycle)

    def clear(self):
        self.pending.clear()
        self.pending_chunks.clear()
        self.offering = self.chunk = None
        self.spans_valid.value = self.chunks_valid.value = 0
        self.accepted, self.done, self.done_cycles = [], [], []


class TB(ClockedTB):
    def __init__(self, dut, *, pause: float = 0.0, latency: int = 0, user_idle: float = 0.0,
                 address_queue: int = 2):
        super().__init__(dut)
        cfg = self.config
        self.B = cfg.axi_data_bytes
        self.span_length_shift = cfg.axi_addr_width
        assert field_slices(span_layout(cfg))["length"][0] == self.span_length_shift
        self.read_chunk = field_slices(read_chunk_layout(cfg))
        self.mem = bytearray(self.rng.bytes(DRAM_SIZE))
        self.model = np.frombuffer(bytes(self.mem), np.uint8).copy()
        self.bad_beats: set[int] = set()
        self.latency = latency
        self.cycle = 0
        self.flushing = False
        self.ar_accepted: deque[tuple[int, int]] = deque()
        self.ar_addresses: list[int] = []
        self.responses = [0] * 4     # R beats and B responses seen, by response code
        self.reads_outstanding = self.writes_outstanding = 0
        self.max_reads_outstanding = self.max_writes_outstanding = 0
        self.written_bytes = 0
        self.w_cycles: list[int] = []
        dut.flush.value = 0
        bus = AxiBus.from_prefix(dut, "m_axi")
        self.dram_read = DramRead(self, bus.read)
        self.dram_write = DramWrite(self, bus.write)
        self.dram_read.ar_channel.queue_occupancy_limit = address_queue
        self.dram_write.aw_channel.queue_occupancy_limit = address_queue
        for model in (self.dram_read, self.dram_write):
            model.log.setLevel(logging.ERROR)
        self.channels = [self.dram_read.ar_channel, self.dram_read.r_channel,
                         self.dram_write.aw_channel, self.dram_write.w_channel,
                         self.dram_write.b_channel]
        self.set_pause(pause)
        self.readers = [ReaderPort(self, "read0"), ReaderPort(self, "read1")]
        self.writer = WriterPort(self)
        self.set_user_idle(user_idle)
        self.axi = {name: getattr(dut, f"m_axi_{name}") for name in (
            "arvalid", "arready", "araddr", "arlen", "arsize", "arburst", "rvalid", "rready",
            "rlast", "rresp", "awvalid", "awready", "awaddr", "awlen", "awsize", "awburst", "wvalid",
            "wready", "wstrb", "bvalid", "bready", "bresp")}

    def set_pause(self, probability: float):
        for channel in self.channels:
            if probability:
                channel.set_pause_generator(self.pauses(probability))
            else:
                channel.clear_pause_generator()
                channel.pause = False

    def pauses(self, probability: float):
        rng = self.rng
        return (bool(rng.random() < probability) for _ in itertools.count())

    def set_user_idle(self, probability: float):
        for reader in self.readers:
            reader.span_idle = reader.chunk_stall = probability
        w = self.writer
        w.span_idle = w.chunk_idle = w.done_stall = probability

    async def start(self):
        await super().start()
        cocotb.start_soon(self.run())

    async def run(self):
        dut = self.dut
        ports = [*self.readers, self.writer]
        while True:
            await FallingEdge(dut.clk)
            self.cycle += 1
            for port in ports:
                port.drive()
            await ReadOnly()
            for port in ports:
                port.sample()
            self.monitor_axi()

    def check_burst(self, kind: str, addr: int, length: int, size: int, burst: int):
        beats = length + 1
        where = f"{kind} {addr:#x} len {length}"
        assert burst == 1, f"{where}: not INCR"
        assert 1 << size == self.B, f"{where}: size {size} is not the bus width"
        assert addr % self.B == 0, f"{where}: not aligned to the bus width"
        assert beats <= MAX_BEATS, f"{where}: more than 256 beats"
        assert addr % PAGE + beats * self.B <= PAGE, f"{where}: crosses a 4 KiB boundary"

    def monitor_axi(self):
        a = self.axi
        if a["arvalid"].value and a["arready"].value:
            length = a["arlen"].value.to_unsigned()
            self.check_burst("AR", a["araddr"].value.to_unsigned(), length,
                             a["arsize"].value.to_unsigned(), a["arburst"].value.to_unsigned())
            self.ar_accepted.append((self.cycle, length + 1))
            self.ar_addresses.append(a["araddr"].value.to_unsigned())
            self.reads_outstanding += 1
            self.max_reads_outstanding = max(self.max_reads_outstanding, self.reads_outstanding)
        if a["rvalid"].value and a["rready"].value:
            self.responses[a["rresp"].value.to_unsigned()] += 1
            if a["rlast"].value:
                self.reads_outstanding -= 1
        if a["awvalid"].value and a["awready"].value:
            self.check_burst("AW", a["awaddr"].value.to_unsigned(), a["awlen"].value.to_unsigned(),
                             a["awsize"].value.to_unsigned(), a["awburst"].value.to_unsigned())
            self.writes_outstanding += 1
            self.max_writes_outstanding = max(self.max_writes_outstanding,
                                              self.writes_outstanding)
        written = 0
        if a["wvalid"].value and a["wready"].value:
            written = a["wstrb"].value.to_unsigned().bit_count()
            self.w_cycles.append(self.cycle)
        self.written_bytes += written
        assert self.dut.written_bytes.value.to_unsigned() == written, "written_bytes"
        if a["bvalid"].value and a["bready"].value:
            self.responses[a["bresp"].value.to_unsigned()] += 1
            self.writes_outstanding -= 1

    # Traffic ---------------------------------------------------------------------------------

    def random_span(self, *, low: int = 0, high: int = DRAM_SIZE, max_length: int = 3000) -> Span:
        """A span inside [low, high) of DRAM (at random high address bits): short, medium or
        long (more than 256 beats), often placed across a 4 KiB boundary."""
        rng = self.rng
        kind = rng.random()
        if kind < 0.35:
            length = int(rng.integers(1, 3 * self.B))
        elif kind < 0.85:
            length = int(rng.integers(1, max_length + 1))
        else:
            length = int(rng.integers(MAX_BEATS * self.B - 2 * self.B,
                                      MAX_BEATS * self.B + 4 * max(self.B, 64)))
        length = min(length, high - low)
        if rng.random() < 0.3 and high - low > PAGE:  # across (or ending at) a page boundary
            boundaries = list(range((low // PAGE + 1) * PAGE, high, PAGE))
            boundary = int(rng.choice(boundaries))
            start = boundary - int(rng.integers(1, min(length, 2 * self.B) + 1))
            start = max(low, min(start, high - length))
        else:
            start = int(rng.integers(low, high - length + 1))
        region = int(rng.integers(0, 1 << (self.config.axi_addr_width - DRAM_BITS)))
        return Span(addr=region << DRAM_BITS | start, length=length)

    def expected_chunks(self, span: Span) -> list[tuple[bytes, int, int, int]]:
        start = span.addr % DRAM_SIZE
        B = self.B
        chunks = []
        for k in range(0, span.length, B):
            end = min(span.length, k + B)
            data = bytes(self.model[start + k:start + end])
            beats = range((start + k) // B, (start + end - 1) // B + 1)
            error = int(any(beat in self.bad_beats for beat in beats))
            chunks.append((data, end - k, int(end == span.length), error))
        return chunks

    def check_reader(self, reader: ReaderPort, *, complete: bool = True) -> int:
        """The chunks received are the accepted spans' chunks, in order; with ``complete``
        false the last span may be cut short (a flush). Returns the spans checked."""
        got = reader.chunks
        position = 0
        spans = [s for s in reader.accepted if not s.dropped]
        for index, span in enumerate(spans):
            expected = self.expected_chunks(span)
            part = got[position:position + len(expected)]
            for k, (g, e) in enumerate(zip(part, expected, strict=False)):
                if e[3]:  # the data of a chunk with error is meaningless
                    g, e = g[1:], e[1:]
                assert g == e, (f"{reader.name} span {index} ({span.addr:#x}, {span.length}) "
                                f"chunk {k}: got {g}, expected {e}")
            position += len(part)
            if len(part) < len(expected):
                assert not complete, f"{reader.name} span {index}: {len(part)} of " \
                                     f"{len(expected)} chunks"
                break
        assert position == len(got), f"{reader.name}: {len(got) - position} chunks too many"
        return len(spans)

    def write_span(self, span: Span):
        span.data = self.rng.bytes(span.length)
        self.writer.send(span)

    def apply_write(self, span: Span):
        """The model after ``span`` (bad beats are not written)."""
        start = span.addr % DRAM_SIZE
        new = np.frombuffer(span.data, np.uint8)
        keep = np.array([(start + i) // self.B in self.bad_beats for i in range(span.length)],
                        bool)
        region = self.model[start:start + span.length]
        region[~keep] = new[~keep]

    def expected_done(self, span: Span) -> int:
        start = span.addr % DRAM_SIZE
        beats = range(start // self.B, (start + span.length - 1) // self.B + 1)
        return int(any(beat in self.bad_beats for beat in beats))

    def check_dram(self):
        np.testing.assert_array_equal(np.frombuffer(bytes(self.mem), np.uint8), self.model)

    async def wait_until(self, condition, *, cycles: int, what: str):
        for _ in range(cycles):
            if condition():
                return
            await RisingEdge(self.dut.clk)
        raise AssertionError(f"timeout after {cycles} cycles waiting for {what}")

    def all_idle(self) -> bool:
        return bool(self.readers[0].idle.value and self.readers[1].idle.value
                    and self.writer.idle.value)

    async def drain(self, *, cycles: int):
        """Wait until every queued span has been answered and every engine is idle."""
        def finished():
            readers = all(not r.pending and r.offering is None and
                          sum(c[2] for c in r.chunks) == sum(not s.dropped for s in r.accepted)
                          for r in self.readers)
            w = self.writer
            writer = (not w.pending and w.offering is None and
                      len(w.done) == sum(not s.dropped for s in w.accepted))
            return readers and writer and self.all_idle()
        await self.wait_until(finished, cycles=cycles, what="the traffic to finish")


async def _start(dut, **kwargs) -> TB:
    tb = TB(dut, **kwargs)
    await tb.start()
    return tb


def _budget(tb: TB, spans) -> int:
    """Generous cycle budget for a list of spans."""
    return 2000 + sum(8 * (s.length // tb.B + 4) for s in spans)


@cocotb.test()
async def reader_returns_random_spans_realigned(dut):
    """Random spans (1 to 3000+ bytes, any alignment, across 4 KiB pages, longer than 256
    beats) read with random pauses on AR and R and on both user streams."""
    tb = await _start(dut, pause=0.3, user_idle=0.3)
    reader = tb.readers[0]
    spans = [tb.random_span() for _ in range(100)]
    reader.pending.extend(spans)
    await tb.drain(cycles=_budget(tb, spans))
    assert tb.check_reader(reader) == len(spans)
    assert sum(c[1] for c in reader.chunks) == sum(s.length for s in spans)
    assert tb.reads_outstanding == 0


@cocotb.test()
async def writer_writes_random_spans_and_nothing_else(dut):
    """Random (possibly overlapping) spans written with random pauses on AW, W and B and on the
    user streams; DRAM equals the model byte for byte (bytes outside the spans untouched)."""
    tb = await _start(dut, pause=0.3, user_idle=0.3)
    spans = [tb.random_span() for _ in range(100)]
    for span in spans:
        tb.write_span(span)
    await tb.drain(cycles=_budget(tb, spans))
    for span in spans:
        tb.apply_write(span)
    tb.check_dram()
    assert tb.writer.done == [0] * len(spans)
    assert tb.written_bytes == sum(s.length for s in spans)
    assert tb.writer.chunks_sent == sum(-(-s.length // tb.B) for s in spans)


@cocotb.test()
async def boundary_spans_split_into_legal_bursts(dut):
    """Spans around 4 KiB boundaries and of exactly 256 beats +- 1, every offset in a beat:
    the monitor checks each burst; data read back equals what was written."""
    tb = await _start(dut, pause=0.1)
    B = tb.B
    spans = []
    for offset in range(B):
        for length in (1, B - offset, B, MAX_BEATS * B - 1, MAX_BEATS * B, MAX_BEATS * B + 1,
                       PAGE + 1):
            group = len(spans) % 3  # the writer and each reader in their own region
            start = (2 + 4 * group) * PAGE - (length // 2 if length > 2 * B else offset + 1)
            start = start - start % B + offset
            spans.append(Span(addr=0xFFFF_0000 % (1 << tb.config.axi_addr_width) + start,
                              length=length))
    for span in spans[::3]:
        tb.write_span(span)
    tb.readers[0].pending.extend(spans[1::3])
    tb.readers[1].pending.extend(spans[2::3])
    await tb.drain(cycles=_budget(tb, spans))
    for span in spans[::3]:
        tb.apply_write(span)
    tb.check_dram()
    tb.check_reader(tb.readers[0])
    tb.check_reader(tb.readers[1])


@cocotb.test()
async def axi_errors_mark_chunks_and_done(dut):
    """Beats answered SLVERR or DECERR mark exactly the chunks that hold their bytes, and the spans
    still end with last; a written span with a failing beat reports error in its done and
    the other spans none."""
    tb = await _start(dut, pause=0.2, user_idle=0.2)
    tb.bad_beats = {int(b) for b in tb.rng.choice(DRAM_SIZE // tb.B, DRAM_SIZE // tb.B // 200,
                                                  replace=False)}
    half = DRAM_SIZE // 2  # reads in the low half, writes in the high half
    reads = [tb.random_span(high=half, max_length=600) for _ in range(60)]
    writes = [tb.random_span(low=half, max_length=600) for _ in range(60)]
    tb.readers[0].pending.extend(reads)
    for span in writes:
        tb.write_span(span)
    await tb.drain(cycles=_budget(tb, reads + writes))
    tb.check_reader(tb.readers[0])
    errors = sum(c[3] for c in tb.readers[0].chunks)
    assert errors > 0, "no chunk met a bad beat; the test proves nothing"
    for span in writes:
        tb.apply_write(span)
    tb.check_dram()
    expected = [tb.expected_done(s) for s in writes]
    assert tb.writer.done == expected
    assert 0 < sum(expected) < len(writes), expected
    assert tb.responses[AxiResp.SLVERR] and tb.responses[AxiResp.DECERR], tb.responses


@cocotb.test()
async def arbiter_serves_two_readers_at_once(dut):
    """Both readers read random spans at the same time through the arbiter (random pauses
    everywhere); each gets exactly its own data, and their chunks interleave in time."""
    tb = await _start(dut, pause=0.2, user_idle=0.2)
    spans = [[tb.random_span() for _ in range(60)] for _ in tb.readers]
    for reader, own in zip(tb.readers, spans, strict=True):
        reader.pending.extend(own)
    await tb.drain(cycles=_budget(tb, spans[0] + spans[1]))
    for reader, own in zip(tb.readers, spans, strict=True):
        assert tb.check_reader(reader) == len(own)
    first = [r.chunk_cycles for r in tb.readers]
    overlap = min(first[0][-1], first[1][-1]) - max(first[0][0], first[1][0])
    assert overlap > 0.5 * min(f[-1] - f[0] for f in first), "the readers did not overlap"


@cocotb.test()
async def arbiter_alternates_between_busy_readers(dut):
    """Both readers always have a one-chunk span to send and DRAM answers after 4 cycles:
    the arbiter grants them in turn (round robin), and together they get about one chunk per
    cycle."""
    tb = await _start(dut, latency=4, address_queue=64)
    half = DRAM_SIZE // 2
    B = tb.B
    for index, reader in enumerate(tb.readers):
        reader.pending.extend(Span(addr=index * half + int(tb.rng.integers(0, half // B)) * B,
                                   length=B) for _ in range(150))
    await tb.drain(cycles=3000)
    for reader in tb.readers:
        assert tb.check_reader(reader) == 150
    clients = [address % DRAM_SIZE >= half for address in tb.ar_addresses]
    assert len(clients) == 300
    middle = clients[10:-10]
    switches = sum(a != b for a, b in zip(middle, middle[1:], strict=False))
    assert switches >= 0.95 * (len(middle) - 1), f"{switches} switches in {len(middle)} ARs"
    cycles = max(r.chunk_cycles[-1] for r in tb.readers) - min(r.chunk_cycles[0]
                                                               for r in tb.readers) + 1
    rate = 300 / cycles
    dut._log.info("throughput: two readers, one-chunk spans, latency 4: %.3g chunks/cycle", rate)
    assert rate > 0.9


@cocotb.test()
async def flush_in_the_middle_of_traffic_then_normal_traffic(dut):
    """Readers and the writer busy (readers in the low half of DRAM, the writer in the high
    half); flush at a random cycle, held until every engine is idle: no chunk and no done while
    flushing, chunks before it correct, flushed writes leave each byte old or new and the rest
    of DRAM untouched; then normal traffic is exact."""
    tb = await _start(dut, pause=0.2, user_idle=0.1)
    half = DRAM_SIZE // 2
    caught = {"reads": 0, "writes": 0, "dropped spans": 0}
    for trial in range(6):
        write_spans = []
        next_free = half + int(tb.rng.integers(0, 64))
        while len(write_spans) < 12:
            length = int(tb.rng.integers(1, 1500))
            if next_free + length > DRAM_SIZE:
                break
            write_spans.append(Span(addr=next_free, length=length))
            next_free += length + int(tb.rng.integers(0, 40))
        for span in write_spans:
            tb.write_span(span)
        stalled = trial % 2 == 1
        if stalled:  # the user's data stops: the writer waits for chunks, readers for ready
            chunks = tb.writer.pending_chunks
            for _ in range(int(tb.rng.integers(1, len(chunks) // 2 + 2))):
                chunks.pop()
        for reader in tb.readers:
            reader.pending.extend(tb.random_span(high=half) for _ in range(12))
        for _ in range(int(tb.rng.integers(20, 1500))):
            await RisingEdge(dut.clk)
        if stalled:
            for reader in tb.readers:
                reader.chunk_stall = 1.0
            for _ in range(int(tb.rng.integers(0, 300))):
                await RisingEdge(dut.clk)
        await FallingEdge(dut.clk)
        dut.flush.value = 1
        tb.flushing = True
        caught["reads"] += tb.reads_outstanding
        caught["writes"] += tb.writes_outstanding
        await tb.wait_until(tb.all_idle, cycles=5000, what="idle during flush")
        for _ in range(int(tb.rng.integers(0, 10))):  # flush may stay high a little longer
            await RisingEdge(dut.clk)
        for port in (*tb.readers, tb.writer):
            port.pending.clear()
        tb.writer.pending_chunks.clear()
        await FallingEdge(dut.clk)
        for port in (*tb.readers, tb.writer):
            port.offering = None
            port.spans_valid.value = 0
        tb.writer.chunk = None
        tb.writer.chunks_valid.value = 0
        await FallingEdge(dut.clk)
        dut.flush.value = 0
        tb.flushing = False
        tb.set_user_idle(0.1)
        caught["dropped spans"] += sum(s.dropped for p in (*tb.readers, tb.writer)
                                       for s in p.accepted)
        assert tb.reads_outstanding == 0 and tb.writes_outstanding == 0
        # What happened before the flush.
        for reader in tb.readers:
            tb.check_reader(reader, complete=False)
        done = len(tb.writer.done)
        accepted = [s for s in tb.writer.accepted if not s.dropped]
        dram = np.frombuffer(bytes(tb.mem), np.uint8)
        for index, span in enumerate(write_spans):
            start = span.addr % DRAM_SIZE
            new = np.frombuffer(span.data, np.uint8)
            if index < done:
                tb.apply_write(span)
            else:
                got = dram[start:start + span.length]
                old = tb.model[start:start + span.length]
                assert np.all((got == old) | (got == new)), f"flushed span {index}"
                assert index < len(accepted) or np.array_equal(got, old), \
                    f"span {index} never accepted but written"
                tb.model[start:start + span.length] = got
        assert tb.writer.done == [0] * done
        tb.check_dram()
        for port in (*tb.readers, tb.writer):
            port.clear()
        # Normal traffic after the flush.
        after = [tb.random_span(high=half) for _ in range(6)]
        tb.readers[trial % 2].pending.extend(after)
        writes = [tb.random_span(low=half) for _ in range(6)]
        for span in writes:
            tb.write_span(span)
        await tb.drain(cycles=_budget(tb, after + writes))
        tb.check_reader(tb.readers[trial % 2])
        for span in writes:
            tb.apply_write(span)
        tb.check_dram()
        assert tb.writer.done == [0] * len(writes)
        for port in (*tb.readers, tb.writer):
            port.clear()
    dut._log.info("flushes caught %s", caught)
    assert all(caught.values()), f"the flushes caught too little traffic: {caught}"


@cocotb.test()
async def throughput(dut):
    """No pauses anywhere: a long read streams at one chunk per cycle (aligned or not), short
    one-chunk reads back to back go at one per cycle with a 12-cycle DRAM latency (several
    bursts outstanding), and a long write streams one beat per cycle."""
    tb = await _start(dut, latency=12, address_queue=64)
    B = tb.B
    reader = tb.readers[0]
    results = {}
    for offset in (0, 3):
        span = Span(addr=PAGE * 3 + offset, length=48 * B * 16)
        reader.clear()
        reader.pending.append(span)
        await tb.drain(cycles=_budget(tb, [span]))
        tb.check_reader(reader)
        cycles = reader.chunk_cycles[-1] - reader.chunk_cycles[0] + 1
        results[f"long read, offset {offset}"] = len(reader.chunks) / cycles
    for latency in (0, 12):
        tb.latency = latency
        reader.clear()
        tb.max_reads_outstanding = 0
        spans = []
        for _ in range(200):
            start = int(tb.rng.integers(0, DRAM_SIZE // B)) * B
            offset = int(tb.rng.integers(0, B))
            spans.append(Span(addr=start + offset, length=int(tb.rng.integers(1, B - offset + 1))))
        reader.pending.extend(spans)
        await tb.drain(cycles=_budget(tb, spans))
        tb.check_reader(reader)
        cycles = reader.chunk_cycles[-1] - spans[0].cycle + 1
        results[f"one-chunk reads, latency {latency}"] = len(spans) / cycles
        results[f"bursts outstanding, latency {latency}"] = tb.max_reads_outstanding
    tb.latency = 0
    span = Span(addr=PAGE * 9 + 5, length=48 * B * 16)
    tb.write_span(span)
    tb.w_cycles = []
    await tb.drain(cycles=_budget(tb, [span]))
    tb.apply_write(span)
    tb.check_dram()
    results["long write"] = len(tb.w_cycles) / (tb.w_cycles[-1] - tb.w_cycles[0] + 1)
    tb.writer.clear()
    spans = [Span(addr=int(tb.rng.integers(0, DRAM_SIZE // B)) * B, length=B) for _ in range(100)]
    for s in spans:
        tb.write_span(s)
    tb.max_writes_outstanding = 0
    await tb.drain(cycles=_budget(tb, spans))
    results["one-beat writes (done per cycle)"] = len(spans) / (tb.writer.done_cycles[-1]
                                                                - spans[0].cycle + 1)
    results["write bursts outstanding"] = tb.max_writes_outstanding
    for name, value in results.items():
        dut._log.info("throughput: %s: %.3g", name, value)
    assert results["long read, offset 0"] > 0.95 and results["long read, offset 3"] > 0.95
    assert results["one-chunk reads, latency 12"] > 0.8, results
    assert results["bursts outstanding, latency 12"] >= 8, results
    assert results["long write"] > 0.9, results
