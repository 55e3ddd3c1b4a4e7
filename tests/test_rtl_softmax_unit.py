import pytest
from rtl_harness import BLOCK_CONFIGS, run_block_tb

from rtl.softmax_unit import SoftmaxUnit


def softmax_unit(config):
    # The unit depends only on the number of lanes, one per array column.
    return SoftmaxUnit(lanes=config.cols)


@pytest.mark.parametrize("config", BLOCK_CONFIGS, ids=lambda c: c.name)
def test_softmax_unit_is_bit_exact_with_golden(config):
    run_block_tb(component=softmax_unit, config=config, name="softmax_unit",
                 tb_module="tb_softmax_unit")
