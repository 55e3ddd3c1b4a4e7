"""cocotb testbench of rtl.store_unit.StoreUnit against golden.machine.

DRAM is a numpy byte array behind a model of the DmaWriter's span/chunk/span_done interface
(``dma_models.DmaWriterModel``: exactly ceil(length / B) chunks per span, written in span order
once complete, random span and chunk backpressure, random latency of ``span_done``, an error for
bytes past the end of DRAM or an injected one); the scratchpad and accumulator are numpy arrays
behind the two read ports. Every instruction also runs on a golden Machine holding the same
memories; the error code must match and every DRAM byte must equal the golden machine's.

Covered: both memories; element counts and lengths 1 .. row width; unaligned DRAM addresses,
elements crossing bus-width boundaries, strides including 0 (broadcast: the last element wins),
overlapping and non-contiguous elements, contiguous rows of every element size (row spans with
packed or multi-chunk elements, and element spans); every check (ILLEGAL_INSTRUCTION for each
field, SRAM_OUT_OF_RANGE, BUS_ERROR past the address space, past the end of DRAM, and a
``span_done`` with error), each followed by a good instruction; ``flush`` in the middle of an
instruction, then a good one; and the throughput of typical stores with no stalls.
"""

import cocotb
import numpy as np
from dma_models import DmaUnitTB, DmaWriterModel, ReadPortModel, dram_bytes, dram_end, span_plan

from golden.isa import ErrorCode, Instruction, Memory, Opcode

#: Random instructions in the random test (about 10 ms of simulation each).
RANDOM_COUNT = 1000


class TB(DmaUnitTB):
    def __init__(self, dut, *, span_stall=0.3, chunk_stall=0.3, latency=(1, 12), **kwargs):
        super().__init__(dut, **kwargs)
        self.writer = self.engine = DmaWriterModel(
            dut, config=self.config, dram=self.dram, rng=self.rng, span_stall=span_stall,
            chunk_stall=chunk_stall, latency=latency)
        self.models = [self.writer, ReadPortModel(dut, "spad_read", self.spad),
                       ReadPortModel(dut, "acc_read", self.acc)]

    async def check(self, instruction: Instruction, *, expect: ErrorCode = ErrorCode.NONE,
                    fail_span: int | None = None, flush_after: int | None = None):
        """Run ``instruction`` on the unit and on the golden machine and compare.

        ``fail_span``: that span's ``span_done`` carries ``error`` (the golden machine knows
        nothing of it): the unit must report BUS_ERROR. ``flush_after``: flush the unit that many
        cycles after it took the command. After a run-time fault or a flush, DRAM bytes outside
        the instruction's elements must be untouched (the golden machine writes nothing on a
        fault)."""
        result = self.golden(instruction)
        assert result.error == expect, (instruction, result.message)  # the case is what it says
        old = self.dram.copy()
        error = await self.execute(instruction, fail_span=fail_span, flush_after=flush_after)
        if flush_after is None or error is not None:
            wanted = ErrorCode.BUS_ERROR if fail_span is not None else result.error
            assert error == wanted, (instruction, error, wanted, result.message)
        if error == ErrorCode.NONE:
            np.testing.assert_array_equal(self.dram, self.machine.dram, err_msg=str(instruction))
            return
        if error is not None and (error != ErrorCode.BUS_ERROR
                                  or fail_span is None and dram_end(instruction) > 1 << 32):
            # found by the checks: the unit touched nothing
            assert self.writer.spans_taken == 0, instruction
            np.testing.assert_array_equal(self.dram, old, err_msg=str(instruction))
            return
        outside = np.ones(len(self.dram), bool)
        addresses = dram_bytes(instruction)
        outside[addresses[addresses < len(self.dram)]] = False
        np.testing.assert_array_equal(self.dram[outside], old[outside], err_msg=str(instruction))

    def random_instruction(self, *, mem: int | None = None, large: bool = False) -> Instruction:
        """A good STORE: random shape, element length, strides and DRAM address."""
        rng = self.rng
        mem = int(rng.integers(0, 2)) if mem is None else mem
        depth = self.memory_shape(mem)[2]
        limit = 24 if large else 8
        while True:
            rows, cols = (int(v) for v in rng.integers(1, limit + 1, 2))
            if rows * cols <= depth // 2:
                break
        instruction = Instruction(Opcode.STORE, mem=mem, rows=rows, cols=cols,
                                  **self.random_layout(mem=mem, rows=rows, cols=cols))
        return instruction.replace(sram_addr=int(rng.integers(0, depth - rows * cols + 1)),
                                   dram_addr=self.random_dram_addr(instruction))


@cocotb.test()
async def random_stores_match_the_golden_machine(dut):
    tb = TB(dut)
    await tb.start()
    plans = {"packed rows": 0, "wide rows": 0, "elements": 0}
    for index in range(RANDOM_COUNT):
        instruction = tb.random_instruction(large=index % 10 == 9)
        plans[span_plan(instruction, tb.config.axi_data_bytes)] += 1
        await tb.check(instruction)
    cocotb.log.info("%d random instructions by span plan: %s", RANDOM_COUNT, plans)
    assert all(plans.values()), plans


@cocotb.test()
async def typical_stores_run_at_one_row_per_cycle(dut):
    """No stalls and a DMA engine that takes a chunk per cycle: rows of at most a bus width are
    read one per cycle, wider ones at the bus rate, after a fixed overhead (the span_done
    latency among it)."""
    tb = TB(dut, span_stall=0, chunk_stall=0, latency=(8, 8), command_idle=0, done_stall=0)
    tb.writer.capacity = (8, 8)
    await tb.start()
    cfg = tb.config
    bus = cfg.axi_data_bytes
    acc_bytes = 4 * cfg.cols
    cases = {
        "scratchpad rows": dict(mem=Memory.SCRATCHPAD, rows=8, cols=16, elem_len=cfg.rows,
                                dram_row_stride=16 * cfg.rows, dram_elem_stride=cfg.rows),
        "accumulator rows": dict(mem=Memory.ACCUMULATOR, rows=4, cols=16, elem_len=cfg.cols,
                                 dram_row_stride=16 * acc_bytes, dram_elem_stride=acc_bytes),
        "int32 tile into a wider matrix": dict(mem=Memory.ACCUMULATOR, rows=16, cols=1,
                                               elem_len=cfg.cols,
                                               dram_row_stride=acc_bytes + 12,
                                               dram_elem_stride=0),
        "3-byte pixels (element spans)": dict(mem=Memory.SCRATCHPAD, rows=6, cols=6, elem_len=3,
                                              dram_row_stride=18, dram_elem_stride=3),
    }
    for name, fields in cases.items():
        instruction = Instruction(Opcode.STORE, sram_addr=3, dram_addr=0x105, **fields)
        rows = instruction.rows * instruction.cols
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
    rng = tb.rng
    illegal, out_of_range = ErrorCode.ILLEGAL_INSTRUCTION, ErrorCode.SRAM_OUT_OF_RANGE
    bus_error = ErrorCode.BUS_ERROR
    for mem in (Memory.SCRATCHPAD, Memory.ACCUMULATOR):
        width, _, depth = tb.memory_shape(mem)
        good = tb.random_instruction(mem=mem)
        for bad in (good.replace(rows=0), good.replace(cols=0), good.replace(elem_len=0),
                    good.replace(elem_len=width + 1)):
            await tb.check(bad, expect=illegal)
            await tb.check(tb.random_instruction())
        # rows past the end (also with a bad DRAM address: SRAM is checked first)
        beyond = good.replace(sram_addr=depth - good.rows * good.cols + 1)
        await tb.check(beyond, expect=out_of_range)
        await tb.check(beyond.replace(dram_addr=(1 << 32) - 1), expect=out_of_range)
        await tb.check(good.replace(cols=0, sram_addr=depth - 1), expect=illegal)
        await tb.check(tb.random_instruction())
        # past the end of the address space: found by the check
        wide = good.replace(elem_len=max(good.elem_len, 2))  # at least two bytes
        high = wide.replace(dram_addr=(1 << 32) - dram_end(wide.replace(dram_addr=0)) + 1)
        await tb.check(high, expect=bus_error)
        await tb.check(tb.random_instruction())
        # ending exactly at the end of the address space: not for the check, DRAM ends first
        await tb.check(high.replace(dram_addr=high.dram_addr - 1), expect=bus_error)
        assert tb.writer.spans_taken > 0
        await tb.check(tb.random_instruction())
        # past the end of DRAM: the engine answers with an error
        end = dram_end(good.replace(dram_addr=0))
        await tb.check(good.replace(dram_addr=len(tb.dram) - end + int(rng.integers(1, 3))),
                       expect=bus_error)
        await tb.check(tb.random_instruction())
    for index in range(30):  # a span_done with error for a random span
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
