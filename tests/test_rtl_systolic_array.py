import pytest
from rtl_harness import BLOCK_CONFIGS, run_block_tb

from rtl.systolic_array import SystolicArray


@pytest.mark.parametrize("config", BLOCK_CONFIGS, ids=lambda c: c.name)
def test_systolic_array_matches_golden_matmul(config):
    run_block_tb(component=SystolicArray, config=config, name="systolic_array",
                 tb_module="tb_systolic_array")
