import pytest
from rtl_harness import BLOCK_CONFIGS, run_block_tb

from rtl.layernorm_unit import LayernormUnit


@pytest.mark.parametrize("config", BLOCK_CONFIGS, ids=lambda c: c.name)
def test_layernorm_unit_is_bit_exact_with_golden(config):
    # lanes = config.cols; the build key holds the configuration, so each config builds its own.
    run_block_tb(component=lambda config: LayernormUnit(lanes=config.cols), config=config,
                 name="layernorm_unit", tb_module="tb_layernorm_unit")
