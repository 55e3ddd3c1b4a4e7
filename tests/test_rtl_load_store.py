import pytest
from rtl_harness import BLOCK_CONFIGS, run_block_tb

from golden.config import get_config
from rtl.load_unit import LoadUnit
from rtl.store_unit import StoreUnit

CONFIGS = [*BLOCK_CONFIGS, get_config("default")]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
def test_load_unit_matches_the_golden_machine(config):
    run_block_tb(component=LoadUnit, config=config, name="load_unit", tb_module="tb_load_unit")


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
def test_store_unit_matches_the_golden_machine(config):
    run_block_tb(component=StoreUnit, config=config, name="store_unit", tb_module="tb_store_unit")
