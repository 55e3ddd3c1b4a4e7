"""cocotb testbench of rtl.compute_unit.ComputeUnit against golden.machine.

Numpy models of the scratchpad and accumulator sit behind the unit's ports (the accumulate
stream is applied as it is accepted). Random sequences of MATMUL (weight reloads into alternating
banks while the previous tile streams, accumulate and overwrite, 2D walks, repeated rows) and
VECTOR instructions are sent back to back; afterwards both memories must equal the golden
machine's after the same program, and the done stream must list every instruction in order with
the golden machine's error codes. A VECTOR is taken while older MATMULs are in flight and waits
for their rows; younger MATMULs that do not touch its rows pass it: the random programs mix
VECTORs that read the rows the MATMUL just before them writes with ones that do not, and MATMULs
after them that touch their rows (operands, outputs) with ones that do not.
"""

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, Timer
from tb_common import ClockedTB, pack, unpack_signed

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
INDEX_BITS = 32
OPCODE_BITS = 4
SPAD_PORTS = ("spad_read0", "spad_read1", "vector_spad_a", "vector_spad_b")
ACC_PORTS = ("acc_read0", "acc_read1", "acc_read2")
PARAM_ADDR = 100


class TB(ClockedTB):
    def __init__(self, dut, *, write_stall=0.2, command_idle=0.2, done_stall=0.2):
        super().__init__(dut)
        cfg = self.config
        self.write_stall, self.command_idle, self.done_stall = write_stall, command_idle, done_stall
        self.spad = self.rng.integers(-128, 128, (cfg.scratchpad_depth, cfg.rows)).astype(np.int8)
        self.acc = (self.rng.integers(-(1 << 20), 1 << 20, (cfg.accumulator_depth, cfg.cols))
                    .astype(np.int32))
        for name in ("command__valid", "done__ready", "spad_write__ready", "flush"):
            getattr(dut, name).value = 0
        dut.accumulate__ready.value = 1
        self.dones = []
        self.activity = []  # per cycle: (array takes an input row, a VECTOR runs)

    async def start(self):
        await super().start()
        cocotb.start_soon(self.memories())

    async def memories(self):
        dut, cfg = self.dut, self.config
        pending = {}
        while True:
            await FallingEdge(dut.clk)
            for port, row in pending.items():
                getattr(dut, f"{port}__data").value = pack(row, 32 if port in ACC_PORTS else 8)
            ready = self.rng.random() >= self.write_stall
            dut.spad_write__ready.value = int(ready)
            done_ready = self.rng.random() >= self.done_stall
            dut.done__ready.value = int(done_ready)
            await Timer(1, unit="ns")
            pending = {}
            for port in SPAD_PORTS + ACC_PORTS:
                if getattr(dut, f"{port}__en").value:
                    memory = self.acc if port in ACC_PORTS else self.spad
                    addr = getattr(dut, f"{port}__addr").value.to_unsigned()
                    pending[port] = memory[addr % len(memory)].copy()
            if ready and dut.spad_write__en.value:
                addr = dut.spad_write__addr.value.to_unsigned()
                lanes = dut.spad_write__lanes.value.to_unsigned()
                values = unpack_signed(dut.spad_write__data.value.to_unsigned(), 8, cfg.rows)
                for lane in range(cfg.rows):
                    if lanes >> lane & 1:
                        self.spad[addr, lane] = values[lane]
            if dut.accumulate__valid.value:
                word = dut.accumulate__payload.value.to_unsigned()
                addr = word & ((1 << cfg.accumulator_addr_width) - 1)
                values = unpack_signed(word >> cfg.accumulator_addr_width, 32, cfg.cols)
                accumulate = word >> (cfg.accumulator_addr_width + 32 * cfg.cols) & 1
                old = self.acc[addr].astype(np.int64) if accumulate else 0
                self.acc[addr] = ((old + values + (1 << 31)) % (1 << 32) - (1 << 31)).astype(np.int32)
            if done_ready and dut.done__valid.value:
                word = dut.done__payload.value.to_unsigned()
                self.dones.append((word & ((1 << INDEX_BITS) - 1), ErrorCode(word >> INDEX_BITS)))
            self.activity.append((dut.macs.value.to_unsigned() != 0, bool(dut.vector_busy.value)))

    async def send(self, index: int, instruction: Instruction) -> int:
        """Offer one command (after random idle cycles) until it is taken; cycles taken."""
        dut = self.dut
        payload = (index | int(instruction.opcode) << INDEX_BITS
                   | (encode(instruction) >> HEADER_BITS) << (INDEX_BITS + OPCODE_BITS))
        cycles = 0
        while self.rng.random() < self.command_idle:
            await FallingEdge(dut.clk)
            cycles += 1
        while True:
            await FallingEdge(dut.clk)
            cycles += 1
            dut.command__valid.value = 1
            dut.command__payload.value = payload
            await Timer(1, unit="ns")
            if dut.command__ready.value:
                break
            assert cycles < 100_000, "the unit stopped taking commands"
        await FallingEdge(dut.clk)
        dut.command__valid.value = 0
        return cycles

    async def run(self, program: list[Instruction]) -> int:
        """Send the instructions back to back; wait for all their dones; cycles taken."""
        dut = self.dut
        self.dones = []
        cycles = 0
        for index, instruction in enumerate(program):
            cycles += await self.send(index, instruction)
        while len(self.dones) < len(program) or not dut.idle.value:
            await FallingEdge(dut.clk)
            cycles += 1
            assert cycles < 100_000, f"only {len(self.dones)} of {len(program)} done"
        return cycles

    async def check(self, program: list[Instruction]) -> int:
        cfg = self.config
        machine = Machine(cfg, dram_size=1 << 14)
        machine.scratchpad[:] = self.spad
        machine.accumulator[:] = self.acc
        machine.write_dram(0, encode_program(program + [Instruction(Opcode.FINISH)],
                                             instruction_bytes=cfg.instruction_bytes))
        result = machine.run(program_address=0, instruction_count=len(program) + 1)
        cycles = await self.run(program)
        expected = [(i, ErrorCode.NONE) for i in range(len(program))]
        if result.error != ErrorCode.NONE:
            expected[result.error_index] = (result.error_index, result.error)
            expected = expected[:result.error_index + 1]  # the TB's program stops there
        assert self.dones == expected, (self.dones, expected, result.message)
        np.testing.assert_array_equal(self.acc, machine.accumulator)
        np.testing.assert_array_equal(self.spad, machine.scratchpad)
        return cycles

    def random_matmul(self, *, load_weights: bool) -> Instruction:
        rng = self.rng
        outer, inner = int(rng.integers(1, 3)), int(rng.integers(1, 6))
        return Instruction(
            Opcode.MATMUL, accumulate=int(rng.integers(0, 2)), load_weights=int(load_weights),
            weight_addr=int(rng.integers(0, 40)), outer_count=outer, inner_count=inner,
            input_addr=int(rng.integers(0, 40)), input_outer_stride=int(rng.integers(0, 8)),
            input_inner_stride=int(rng.integers(0, 3)), acc_addr=int(rng.integers(0, 20)),
            acc_outer_stride=int(rng.integers(0, 8)), acc_inner_stride=int(rng.integers(0, 3)))

    def requant(self, **fields) -> Instruction:
        cfg = self.config
        rows = parameter_rows(cfg, np.full(cfg.cols, 0.003, np.float32))
        self.acc[PARAM_ADDR:PARAM_ADDR + len(rows)] = rows
        return Instruction(Opcode.VECTOR, funct=VectorFunct.REQUANT, mode=RequantMode.FP32,
                           outer_count=1, inner_count=4, a_addr=0, a_inner_stride=1,
                           out_addr=60, out_inner_stride=1, length=min(cfg.rows, cfg.cols),
                           param_addr=PARAM_ADDR, clip_lo=-128, clip_hi=127).replace(**fields)

    def random_requant(self) -> Instruction:
        """A REQUANT somewhere in accumulator rows 0-39, writing scratchpad rows 40-99 (where
        the MATMULs of ``long_matmul`` read inputs and weights, rows 0-67)."""
        rng, cfg = self.rng, self.config
        return self.requant(
            outer_count=int(rng.integers(1, 3)), inner_count=int(rng.integers(1, 9)),
            a_addr=int(rng.integers(0, 24)), a_outer_stride=int(rng.integers(0, 9)),
            a_inner_stride=int(rng.integers(0, 2)), out_addr=int(rng.integers(40, 80)),
            out_outer_stride=int(rng.integers(0, 9)), out_inner_stride=int(rng.integers(0, 2)),
            length=int(rng.integers(1, cfg.cols + 1)), out_lane=int(rng.integers(0, cfg.rows)))

    def long_matmul(self, *, load_weights: bool) -> Instruction:
        """A MATMUL of up to 24 rows: accumulator rows 0-39, input and weight rows 0-67."""
        rng = self.rng
        return self.random_matmul(load_weights=load_weights).replace(
            inner_count=int(rng.integers(1, 13)), input_addr=int(rng.integers(0, 40)),
            input_inner_stride=int(rng.integers(0, 2)), acc_addr=int(rng.integers(0, 16)),
            acc_inner_stride=int(rng.integers(0, 2)), weight_addr=int(rng.integers(0, 52)))


@cocotb.test()
async def random_matmul_and_vector_sequences(dut):
    tb = TB(dut)
    await tb.start()
    rng = tb.rng
    for _ in range(4):
        program = []
        for step in range(10):
            if step and rng.random() < 0.15:
                program.append(tb.requant())
            else:
                program.append(tb.random_matmul(load_weights=step == 0 or rng.random() < 0.6))
        # A VECTOR reading rows the MATMUL before it just wrote (waits for the drain).
        program.append(tb.requant())
        await tb.check(program)


@cocotb.test()
async def vectors_wait_for_older_rows_and_younger_matmuls_pass(dut):
    """Random mixes: a VECTOR right after a MATMUL that writes its operand rows (it must wait
    for them in the accumulator), VECTORs on other rows, MATMULs after a VECTOR that overwrite
    its operands or read or load weights from its output rows (they must wait for it) and ones
    that do not (they pass it); random backpressure on every stream, in half the programs a
    done stream that is mostly stalled (an older MATMUL's done still waits when the VECTOR
    ends)."""
    tb = TB(dut)
    await tb.start()
    rng = tb.rng
    for done_stall in (0.2, 0.9) * 4:
        tb.done_stall = done_stall
        program = [tb.long_matmul(load_weights=True)]
        for _ in range(15):
            if program[-1].opcode == Opcode.MATMUL and rng.random() < 0.35:
                vector = tb.random_requant()
                if rng.random() < 0.6:  # reads rows the MATMUL just before it writes
                    vector = vector.replace(a_addr=program[-1].acc_addr)
                program.append(vector)
            else:
                program.append(tb.long_matmul(load_weights=rng.random() < 0.7))
        await tb.check(program)


@cocotb.test()
async def matmuls_keep_the_array_busy_around_a_vector(dut):
    """MATMUL, a VECTOR on its rows (three passes over them), two independent MATMULs, four
    short ones: the VECTOR is taken at once and starts when the first MATMUL's rows are in the
    accumulator, while the next MATMUL streams, so the array takes a row in every cycle from
    the first row to the last (it used to drain before the VECTOR). The younger MATMULs end
    before the VECTOR and report after it (their dones wait without holding up the array), the
    first one reports before it."""
    tb = TB(dut, write_stall=0, command_idle=0, done_stall=0)
    await tb.start()
    cfg = tb.config
    length = cfg.rows + 2 * cfg.cols + 4  # the third MATMUL's weights wait for the first's rows
    program = [
        Instruction(Opcode.MATMUL, load_weights=1, weight_addr=0, outer_count=1,
                    inner_count=length, input_addr=0, input_inner_stride=1, acc_addr=0,
                    acc_inner_stride=1),
        tb.requant(outer_count=3, inner_count=length, a_addr=0, out_addr=140 - length),
        Instruction(Opcode.MATMUL, load_weights=1, weight_addr=length, outer_count=1,
                    inner_count=length, input_addr=1, input_inner_stride=1, acc_addr=length,
                    acc_inner_stride=1),
        Instruction(Opcode.MATMUL, load_weights=1, weight_addr=2 * length, outer_count=1,
                    inner_count=length, input_addr=2, input_inner_stride=1, acc_addr=length,
                    acc_inner_stride=1, accumulate=1),
    ] + [Instruction(Opcode.MATMUL, load_weights=0, outer_count=1, inner_count=3,
                     input_addr=3 + i, input_inner_stride=1, acc_addr=2 * length + 3 * i,
                     acc_inner_stride=1) for i in range(4)]
    tb.activity = []
    await tb.check(program)
    busy = [cycle for cycle, (macs, _) in enumerate(tb.activity) if macs]
    first, last = busy[0], busy[-1]
    assert len(busy) == 3 * length + 12, (len(busy), 3 * length + 12)
    assert last - first + 1 == len(busy), f"the array idled {last - first + 1 - len(busy)} cycles"
    overlap = sum(1 for macs, vector in tb.activity if macs and vector)
    assert overlap > length, overlap  # the VECTOR runs while the next MATMULs stream


@cocotb.test()
async def weight_reload_overlaps_the_previous_tile(dut):
    """Back-to-back MATMULs that each load a tile: the next tile's weights shift in while the
    current one streams, so the sequence takes about one cycle per input row plus one drain."""
    tb = TB(dut, write_stall=0, command_idle=0, done_stall=0)
    await tb.start()
    cfg = tb.config
    # Long enough for the previous tile's last rows to leave the bank before the reload.
    tiles, rows_per_tile = 6, cfg.rows + 2 * cfg.cols + 4
    program = [Instruction(Opcode.MATMUL, load_weights=1, weight_addr=8 * t, outer_count=1,
                           inner_count=rows_per_tile, input_addr=t, input_inner_stride=1,
                           acc_addr=t, acc_inner_stride=1) for t in range(tiles)]
    cycles = await tb.check(program)
    serial_bound = tiles * (rows_per_tile + cfg.cols + cfg.rows + cfg.cols)
    assert cycles < tiles * (rows_per_tile + 4) + 2 * (cfg.rows + cfg.cols) + 40, cycles
    assert cycles < serial_bound, (cycles, serial_bound)


@cocotb.test()
async def errors_keep_program_order(dut):
    tb = TB(dut)
    await tb.start()
    cfg = tb.config
    good = tb.random_matmul(load_weights=True)
    for bad, code in (
            (good.replace(inner_count=0), ErrorCode.ILLEGAL_INSTRUCTION),
            (good.replace(acc_addr=cfg.accumulator_depth - 1, acc_inner_stride=1, inner_count=2),
             ErrorCode.SRAM_OUT_OF_RANGE),
            (good.replace(weight_addr=cfg.scratchpad_depth - cfg.cols + 1),
             ErrorCode.SRAM_OUT_OF_RANGE),
            (tb.requant().replace(funct=9), ErrorCode.ILLEGAL_INSTRUCTION)):
        await tb.check([good, tb.random_matmul(load_weights=False), bad])
        assert tb.dones[-1] == (2, code)
    await tb.check([good, tb.requant()])


@cocotb.test()
async def flush_with_a_waiting_vector_ends_idle(dut):
    """A flush (an error elsewhere) while a VECTOR waits for the rows of the MATMUL before it:
    the MATMUL's rows not yet issued are dropped, the rows in the array and the VECTOR complete,
    the unit goes idle and then runs the next program like the golden machine."""
    tb = TB(dut, write_stall=0, command_idle=0, done_stall=0)
    await tb.start()
    cfg = tb.config
    long = Instruction(Opcode.MATMUL, load_weights=1, weight_addr=0, outer_count=1,
                       inner_count=4 * (cfg.rows + cfg.cols), input_addr=0, input_inner_stride=1,
                       acc_addr=0, acc_inner_stride=1)
    await tb.send(0, long)
    await tb.send(1, tb.requant())
    await tb.send(2, tb.random_matmul(load_weights=True).replace(acc_addr=40))
    for _ in range(cfg.cols + 4):
        await FallingEdge(dut.clk)
    assert dut.macs.value.to_unsigned() != 0 and not dut.vector_busy.value  # it waits
    dut.flush.value = 1
    for _ in range(1000):
        await FallingEdge(dut.clk)
        if dut.idle.value:
            break
    assert dut.idle.value, "the unit did not go idle after the flush"
    dut.flush.value = 0
    await tb.check([tb.random_matmul(load_weights=True), tb.requant(),
                    tb.random_matmul(load_weights=False)])
