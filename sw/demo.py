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

PROGRAM_ADDR, X_ADDR, W_ADDR, Y_ADDR = 0x1000, 0x10000, 0x100000, 0x200000


def naive_weight_stationary_cycles(config: NpuConfig, *, m: int, k: int, n: int) -> int:
    """SCALE-Sim's weight-stationary model: ceil(K/R) * ceil(N/C) * (2R + C + M - 2)."""
    r, c = config.rows, config.cols
    return -(-k // r) * -(-n // c) * (2 * r + c + m - 2)


def run_matmul_demo(config: NpuConfig, *, m: int = 256, k: int = 96, n: int = 80, seed: int = 0,
                    out=print) -> bool:
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-128, 128, (k, n), dtype=np.int8)
    machine = Machine(config, dram_size=1 << 24)
    machine.write_dram(X_ADDR, x)
    machine.write_dram(W_ADDR, pack_weights(config, w))
    program = compile_matmul(config, m=m, k=k, n=n, x_addr=X_ADDR, w_addr=W_ADDR, y_addr=Y_ADDR)
    machine.write_dram(PROGRAM_ADDR, encode_program(program, instruction_bytes=config.instruction_bytes))
    out(f"npu demo: int8 matmul ({m} x {k}) @ ({k} x {n}) on the golden model of the "
        f"{config.name} NPU ({config.rows}x{config.cols} array), {len(program)} instructions")
    result = machine.run(program_address=PROGRAM_ADDR, instruction_count=len(program))
    if not result.ok:
        out(f"error: {result.error.name} at instruction {result.error_index}: {result.message}")
        return False
    y = np.frombuffer(machine.read_dram(Y_ADDR, m * n * 4), np.int32).reshape(m, n)
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
