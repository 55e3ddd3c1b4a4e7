"""cocotb testbench of rtl.accumulator.Accumulator against a numpy model: read-modify-write
accumulation, written back two cycles after the request (incl. updates of one row in consecutive
cycles and one apart, and DMA writes between them), DMA writes yielding to it, plain reads."""

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, Timer
from tb_common import ClockedTB, pack, unpack_signed

from golden.quant import wrap_int32


class TB(ClockedTB):
    def __init__(self, dut):
        super().__init__(dut)
        self.model = np.zeros((self.config.accumulator_depth, self.config.cols), np.int64)
        dut.accumulate__valid.value = 0
        dut.write__en.value = 0
        dut.read0__en.value = 0

    async def clear(self, rows: int):
        """Zero rows [0, rows) through the DMA port (memories keep values between tests)."""
        dut = self.dut
        for addr in range(rows):
            await FallingEdge(dut.clk)
            dut.write__en.value, dut.write__addr.value = 1, addr
            dut.write__lanes.value, dut.write__data.value = (1 << self.config.cols) - 1, 0
        await FallingEdge(dut.clk)
        dut.write__en.value = 0

    async def random_traffic(self, cycles, *, depth_used, acc_rate, write_rate, read_rate, extreme=False):
        dut, cols = self.dut, self.config.cols
        await self.clear(depth_used)
        pending = [None, None]  # accumulate requests of the last two cycles; [0] writes back now
        expected = None
        dma_writes = checked = 0
        for _ in range(cycles):
            await FallingEdge(dut.clk)
            if expected is not None:
                got = unpack_signed(dut.read0__data.value.to_unsigned(), 32, cols)
                np.testing.assert_array_equal(got, expected)
                checked += 1
            expected = None
            acc = self.rng.random() < acc_rate
            acc_req = (int(self.rng.integers(0, depth_used)),
                       (np.full(cols, -(1 << 31)) if extreme else
                        self.rng.integers(-(1 << 31), 1 << 31, cols)),
                       bool(self.rng.random() < 0.7))
            dut.accumulate__valid.value = int(acc)
            addr_bits = self.config.accumulator_addr_width
            dut.accumulate__payload.value = (acc_req[0] | pack(acc_req[1], 32) << addr_bits
                                             | int(acc_req[2]) << (addr_bits + 32 * cols))
            write = self.rng.random() < write_rate
            w_addr, w_lanes = int(self.rng.integers(0, depth_used)), int(self.rng.integers(0, 1 << cols))
            w_values = self.rng.integers(-(1 << 31), 1 << 31, cols)
            dut.write__en.value, dut.write__addr.value = int(write), w_addr
            dut.write__lanes.value, dut.write__data.value = w_lanes, pack(w_values, 32)
            read = self.rng.random() < read_rate
            r_addr = int(self.rng.integers(0, depth_used))
            dut.read0__en.value, dut.read0__addr.value = int(read), r_addr
            if read:
                expected = self.model[r_addr].copy()
            await Timer(1, unit="ns")
            assert dut.accumulate__ready.value == 1
            ready = bool(dut.write__ready.value)
            assert ready == (pending[0] is None), "the DMA port must yield exactly to write-backs"
            # This cycle's edge: the request of two cycles ago writes back, or the DMA writes.
            if pending[0] is not None:
                addr, values, accumulate = pending[0]
                old = self.model[addr] if accumulate else 0
                self.model[addr] = wrap_int32(np.asarray(old + values, np.int64))
            elif write:
                dma_writes += 1
                for lane in range(cols):
                    if w_lanes >> lane & 1:
                        self.model[w_addr, lane] = w_values[lane]
            pending = [pending[1], acc_req if acc else None]
        return checked, dma_writes


@cocotb.test()
async def random_accumulate_write_read(dut):
    tb = TB(dut)
    await tb.start()
    checked, writes = await tb.random_traffic(800, depth_used=4, acc_rate=0.5, write_rate=0.3,
                                              read_rate=0.6)
    assert checked > 300 and writes > 50


@cocotb.test()
async def back_to_back_accumulation_into_one_row(dut):
    tb = TB(dut)
    await tb.start()
    await tb.random_traffic(300, depth_used=1, acc_rate=1.0, write_rate=0.0, read_rate=0.5)


@cocotb.test()
async def int32_wrap_around(dut):
    tb = TB(dut)
    await tb.start()
    await tb.random_traffic(200, depth_used=2, acc_rate=0.9, write_rate=0.0, read_rate=0.5, extreme=True)


@cocotb.test()
async def dma_writes_between_updates_of_one_row(dut):
    """Partial-lane DMA writes in the cycles an update's read misses are forwarded to it."""
    tb = TB(dut)
    await tb.start()
    checked, writes = await tb.random_traffic(400, depth_used=2, acc_rate=0.6, write_rate=0.8,
                                              read_rate=0.5)
    assert checked > 100 and writes > 50
