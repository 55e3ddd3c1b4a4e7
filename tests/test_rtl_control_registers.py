"""The CSR block against the golden register map (cocotb, three configurations), and its
Verilog under `verilator --lint-only -Wall` (as tests/test_rtl_lint.py checks the other blocks)."""

import subprocess

import pytest
from rtl_harness import BLOCK_CONFIGS, run_block_tb

from golden.config import NpuConfig, get_config
from rtl.control_registers import ControlRegisters, events_layout
from sim.cocotb_runner import VERILATOR_WARNINGS
from sim.toolchain import verilator_env
from sim.verilog import generate_verilog


@pytest.mark.parametrize("config", BLOCK_CONFIGS, ids=lambda c: c.name)
def test_control_registers_follow_the_golden_register_map(config):
    run_block_tb(component=ControlRegisters, config=config, name="control_registers",
                 tb_module="tb_control_registers")


def test_control_registers_verilog_is_lint_clean():
    config = get_config("small")
    path = generate_verilog(lambda: ControlRegisters(config), name="control_registers",
                            key=("control_registers", config))
    result = subprocess.run(["verilator", "--lint-only", "-Wall",
                             *(f"-Wno-{w}" for w in VERILATOR_WARNINGS), str(path)],
                            env=verilator_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_event_fields_are_wide_enough_for_a_cycle_of_the_config():
    config = NpuConfig(rows=16, cols=32, scratchpad_depth=1024, accumulator_depth=1024,
                       axi_data_width=256, vector_max_length=1024)
    widths = {name: field.width for name, field in events_layout(config)}
    assert widths["macs"] == 10 and widths["dram_read_bytes"] == 6
    assert widths["instructions"] == 2 and widths["busy_load"] == 1


def test_control_registers_check_their_config():
    with pytest.raises(TypeError, match="Config must be an NpuConfig, not 'tiny'"):
        ControlRegisters("tiny")
