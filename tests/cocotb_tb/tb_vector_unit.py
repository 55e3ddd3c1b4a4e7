"""cocotb testbench of rtl.vector_unit.VectorUnit against golden.machine.

The memories are numpy models behind the unit's SRAM ports (synchronous reads, the scratchpad
write port with random backpressure); ``start`` is held low at random, as the compute unit does
while older MATMUL rows are still on their way to the accumulator. Every instruction also runs on
a golden Machine holding the same memories; the error code must match and, for a successful
instruction, the whole scratchpad. Instructions are random: every funct and mode, 2D walks, groups
that span several rows of both widths, output groups starting at random lanes, random clips.
"""

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, Timer
from tb_common import ClockedTB, pack, unpack_signed

from golden import intops, quant
from golden.isa import (
    HEADER,
    ErrorCode,
    Instruction,
    Opcode,
    RequantMode,
    VectorFunct,
    encode,
    encode_program,
)
from golden.machine import Machine, parameter_rows

HEADER_BITS = sum(field.width for field in HEADER)
ACC_PORTS = ("acc_values", "acc_params0", "acc_params1")
SPAD_PORTS = ("spad_a", "spad_b")
# Regions the random instructions use: operands low, outputs above them, parameters high.
SPAD_OUT_BASE = 64
PARAM_ADDR = 160


class TB(ClockedTB):
    def __init__(self, dut, *, write_stall=0.25, command_idle=0.3, done_stall=0.3,
                 start_stall=0.3):
        super().__init__(dut)
        cfg = self.config
        self.write_stall, self.command_idle, self.done_stall = write_stall, command_idle, done_stall
        self.start_stall = start_stall
        self.spad = self.rng.integers(-128, 128, (cfg.scratchpad_depth, cfg.rows)).astype(np.int8)
        self.acc = self.rng.integers(-(1 << 31), 1 << 31, (cfg.accumulator_depth, cfg.cols),
                                     dtype=np.int64).astype(np.int32)
        self.machine = Machine(cfg, dram_size=1 << 12)
        dut.command__valid.value = 0
        dut.done__ready.value = 0
        dut.spad_write__ready.value = 0
        dut.start.value = 0
        self.writes = 0

    async def start(self):
        await super().start()
        cocotb.start_soon(self.memories())

    async def memories(self):
        """The SRAMs: data one cycle after a read with ``en``; masked writes when ready."""
        dut, cfg = self.dut, self.config
        pending = {}
        while True:
            await FallingEdge(dut.clk)
            for port, row in pending.items():
                width = 32 if port in ACC_PORTS else 8
                getattr(dut, f"{port}__data").value = pack(row, width)
            ready = self.rng.random() >= self.write_stall
            dut.spad_write__ready.value = int(ready)
            dut.start.value = int(self.rng.random() >= self.start_stall)
            await Timer(1, unit="ns")
            pending = {}
            for port in ACC_PORTS + SPAD_PORTS:
                if getattr(dut, f"{port}__en").value:
                    memory = self.acc if port in ACC_PORTS else self.spad
                    addr = getattr(dut, f"{port}__addr").value.to_unsigned()
                    pending[port] = memory[addr % len(memory)].copy()  # read before the write
            if ready and dut.spad_write__en.value:
                addr = dut.spad_write__addr.value.to_unsigned()
                lanes = dut.spad_write__lanes.value.to_unsigned()
                values = unpack_signed(dut.spad_write__data.value.to_unsigned(), 8, cfg.rows)
                for lane in range(cfg.rows):
                    if lanes >> lane & 1:
                        self.spad[addr, lane] = values[lane]
                self.writes += 1

    async def execute(self, instruction: Instruction) -> ErrorCode:
        """Send one command and wait for its ``done``; the error code it reports."""
        dut = self.dut
        payload = encode(instruction) >> HEADER_BITS
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
            if not sent and dut.command__ready.value:
                sent = True
            elif sent and ready and dut.done__valid.value:
                await FallingEdge(dut.clk)
                dut.command__valid.value = 0
                dut.done__ready.value = 0
                return ErrorCode(dut.done__payload.value.to_unsigned())
        raise AssertionError(f"no done for {instruction}")

    async def check(self, instruction: Instruction, *, expect: ErrorCode = ErrorCode.NONE):
        """Run ``instruction`` on the unit and on the golden machine; compare."""
        machine = self.machine
        machine.scratchpad[:] = self.spad
        machine.accumulator[:] = self.acc
        program = encode_program([instruction, Instruction(Opcode.FINISH)],
                                 instruction_bytes=self.config.instruction_bytes)
        machine.write_dram(0, program)
        result = machine.run(program_address=0, instruction_count=2)
        assert result.error == expect, (instruction, result.message)  # the case is what it says
        error = await self.execute(instruction)
        assert error == result.error, (instruction, error, result.error, result.message)
        if result.error == ErrorCode.NONE:
            np.testing.assert_array_equal(self.spad, machine.scratchpad, err_msg=str(instruction))
        else:  # the unit may have written part of the output before the fault
            machine.scratchpad[:] = self.spad

    # Random instructions -------------------------------------------------------------------------

    def random_clip(self):
        if self.rng.random() < 0.6:
            return -128, 127
        lo, hi = sorted(int(v) for v in self.rng.integers(-128, 128, 2))
        return lo, hi

    def random_walks(self, funct: VectorFunct, length: int, out_lane: int) -> dict:
        cfg, rng = self.config, self.rng
        in_width = cfg.rows if funct in (VectorFunct.ADD, VectorFunct.MAX) else cfg.cols
        in_rows = -(-length // in_width)
        out_rows = -(-(out_lane + length) // cfg.rows)
        outer, inner = int(rng.integers(1, 3)), int(rng.integers(1, 4))
        fields = dict(outer_count=outer, inner_count=inner, out_lane=out_lane, length=length)
        for prefix in ("a", "b"):  # operands may overlap each other
            fields.update({f"{prefix}_addr": int(rng.integers(0, 8)),
                           f"{prefix}_inner_stride": int(rng.integers(0, in_rows + 2)),
                           f"{prefix}_outer_stride": int(rng.integers(0, 3 * in_rows + 2))})
        # Output groups must not overlap (the order of overlapping writes is not specified).
        stride = out_rows + int(rng.integers(0, 2))
        fields.update(out_addr=SPAD_OUT_BASE + int(rng.integers(0, 4)), out_inner_stride=stride,
                      out_outer_stride=inner * stride + int(rng.integers(0, 2)))
        return fields

    def randomise_operands(self):
        cfg, rng = self.config, self.rng
        shifts = rng.integers(0, 31, (PARAM_ADDR, cfg.cols))
        self.acc[:PARAM_ADDR] = (rng.integers(-(1 << 31), 1 << 31, (PARAM_ADDR, cfg.cols))
                                 >> shifts).astype(np.int32)
        self.spad[:SPAD_OUT_BASE] = rng.integers(-128, 128, (SPAD_OUT_BASE, cfg.rows))

    def set_params(self, *sections):
        rows = parameter_rows(self.config, *sections)
        self.acc[PARAM_ADDR:PARAM_ADDR + len(rows)] = rows

    def random_instruction(self, funct: VectorFunct, mode: RequantMode) -> Instruction:
        cfg, rng = self.config, self.rng
        max_length = 3 * max(cfg.rows, cfg.cols) + 1
        length = int(rng.integers(1, max_length + 1))
        out_lane = int(rng.integers(0, cfg.rows)) if rng.random() < 0.6 else 0
        lo, hi = self.random_clip()
        fields = dict(funct=funct, mode=mode, param_addr=PARAM_ADDR, clip_lo=lo, clip_hi=hi,
                      out_zp=int(rng.integers(-128, 128)),
                      **self.random_walks(funct, length, out_lane))
        scale = lambda: float(10.0 ** rng.uniform(-4, 0))  # noqa: E731
        if funct == VectorFunct.REQUANT and mode == RequantMode.FP32:
            scales = (10.0 ** rng.uniform(-7, 0, length)).astype(np.float32)
            if rng.random() < 0.5:  # with a bias section: full int32 range, so sums wrap
                fields.update(bias=1)
                self.set_params(scales, rng.integers(-(1 << 31), 1 << 31, length))
            else:
                self.set_params(scales)
        elif funct == VectorFunct.REQUANT:
            self.set_params(rng.integers(1 << 30, 1 << 31, length), rng.integers(-31, 31, length))
        elif funct == VectorFunct.ADD:
            a_unsigned, b_unsigned, out_unsigned = (int(v) for v in rng.integers(0, 2, 3))
            fields.update(a_unsigned=a_unsigned, b_unsigned=b_unsigned, out_unsigned=out_unsigned)
            if mode == RequantMode.FP32:
                zp = lambda unsigned: int(rng.integers(0, 256) if unsigned else rng.integers(-128, 128))  # noqa: E731
                sa, sb, f = quant.add_fp32_params(
                    a_scale=scale(), a_zero_point=zp(a_unsigned), b_scale=scale(),
                    b_zero_point=zp(b_unsigned), c_scale=scale(), c_zero_point=zp(out_unsigned))
                self.set_params(np.array([sa, sb, f], np.float32))
            else:
                p = quant.add_fixed_params(a_scale=scale(), b_scale=scale(), c_scale=scale())
                self.set_params(np.array(
                    [rng.integers(-128, 128), rng.integers(-128, 128), p["left_shift"],
                     p["a_multiplier"], p["a_shift"], p["b_multiplier"], p["b_shift"],
                     p["out_multiplier"], p["out_shift"]], np.int64))
        elif funct == VectorFunct.GELU:
            self.set_params(intops.gelu_params(input_scale=10.0 ** rng.uniform(-9, -3),
                                               output_scale=10.0 ** rng.uniform(-2, 0),
                                               output_zero_point=int(rng.integers(-128, 128))))
        elif funct == VectorFunct.SOFTMAX:
            self.set_params(intops.softmax_params(input_scale=10.0 ** rng.uniform(-9, -5),
                                                  output_scale=1 / 256,
                                                  output_zero_point=-128))
        elif funct == VectorFunct.LAYERNORM:
            p = intops.layernorm_params(input_scale=10.0 ** rng.uniform(-9, -3),
                                        gamma=rng.uniform(0.5, 1.5, length),
                                        beta=rng.uniform(-0.3, 0.3, length),
                                        output_scale=0.05, output_zero_point=0)
            count = intops.LAYERNORM_CONST_COUNT
            self.set_params(p[:count], p[count:count + length], p[count + length:])
        return Instruction(Opcode.VECTOR, **fields)


FUNCT_MODES = [(VectorFunct.REQUANT, RequantMode.FP32), (VectorFunct.REQUANT, RequantMode.FIXED),
               (VectorFunct.ADD, RequantMode.FP32), (VectorFunct.ADD, RequantMode.FIXED),
               (VectorFunct.MAX, RequantMode.FP32), (VectorFunct.GELU, RequantMode.FP32),
               (VectorFunct.SOFTMAX, RequantMode.FP32), (VectorFunct.LAYERNORM, RequantMode.FP32)]


@cocotb.test()
async def random_instructions_of_every_funct(dut):
    tb = TB(dut)
    await tb.start()
    for _ in range(3):
        for funct, mode in FUNCT_MODES:
            tb.randomise_operands()
            await tb.check(tb.random_instruction(funct, mode))
    assert tb.writes > 0


@cocotb.test()
async def aligned_requant_runs_one_beat_per_cycle(dut):
    """Equal widths, out_lane 0, no backpressure: once full, the unit writes a beat of
    ``vector_lanes`` elements every cycle (a whole row when it has as many lanes as a row)."""
    tb = TB(dut, write_stall=0, command_idle=0, done_stall=0, start_stall=0)
    await tb.start()
    cfg = tb.config
    groups = 24
    tb.randomise_operands()
    tb.set_params(np.full(cfg.cols, 0.01, np.float32))
    width = min(cfg.rows, cfg.cols)
    instruction = Instruction(Opcode.VECTOR, funct=VectorFunct.REQUANT, outer_count=1,
                              inner_count=groups, a_inner_stride=1, out_addr=SPAD_OUT_BASE,
                              out_inner_stride=1, length=width, param_addr=PARAM_ADDR,
                              clip_lo=-128, clip_hi=127)
    start = cocotb.utils.get_sim_time("ns")
    await tb.check(instruction)
    cycles = (cocotb.utils.get_sim_time("ns") - start) / 10
    beats = groups * width // cfg.vector_lanes
    assert cycles < beats + 24, cycles  # check, pipeline fill and done: a fixed overhead


@cocotb.test()
async def errors_are_reported_and_the_unit_restarts(dut):
    tb = TB(dut)
    await tb.start()
    cfg, rng = tb.config, tb.rng
    tb.randomise_operands()
    good = tb.random_instruction(VectorFunct.REQUANT, RequantMode.FP32)
    ok = ErrorCode.NONE
    illegal, out_of_range = ErrorCode.ILLEGAL_INSTRUCTION, ErrorCode.SRAM_OUT_OF_RANGE
    await tb.check(good.replace(funct=7), expect=illegal)
    await tb.check(good.replace(length=0), expect=illegal)
    await tb.check(good.replace(out_lane=cfg.rows), expect=illegal)
    await tb.check(good.replace(clip_lo=5, clip_hi=4), expect=illegal)
    await tb.check(good.replace(inner_count=0), expect=illegal)
    await tb.check(good.replace(bias=1, mode=RequantMode.FIXED), expect=illegal)
    await tb.check(good.replace(bias=1, funct=VectorFunct.GELU), expect=illegal)
    await tb.check(good.replace(funct=VectorFunct.SOFTMAX, length=cfg.vector_max_length + 1),
                   expect=illegal)
    await tb.check(good.replace(a_addr=cfg.accumulator_depth - 1, length=cfg.cols + 1),
                   expect=out_of_range)
    await tb.check(good.replace(out_addr=cfg.scratchpad_depth - 2, out_inner_stride=1,
                                inner_count=3, outer_count=1), expect=out_of_range)
    await tb.check(good.replace(param_addr=cfg.accumulator_depth - 1, length=cfg.cols + 1,
                                a_addr=0), expect=out_of_range)
    await tb.check(good)
    # A bad scale in the middle of the instruction's elements.
    length = good.length
    scales = (10.0 ** rng.uniform(-7, 0, length)).astype(np.float32)
    scales[length // 2] = 0.0
    tb.set_params(scales)
    await tb.check(good, expect=illegal)
    for funct, mode in FUNCT_MODES:  # bad constants for each funct that has them
        if funct in (VectorFunct.REQUANT, VectorFunct.MAX):
            continue
        instruction = tb.random_instruction(funct, mode)
        tb.acc[PARAM_ADDR, 1 if funct == VectorFunct.ADD and mode == RequantMode.FP32 else 3] = -1
        await tb.check(instruction, expect=illegal)
    tb.randomise_operands()
    await tb.check(tb.random_instruction(VectorFunct.SOFTMAX, RequantMode.FP32), expect=ok)
