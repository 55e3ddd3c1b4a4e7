"""cocotb testbench of rtl.control_registers.ControlRegisters against golden.registers, with
cocotbext-axi's AxiLiteMaster as the host (random pauses on all five channels, so write address
and data arrive in any order and responses see backpressure) and a model of the rest of the NPU
that answers START with a run of random length, random counter events every cycle (counted only
while busy) and a chosen error code and index when the run ends."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import cocotb
from cocotb.triggers import FallingEdge, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiResp
from tb_common import ClockedTB

from golden import registers as regmap
from golden.isa import ErrorCode
from rtl.control_registers import events_layout

REG = {reg.name: reg for reg in regmap.REGISTERS}
START = 1 << regmap.field("CTRL", "START").lsb
IRQ_ENABLE = 1 << regmap.field("CTRL", "IRQ_ENABLE").lsb
CLEAR = 1 << regmap.field("CTRL", "CLEAR").lsb


def status_fields(value: int) -> dict:
    return {f.name: (value & f.mask) >> f.lsb for f in REG["STATUS"].fields}


@dataclass
class Run:
    """What the modelled NPU does after the next START."""

    cycles: int
    error: int = 0
    error_index: int = 0


class TB(ClockedTB):
    def __init__(self, dut, *, pause: float = 0.3):
        super().__init__(dut)
        self.layout = events_layout(self.config)
        self.increments = {c.event: c.max_increment(self.config)
                           for c in regmap.COUNTERS if c.event is not None}
        for name in ("busy", "finished", "error", "error_index", "events"):
            getattr(dut, name).value = 0
        self.host = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "bus", bus_separator="__"),
                                  dut.clk, dut.rst)
        for interface in (self.host.write_if, self.host.read_if):
            interface.log.setLevel(logging.WARNING)
        if pause:
            for channel in (self.host.write_if.aw_channel, self.host.write_if.w_channel,
                            self.host.write_if.b_channel, self.host.read_if.ar_channel,
                            self.host.read_if.r_channel):
                channel.set_pause_generator(self.pauses(pause))
        # The modelled NPU.
        self.cycle = 0
        self.plan: Run | None = None
        self.remaining = 0
        self.starts: list[int] = []            # cycles with start high
        self.start_outputs: list[dict] = []    # program_addr/length/watchdog at each start
        self.runs_finished = 0
        self.expected = {c.name: 0 for c in regmap.COUNTERS}   # including the next edge's events
        self.committed = dict(self.expected)                   # what the counters hold now
        self.deposit: dict[str, int] = {}

    def pauses(self, probability: float):
        rng = self.rng
        return (bool(rng.random() < probability) for _ in itertools.count())

    async def start(self):
        await super().start()
        cocotb.start_soon(self.model())

    async def model(self):
        """Every cycle: watch ``start``, drive busy/finished/error/events, keep the expected
        counter values (events are counted at the rising edge after they are driven)."""
        dut = self.dut
        rng = self.rng
        while True:
            await FallingEdge(dut.clk)
            self.cycle += 1
            self.committed = dict(self.expected)
            if dut.start.value:
                assert not self.starts or self.starts[-1] != self.cycle - 1, \
                    "start is high for more than one cycle"
                self.starts.append(self.cycle)
                self.start_outputs.append({name: getattr(dut, name).value.to_unsigned() for name
                                           in ("program_addr", "program_length",
                                               "watchdog_cycles")})
                assert self.plan is not None, "START accepted with no run planned"
                assert self.remaining == 0, "START accepted while busy"
                self.remaining = self.plan.cycles
                self.expected = {name: 0 for name in self.expected}
                self.committed = dict(self.expected)
            for name, value in self.deposit.items():  # force a counter to a chosen value
                getattr(dut, f"count_{name.lower()}").value = value
                self.expected[name] = self.committed[name] = value
            self.deposit = {}
            busy = self.remaining > 0
            finished = self.remaining == 1
            events = {name: int(rng.integers(0, top + 1)) if rng.random() < 0.7 else 0
                      for name, top in self.increments.items()}
            word = 0
            for name, field in self.layout:
                word |= events[name] << field.offset
            dut.events.value = word
            dut.busy.value = int(busy)
            dut.finished.value = int(finished)
            dut.error.value = self.plan.error if finished else int(rng.integers(0, 6))
            dut.error_index.value = (self.plan.error_index if finished
                                     else int(rng.integers(0, 1 << 32)))
            if busy:
                self.remaining -= 1
                for counter in regmap.COUNTERS:
                    self.expected[counter.name] += events[counter.event] if counter.event else 1
                    self.expected[counter.name] %= 1 << 64
            if finished:
                self.runs_finished += 1
                self.plan = None

    # Host side -------------------------------------------------------------------------------

    async def read(self, name: str) -> int:
        response = await self.host.read(REG[name].offset, 4)
        assert response.resp == AxiResp.OKAY, f"reading {name}: {response.resp!r}"
        return int.from_bytes(response.data, "little")

    async def write(self, name: str, value: int):
        response = await self.host.write(REG[name].offset, value.to_bytes(4, "little"))
        assert response.resp == AxiResp.OKAY, f"writing {name}: {response.resp!r}"

    async def read_counter(self, name: str) -> int:
        low = await self.read(f"{name}_LO")
        return await self.read(f"{name}_HI") << 32 | low

    async def run(self, plan: Run, *, ctrl: int = START):
        """START a run and wait until the modelled NPU has finished it."""
        self.plan = plan
        finished = self.runs_finished
        await self.write("CTRL", ctrl)
        while self.runs_finished == finished:
            await RisingEdge(self.dut.clk)
        await RisingEdge(self.dut.clk)


@cocotb.test()
async def test_registers_read_their_golden_values_after_reset(dut):
    """Every register reads its reset value from golden.registers (ID, VERSION, the
    configuration and its hash, WATCHDOG); unknown offsets answer SLVERR; read-only registers
    ignore writes."""
    tb = TB(dut)
    await tb.start()
    for reg in regmap.REGISTERS:
        assert await tb.read(reg.name) == regmap.reset_value(reg, tb.config), reg.name
    assert await tb.read("ID") == int.from_bytes(b"NPU1", "big")
    assert await tb.read("CONFIG_HASH") == regmap.config_hash(tb.config)
    assert await tb.read("ROWS") == tb.config.rows and await tb.read("COLS") == tb.config.cols
    used = {reg.offset for reg in regmap.REGISTERS}
    unused = [offset for offset in range(0, 1 << regmap.ADDR_WIDTH, 4) if offset not in used]
    for offset in [unused[0], unused[-1], *tb.rng.choice(unused, 8)]:
        response = await tb.host.read(int(offset), 4)
        assert response.resp == AxiResp.SLVERR and bytes(response.data) == bytes(4), hex(offset)
        response = await tb.host.write(int(offset), b"\xff" * 4)
        assert response.resp == AxiResp.SLVERR, hex(offset)
    for name in ("ID", "VERSION", "STATUS", "ROWS", "CYCLES_LO", "CYCLES_HI"):
        await tb.write(name, 0xFFFF_FFFF)
        assert await tb.read(name) == regmap.reset_value(REG[name], tb.config), name
    assert not tb.starts and not dut.irq.value


@cocotb.test()
async def test_writable_registers_read_back_and_reach_the_outputs_at_start(dut):
    """PROGRAM_ADDR, PROGRAM_LENGTH and WATCHDOG read back (whole words and byte strobes); the
    outputs take them at START and hold still while the next values are written."""
    tb = TB(dut)
    await tb.start()
    names = {"PROGRAM_ADDR": "program_addr", "PROGRAM_LENGTH": "program_length",
             "WATCHDOG": "watchdog_cycles"}
    model = {name: regmap.reset_value(REG[name], tb.config) for name in names}
    for _ in range(3):
        for name in names:
            value = int(tb.rng.integers(0, 1 << 32))
            await tb.write(name, value)
            model[name] = value
            byte = int(tb.rng.integers(0, 4))
            byte_value = int(tb.rng.integers(0, 256))
            response = await tb.host.write(REG[name].offset + byte, bytes([byte_value]))
            assert response.resp == AxiResp.OKAY
            model[name] = model[name] & ~(0xFF << 8 * byte) | byte_value << 8 * byte
        for name in names:
            assert await tb.read(name) == model[name], name
        before = {port: getattr(dut, port).value.to_unsigned() for port in names.values()}
        await tb.run(Run(cycles=int(tb.rng.integers(5, 40))))
        assert tb.start_outputs[-1] == {names[name]: model[name] for name in names}
        assert before != tb.start_outputs[-1]
    # Writes during a run change the registers, not the outputs of the run.
    tb.plan = Run(cycles=150)
    await tb.write("CTRL", START)
    for name in names:
        await tb.write(name, model[name] ^ 0xFFFF)
        assert await tb.read(name) == model[name] ^ 0xFFFF
    assert {port: getattr(dut, port).value.to_unsigned() for port in names.values()} == \
        tb.start_outputs[-1]


@cocotb.test()
async def test_start_is_one_pulse_and_ignored_while_busy(dut):
    """START gives one pulse; STATUS.BUSY follows busy; START while busy does nothing (no
    pulse, counters keep counting); START after the run's end starts again."""
    tb = TB(dut)
    await tb.start()
    tb.plan = Run(cycles=300)
    await tb.write("CTRL", START)
    assert len(tb.starts) == 1
    assert status_fields(await tb.read("STATUS"))["BUSY"] == 1
    for _ in range(3):
        await tb.write("CTRL", START)
    assert len(tb.starts) == 1, "START while busy gave a pulse"
    while tb.runs_finished == 0:
        await RisingEdge(dut.clk)
    await RisingEdge(dut.clk)
    fields = status_fields(await tb.read("STATUS"))
    assert fields["BUSY"] == 0 and fields["DONE"] == 1
    assert await tb.read_counter("CYCLES") == 300
    await tb.run(Run(cycles=20))
    assert len(tb.starts) == 2
    assert await tb.read_counter("CYCLES") == 20


@cocotb.test()
async def test_finished_sets_done_error_and_irq_and_clear_clears_them(dut):
    """A run's end sets DONE, the error code and ERROR_INDEX; irq follows IRQ_ENABLE and DONE;
    CLEAR and START clear them."""
    tb = TB(dut)
    await tb.start()
    for irq_enable in (0, IRQ_ENABLE, IRQ_ENABLE, 0):
        for error in ErrorCode:
            index = int(tb.rng.integers(0, 1 << 32))
            await tb.write("CTRL", irq_enable)
            assert await tb.read("CTRL") == irq_enable
            await tb.run(Run(cycles=int(tb.rng.integers(1, 20)), error=int(error),
                             error_index=index), ctrl=irq_enable | START)
            fields = status_fields(await tb.read("STATUS"))
            assert fields == {"BUSY": 0, "DONE": 1, "ERROR": int(error)}, fields
            assert await tb.read("ERROR_INDEX") == index
            assert dut.irq.value == int(bool(irq_enable))
            if tb.rng.random() < 0.5:
                await tb.write("CTRL", irq_enable | CLEAR)
                assert await tb.read("CTRL") == irq_enable  # pulse bits read 0
            else:  # START clears them too
                tb.plan = Run(cycles=200)
                await tb.write("CTRL", irq_enable | START)
                assert status_fields(await tb.read("STATUS"))["BUSY"] == 1
            fields = status_fields(await tb.read("STATUS"))
            assert fields["DONE"] == 0 and fields["ERROR"] == 0, fields
            assert await tb.read("ERROR_INDEX") == 0
            assert dut.irq.value == 0
            while tb.plan is not None:  # let a run started by START end
                await RisingEdge(dut.clk)
            await tb.write("CTRL", irq_enable | CLEAR)


@cocotb.test()
async def test_counters_count_random_events_exactly_and_reset_at_start(dut):
    """Every counter equals the sum of its events over the busy cycles (events outside runs
    do not count), and START resets them."""
    tb = TB(dut, pause=0.2)
    await tb.start()
    for _ in range(4):
        await tb.run(Run(cycles=int(tb.rng.integers(1, 400))))
        for _ in range(int(tb.rng.integers(0, 30))):  # events keep coming while idle
            await RisingEdge(dut.clk)
        for counter in regmap.COUNTERS:
            assert await tb.read_counter(counter.name) == tb.expected[counter.name], counter.name


@cocotb.test()
async def test_counter_words_are_consistent_across_a_carry(dut):
    """A LO-then-HI read is one 64-bit value of the running counter even when bit 32 carries
    between the two reads (counters forced just below a carry)."""
    tb = TB(dut, pause=0.3)
    await tb.start()
    tb.plan = Run(cycles=100_000)
    await tb.write("CTRL", START)
    straddled = 0
    names = ["MACS", "CYCLES", "DRAM_READ_BYTES"]
    for trial in range(24):
        name = names[trial % len(names)]
        top = max(1, next(c.max_increment(tb.config) for c in regmap.COUNTERS
                          if c.name == name))
        high = int(tb.rng.integers(0, 1 << 32)) if trial % 2 else (1 << 32) - 1
        tb.deposit = {name: high << 32 | (1 << 32) - int(tb.rng.integers(1, 6 * top))}
        await FallingEdge(dut.clk)
        await RisingEdge(dut.clk)
        lower = tb.committed[name]
        value = await tb.read_counter(name)
        upper = tb.expected[name]
        assert lower <= value <= upper or (upper < lower and (value >= lower or value <= upper)), \
            f"{name}: {value:#x} outside [{lower:#x}, {upper:#x}]"
        straddled += (value >> 32) != (upper >> 32)
    assert straddled >= 3, f"only {straddled} reads straddled a carry; the test proves nothing"
    assert tb.runs_finished == 0
