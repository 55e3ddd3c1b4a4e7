import pytest
from rtl_harness import run_block_tb

from golden.config import get_config
from rtl.softmax_unit import SoftmaxUnit


@pytest.mark.parametrize("lanes", [1, 2, 4, 8, 16])
def test_softmax_unit_is_bit_exact_with_golden(lanes):
    # The unit depends only on the number of lanes (the vector unit's lanes per row beat).
    def softmax_unit(config):
        return SoftmaxUnit(lanes=lanes)

    softmax_unit.__name__ = f"softmax_unit_{lanes}_lanes"
    run_block_tb(component=softmax_unit, config=get_config("tiny"), name="softmax_unit",
                 tb_module="tb_softmax_unit")
