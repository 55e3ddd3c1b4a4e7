"""AXI signatures and the flat top-level ports of rtl/axi.py."""

import pytest
from amaranth import Module
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from cocotbext.axi.axi_channels import AxiARBus, AxiAWBus, AxiBBus, AxiRBus, AxiWBus
from cocotbext.axi.axil_channels import (
    AxiLiteARBus,
    AxiLiteAWBus,
    AxiLiteBBus,
    AxiLiteRBus,
    AxiLiteWBus,
)

from golden.config import get_config
from rtl.axi import Axi4Signature, AxiLiteSignature, connect_flat, flat_members
from rtl.control_registers import ControlRegisters


def _cocotbext_names(buses, *, optional=()):
    names = set()
    for bus in buses:
        names |= set(bus._signals) | {s for s in bus._optional_signals if s in optional}
    return names


def test_axi4_signature_has_what_axi_ram_needs():
    signature = Axi4Signature(addr_width=32, data_width=64, id_width=4)
    required = _cocotbext_names((AxiAWBus, AxiWBus, AxiBBus, AxiARBus, AxiRBus),
                                optional=("wstrb", "bresp", "rresp"))
    assert set(signature.members) == required
    members = signature.members
    assert members["awaddr"].flow == Out and members["awaddr"].shape == 32
    assert members["wdata"].shape == 64 and members["wstrb"].shape == 8
    assert members["arid"].shape == 4 and members["rid"].flow == In
    assert members["awlen"].shape == 8 and members["arsize"].shape == 3
    assert members["rready"].flow == Out and members["rvalid"].flow == In


def test_axi_lite_signature_has_every_signal_of_axi_lite_master():
    signature = AxiLiteSignature(addr_width=12)
    expected = _cocotbext_names((AxiLiteAWBus, AxiLiteWBus, AxiLiteBBus, AxiLiteARBus,
                                 AxiLiteRBus),
                                optional=("awprot", "arprot", "wstrb", "bresp", "rresp"))
    assert set(signature.members) == expected
    assert signature.members["awaddr"].shape == 12 and signature.members["wstrb"].shape == 4
    assert signature.members["bvalid"].flow == In


def test_signatures_compare_by_parameters():
    assert Axi4Signature(addr_width=32, data_width=64) == Axi4Signature(addr_width=32,
                                                                        data_width=64)
    assert Axi4Signature(addr_width=32, data_width=64) != Axi4Signature(addr_width=32,
                                                                        data_width=128)
    assert AxiLiteSignature(addr_width=12) == AxiLiteSignature(addr_width=12, data_width=32)
    assert AxiLiteSignature(addr_width=12) != AxiLiteSignature(addr_width=16)
    assert AxiLiteSignature(addr_width=12).flip() == AxiLiteSignature(addr_width=12).flip()
    assert repr(AxiLiteSignature(addr_width=12)) == \
        "AxiLiteSignature(addr_width=12, data_width=32)"


def test_signatures_check_their_widths():
    with pytest.raises(ValueError, match="Data width must be one of 8, 16, .*, not 48"):
        Axi4Signature(addr_width=32, data_width=48)
    with pytest.raises(ValueError, match="Data width must be one of 32, 64, not 128"):
        AxiLiteSignature(addr_width=12, data_width=128)
    with pytest.raises(ValueError, match="ID width must be between 1 and 32, not 0"):
        Axi4Signature(addr_width=32, data_width=64, id_width=0)
    with pytest.raises(TypeError, match="Address width must be an integer, not '32'"):
        Axi4Signature(addr_width="32", data_width=64)


def test_flat_members_keep_directions():
    master = flat_members("m_axi", Axi4Signature(addr_width=32, data_width=64))
    assert master["m_axi_arvalid"].flow == Out and master["m_axi_rdata"].flow == In
    slave = flat_members("s_axil", AxiLiteSignature(addr_width=12).flip())
    assert slave["s_axil_awaddr"].flow == In and slave["s_axil_rdata"].flow == Out
    assert len(slave) == len(AxiLiteSignature(addr_width=12).members)
    with pytest.raises(ValueError, match="Prefix must be a Python identifier, not 'm-axi'"):
        flat_members("m-axi", Axi4Signature(addr_width=32, data_width=64))


class _Master(wiring.Component):
    """Drives arvalid and araddr, echoes rdata."""

    bus: Out(Axi4Signature(addr_width=32, data_width=64))
    seen: Out(64)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.bus.arvalid.eq(1), self.bus.araddr.eq(0x1234),
                     self.seen.eq(self.bus.rdata)]
        return m


class _FlatTop(wiring.Component):
    """A top level with flat m_axi_* and s_axil_* ports around a master and the CSR block."""

    def __init__(self):
        super().__init__({
            **flat_members("m_axi", Axi4Signature(addr_width=32, data_width=64)),
            **flat_members("s_axil", AxiLiteSignature(addr_width=12).flip()),
            "seen": Out(64),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.master = master = _Master()
        m.submodules.csr = csr = ControlRegisters(get_config("tiny"))
        connect_flat(m, owner=self, prefix="m_axi", interface=master.bus)
        connect_flat(m, owner=self, prefix="s_axil", interface=csr.bus)
        m.d.comb += self.seen.eq(master.seen)
        return m


def test_flat_ports_are_named_flat_in_verilog():
    text = verilog.convert(_FlatTop(), name="top", emit_src=False)
    ports = text[text.index("module top("):].split(";")[0]
    assert "m_axi_arvalid" in ports and "s_axil_awaddr" in ports and "s_axil_rdata" in ports
    assert "__" not in ports


def test_connect_flat_drives_both_directions():
    top = _FlatTop()
    sim = Simulator(top)

    async def bench(ctx):
        ctx.set(top.m_axi_rdata, 0xDEAD_BEEF_0123_4567)
        assert ctx.get(top.m_axi_arvalid) == 1 and ctx.get(top.m_axi_araddr) == 0x1234
        assert ctx.get(top.seen) == 0xDEAD_BEEF_0123_4567
        assert ctx.get(top.s_axil_arready) == 1  # the CSR block's ready reaches the flat port

    sim.add_testbench(bench)
    sim.run()


def test_connect_flat_refuses_a_mismatched_owner():
    signature = Axi4Signature(addr_width=32, data_width=64)
    wrong = wiring.Signature({**flat_members("m_axi", signature), "m_axi_arvalid": In(1)})
    m = Module()
    m._MustUse__silence = True  # never elaborated
    with pytest.raises(ValueError, match="Member 'm_axi_arvalid' of the owner must exist with "
                                         "flow Out"):
        connect_flat(m, owner=wrong.create(), prefix="m_axi", interface=signature.create())
