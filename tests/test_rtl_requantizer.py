from rtl_harness import run_block_tb

from golden.config import get_config
from rtl.requantizer import Requantizer


def test_requantizer_is_bit_exact_with_golden():
    # One lane; the lane does not depend on the array size.
    run_block_tb(component=lambda config: Requantizer(), config=get_config("tiny"),
                 name="requantizer", tb_module="tb_requantizer")
