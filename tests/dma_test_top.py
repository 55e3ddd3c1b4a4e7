"""A test-only top level for the DMA engines (tests/cocotb_tb/tb_dma.py): two ``DmaReader`` s
behind an ``AxiReadArbiter`` and one ``DmaWriter``, sharing one AXI4 master port with flat
``m_axi_*`` names (so cocotbext-axi's ``AxiRam`` finds it by prefix) and one ``flush``.

Its user ports are the engines' own, renamed: ``read0_spans``/``read0_chunks``/``read0_idle``/
``read0_bytes``, the same for ``read1``, and ``write_spans``/``write_chunks``/``write_done``/
``write_idle``/``written_bytes``.
"""

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from golden.config import NpuConfig
from rtl.axi import Axi4Signature, connect_flat, flat_members
from rtl.axi_read_arbiter import AxiReadArbiter
from rtl.dma_reader import DmaReader
from rtl.dma_writer import DmaWriter

__all__ = ["DmaTestTop"]


class DmaTestTop(wiring.Component):
    def __init__(self, config: NpuConfig):
        self.config = config
        self._readers = [DmaReader(config) for _ in range(2)]
        self._writer = DmaWriter(config)
        members = flat_members("m_axi", Axi4Signature(addr_width=config.axi_addr_width,
                                                      data_width=config.axi_data_width))
        for i, reader in enumerate(self._readers):
            ports = reader.signature.members
            members |= {f"read{i}_spans": ports["spans"], f"read{i}_chunks": ports["chunks"],
                        f"read{i}_idle": ports["idle"], f"read{i}_bytes": ports["read_bytes"]}
        ports = self._writer.signature.members
        members |= {"write_spans": ports["spans"], "write_chunks": ports["chunks"],
                    "write_done": ports["done"], "write_idle": ports["idle"],
                    "written_bytes": ports["written_bytes"], "flush": In(1)}
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.arbiter = arbiter = AxiReadArbiter(self.config, clients=2)
        for i, reader in enumerate(self._readers):
            m.submodules[f"reader{i}"] = reader
            wiring.connect(m, wiring.flipped(getattr(self, f"read{i}_spans")), reader.spans)
            wiring.connect(m, reader.chunks, wiring.flipped(getattr(self, f"read{i}_chunks")))
            wiring.connect(m, reader.bus, getattr(arbiter, f"client{i}"))
            m.d.comb += [
                reader.flush.eq(self.flush),
                getattr(self, f"read{i}_idle").eq(reader.idle),
                getattr(self, f"read{i}_bytes").eq(reader.read_bytes),
            ]
        m.submodules.writer = writer = self._writer
        wiring.connect(m, wiring.flipped(self.write_spans), writer.spans)
        wiring.connect(m, wiring.flipped(self.write_chunks), writer.chunks)
        wiring.connect(m, writer.done, wiring.flipped(self.write_done))
        m.d.comb += [
            writer.flush.eq(self.flush),
            self.write_idle.eq(writer.idle),
            self.written_bytes.eq(writer.written_bytes),
        ]
        connect_flat(m, owner=self, prefix="m_axi", interface=arbiter.bus)
        connect_flat(m, owner=self, prefix="m_axi", interface=writer.bus)
        return m
