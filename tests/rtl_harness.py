"""Running the cocotb testbenches of tests/cocotb_tb from pytest."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from golden.config import NpuConfig, get_config
from sim.cocotb_runner import run_cocotb
from sim.verilog import design_hash, generate_verilog

TB_DIR = Path(__file__).resolve().parent / "cocotb_tb"
ROOT = Path(__file__).resolve().parent.parent

#: Non-square, and a vector unit narrower than both widths: its beats (two elements) are
#: gathered from 8-lane accumulator rows and 4-lane scratchpad rows.
NON_SQUARE = NpuConfig(name="4x8", rows=4, cols=8, scratchpad_depth=256, accumulator_depth=256,
                       axi_data_width=64, vector_max_length=64, vector_lanes=2)
BLOCK_CONFIGS = [get_config("tiny"), get_config("small"), NON_SQUARE]


def run_block_tb(*, component, config: NpuConfig, name: str, tb_module: str, seed: int = 1,
                 testcase: str | None = None, simulator: str = "verilator"):
    """Generate ``component(config)`` (cached), build it (cached) and run its testbench."""
    verilog = generate_verilog(lambda: component(config), name=name, key=(component.__name__, config))
    key = design_hash(name, component.__name__, config)
    seed = int(os.environ.get("NPU_SEED", seed))
    print(f"cocotb {tb_module} on {config.name}: seed {seed} (rerun with NPU_SEED={seed})")
    run_cocotb(verilog=verilog, toplevel=name, test_module=tb_module, build_key=key,
               test_dir=TB_DIR, testcase=testcase, simulator=simulator,
               extra_env={"NPU_CONFIG": json.dumps(dataclasses.asdict(config)),
                          "NPU_SEED": str(seed),
                          "PYTHONPATH": os.pathsep.join([str(TB_DIR), str(ROOT)])})
