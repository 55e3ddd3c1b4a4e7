import pytest
from rtl_harness import run_block_tb

from golden.config import get_config
from rtl.layernorm_unit import LayernormUnit


def layernorm_unit(lanes: int):
    """The unit's factory for run_block_tb; its name keys the build, so each lane count builds
    its own (the testbench reads the lane count from the ports)."""
    def factory(config):
        return LayernormUnit(lanes=lanes)
    factory.__name__ = f"layernorm_unit_{lanes}_lanes"
    return factory


# 1 lane: the vector unit of `small`; 2 and 8: adder and comparator trees of one and three levels.
@pytest.mark.parametrize("lanes", [1, 2, 8])
def test_layernorm_unit_is_bit_exact_with_golden(lanes):
    run_block_tb(component=layernorm_unit(lanes), config=get_config("tiny"),
                 name="layernorm_unit", tb_module="tb_layernorm_unit")
