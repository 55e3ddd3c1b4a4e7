"""The scratchpad: int8 rows of ``rows`` lanes, one write port and several read ports."""

from amaranth import Module, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In

from golden.config import NpuConfig

from .ports import ReadPortSignature, WritePortSignature, read_port_domains

__all__ = ["Scratchpad"]


class Scratchpad(wiring.Component):
    """``scratchpad_depth`` rows of ``rows`` int8 lanes.

    ``read_ports`` independent read ports (each one row per cycle; for block RAM, every read port
    beyond the first costs a copy of the memory) and one write port with a lane mask, so that a
    vector result can fill part of a row. Reads of a row written in the same cycle return the old
    value. ``read_domains`` names each read port's clock domain (default: all ``sync``).
    """

    def __init__(self, config: NpuConfig, *, read_ports: int = 2,
                 read_domains: tuple[str, ...] | None = None):
        self.config = config
        self.read_domains = read_port_domains(read_ports, read_domains)
        self.row_layout = data.ArrayLayout(signed(8), config.rows)
        addr = config.scratchpad_addr_width
        members = {f"read{i}": In(ReadPortSignature(addr_width=addr, row_shape=self.row_layout))
                   for i in range(read_ports)}
        members["write"] = In(WritePortSignature(addr_width=addr, row_shape=self.row_layout,
                                                 lanes=config.rows))
        super().__init__(members)
        self.read_ports = read_ports

    def elaborate(self, platform):
        m = Module()
        m.submodules.memory = mem = memory.Memory(shape=self.row_layout,
                                                  depth=self.config.scratchpad_depth, init=[])
        write = mem.write_port(granularity=1)  # one enable per int8 lane
        m.d.comb += [
            write.addr.eq(self.write.addr),
            write.data.eq(self.write.data),
            write.en.eq(self.write.lanes.replicate(1) & self.write.en.replicate(self.config.rows)),
            self.write.ready.eq(1),
        ]
        for i in range(self.read_ports):
            port = getattr(self, f"read{i}")
            read = mem.read_port(domain=self.read_domains[i])
            m.d.comb += [read.addr.eq(port.addr), read.en.eq(port.en), port.data.eq(read.data)]
        return m
