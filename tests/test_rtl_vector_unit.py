import pytest
from rtl_harness import BLOCK_CONFIGS, run_block_tb

from rtl.vector_unit import VectorUnit


@pytest.mark.parametrize("config", BLOCK_CONFIGS, ids=lambda c: c.name)
def test_vector_unit_matches_the_golden_machine(config):
    run_block_tb(component=VectorUnit, config=config, name="vector_unit", tb_module="tb_vector_unit")
