from rtl_harness import run_block_tb

from golden.config import get_config
from rtl.stream_register import StreamRegister


def test_stream_register_keeps_order_and_throughput():
    run_block_tb(component=lambda config: StreamRegister(16), config=get_config("tiny"),
                 name="stream_register", tb_module="tb_stream_register")
