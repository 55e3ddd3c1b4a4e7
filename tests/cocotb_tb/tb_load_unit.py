"""cocotb testbench of rtl.load_unit.LoadUnit against golden.machine.

DRAM is a numpy byte array behind a model of the DmaReader's span/chunk interface
(``dma_models.DmaReaderModel``: realigned chunks with garbage above ``count``, random span
backpressure, latency and idle cycles, errors for bytes past the end of DRAM or injected ones);
the scratchpad and accumulator are numpy arrays behind the two write ports, whose ``ready`` drops
at random. Every instruction also runs on a golden Machine holding the same memories; the error
code must match and every SRAM row of both memories must equal the golden machine's.

Covered: both memories; all four paddings (0..15) and pad values; element counts and lengths
1 .. row width; unaligned DRAM addresses, elements crossing bus-width boundaries, strides
including 0 (broadcast), overlapping and non-contiguous elements, contiguous rows of every
element size (row spans and element spans); every check (ILLEGAL_INSTRUCTION for each field,
SRAM_OUT_OF_RANGE, BUS_ERROR past the address space, past the end of DRAM, and a chunk with
``error`` at a random place), each followed by a good instruction; ``flush`` in the middle of an
instruction, then a good one; and the throughput of typical loads with no stalls.
"""

import cocotb
import numpy as np
from dma_models import DmaReaderModel, DmaUnitTB, WritePortModel, dram_end, span_plan

from golden.isa import ErrorCode, Instruction, Memory, Opcode

#: Random instructions in the random test (about 10 ms of simulation each).
RANDOM_COUNT = 1000


class TB(DmaUnitTB):
    def __init__(self, dut, *, span_stall=0.3, chunk_idle=0.3, write_stall=0.3, latency=(1, 12),
                 **kwargs):
        super().__init__(dut, **kwargs)
        cfg, rng = self.config, self.rng
        self.reader = self.engine = DmaReaderModel(
            dut, config=cfg, dram=self.dram, rng=rng, span_stall=span_stall,
            chunk_idle=chunk_idle, latency=latency)
        self.ports = [WritePortModel(dut, "spad_write", self.spad, rng, stall=write_stall),
                      WritePortModel(dut, "acc_write", self.acc, rng, stall=write_stall)]
        self.models = [self.reader, *self.ports]

    @property
    def writes(self) -> int:
        return sum(port.writes for port in self.ports)

    async def check(self, instruction: Instruction, *, expect: ErrorCode = ErrorCode.NONE,
                    fail_span: int | None = None, flush_after: int | None = None):
        """Run ``instruction`` on the unit and on the golden machine and compare.

        ``fail_span``: a chunk of that span carries ``error`` (the golden machine knows nothing
        of it): the unit must report BUS_ERROR. ``flush_after``: flush the unit that many cycles
        after it took the command. After a run-time fault or a flush, rows outside the block
        must be untouched and rows inside it the old or the golden ones (the golden machine
        writes nothing on a fault)."""
        result = self.golden(instruction)
        assert result.error == expect, (instruction, result.message)  # the case is what it says
        old = {Memory.SCRATCHPAD: self.spad.copy(), Memory.ACCUMULATOR: self.acc.copy()}
        writes = self.writes
        error = await self.execute(instruction, fail_span=fail_span, flush_after=flush_after)
        if flush_after is None or error is not None:
            wanted = ErrorCode.BUS_ERROR if fail_span is not None else result.error
            assert error == wanted, (instruction, error, wanted, result.message)
        if error == ErrorCode.NONE:
            np.testing.assert_array_equal(self.spad, self.machine.scratchpad, err_msg=str(instruction))
            np.testing.assert_array_equal(self.acc, self.machine.accumulator, err_msg=str(instruction))
            return
        if error is not None and (error != ErrorCode.BUS_ERROR
                                  or fail_span is None and dram_end(instruction) > 1 << 32):
            # found by the checks: the unit touched nothing, not even DRAM
            assert self.writes == writes and self.reader.spans_taken == 0, instruction
        memories = {Memory.SCRATCHPAD: (self.spad, self.machine.scratchpad),
                    Memory.ACCUMULATOR: (self.acc, self.machine.accumulator)}
        for mem, (memory, new) in memories.items():
            inside = np.zeros(len(memory), bool)
            if mem == instruction.mem:
                inside[instruction.sram_addr:instruction.sram_addr + block_rows(instruction)] = True
            np.testing.assert_array_equal(memory[~inside], old[mem][~inside], err_msg=str(instruction))
            if result.error == ErrorCode.NONE:
                same = np.all(memory[inside] == old[mem][inside], axis=1) | \
                    np.all(memory[inside] == new[inside], axis=1)
                assert same.all(), (instruction, np.flatnonzero(inside)[~same])

    # Random instructions -------------------------------------------------------------------------

    def random_instruction(self, *, mem: int | None = None, large: bool = False) -> Instruction:
        """A good LOAD: random shape, padding, element length, strides and DRAM address."""
        rng = self.rng
        mem = int(rng.integers(0, 2)) if mem is None else mem
        depth = self.memory_shape(mem)[2]
        while True:
            limit = 24 if large else 6
            rows, cols = (int(v) for v in rng.integers(1, limit + 1, 2))
            pads = [int(rng.integers(0, 16)) if rng.random() < 0.15 else int(rng.integers(0, 3))
                    for _ in range(4)]
            if (pads[0] + rows + pads[1]) * (pads[2] + cols + pads[3]) <= depth // 2:
                break
        instruction = Instruction(Opcode.LOAD, mem=mem, rows=rows, cols=cols, pad_top=pads[0],
                                  pad_bottom=pads[1], pad_left=pads[2], pad_right=pads[3],
                                  pad_value=int(rng.integers(-128, 128)),
                                  **self.random_layout(mem=mem, rows=rows, cols=cols))
        if mem == Memory.SCRATCHPAD and rng.random() < 0.4:  # part of each row
            instruction = instruction.replace(
                lane_offset=int(rng.integers(0, self.config.rows - instruction.elem_len + 1)),
                merge=int(rng.integers(0, 2)))
        return instruction.replace(
            sram_addr=int(rng.integers(0, depth - block_rows(instruction) + 1)),
            dram_addr=self.random_dram_addr(instruction))


def block_rows(ins: Instruction) -> int:
    return (ins.pad_top + ins.rows + ins.pad_bottom) * (ins.pad_left + ins.cols + ins.pad_right)


@cocotb.test()
async def random_loads_match_the_golden_machine(dut):
    tb = TB(dut)
    await tb.start()
    plans = {"packed rows": 0, "wide rows": 0, "elements": 0}
    merged = 0
    for index in range(RANDOM_COUNT):
        instruction = tb.random_instruction(large=index % 10 == 9)
        plans[span_plan(instruction, tb.config.axi_data_bytes)] += 1
        merged += instruction.merge and instruction.lane_offset > 0
        await tb.check(instruction)
    cocotb.log.info("%d random instructions by span plan: %s; %d merged at a lane offset",
                    RANDOM_COUNT, plans, merged)
    assert all(plans.values()) and merged, (plans, merged)
    assert tb.ports[0].writes > 0 and tb.ports[1].writes > 0


@cocotb.test()
async def typical_loads_run_at_one_row_per_cycle(dut):
    """No stalls and a DMA engine that streams a chunk per cycle: rows of at most a bus width
    are written one per cycle, wider ones at the bus rate, after a fixed overhead."""
    tb = TB(dut, span_stall=0, chunk_idle=0, write_stall=0, latency=(8, 8), command_idle=0,
            done_stall=0)
    tb.reader.capacity = (8, 8)
    await tb.start()
    cfg = tb.config
    bus = cfg.axi_data_bytes
    acc_bytes = 4 * cfg.cols
    cases = {
        "scratchpad rows": dict(mem=Memory.SCRATCHPAD, rows=8, cols=16, elem_len=cfg.rows,
                                dram_row_stride=16 * cfg.rows, dram_elem_stride=cfg.rows),
        "padded tile": dict(mem=Memory.SCRATCHPAD, rows=6, cols=6, elem_len=cfg.rows,
                            dram_row_stride=6 * cfg.rows, dram_elem_stride=cfg.rows, pad_top=1,
                            pad_bottom=1, pad_left=1, pad_right=1, pad_value=-5),
        "accumulator rows": dict(mem=Memory.ACCUMULATOR, rows=4, cols=16, elem_len=cfg.cols,
                                 dram_row_stride=16 * acc_bytes, dram_elem_stride=acc_bytes),
        "bias broadcast": dict(mem=Memory.ACCUMULATOR, rows=8, cols=8, elem_len=cfg.cols,
                               dram_row_stride=0, dram_elem_stride=acc_bytes),
        "3-byte pixels (element spans)": dict(mem=Memory.SCRATCHPAD, rows=6, cols=6, elem_len=3,
                                              dram_row_stride=18, dram_elem_stride=3),
    }
    for name, fields in cases.items():
        instruction = Instruction(Opcode.LOAD, sram_addr=3, dram_addr=0x105, **fields)
        rows = block_rows(instruction)
        itemsize = 4 if instruction.mem == Memory.ACCUMULATOR else 1
        per_row = max(1, -(-instruction.elem_len * itemsize // bus))
        start = tb.cycle
        await tb.check(instruction)
        cycles = tb.cycle - start
        cocotb.log.info("%s: %d SRAM rows in %d cycles (%.2f cycles per row)", name, rows,
                        cycles, cycles / rows)
        if "element spans" not in name:
            assert cycles <= rows * per_row + 24, (name, cycles)


@cocotb.test()
async def errors_are_reported_and_the_unit_restarts(dut):
    tb = TB(dut)
    await tb.start()
    cfg, rng = tb.config, tb.rng
    illegal, out_of_range = ErrorCode.ILLEGAL_INSTRUCTION, ErrorCode.SRAM_OUT_OF_RANGE
    bus_error = ErrorCode.BUS_ERROR
    for mem in (Memory.SCRATCHPAD, Memory.ACCUMULATOR):
        width = cfg.cols if mem == Memory.ACCUMULATOR else cfg.rows
        depth = cfg.accumulator_depth if mem == Memory.ACCUMULATOR else cfg.scratchpad_depth
        good = tb.random_instruction(mem=mem)
        lane_misuse = ((good.replace(lane_offset=1), good.replace(merge=1))
                       if mem == Memory.ACCUMULATOR else
                       (good.replace(lane_offset=width - good.elem_len + 1, merge=1),))
        for bad in (good.replace(rows=0), good.replace(cols=0), good.replace(elem_len=0),
                    good.replace(elem_len=width + 1), *lane_misuse):
            await tb.check(bad, expect=illegal)
            await tb.check(tb.random_instruction())
        # rows past the end (also with a bad DRAM address: SRAM is checked first)
        beyond = good.replace(sram_addr=depth - block_rows(good) + 1)
        await tb.check(beyond, expect=out_of_range)
        await tb.check(beyond.replace(dram_addr=(1 << 32) - 1), expect=out_of_range)
        await tb.check(good.replace(rows=0, sram_addr=depth - 1), expect=illegal)
        await tb.check(tb.random_instruction())
        # past the end of the address space: found by the check
        wide = good.replace(elem_len=max(good.elem_len, 2))  # at least two bytes
        high = wide.replace(dram_addr=(1 << 32) - dram_end(wide.replace(dram_addr=0)) + 1)
        await tb.check(high, expect=bus_error)
        await tb.check(tb.random_instruction())
        # ending exactly at the end of the address space: not for the check, DRAM ends first
        await tb.check(high.replace(dram_addr=high.dram_addr - 1), expect=bus_error)
        assert tb.reader.spans_taken > 0
        await tb.check(tb.random_instruction())
        # past the end of DRAM: the engine answers with errors
        end = dram_end(good.replace(dram_addr=0))
        await tb.check(good.replace(dram_addr=len(tb.dram) - end + int(rng.integers(1, 3))),
                       expect=bus_error)
        await tb.check(tb.random_instruction())
    for index in range(30):  # a chunk with error in a random span
        instruction = tb.random_instruction(large=index % 3 == 0)
        await tb.check(instruction, fail_span=int(rng.integers(0, instruction.rows)))
        await tb.check(tb.random_instruction())


@cocotb.test()
async def flush_abandons_the_instruction(dut):
    tb = TB(dut)
    await tb.start()
    for index in range(30):
        instruction = tb.random_instruction(large=True)
        await tb.check(instruction, flush_after=int(tb.rng.integers(0, 40 if index % 2 else 4)))
        await tb.check(tb.random_instruction())
