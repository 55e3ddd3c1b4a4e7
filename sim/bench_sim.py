"""`npu bench sim`: how fast the whole NPU simulates in the Verilator harness.

Three figures (DESIGN section 8 keys first):

- ``cycles_per_second``: simulated cycles per wall-clock second of a compute-heavy program (a
  tiled int8 matmul that keeps the array busy), timed around the run alone (the median of
  ``RUNS`` runs of it): no Python runs per cycle, so this is the model's and the harness's
  speed.
- ``build_seconds``: the Verilator build of this configuration (cold with ``--fresh``: the cached
  build deleted first and ccache bypassed, so nothing is reused; otherwise the time the cached
  build took when it was made, ``build_cached`` says which).
- ``warm_start_seconds``: a new Python process from start to a ready device with the build
  cached (imports, the Verilog cache check, loading the library, reset).

The result is checked against numpy so that a broken simulation cannot be timed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import numpy as np

from golden import quant
from golden.config import NpuConfig

__all__ = ["bench_sim"]


#: Runs of the workload timed; the median one is reported (a single run of a tenth of a second
#: varied by 10 % on this 2-core machine).
RUNS = 5


def _workload(config: NpuConfig) -> tuple[int, int, int]:
    """M, K, N of a matmul that streams long tiles through the array (K and N several tiles)."""
    return 4 * 512, 4 * config.rows, 4 * config.cols


def bench_sim(config: NpuConfig, *, fresh: bool = False, out=print) -> dict:
    from sim.rtl_sim import build_simulator, simulator_library
    from sw.matmul import compile_matmul, pack_weights
    from sw.runtime import Program, open_device

    library = simulator_library(config)
    if fresh and library.parent.parent.exists():
        shutil.rmtree(library.parent.parent)
    cached = library.exists()
    start = time.perf_counter()
    bypass = fresh and "CCACHE_DISABLE" not in os.environ
    if bypass:
        os.environ["CCACHE_DISABLE"] = "1"  # a cold build compiles everything
    try:
        build_simulator(config)
    finally:
        if bypass:
            del os.environ["CCACHE_DISABLE"]
    recorded = library.parent.parent / "build_seconds"
    build_seconds = float(recorded.read_text()) if cached else time.perf_counter() - start

    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sys; from sw.runtime import open_device; "
                    f"open_device('rtl', {config.name!r}, quiet=True).read_register('ID')"],
                   check=True)
    warm_start = time.perf_counter() - start

    m, k, n = _workload(config)
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-128, 128, (k, n), dtype=np.int8)
    with open_device("rtl", config, dram_size=1 << 24, quiet=True) as device:
        x_addr, w_addr = device.write_tensor(x), device.write_tensor(pack_weights(config, w))
        y_addr = device.allocator.allocate(m * n * 4)
        program = Program(config, compile_matmul(config, m=m, k=k, n=n, x_addr=x_addr,
                                                 w_addr=w_addr, y_addr=y_addr))
        simulator = device.simulator
        device.run(Program(config, program.instructions[-1:]))  # warm the caches: a FINISH
        runs = []  # (seconds, cycles) of each run of the same program
        for _ in range(RUNS):
            before = simulator.cycles
            start = time.perf_counter()
            stats = device.run(program)
            runs.append((time.perf_counter() - start, simulator.cycles - before))
        seconds, simulated = sorted(runs)[RUNS // 2]  # the median run
        y = device.read_tensor(y_addr, (m, n), np.int32)
    np.testing.assert_array_equal(y, quant.matmul(x, w), err_msg="the simulated NPU is wrong")
    result = {
        "config": config.name,
        "cycles_per_second": round(simulated / seconds),
        "build_seconds": round(build_seconds, 1),
        "build_cached": cached,
        "warm_start_seconds": round(warm_start, 2),
        "workload": f"int8 matmul {m}x{k}x{n}",
        "cycles": stats.cycles,
        "macs": stats.macs,
        "utilisation": round(stats.utilisation, 4),
        "wall_seconds": round(seconds, 3),
    }
    out(f"npu bench sim: {config.name} ({config.rows}x{config.cols}), {result['workload']}")
    out(f"  simulated        {simulated} cycles in {seconds:.3f} s = "
        f"{result['cycles_per_second']:,} cycles/s (median of {RUNS} runs)")
    out(f"  array            {stats.macs} MACs, utilisation {stats.utilisation:.1%}")
    out(f"  Verilator build  {build_seconds:.0f} s ({'cached' if cached else 'now'}); warm start "
        f"{warm_start:.2f} s")
    return result
