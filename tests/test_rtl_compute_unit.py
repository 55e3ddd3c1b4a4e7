import pytest
from rtl_harness import BLOCK_CONFIGS, run_block_tb

from rtl.compute_unit import ComputeUnit


@pytest.mark.parametrize("config", BLOCK_CONFIGS, ids=lambda c: c.name)
def test_compute_unit_matches_the_golden_machine(config):
    run_block_tb(component=ComputeUnit, config=config, name="compute_unit",
                 tb_module="tb_compute_unit")
