"""The DMA engines and the read arbiter (cocotb, tests/cocotb_tb/tb_dma.py, through the test top
tests/dma_test_top.py on the 64-bit block configurations and the 128-bit `default`), their
Verilog under `verilator --lint-only -Wall`, the AXI half signatures and argument checks."""

import dataclasses
import functools
import gc
import hashlib
import json
import os
import subprocess
import warnings
from pathlib import Path

import pytest
from amaranth.hdl import UnusedElaboratable
from cocotbext.axi.axi_channels import AxiARBus, AxiAWBus, AxiBBus, AxiRBus, AxiWBus
from dma_test_top import DmaTestTop
from rtl_harness import BLOCK_CONFIGS, ROOT, TB_DIR

from golden.config import get_config
from rtl.axi import Axi4ReadSignature, Axi4Signature, Axi4WriteSignature
from rtl.axi_read_arbiter import AxiReadArbiter
from rtl.burst_splitter import BurstSplitter
from rtl.dma_reader import DmaReader
from rtl.dma_writer import DmaWriter
from sim.cocotb_runner import VERILATOR_WARNINGS, run_cocotb
from sim.toolchain import verilator_env
from sim.verilog import design_hash, generate_verilog

TOP_SOURCE = Path(__file__).with_name("dma_test_top.py")


def run_dma_tb(config, *, seed: int = 1):
    """Like rtl_harness.run_block_tb, with the test top's own source in the cache keys (it
    lives outside rtl/, which is all that design_hash covers)."""
    top_hash = hashlib.sha256(TOP_SOURCE.read_bytes()).hexdigest()[:16]
    name = "dma_test_top"
    verilog = generate_verilog(lambda: DmaTestTop(config), name=name,
                               key=("DmaTestTop", top_hash, config))
    seed = int(os.environ.get("NPU_SEED", seed))
    print(f"cocotb tb_dma on {config.name}: seed {seed} (rerun with NPU_SEED={seed})")
    run_cocotb(verilog=verilog, toplevel=name, test_module="tb_dma",
               build_key=design_hash(name, "DmaTestTop", top_hash, config), test_dir=TB_DIR,
               extra_env={"NPU_CONFIG": json.dumps(dataclasses.asdict(config)),
                          "NPU_SEED": str(seed),
                          "PYTHONPATH": os.pathsep.join([str(TB_DIR), str(ROOT)])})


@pytest.mark.parametrize("config", [*BLOCK_CONFIGS, get_config("default")],
                         ids=lambda c: c.name)
def test_dma_engines_and_read_arbiter(config):
    run_dma_tb(config)


LINT_CONFIG = get_config("small")
LINTED = {
    "dma_reader": lambda config: DmaReader(config),
    "dma_writer": lambda config: DmaWriter(config),
    "axi_read_arbiter": lambda config: AxiReadArbiter(config, clients=2),
    "burst_splitter": lambda config: BurstSplitter(config),
}


@pytest.mark.parametrize("config", [LINT_CONFIG, get_config("default")], ids=lambda c: c.name)
@pytest.mark.parametrize("name", list(LINTED))
def test_dma_verilog_is_lint_clean(name, config):
    path = generate_verilog(lambda: LINTED[name](config), name=name, key=(name, config))
    result = subprocess.run(["verilator", "--lint-only", "-Wall",
                             *(f"-Wno-{w}" for w in VERILATOR_WARNINGS), str(path)],
                            env=verilator_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _cocotbext_names(buses, *, optional=()):
    names = set()
    for bus in buses:
        names |= set(bus._signals) | {s for s in bus._optional_signals if s in optional}
    return names


def test_axi4_halves_split_the_full_signature():
    full = Axi4Signature(addr_width=32, data_width=128)
    read = Axi4ReadSignature(addr_width=32, data_width=128)
    write = Axi4WriteSignature(addr_width=32, data_width=128)
    assert set(read.members) == _cocotbext_names((AxiARBus, AxiRBus), optional=("rresp",))
    assert set(write.members) == _cocotbext_names((AxiAWBus, AxiWBus, AxiBBus),
                                                  optional=("wstrb", "bresp"))
    assert set(read.members) | set(write.members) == set(full.members)
    for name, member in [*read.members.items(), *write.members.items()]:
        assert member.flow == full.members[name].flow and \
            member.shape == full.members[name].shape, name
    assert read == Axi4ReadSignature(addr_width=32, data_width=128)
    assert read != full and read != write and read.flip() == read.flip()
    assert repr(write) == "Axi4WriteSignature(addr_width=32, data_width=128, id_width=1)"
    with pytest.raises(ValueError, match="Data width must be one of 8, 16, .*, not 48"):
        Axi4ReadSignature(addr_width=32, data_width=48)


def _raises(exception, message: str, factory):
    """``factory()`` raises ``exception`` with ``message``; the half-built component it leaves
    behind is collected here, without Amaranth's warning that it was never elaborated."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(exception, match=message):
            factory()
        gc.collect()


def test_dma_components_check_their_arguments():
    config = get_config("tiny")
    for component in (DmaReader, DmaWriter, BurstSplitter):
        _raises(TypeError, "Config must be an NpuConfig, not 'tiny'", functools.partial(component, "tiny"))
    _raises(TypeError, "Config must be an NpuConfig, not 'tiny'",
            lambda: AxiReadArbiter("tiny", clients=2))
    _raises(ValueError, "Max bursts must be a positive integer, not 0",
            lambda: DmaReader(config, max_bursts=0))
    _raises(ValueError, "Max bursts must be a positive integer, not 0",
            lambda: DmaWriter(config, max_bursts=0))
    _raises(ValueError, "Max bursts must be a positive integer, not True",
            lambda: AxiReadArbiter(config, clients=2, max_bursts=True))
    _raises(ValueError, "Clients must be a positive integer, not 0",
            lambda: AxiReadArbiter(config, clients=0))


def test_engine_ports_follow_dma_layouts():
    config = get_config("default")
    reader = DmaReader(config)
    assert reader.bus.signature == Axi4ReadSignature(addr_width=32, data_width=128)
    assert reader.read_bytes.shape().width == 5
    writer = DmaWriter(config)
    assert writer.bus.signature == Axi4WriteSignature(addr_width=32, data_width=128)
    arbiter = AxiReadArbiter(config, clients=3)
    assert [name for name in arbiter.signature.members] == ["client0", "client1", "client2",
                                                            "bus"]
    for component in (reader, writer, arbiter):
        component._MustUse__silence = True  # never elaborated
