import pytest
from rtl_harness import BLOCK_CONFIGS, run_block_tb

from rtl.npu import Npu


@pytest.mark.parametrize("config", BLOCK_CONFIGS, ids=lambda c: c.name)
def test_npu_runs_programs_like_the_golden_machine(config):
    run_block_tb(component=Npu, config=config, name="npu", tb_module="tb_npu")



def test_the_programs_also_run_under_icarus_verilog():
    """A second simulator catches simulator-dependent RTL (X at time 0, races, zero-delay loops);
    on `tiny` all of tb_npu takes a few seconds in Icarus."""
    run_block_tb(component=Npu, config=BLOCK_CONFIGS[0], name="npu", tb_module="tb_npu",
                 simulator="icarus")
