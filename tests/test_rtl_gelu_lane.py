from rtl_harness import run_block_tb

from golden.config import get_config
from rtl.gelu_lane import GeluLane


def test_gelu_lane_is_bit_exact_with_golden():
    # One lane; the lane does not depend on the array size.
    run_block_tb(component=lambda config: GeluLane(), config=get_config("tiny"),
                 name="gelu_lane", tb_module="tb_gelu_lane")
