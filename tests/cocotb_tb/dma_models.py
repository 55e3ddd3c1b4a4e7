"""Python models of the DMA engines' user side (rtl/dma_layouts.py) and of SRAM ports, and the
testbench base class of the load and store units.

Every model works in two phases per clock cycle, called by the testbench's one per-cycle loop:
``drive()`` just after the falling edge (sets the DUT's inputs for the cycle) and ``sample()``
once they have settled (records the handshakes of the cycle, which complete at the next rising
edge). DRAM is a numpy ``uint8`` array shared with the testbench.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, Timer
from tb_common import ClockedTB, pack, unpack_signed

from golden.isa import HEADER, ErrorCode, Instruction, Memory, Opcode, encode, encode_program
from golden.machine import Machine
from rtl.dma_layouts import read_chunk_layout, span_layout

HEADER_BITS = sum(field.width for field in HEADER)
DRAM_SIZE = 1 << 16
#: The golden machine's two-instruction program lives here; random instructions stay below.
PROGRAM_ADDR = DRAM_SIZE - 256


def _fields(layout) -> dict[str, tuple[int, int]]:
    return {name: (field.offset, field.width) for name, field in layout}


def _get(word: int, field: tuple[int, int]) -> int:
    offset, width = field
    return word >> offset & ((1 << width) - 1)


@dataclass
class Span:
    addr: int
    length: int
    due: int                    # first cycle its chunks (reads) or its span_done (writes) may go
    error_chunk: int | None = None
    sent: int = 0               # chunks sent (reads) or received (writes)
    error: bool = False
    data: bytearray | None = None


class DmaReaderModel:
    """Serves ``spans``/``chunks`` of a unit from ``dram``: chunk k of a span holds span bytes
    k * B .. in its low bytes (random garbage above ``count``), ``last`` on the final one, in
    span order. Random backpressure on spans (and at most ``capacity`` spans outstanding),
    random latency before a span's first chunk, random idle cycles between chunks. A chunk with a
    byte past the end of DRAM, or the chosen chunk of a span marked by :meth:`fail_span`, carries
    ``error``. An offered chunk stays offered until taken."""

    def __init__(self, dut, *, config, dram: np.ndarray, rng, span_stall=0.3, chunk_idle=0.3,
                 latency=(1, 12), capacity=(1, 8)):
        self.dut, self.dram, self.rng = dut, dram, rng
        self.bus_bytes = config.axi_data_bytes
        self.span_fields = _fields(span_layout(config))
        self.chunk_fields = _fields(read_chunk_layout(config))
        self.span_stall, self.chunk_idle = span_stall, chunk_idle
        self.latency, self.capacity = latency, capacity
        self.queue: deque[Span] = deque()
        self.offered = False
        self.span_ready = False
        self.spans_taken = 0          # since the last reset_counts()
        self.failures: dict[int, int | None] = {}   # span number -> chunk (None: random)
        self.max_outstanding = 1
        dut.spans__ready.value = 0
        dut.chunks__valid.value = 0

    def reset_counts(self):
        self.spans_taken = 0
        self.failures = {}
        self.max_outstanding = int(self.rng.integers(self.capacity[0], self.capacity[1] + 1))

    def fail_span(self, number: int, chunk: int | None = None):
        """Mark a chunk (random if None) of the ``number``-th span taken from now on with error."""
        self.failures[number] = chunk

    def flush(self):
        self.queue.clear()
        self.offered = False
        self.dut.chunks__valid.value = 0

    def drive(self, cycle: int):
        dut, rng = self.dut, self.rng
        self.span_ready = len(self.queue) < self.max_outstanding and rng.random() >= self.span_stall
        dut.spans__ready.value = int(self.span_ready)
        if not self.offered and self.queue and self.queue[0].due <= cycle \
                and rng.random() >= self.chunk_idle:
            span = self.queue[0]
            b = self.bus_bytes
            start = span.addr + span.sent * b
            count = min(b, span.length - span.sent * b)
            data = bytearray(rng.integers(0, 256, b, dtype=np.uint8).tobytes())  # garbage above
            end = min(start + count, self.dram.size)
            data[:max(0, end - start)] = self.dram[start:end].tobytes()
            error = start + count > self.dram.size or span.error_chunk == span.sent
            last = (span.sent + 1) * b >= span.length
            word = int.from_bytes(bytes(data), "little")
            word |= count << self.chunk_fields["count"][0]
            word |= int(last) << self.chunk_fields["last"][0]
            word |= int(error) << self.chunk_fields["error"][0]
            dut.chunks__payload.value = word
            self.offered = True
        dut.chunks__valid.value = int(self.offered)

    def sample(self, cycle: int):
        dut, rng = self.dut, self.rng
        if self.offered and dut.chunks__ready.value:
            self.offered = False
            span = self.queue[0]
            span.sent += 1
            if span.sent * self.bus_bytes >= span.length:
                self.queue.popleft()
        if self.span_ready and dut.spans__valid.value:
            word = dut.spans__payload.value.to_unsigned()
            addr, length = _get(word, self.span_fields["addr"]), _get(word, self.span_fields["length"])
            assert length >= 1, f"span of length 0 at {addr:#x}"
            chunks = -(-length // self.bus_bytes)
            error_chunk = None
            if self.spans_taken in self.failures:
                error_chunk = self.failures[self.spans_taken]
                if error_chunk is None:
                    error_chunk = int(rng.integers(0, chunks))
                error_chunk = min(error_chunk, chunks - 1)
            previous = self.queue[-1].due if self.queue else cycle
            due = max(previous, cycle + int(rng.integers(self.latency[0], self.latency[1] + 1)))
            self.queue.append(Span(addr, length, due, error_chunk))
            self.spans_taken += 1

    @property
    def busy(self) -> bool:
        return bool(self.queue)


class DmaWriterModel:
    """Takes ``spans``, then exactly ceil(length / B) ``chunks`` per span in order (chunk k holds
    span bytes k * B .. in its low bytes), writes each span's bytes into ``dram`` once all its
    chunks are in (bytes past the end of DRAM are dropped and flag an error), and answers
    ``span_done`` after a random latency, in order. A span marked by :meth:`fail_span` answers
    with error. Random backpressure on spans (at most ``capacity`` outstanding) and chunks."""

    def __init__(self, dut, *, config, dram: np.ndarray, rng, span_stall=0.3, chunk_stall=0.3,
                 latency=(1, 12), capacity=(1, 8)):
        self.dut, self.dram, self.rng = dut, dram, rng
        self.bus_bytes = config.axi_data_bytes
        self.span_fields = _fields(span_layout(config))
        self.span_stall, self.chunk_stall = span_stall, chunk_stall
        self.latency, self.capacity = latency, capacity
        self.receiving: deque[Span] = deque()    # spans taken, chunks still to come
        self.answering: deque[Span] = deque()    # written, span_done still to give
        self.span_ready = self.chunk_ready = self.done_offered = False
        self.spans_taken = 0
        self.failures: set[int] = set()
        self.max_outstanding = 1
        dut.spans__ready.value = 0
        dut.chunks__ready.value = 0
        dut.span_done__valid.value = 0

    def reset_counts(self):
        self.spans_taken = 0
        self.failures = set()
        self.max_outstanding = int(self.rng.integers(self.capacity[0], self.capacity[1] + 1))

    def fail_span(self, number: int):
        self.failures.add(number)

    def flush(self):
        self.receiving.clear()
        self.answering.clear()
        self.done_offered = False
        self.dut.span_done__valid.value = 0

    def drive(self, cycle: int):
        dut, rng = self.dut, self.rng
        outstanding = len(self.receiving) + len(self.answering)
        self.span_ready = outstanding < self.max_outstanding and rng.random() >= self.span_stall
        dut.spans__ready.value = int(self.span_ready)
        self.chunk_ready = bool(self.receiving) and rng.random() >= self.chunk_stall
        dut.chunks__ready.value = int(self.chunk_ready)
        if not self.done_offered and self.answering and self.answering[0].due <= cycle:
            dut.span_done__payload.value = int(self.answering[0].error)
            self.done_offered = True
        dut.span_done__valid.value = int(self.done_offered)

    def sample(self, cycle: int):
        dut, rng, b = self.dut, self.rng, self.bus_bytes
        if self.done_offered and dut.span_done__ready.value:
            self.done_offered = False
            self.answering.popleft()
        if self.chunk_ready and dut.chunks__valid.value:
            span = self.receiving[0]
            word = dut.chunks__payload.value.to_unsigned()
            count = min(b, span.length - span.sent * b)
            span.data += word.to_bytes(b, "little")[:count]
            span.sent += 1
            if len(span.data) == span.length:
                self.receiving.popleft()
                end = min(span.addr + span.length, self.dram.size)
                if end > span.addr:
                    self.dram[span.addr:end] = np.frombuffer(bytes(span.data[:end - span.addr]),
                                                             np.uint8)
                span.error = span.error or span.addr + span.length > self.dram.size
                previous = self.answering[-1].due if self.answering else cycle
                span.due = max(previous,
                               cycle + int(rng.integers(self.latency[0], self.latency[1] + 1)))
                self.answering.append(span)
        if self.span_ready and dut.spans__valid.value:
            word = dut.spans__payload.value.to_unsigned()
            addr, length = _get(word, self.span_fields["addr"]), _get(word, self.span_fields["length"])
            assert length >= 1, f"span of length 0 at {addr:#x}"
            self.receiving.append(Span(addr, length, 0, error=self.spans_taken in self.failures,
                                       data=bytearray()))
            self.spans_taken += 1

    @property
    def busy(self) -> bool:
        return bool(self.receiving or self.answering)


class WritePortModel:
    """An SRAM write port into ``memory`` (rows x lanes), ``ready`` low with probability
    ``stall``; whole-row writes honour the lane mask."""

    def __init__(self, dut, prefix: str, memory: np.ndarray, rng, *, stall=0.3):
        self.dut, self.prefix, self.memory, self.rng, self.stall = dut, prefix, memory, rng, stall
        self.width = 8 * memory.dtype.itemsize
        self.ready = False
        self.writes = 0
        self.handle = {name: getattr(dut, f"{prefix}__{name}")
                       for name in ("ready", "en", "addr", "data", "lanes")}
        self.handle["ready"].value = 0

    def drive(self, cycle: int):
        self.ready = self.rng.random() >= self.stall
        self.handle["ready"].value = int(self.ready)

    def sample(self, cycle: int):
        h = self.handle
        if self.ready and h["en"].value:
            addr = h["addr"].value.to_unsigned()
            lanes = h["lanes"].value.to_unsigned()
            lanes_count = self.memory.shape[1]
            values = unpack_signed(h["data"].value.to_unsigned(), self.width, lanes_count)
            row = self.memory[addr]
            for lane in range(lanes_count):
                if lanes >> lane & 1:
                    row[lane] = values[lane]
            self.writes += 1


class ReadPortModel:
    """A plain synchronous SRAM read port of ``memory``: ``data`` is the row read in the previous
    cycle with ``en``, and holds while ``en`` is low."""

    def __init__(self, dut, prefix: str, memory: np.ndarray):
        self.memory = memory
        self.width = 8 * memory.dtype.itemsize
        self.handle = {name: getattr(dut, f"{prefix}__{name}") for name in ("en", "addr", "data")}
        self.pending = None
        self.reads = 0

    def drive(self, cycle: int):
        if self.pending is not None:
            self.handle["data"].value = pack(self.pending, self.width)
            self.pending = None

    def sample(self, cycle: int):
        if self.handle["en"].value:
            addr = self.handle["addr"].value.to_unsigned()
            self.pending = self.memory[addr].copy()
            self.reads += 1


class DmaUnitTB(ClockedTB):
    """Clock, reset, the memories (``spad``, ``acc``, ``dram`` numpy arrays shared with the
    models), the golden machine, the command/done handshakes and ``flush`` of a load or store
    unit. A subclass sets ``engine`` (the DMA model) and ``models`` (everything with
    ``drive``/``sample``), then calls :meth:`start`."""

    def __init__(self, dut, *, command_idle=0.3, done_stall=0.3):
        super().__init__(dut)
        cfg, rng = self.config, self.rng
        self.command_idle, self.done_stall = command_idle, done_stall
        self.spad = rng.integers(-128, 128, (cfg.scratchpad_depth, cfg.rows)).astype(np.int8)
        self.acc = rng.integers(-(1 << 31), 1 << 31, (cfg.accumulator_depth, cfg.cols),
                                dtype=np.int64).astype(np.int32)
        self.dram = rng.integers(0, 256, DRAM_SIZE, dtype=np.uint8)
        self.machine = Machine(cfg, dram_size=DRAM_SIZE)
        self.engine = None
        self.models = []
        self.cycle = 0
        self.flush_at: int | None = None
        dut.command__valid.value = 0
        dut.done__ready.value = 0
        dut.flush.value = 0

    async def start(self):
        await super().start()
        cocotb.start_soon(self.environment())

    async def environment(self):
        """The DMA engine and the memories, one cycle at a time."""
        while True:
            await FallingEdge(self.dut.clk)
            self.cycle += 1
            flushing = self.cycle == self.flush_at
            self.dut.flush.value = int(flushing)
            for model in self.models:
                model.drive(self.cycle)
            await Timer(1, unit="ns")
            for model in self.models:
                model.sample(self.cycle)
            if flushing:  # the top level flushes the DMA engines with the unit
                self.engine.flush()

    async def execute(self, instruction: Instruction, *, flush_after: int | None = None,
                      fail_span: int | None = None) -> ErrorCode | None:
        """Send one command and wait for its ``done``: the error code it reports. ``fail_span``:
        the engine fails that span (counted from 0 for this instruction). With ``flush_after``,
        flush that many cycles after the command is taken and return None once the unit is idle
        again (no ``done`` may come after the flush; one may come before)."""
        dut = self.dut
        payload = encode(instruction) >> HEADER_BITS
        self.engine.reset_counts()
        if fail_span is not None:
            self.engine.fail_span(fail_span)
        while self.rng.random() < self.command_idle:
            await FallingEdge(dut.clk)
        sent = False
        for _ in range(200_000):
            await FallingEdge(dut.clk)
            dut.command__valid.value = int(not sent)
            dut.command__payload.value = payload
            ready = self.rng.random() >= self.done_stall
            dut.done__ready.value = int(ready)
            await Timer(1, unit="ns")
            if not sent:
                if dut.command__ready.value:
                    sent = True
                    if flush_after is not None:
                        self.flush_at = self.cycle + 1 + flush_after
                continue
            if self.flush_at is not None and self.cycle >= self.flush_at:
                assert not dut.done__valid.value, "done during or after a flush"
                if self.cycle > self.flush_at and dut.idle.value:
                    self.flush_at = None
                    dut.done__ready.value = 0
                    return None
            elif ready and dut.done__valid.value:
                self.flush_at = None
                await FallingEdge(dut.clk)
                dut.command__valid.value = 0
                dut.done__ready.value = 0
                assert not self.engine.busy, f"DMA traffic left over after done: {instruction}"
                return ErrorCode(dut.done__payload.value.to_unsigned())
        raise AssertionError(f"no done for {instruction}")

    def golden(self, instruction: Instruction):
        """Run ``instruction`` on the golden machine from the testbench's memories."""
        machine = self.machine
        machine.scratchpad[:] = self.spad
        machine.accumulator[:] = self.acc
        program = encode_program([instruction, Instruction(Opcode.FINISH)],
                                 instruction_bytes=self.config.instruction_bytes)
        self.dram[PROGRAM_ADDR:PROGRAM_ADDR + len(program)] = np.frombuffer(program, np.uint8)
        machine.dram[:] = self.dram
        return machine.run(program_address=PROGRAM_ADDR, instruction_count=2)

    # Random fields --------------------------------------------------------------------------------

    def memory_shape(self, mem: int) -> tuple[int, int, int]:
        """(row width in lanes, bytes per lane, depth) of a memory."""
        cfg = self.config
        if mem == Memory.ACCUMULATOR:
            return cfg.cols, 4, cfg.accumulator_depth
        return cfg.rows, 1, cfg.scratchpad_depth

    def random_layout(self, *, mem: int, rows: int, cols: int) -> dict:
        """``elem_len`` and DRAM strides: full rows, sizes that divide the bus width or are
        multiples of it, any size; contiguous rows, broadcasts, overlaps and gaps."""
        rng = self.rng
        width, itemsize, _ = self.memory_shape(mem)
        bus = self.config.axi_data_bytes
        choice = rng.random()
        if choice < 0.3:
            elem_len = width
        elif choice < 0.6:
            sizes = [n for n in range(1, width + 1)
                     if bus % (n * itemsize) == 0 or (n * itemsize) % bus == 0]
            elem_len = int(rng.choice(sizes))
        else:
            elem_len = int(rng.integers(1, width + 1))
        e = elem_len * itemsize
        kind = rng.random()
        if kind < 0.45:      # contiguous DRAM rows (row spans when the size allows)
            elem_stride = e
            row_stride = cols * e + int(rng.choice([0, 0, rng.integers(1, 2 * e + 1)]))
        elif kind < 0.6:     # broadcast
            elem_stride = int(rng.choice([0, e]))
            row_stride = 0 if elem_stride else int(rng.integers(0, 4 * e))
        elif kind < 0.75:    # overlapping elements
            elem_stride = int(rng.integers(0, e + 1))
            row_stride = int(rng.integers(0, cols * e + 1))
        else:                # gaps
            elem_stride = int(rng.integers(e, 3 * e + 2))
            row_stride = int(rng.integers(0, cols * elem_stride + 2 * e))
        return dict(elem_len=elem_len, dram_row_stride=row_stride, dram_elem_stride=elem_stride)

    def random_dram_addr(self, instruction: Instruction) -> int:
        """A DRAM address for which the instruction's bytes lie below the program."""
        return int(self.rng.integers(0, PROGRAM_ADDR - dram_end(instruction.replace(dram_addr=0)) + 1))


def span_plan(ins: Instruction, bus_bytes: int) -> str:
    """Which span plan the units use (rtl/span_walker.py): "packed rows" (row spans, several
    elements per chunk), "wide rows" (row spans, whole chunks per element) or "elements"."""
    e = ins.elem_len * (4 if ins.mem == Memory.ACCUMULATOR else 1)
    if ins.dram_elem_stride == e and (bus_bytes % e == 0 or e % bus_bytes == 0):
        return "packed rows" if e < bus_bytes else "wide rows"
    return "elements"


def dram_end(ins: Instruction) -> int:
    """One past the last DRAM byte of a LOAD or STORE."""
    itemsize = 4 if ins.mem == Memory.ACCUMULATOR else 1
    return (ins.dram_addr + (ins.rows - 1) * ins.dram_row_stride
            + (ins.cols - 1) * ins.dram_elem_stride + ins.elem_len * itemsize)


def dram_bytes(ins: Instruction) -> np.ndarray:
    """Every DRAM byte address of a LOAD or STORE (as golden.machine computes them)."""
    itemsize = 4 if ins.mem == Memory.ACCUMULATOR else 1
    y = np.arange(ins.rows, dtype=np.int64)[:, None, None] * ins.dram_row_stride
    x = np.arange(ins.cols, dtype=np.int64)[None, :, None] * ins.dram_elem_stride
    b = np.arange(ins.elem_len * itemsize, dtype=np.int64)[None, None, :]
    return (ins.dram_addr + y + x + b).reshape(-1)
