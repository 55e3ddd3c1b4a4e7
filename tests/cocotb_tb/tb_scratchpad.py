"""cocotb testbench of rtl.scratchpad.Scratchpad against a numpy model of its ports."""

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, Timer
from tb_common import ClockedTB, pack, unpack_signed


class TB(ClockedTB):
    def __init__(self, dut):
        super().__init__(dut)
        self.model = np.zeros((self.config.scratchpad_depth, self.config.rows), np.int64)
        self.read_ports = [p for p in ("read0", "read1") if hasattr(dut, f"{p}__addr")]

    async def random_traffic(self, cycles: int, *, depth_used: int, write_rate: float, read_rate: float):
        dut, rows = self.dut, self.config.rows
        for addr in range(depth_used):  # memories keep their values between tests: clear
            await FallingEdge(dut.clk)
            dut.write__en.value, dut.write__addr.value = 1, addr
            dut.write__lanes.value, dut.write__data.value = (1 << rows) - 1, 0
        expected = {}  # port -> row expected on its data output from the next cycle on
        checked = 0
        for _ in range(cycles):
            await FallingEdge(dut.clk)
            for port, value in expected.items():
                got = unpack_signed(getattr(dut, f"{port}__data").value.to_unsigned(), 8, rows)
                np.testing.assert_array_equal(got, value, err_msg=f"{port}")
                checked += 1
            expected = {}
            write = self.rng.random() < write_rate
            addr = int(self.rng.integers(0, depth_used))
            lanes = int(self.rng.integers(0, 1 << rows))
            values = self.rng.integers(-128, 128, rows)
            dut.write__en.value = int(write)
            dut.write__addr.value = addr
            dut.write__lanes.value = lanes
            dut.write__data.value = pack(values, 8)
            for port in self.read_ports:
                read = self.rng.random() < read_rate
                raddr = int(self.rng.integers(0, depth_used))
                getattr(dut, f"{port}__en").value = int(read)
                getattr(dut, f"{port}__addr").value = raddr
                if read:
                    expected[port] = self.model[raddr].copy()  # read before this cycle's write
            await Timer(1, unit="ns")
            assert dut.write__ready.value == 1
            if write:
                for lane in range(rows):
                    if lanes >> lane & 1:
                        self.model[addr, lane] = values[lane]
        return checked


@cocotb.test()
async def random_reads_and_masked_writes(dut):
    tb = TB(dut)
    await tb.start()
    checked = await tb.random_traffic(600, depth_used=8, write_rate=0.6, read_rate=0.7)
    assert checked > 500


@cocotb.test()
async def whole_depth_is_addressable(dut):
    tb = TB(dut)
    await tb.start()
    depth, rows = tb.config.scratchpad_depth, tb.config.rows
    rows_to_check = [0, 1, depth // 2, depth - 1]
    for addr in rows_to_check:
        await FallingEdge(dut.clk)
        dut.write__en.value, dut.write__addr.value = 1, addr
        dut.write__lanes.value = (1 << rows) - 1
        dut.write__data.value = pack([(addr + lane) % 256 - 128 for lane in range(rows)], 8)
    await FallingEdge(dut.clk)
    dut.write__en.value = 0
    for addr in rows_to_check:
        dut.read0__en.value, dut.read0__addr.value = 1, addr
        await FallingEdge(dut.clk)
        got = unpack_signed(dut.read0__data.value.to_unsigned(), 8, rows)
        np.testing.assert_array_equal(got, [(addr + lane) % 256 - 128 for lane in range(rows)])
