"""`npu demo`: the project's main job on shipped data.

Until the CNN compiler exists, the demo compiles a tiled int8 matmul larger than the array,
runs it on the golden machine and checks it against numpy, printing the result and the cycle
estimate next to the performance bounds of DESIGN section 6.
"""

from __future__ import annotations

import numpy as np

from golden import quant
from golden.config import NpuConfig
from golden.isa import encode_program
from golden.machine import Machine
from sw.matmul import compile_matmul, pack_weights


def _align(address: int, alignment: int = 4096) -> int:
    return -(-address // alignment) * alignment


def naive_weight_stationary_cycles(config: NpuConfig, *, m: int, k: int, n: int) -> int:
    """SCALE-Sim's weight-stationary model: ceil(K/R) * ceil(N/C) * (2R + C + M - 2)."""
    r, c = config.rows, config.cols
    return -(-k // r) * -(-n // c) * (2 * r + c + m - 2)


def run_matmul_demo(config: NpuConfig, *, m: int = 512, k: int = 256, n: int = 128, seed: int = 0,
                    out=print) -> bool:
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-128, 128, (k, n), dtype=np.int8)
    packed = pack_weights(config, w)
    x_addr = 0x1000
    w_addr = _align(x_addr + x.nbytes)
    y_addr = _align(w_addr + packed.nbytes)
    program_addr = _align(y_addr + m * n * 4)
    program = compile_matmul(config, m=m, k=k, n=n, x_addr=x_addr, w_addr=w_addr, y_addr=y_addr)
    image = encode_program(program, instruction_bytes=config.instruction_bytes)
    machine = Machine(config, dram_size=_align(program_addr + len(image), 1 << 20))
    machine.write_dram(x_addr, x)
    machine.write_dram(w_addr, packed)
    machine.write_dram(program_addr, image)
    out(f"npu demo: int8 matmul ({m} x {k}) @ ({k} x {n}) on the golden model of the "
        f"{config.name} NPU ({config.rows}x{config.cols} array), {len(program)} instructions")
    result = machine.run(program_address=program_addr, instruction_count=len(program))
    if not result.ok:
        out(f"error: {result.error.name} at instruction {result.error_index}: {result.message}")
        return False
    y = np.frombuffer(machine.read_dram(y_addr, m * n * 4), np.int32).reshape(m, n)
    expected = quant.matmul(x, w)
    matches = bool(np.array_equal(y, expected))
    out(f"result Y[:3, :6] =\n{y[:3, :6]}")
    out(f"matches numpy: {'yes' if matches else 'NO'} ({m * n} int32 values)")
    macs = m * k * n
    floor = -(-macs // config.pes)
    naive = naive_weight_stationary_cycles(config, m=m, k=k, n=n)
    out(f"cycle estimate: {result.cycles}   (compute floor {floor}, naive weight-stationary {naive})")
    out(f"utilisation estimate: {macs / (config.pes * result.cycles):.1%} of "
        f"{config.pes} MACs/cycle; DRAM read {result.counters.dram_read_bytes} B, "
        f"written {result.counters.dram_write_bytes} B")
    return matches
