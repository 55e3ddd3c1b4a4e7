"""The runtime's two backends: the golden machine and the Verilator model behind one Device API.

The rtl device builds the NPU's Verilator library on first use (cached in .npu_cache/rtl_sim).
"""

from __future__ import annotations

import numpy as np
import pytest
from random_programs import random_program

from golden import quant
from golden import registers as regmap
from golden.config import get_config
from golden.isa import ErrorCode, Instruction, Memory, Opcode, VectorFunct, encode
from sw.matmul import compile_matmul, pack_weights
from sw.runtime import ConfigMismatchError, CycleLimitError, DramAllocator, NpuError, Program, open_device

I, O = Instruction, Opcode
REG = {reg.name: reg.offset for reg in regmap.REGISTERS}
START = 1 << regmap.field("CTRL", "START").lsb
IRQ_ENABLE = 1 << regmap.field("CTRL", "IRQ_ENABLE").lsb
CLEAR = 1 << regmap.field("CTRL", "CLEAR").lsb
#: Cycles the harness counts from the START write to the IRQ beyond the busy cycles: the
#: AXI4-Lite write is taken at the first edge and START acts at the second (BUSY from the third
#: cycle on), and the IRQ is DONE, registered one edge after the last busy cycle. The same for
#: every program and configuration: CYCLES counts every busy cycle.
START_AND_IRQ_CYCLES = 3
CONFIGS = ["tiny", "small"]
SEEDS = range(8)


@pytest.fixture(scope="module", params=CONFIGS)
def rtl(request):
    device = open_device("rtl", request.param, dram_size=1 << 20)
    yield device
    device.close()


def fresh_dram(device):
    device.write_dram(0, bytes(device.dram_size))


@pytest.mark.parametrize("seed", SEEDS)
def test_random_programs_give_identical_dram_on_golden_and_rtl(rtl, seed):
    config = rtl.config
    p = random_program(config, seed)
    golden = open_device("golden", config, dram_size=rtl.dram_size)
    fresh_dram(rtl)
    # The kernels' tensors sit at fixed addresses from 0x1000 on: keep the program image out.
    regions = [device.allocator.allocate(p.dram_bytes - p.first_address) for device in (golden, rtl)]
    assert regions == [p.first_address] * 2
    for address, data in p.writes:
        golden.write_dram(address, data)
        rtl.write_dram(address, data)
    program = Program(config, p.instructions, name=f"seed {seed}: {', '.join(p.kernels)}")
    expected = golden.run(program)
    got = rtl.run(program)
    size = p.dram_bytes + 4096  # the program image is written just past the tensors
    np.testing.assert_array_equal(np.frombuffer(rtl.read_dram(0, size), np.uint8),
                                  np.frombuffer(golden.read_dram(0, size), np.uint8),
                                  err_msg=program.name)
    # Work the program implies is counted the same by both; time is the hardware's own.
    for counter in ("macs", "instructions", "dram_write_bytes"):
        assert got.counters[counter] == expected.counters[counter], (counter, program.name)
    assert got.cycles > 0
    rtl.free(p.first_address)


def test_vector_clock_gate_changes_no_cycle_and_no_byte():
    """The rtl device's model gates the vector unit's clock (rtl.npu.Npu(gate_vector_clock=True),
    several times faster in Verilator); the FPGA Verilog does not. Both must behave identically,
    cycle for cycle: the same random programs (every VECTOR function, matmuls, convolutions) give
    the same DRAM bytes and the same value in every performance counter, CYCLES included."""
    from sw.runtime import RtlDevice

    config = get_config("tiny")
    gated = open_device("rtl", config, dram_size=1 << 20, quiet=True)
    ungated = RtlDevice(config, dram_size=1 << 20, quiet=True, gate_vector_clock=False)
    assert gated.simulator._lib is not ungated.simulator._lib
    for seed in range(4):
        p = random_program(config, seed)
        stats = []
        for device in (gated, ungated):
            fresh_dram(device)
            device.allocator.allocate(p.dram_bytes - p.first_address)
            for address, data in p.writes:
                device.write_dram(address, data)
            stats.append(device.run(Program(config, p.instructions, name=f"seed {seed}")))
            device.free(p.first_address)
        size = p.dram_bytes + 4096
        assert gated.read_dram(0, size) == ungated.read_dram(0, size), seed
        assert stats[0].counters == stats[1].counters, seed
        assert gated.simulator.cycles == ungated.simulator.cycles, seed
        assert stats[0].counters["busy_vector"] > 0, seed
    gated.close()
    ungated.close()


def _matmul_after_requant(config, *, m2_input: int, m2_acc: int, n: int) -> list[Instruction]:
    """MATMUL M1 (scratchpad rows 0..n -> accumulator rows 0..n), REQUANT V of those rows into
    scratchpad rows OUT.., then MATMUL M2 (rows m2_input.. -> accumulator rows m2_acc..); the
    inputs come from DRAM 0x1000, the weights from 0x8000, the scales from 0x9000; every SRAM
    region is stored to DRAM from 0x10000 on."""
    from sw.compiler import Step, pipeline

    r, c = config.rows, config.cols
    weights, params, out = 4 * n, 4 * n - 1, 2 * n
    def dma(opcode, mem, sram, dram, count, width):  # count contiguous rows of width values
        return I(opcode, mem=mem, sram_addr=sram, dram_addr=dram, rows=1, cols=count,
                 elem_len=width, dram_elem_stride=width * (4 if mem == Memory.ACCUMULATOR else 1))
    def matmul(inputs, acc):
        return I(O.MATMUL, load_weights=1, weight_addr=weights, outer_count=1, inner_count=n,
                 input_addr=inputs, input_inner_stride=1, acc_addr=acc, acc_inner_stride=1)
    step = Step(
        loads=[dma(O.LOAD, Memory.SCRATCHPAD, 0, 0x1000, 2 * n, r),
               dma(O.LOAD, Memory.SCRATCHPAD, weights, 0x8000, c, r),
               dma(O.LOAD, Memory.ACCUMULATOR, params, 0x9000, 1, c)],
        computes=[matmul(0, 0),
                  I(O.VECTOR, funct=VectorFunct.REQUANT, outer_count=1, inner_count=n,
                    a_inner_stride=1, out_addr=out, out_inner_stride=-(-c // r), length=c,
                    param_addr=params, clip_lo=-128, clip_hi=127),
                  matmul(m2_input, m2_acc)],
        stores=[dma(O.STORE, Memory.ACCUMULATOR, 0, 0x10000, 2 * n, c),
                dma(O.STORE, Memory.SCRATCHPAD, out, 0x20000, n * -(-c // r), r)])
    return pipeline([step])


def test_matmul_runs_alongside_a_vector_unless_it_touches_its_rows(rtl):
    """The compute unit starts a MATMUL that follows a VECTOR while the VECTOR runs, unless the
    MATMUL reads rows the VECTOR writes or writes rows it reads. Three programs, each checked
    against the golden machine byte for byte: an independent MATMUL overlaps the REQUANT (fewer
    cycles); one that reads the REQUANT's output (read after write) or overwrites its input
    (write after read) waits for it, and still computes what the in-order machine computes."""
    config = rtl.config
    n = 96
    rng = np.random.default_rng(7)
    data = {0x1000: rng.integers(-128, 128, 2 * n * config.rows, dtype=np.int8).tobytes(),
            0x8000: rng.integers(-128, 128, config.cols * config.rows, dtype=np.int8).tobytes(),
            0x9000: np.full(config.cols, 1e-3, np.float32).tobytes()}
    golden = open_device("golden", config, dram_size=rtl.dram_size)
    cycles = {}
    for name, m2_input, m2_acc in (("independent", n, n), ("reads the output", 2 * n, n),
                                   ("overwrites the input", n, 0)):
        program = Program(config, _matmul_after_requant(config, m2_input=m2_input, m2_acc=m2_acc,
                                                        n=n), name=name)
        for device in (golden, rtl):
            fresh_dram(device)
            for address, blob in data.items():
                device.write_dram(address, blob)
        golden.run(program)
        cycles[name] = rtl.run(program).cycles
        np.testing.assert_array_equal(np.frombuffer(rtl.read_dram(0x10000, 0x20000), np.uint8),
                                      np.frombuffer(golden.read_dram(0x10000, 0x20000), np.uint8),
                                      err_msg=name)
    # The REQUANT takes about n cycles; running it alongside the independent MATMUL saves them.
    assert cycles["independent"] + n // 2 < cycles["reads the output"], cycles
    assert cycles["independent"] + n // 2 < cycles["overwrites the input"], cycles


def matmul_program(device, *, m, k, n, seed=0):
    config = device.config
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-128, 128, (k, n), dtype=np.int8)
    x_addr, w_addr = device.write_tensor(x), device.write_tensor(pack_weights(config, w))
    y_addr = device.allocator.allocate(m * n * 4)
    program = Program(config, compile_matmul(config, m=m, k=k, n=n, x_addr=x_addr,
                                             w_addr=w_addr, y_addr=y_addr), name="matmul")
    return program, quant.matmul(x, w), y_addr


def test_counters_match_the_program_and_the_harness(rtl):
    config = rtl.config
    m, k, n = 3 * config.rows + 1, 2 * config.rows, 2 * config.cols + 3
    program, expected, y_addr = matmul_program(rtl, m=m, k=k, n=n)
    stats = rtl.run(program)
    np.testing.assert_array_equal(rtl.read_tensor(y_addr, (m, n), np.int32), expected)
    # MACs: rows x cols for every input row streamed, i.e. every MATMUL's outer x inner rows.
    streamed = sum(i.outer_count * i.inner_count for i in program.instructions
                   if i.opcode == O.MATMUL)
    assert stats.macs == streamed * config.pes
    assert stats.counters["instructions"] == len(program)
    assert stats.counters["dram_write_bytes"] == m * n * 4
    assert 0 < stats.utilisation < 1
    # CYCLES against the harness's own count from the START write to the IRQ.
    simulator = rtl.simulator
    address = rtl.write_tensor(np.frombuffer(program.image(), np.uint8))
    simulator.write_register(REG["PROGRAM_ADDR"], address)
    simulator.write_register(REG["PROGRAM_LENGTH"], len(program))
    simulator.write_register(REG["CTRL"], IRQ_ENABLE | CLEAR)
    start = simulator.cycles
    simulator.write_register(REG["CTRL"], IRQ_ENABLE | START)
    assert simulator.run_until_irq(1 << 24)
    harness = simulator.cycles - start
    cycles = rtl.read_counter("CYCLES")
    assert cycles == harness - START_AND_IRQ_CYCLES, (cycles, harness)
    simulator.write_register(REG["CTRL"], CLEAR)


def test_hardware_errors_raise_and_the_device_recovers(rtl):
    config = rtl.config
    program, expected, y_addr = matmul_program(rtl, m=config.rows + 3, k=config.rows, n=config.cols)
    # An AXI error injected by the DRAM model on the result region: BUS_ERROR at a STORE.
    rtl.simulator.inject_error(begin=y_addr, end=y_addr + 4, reads=False, writes=True)
    with pytest.raises(NpuError) as error:
        rtl.run(program)
    assert error.value.code == ErrorCode.BUS_ERROR
    assert program.instructions[error.value.index].opcode == O.STORE
    assert "BUS_ERROR at instruction" in str(error.value)
    rtl.simulator.clear_errors()
    # An illegal instruction (a word of zeros) at index 1.
    image = encode(I(O.SYNC)).to_bytes(config.instruction_bytes, "little") + bytes(
        config.instruction_bytes)
    address = rtl.write_tensor(np.frombuffer(image, np.uint8))
    with pytest.raises(NpuError) as error:
        rtl.execute(program_address=address, instruction_count=2)
    assert (error.value.code, error.value.index) == (ErrorCode.ILLEGAL_INSTRUCTION, 1)
    # The cycle limit: the device is reset and keeps its DRAM.
    with pytest.raises(CycleLimitError) as error:
        rtl.run(program, cycle_limit=50)
    assert "did not finish within 50 cycles" in str(error.value)
    assert error.value.stats.cycles >= 50
    # After all that, the same program runs and gives the right result.
    rtl.write_dram(y_addr, bytes(expected.nbytes))
    rtl.run(program)
    np.testing.assert_array_equal(rtl.read_tensor(y_addr, expected.shape, np.int32), expected)


def test_a_program_for_another_configuration_is_refused(rtl):
    other = get_config("small" if rtl.config.name == "tiny" else "tiny")
    program = Program(other, [I(O.FINISH)], name="elsewhere")
    with pytest.raises(ConfigMismatchError, match=rf"compiled for the {other.name} configuration "
                       rf"but the rtl device is {rtl.config.name}: rows {other.rows} "):
        rtl.run(program)


def test_the_driver_discovers_the_configuration_from_the_registers(rtl):
    assert rtl.read_register("ROWS") == rtl.config.rows
    assert rtl.read_register("AXI_DATA_WIDTH") == rtl.config.axi_data_width
    assert rtl.config.name in CONFIGS


def test_golden_device_errors_match_the_machine():
    device = open_device("golden", "tiny", dram_size=1 << 16)
    program = Program(device.config, [I(O.LOAD, mem=Memory.SCRATCHPAD, dram_addr=1 << 16, rows=1,
                                        cols=1, elem_len=4), I(O.FINISH)], name="past the end")
    with pytest.raises(NpuError, match="BUS_ERROR at instruction 0 on the golden device"):
        device.run(program)


def test_dram_allocator_aligns_reuses_and_reports_exhaustion():
    allocator = DramAllocator(size=0x3000, base=0x1000, alignment=256)
    a = allocator.allocate(100)
    b = allocator.allocate(300)
    assert (a, b) == (0x1000, 0x1100)
    allocator.free(a)
    assert allocator.allocate(200) == 0x1000            # first fit reuses the hole
    with pytest.raises(MemoryError, match="Out of device DRAM: no free region of 8192 bytes"):
        allocator.allocate(0x2000)
    with pytest.raises(ValueError, match="Address 0x1234 is not an allocated region"):
        allocator.free(0x1234)
    allocator.free(b)
    assert allocator.allocate(0x1000, alignment=0x1000) == 0x2000


def test_a_traced_run_writes_an_fst_waveform(tmp_path):
    """The traced build (FST) records the run; a longer run records more."""
    sizes = []
    for m in (1, 40):
        path = tmp_path / f"run{m}.fst"
        with open_device("rtl", "tiny", dram_size=1 << 16, trace=path, quiet=True) as device:
            program, expected, y_addr = matmul_program(device, m=m, k=4, n=4)
            device.run(program)
            np.testing.assert_array_equal(device.read_tensor(y_addr, (m, 4), np.int32), expected)
        data = path.read_bytes()
        assert data[0] == 0, "an FST file starts with its header block (type 0)"
        sizes.append(len(data))
    assert 1000 < sizes[0] < sizes[1], sizes


def test_npu_bench_sim_writes_the_documented_json_keys(tmp_path):
    import json

    from sw.cli import main

    path = tmp_path / "bench.json"
    assert main(["bench", "sim", "--config", "tiny", "--json", str(path)]) == 0
    result = json.loads(path.read_text())
    assert result["config"] == "tiny"
    assert result["cycles_per_second"] > 0 and result["build_seconds"] > 0
    assert result["macs"] == 2048 * 16 * 16 and 0 < result["utilisation"] < 1
