import pytest
from rtl_harness import BLOCK_CONFIGS, run_block_tb

from rtl.npu import Npu


@pytest.mark.parametrize("config", BLOCK_CONFIGS, ids=lambda c: c.name)
def test_npu_runs_programs_like_the_golden_machine(config):
    run_block_tb(component=Npu, config=config, name="npu", tb_module="tb_npu")

