"""cocotb testbench of the whole NPU (rtl.npu.Npu) against the golden machine.

The outside world is cocotbext-axi: an ``AxiRam`` as DRAM on ``m_axi`` and an ``AxiLiteMaster``
as the host on ``s_axil``, with random pauses on every AXI channel in some runs. Each program is
built with the golden ISA, written into both DRAMs, started through the registers; when the IRQ
comes, STATUS and ERROR_INDEX must equal the golden machine's result and, for a successful
program, every DRAM byte must equal the golden machine's DRAM.
"""

from __future__ import annotations

import itertools
import logging

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRamRead, AxiRamWrite
from tb_common import ClockedTB

from golden import quant
from golden import registers as regmap
from golden.isa import ErrorCode, Instruction, Memory, Opcode, RequantMode, VectorFunct, encode
from golden.machine import Machine, parameter_rows
from sw.matmul import compile_matmul, pack_weights

DRAM_SIZE = 1 << 16
PROGRAM_ADDR = 0xC000
REG = {reg.name: reg.offset for reg in regmap.REGISTERS}
START = 1 << regmap.field("CTRL", "START").lsb
IRQ_ENABLE = 1 << regmap.field("CTRL", "IRQ_ENABLE").lsb
CLEAR = 1 << regmap.field("CTRL", "CLEAR").lsb
I, O = Instruction, Opcode


def status_field(value: int, name: str) -> int:
    f = regmap.field("STATUS", name)
    return (value & f.mask) >> f.lsb


class DramRead(AxiRamRead):
    """cocotbext-axi's RAM, answering SLVERR for bytes past its end (where the golden machine
    stops with BUS_ERROR) instead of wrapping around."""

    async def _read(self, address, length):
        if address + length > self.size:
            raise OSError("read past the end of DRAM")  # cocotbext-axi answers SLVERR
        return self.read(address, length)


class DramWrite(AxiRamWrite):
    async def _write(self, address, data):
        if address + len(data) > self.size:
            raise OSError("write past the end of DRAM")
        self.write(address, data)


class TB(ClockedTB):
    def __init__(self, dut, *, pause: float = 0.0):
        super().__init__(dut)
        self.host = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        bus = AxiBus.from_prefix(dut, "m_axi")
        self.dram = DramWrite(bus.write, dut.clk, dut.rst, size=DRAM_SIZE)
        dram_read = DramRead(bus.read, dut.clk, dut.rst, size=DRAM_SIZE, mem=self.dram.mem)
        for interface in (self.host.write_if, self.host.read_if, self.dram, dram_read):
            interface.log.setLevel(logging.WARNING)
        if pause:
            channels = (self.dram.aw_channel, self.dram.w_channel, self.dram.b_channel,
                        dram_read.ar_channel, dram_read.r_channel)
            for channel in channels:
                channel.set_pause_generator(self.pauses(pause))
        self.machine = Machine(self.config, dram_size=DRAM_SIZE)

    def pauses(self, probability: float):
        rng = self.rng
        return (bool(rng.random() < probability) for _ in itertools.count())

    def write(self, address: int, data):
        data = bytes(np.ascontiguousarray(data).reshape(-1).view(np.uint8))
        self.dram.write(address, data)
        self.machine.write_dram(address, data)

    async def run(self, program, *, cycle_limit: int = 200_000):
        """Run ``program`` on both; return (golden result, status, error index, cycles)."""
        size = self.config.instruction_bytes
        image = b"".join((encode(p) if isinstance(p, Instruction) else p).to_bytes(size, "little")
                         for p in program)  # a raw integer word stands for an illegal one
        self.write(PROGRAM_ADDR, np.frombuffer(image, np.uint8))
        expected = self.machine.run(program_address=PROGRAM_ADDR, instruction_count=len(program))
        await self.host.write_dword(REG["PROGRAM_ADDR"], PROGRAM_ADDR)
        await self.host.write_dword(REG["PROGRAM_LENGTH"], len(program))
        await self.host.write_dword(REG["CTRL"], IRQ_ENABLE | CLEAR)
        await self.host.write_dword(REG["CTRL"], IRQ_ENABLE | START)
        cycles = 0
        while not self.dut.irq.value:
            await RisingEdge(self.dut.clk)
            cycles += 1
            assert cycles < cycle_limit, "no IRQ: the NPU hangs"
        status = await self.host.read_dword(REG["STATUS"])
        index = await self.host.read_dword(REG["ERROR_INDEX"])
        await self.host.write_dword(REG["CTRL"], CLEAR)
        return expected, status, index, cycles

    async def check(self, program, *, expect: ErrorCode = ErrorCode.NONE) -> int:
        expected, status, index, cycles = await self.run(program)
        assert expected.error == expect, (expected.error, expected.message)
        assert status_field(status, "BUSY") == 0
        assert status_field(status, "DONE") == 1
        assert ErrorCode(status_field(status, "ERROR")) == expected.error, \
            (ErrorCode(status_field(status, "ERROR")), expected.error, expected.message)
        if expected.error != ErrorCode.NONE:
            assert index == expected.error_index, (index, expected.error_index)
            # Resynchronise: the RTL may have completed more of the program than golden.
            self.machine.dram[:] = np.frombuffer(self.dram.read(0, DRAM_SIZE), np.uint8)
        else:
            got = np.frombuffer(self.dram.read(0, DRAM_SIZE), np.uint8)
            np.testing.assert_array_equal(got, self.machine.dram)
        return cycles


# Programs ------------------------------------------------------------------------------------------

def matmul_program(tb, *, m, k, n, overlap=True):
    cfg, rng = tb.config, tb.rng
    x = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-128, 128, (k, n), dtype=np.int8)
    x_addr, w_addr, y_addr = 0x1000, 0x3000, 0x5000
    tb.write(x_addr, x)
    tb.write(w_addr, pack_weights(cfg, w))
    program = compile_matmul(cfg, m=m, k=k, n=n, x_addr=x_addr, w_addr=w_addr, y_addr=y_addr,
                             overlap=overlap)
    return program, (x, w, y_addr)


@cocotb.test()
async def tiled_matmul_matches_golden_and_numpy(dut):
    tb = TB(dut)
    await tb.start()
    cfg = tb.config
    m, k, n = 3 * cfg.rows + 1, 2 * cfg.rows + 3, 2 * cfg.cols + 1
    program, (x, w, y_addr) = matmul_program(tb, m=m, k=k, n=n)
    await tb.check(program)
    y = np.frombuffer(tb.dram.read(y_addr, m * n * 4), np.int32).reshape(m, n)
    np.testing.assert_array_equal(y, quant.matmul(x, w))


@cocotb.test()
async def double_buffering_beats_the_serialised_program(dut):
    tb = TB(dut)
    await tb.start()
    cfg = tb.config
    m, k, n = 6 * cfg.rows, 2 * cfg.rows, 2 * cfg.cols
    overlapped, _ = matmul_program(tb, m=m, k=k, n=n, overlap=True)
    fast = await tb.check(overlapped)
    serial = []  # the same work with no tokens, every instruction fenced by SYNC
    for ins in overlapped:
        if ins.opcode == O.FINISH:
            serial.append(ins)
        else:
            serial += [ins.replace(pop_prev=0, pop_next=0, push_prev=0, push_next=0), I(O.SYNC)]
    slow = await tb.check(serial)
    cocotb.log.info("double-buffered %d cycles, serialised %d cycles", fast, slow)
    assert fast < 0.9 * slow, (fast, slow)


@cocotb.test()
async def conv_tile_requant_pool_add_softmax_programs(dut):
    """A padded, strided convolution tile; requant + ReLU; max pooling; a residual add; a softmax
    row block - the building blocks of the compiler, hand-assembled."""
    tb = TB(dut, pause=0.3)
    await tb.start()
    cfg, rng = tb.config, tb.rng
    r, c = cfg.rows, cfg.cols
    SP, ACC = Memory.SCRATCHPAD, Memory.ACCUMULATOR
    # Image 5x5 pixels x r channels (NHWC, int8) and a 3x3 kernel, stride 2, pad 1 (zp -3).
    image = rng.integers(-128, 128, (5, 5, r), dtype=np.int8)
    weights = rng.integers(-128, 128, (9, c, r), dtype=np.int8)   # tap, out channel, in channel
    bias = rng.integers(-1000, 1000, c).astype(np.int32)
    scales = (rng.uniform(1, 4, c) * 1e-4).astype(np.float32)
    tb.write(0x1000, image)
    tb.write(0x2000, weights)
    tb.write(0x3000, bias)
    tb.write(0x3100, parameter_rows(cfg, scales))
    program = [
        I(O.LOAD, mem=SP, sram_addr=0, dram_addr=0x1000, rows=5, cols=5, elem_len=r,
          dram_row_stride=5 * r, dram_elem_stride=r, pad_top=1, pad_bottom=1, pad_left=1,
          pad_right=1, pad_value=-3),                                   # 7x7 padded rows 0..48
        I(O.LOAD, mem=SP, sram_addr=100, dram_addr=0x2000, rows=1, cols=9 * c, elem_len=r,
          dram_row_stride=0, dram_elem_stride=r),                       # weights rows 100..
        I(O.LOAD, mem=ACC, sram_addr=0, dram_addr=0x3000, rows=1, cols=9, elem_len=c,
          dram_row_stride=0, dram_elem_stride=0),                       # bias broadcast, 3x3 out
        I(O.LOAD, mem=ACC, sram_addr=20, dram_addr=0x3100, rows=1, cols=1, elem_len=c,
          dram_row_stride=0, dram_elem_stride=c * 4, push_next=1),
    ]
    for tap in range(9):
        dy, dx = divmod(tap, 3)
        program.append(I(O.MATMUL, accumulate=1, load_weights=1, weight_addr=100 + tap * c,
                         outer_count=3, inner_count=3, input_addr=dy * 7 + dx,
                         input_outer_stride=14, input_inner_stride=2, acc_addr=0,
                         acc_outer_stride=3, acc_inner_stride=1, pop_prev=tap == 0))
    program += [
        I(O.VECTOR, funct=VectorFunct.REQUANT, mode=RequantMode.FP32, outer_count=1,
          inner_count=9, a_addr=0, a_inner_stride=1, out_addr=200, out_inner_stride=1,
          length=min(r, c), param_addr=20, out_zp=-5, clip_lo=-5, clip_hi=127),  # fused ReLU
        I(O.VECTOR, funct=VectorFunct.MAX, outer_count=1, inner_count=2, a_addr=200,
          a_inner_stride=1, b_addr=203, b_inner_stride=1, out_addr=210, out_inner_stride=1,
          length=r),
        I(O.VECTOR, funct=VectorFunct.MAX, outer_count=1, inner_count=2, a_addr=210,
          a_inner_stride=1, b_addr=211, b_inner_stride=0, out_addr=212, out_inner_stride=1,
          length=r, push_next=1),
        I(O.STORE, mem=SP, sram_addr=200, dram_addr=0x4000, rows=1, cols=14, elem_len=r,
          dram_row_stride=0, dram_elem_stride=r, pop_prev=1),
        I(O.STORE, mem=ACC, sram_addr=0, dram_addr=0x4800, rows=3, cols=3, elem_len=c,
          dram_row_stride=3 * 4 * c + 8, dram_elem_stride=4 * c),
        I(O.FINISH),
    ]
    await tb.check(program)
    # A residual add in both modes and a softmax row block.
    a_codes = rng.integers(-128, 128, (4, r), dtype=np.int8)
    b_codes = rng.integers(-128, 128, (4, r), dtype=np.int8)
    sa, sb, f = quant.add_fp32_params(a_scale=0.02, a_zero_point=3, b_scale=0.03,
                                      b_zero_point=-7, c_scale=0.04, c_zero_point=1)
    from golden import intops
    logits = rng.integers(-3000, 3000, (2, 3 * c)).astype(np.int32)
    tb.write(0x1000, np.concatenate([a_codes, b_codes]))
    tb.write(0x1200, parameter_rows(cfg, np.array([sa, sb, f], np.float32)))
    tb.write(0x1300, logits)
    tb.write(0x1800, parameter_rows(cfg, intops.softmax_params(
        input_scale=0.01, output_scale=1 / 256, output_zero_point=-128)))
    program = [
        I(O.LOAD, mem=SP, sram_addr=0, dram_addr=0x1000, rows=1, cols=8, elem_len=r,
          dram_row_stride=0, dram_elem_stride=r),
        I(O.LOAD, mem=ACC, sram_addr=10, dram_addr=0x1200, rows=1, cols=1, elem_len=c,
          dram_row_stride=0, dram_elem_stride=0),
        I(O.LOAD, mem=ACC, sram_addr=30, dram_addr=0x1300, rows=1, cols=6, elem_len=c,
          dram_row_stride=0, dram_elem_stride=4 * c),
        I(O.LOAD, mem=ACC, sram_addr=40, dram_addr=0x1800, rows=1, cols=-(-5 // c), elem_len=c,
          dram_row_stride=0, dram_elem_stride=4 * c, push_next=1),
        I(O.VECTOR, funct=VectorFunct.ADD, mode=RequantMode.FP32, outer_count=1, inner_count=4,
          a_addr=0, a_inner_stride=1, b_addr=4, b_inner_stride=1, out_addr=20,
          out_inner_stride=1, length=r, param_addr=10, clip_lo=-128, clip_hi=127, pop_prev=1),
        I(O.VECTOR, funct=VectorFunct.SOFTMAX, outer_count=1, inner_count=2, a_addr=30,
          a_inner_stride=3, out_addr=24, out_inner_stride=-(-3 * c // r), length=3 * c,
          param_addr=40, clip_lo=-128, clip_hi=127, push_next=1),
        I(O.STORE, mem=SP, sram_addr=20, dram_addr=0x5000, rows=1, cols=4 + 2 * -(-3 * c // r),
          elem_len=r, dram_row_stride=0, dram_elem_stride=r, pop_prev=1),
        I(O.FINISH),
    ]
    await tb.check(program)


@cocotb.test()
async def every_error_stops_cleanly_and_the_npu_restarts(dut):
    tb = TB(dut)
    await tb.start()
    cfg = tb.config
    SP = Memory.SCRATCHPAD
    ok_load = I(O.LOAD, mem=SP, dram_addr=0x2000, rows=1, cols=1, elem_len=cfg.rows)
    cases = [
        ([ok_load, I(O.SYNC), 0, I(O.FINISH)], ErrorCode.ILLEGAL_INSTRUCTION),
        ([ok_load, I(O.LOAD, mem=SP, sram_addr=cfg.scratchpad_depth - 1, rows=1, cols=2,
                     elem_len=cfg.rows), I(O.FINISH)], ErrorCode.SRAM_OUT_OF_RANGE),
        ([I(O.MATMUL, outer_count=1, inner_count=1, acc_addr=cfg.accumulator_depth),
          I(O.FINISH)], ErrorCode.SRAM_OUT_OF_RANGE),
        ([ok_load, I(O.MATMUL, pop_prev=1, outer_count=1, inner_count=1), I(O.FINISH)],
         ErrorCode.DEADLOCK),
        ([ok_load], ErrorCode.MISSING_FINISH),
        ([ok_load, I(O.LOAD, mem=SP, dram_addr=DRAM_SIZE - 2, rows=1, cols=1, elem_len=cfg.rows),
          I(O.FINISH)], ErrorCode.BUS_ERROR),     # the AXI slave answers SLVERR
        ([I(O.STORE, mem=Memory.ACCUMULATOR, dram_addr=DRAM_SIZE - 8, rows=1, cols=1,
            elem_len=cfg.cols), I(O.FINISH)], ErrorCode.BUS_ERROR),
        ([I(O.LOAD, pop_prev=1, rows=1, cols=1, elem_len=1), I(O.FINISH)],
         ErrorCode.ILLEGAL_INSTRUCTION),
        ([I(O.STORE, push_next=1, rows=1, cols=1, elem_len=1), I(O.FINISH)],
         ErrorCode.ILLEGAL_INSTRUCTION),
        ([I(O.VECTOR, funct=VectorFunct.REQUANT, outer_count=1, inner_count=1, length=1,
            param_addr=5, clip_lo=-128, clip_hi=127), I(O.FINISH)],
         ErrorCode.ILLEGAL_INSTRUCTION),   # the scale read from the accumulator is 0
    ]
    # A STORE that faults after other instructions: the error index is the STORE's.
    x = tb.rng.integers(-128, 128, (cfg.rows + 3, cfg.rows), dtype=np.int8)
    tb.write(0x1000, x)
    tb.write(0x2000, pack_weights(cfg, np.ones((cfg.rows, cfg.cols), np.int8)))
    cases.append((compile_matmul(cfg, m=cfg.rows + 3, k=cfg.rows, n=cfg.cols, x_addr=0x1000,
                                 w_addr=0x2000, y_addr=DRAM_SIZE - 4 * cfg.cols),
                  ErrorCode.BUS_ERROR))
    await tb.host.write_dword(REG["WATCHDOG"], 2000)
    for program, code in cases:
        await tb.check(program, expect=code)
    program, _ = matmul_program(tb, m=cfg.rows, k=cfg.rows, n=cfg.cols)
    await tb.check(program)
