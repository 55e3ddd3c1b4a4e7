"""Every block's generated Verilog passes `verilator --lint-only -Wall` with only the documented
suppressions (sim.cocotb_runner.VERILATOR_WARNINGS)."""

import subprocess

import pytest

from golden.config import get_config
from rtl.accumulator import Accumulator
from rtl.compute_unit import ComputeUnit
from rtl.control_registers import ControlRegisters
from rtl.fetch_unit import FetchUnit
from rtl.gelu_lane import GeluLane
from rtl.layernorm_unit import LayernormUnit
from rtl.load_unit import LoadUnit
from rtl.quantized_adder import QuantizedAdder
from rtl.requantizer import Requantizer
from rtl.scratchpad import Scratchpad
from rtl.softmax_unit import SoftmaxUnit
from rtl.store_unit import StoreUnit
from rtl.stream_register import StreamRegister
from rtl.systolic_array import SystolicArray
from rtl.vector_unit import VectorUnit
from sim.cocotb_runner import VERILATOR_WARNINGS
from sim.toolchain import verilator_env
from sim.verilog import generate_verilog

CONFIG = get_config("small")
BLOCKS = {
    "systolic_array": lambda: SystolicArray(CONFIG),
    "scratchpad": lambda: Scratchpad(CONFIG),
    "accumulator": lambda: Accumulator(CONFIG),
    "requantizer": Requantizer,
    "quantized_adder": QuantizedAdder,
    "gelu_lane": GeluLane,
    "softmax_unit": lambda: SoftmaxUnit(lanes=CONFIG.cols),
    "layernorm_unit": lambda: LayernormUnit(lanes=CONFIG.cols),
    "vector_unit": lambda: VectorUnit(CONFIG),
    "compute_unit": lambda: ComputeUnit(CONFIG),
    "fetch_unit": lambda: FetchUnit(CONFIG),
    "load_unit": lambda: LoadUnit(CONFIG),
    "store_unit": lambda: StoreUnit(CONFIG),
    "control_registers": lambda: ControlRegisters(CONFIG),
    "stream_register": lambda: StreamRegister(16),
}


@pytest.mark.parametrize("name", list(BLOCKS))
def test_block_verilog_is_lint_clean(name):
    path = generate_verilog(BLOCKS[name], name=name, key=(name, CONFIG))
    result = subprocess.run(["verilator", "--lint-only", "-Wall",
                             *(f"-Wno-{w}" for w in VERILATOR_WARNINGS), str(path)],
                            env=verilator_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
