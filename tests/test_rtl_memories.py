import pytest
from rtl_harness import BLOCK_CONFIGS, run_block_tb

from rtl.accumulator import Accumulator
from rtl.scratchpad import Scratchpad


@pytest.mark.parametrize("config", BLOCK_CONFIGS, ids=lambda c: c.name)
def test_scratchpad_matches_its_model(config):
    run_block_tb(component=Scratchpad, config=config, name="scratchpad", tb_module="tb_scratchpad")


@pytest.mark.parametrize("config", BLOCK_CONFIGS, ids=lambda c: c.name)
def test_accumulator_matches_its_model(config):
    run_block_tb(component=Accumulator, config=config, name="accumulator", tb_module="tb_accumulator")
