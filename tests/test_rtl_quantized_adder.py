from rtl_harness import run_block_tb

from golden.config import get_config
from rtl.quantized_adder import QuantizedAdder


def test_quantized_adder_is_bit_exact_with_golden():
    # One lane; the lane does not depend on the array size.
    run_block_tb(component=lambda config: QuantizedAdder(), config=get_config("tiny"),
                 name="quantized_adder", tb_module="tb_quantized_adder")
