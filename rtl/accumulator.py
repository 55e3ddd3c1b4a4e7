"""The accumulator: int32 rows of ``cols`` lanes with a read-modify-write port for the array."""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In

from golden.config import NpuConfig

from .ports import ReadPortSignature, WritePortSignature, read_port_domains

__all__ = ["Accumulator", "accumulate_layout"]


def accumulate_layout(config: NpuConfig) -> data.StructLayout:
    """One array output row, where it goes, and whether it adds to the row or overwrites it."""
    return data.StructLayout({
        "addr": config.accumulator_addr_width,
        "values": data.ArrayLayout(signed(32), config.cols),
        "accumulate": 1,
    })


class Accumulator(wiring.Component):
    """``accumulator_depth`` rows of ``cols`` int32 lanes.

    - ``accumulate``: one row per cycle, always ready. The row is read in the cycle it arrives and
      written back (``old + values`` with int32 wrap-around, or ``values``) in the next; the read
      is transparent to that write, so back-to-back updates of the same row (a pooling sum)
      see each other.
    - ``write``: the DMA's port (bias rows, parameters). It yields to ``accumulate`` writes
      (``ready`` low in those cycles).
    - ``read0``, ``read1``, ...: ``read_ports`` plain read ports (the vector unit's three and the
      store DMA's; for block RAM every read port beyond the first costs a copy of the memory).
      ``read_domains`` names each one's clock domain (default: all ``sync``).
    """

    def __init__(self, config: NpuConfig, *, read_ports: int = 1,
                 read_domains: tuple[str, ...] | None = None):
        self.config = config
        self.read_ports = read_ports
        self.read_domains = read_port_domains(read_ports, read_domains)
        self.row_layout = data.ArrayLayout(signed(32), config.cols)
        addr = config.accumulator_addr_width
        members = {
            "accumulate": In(stream.Signature(accumulate_layout(config))),
            "write": In(WritePortSignature(addr_width=addr, row_shape=self.row_layout,
                                           lanes=config.cols)),
        }
        members.update({f"read{i}": In(ReadPortSignature(addr_width=addr,
                                                         row_shape=self.row_layout))
                        for i in range(read_ports)})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        cols = self.config.cols
        m.submodules.memory = mem = memory.Memory(shape=self.row_layout,
                                                  depth=self.config.accumulator_depth, init=[])
        write = mem.write_port(granularity=1)
        rmw_read = mem.read_port(transparent_for=(write,))

        # Stage 0: read the row being updated.
        m.d.comb += [
            self.accumulate.ready.eq(1),
            rmw_read.addr.eq(self.accumulate.payload.addr),
            rmw_read.en.eq(self.accumulate.valid),
        ]
        pending = Signal(accumulate_layout(self.config))
        pending_valid = Signal()
        m.d.sync += pending_valid.eq(self.accumulate.valid)
        with m.If(self.accumulate.valid):
            m.d.sync += pending.eq(self.accumulate.payload)

        # Stage 1: add and write back; otherwise the DMA may write.
        with m.If(pending_valid):
            m.d.comb += [write.addr.eq(pending.addr), write.en.eq(-1)]
            for lane in range(cols):
                old = Mux(pending.accumulate, rmw_read.data[lane], 0)
                m.d.comb += write.data[lane].eq(old + pending.values[lane])
        with m.Else():
            m.d.comb += [
                write.addr.eq(self.write.addr),
                write.data.eq(self.write.data),
                write.en.eq(self.write.lanes & self.write.en.replicate(cols)),
            ]
        m.d.comb += self.write.ready.eq(~pending_valid)

        for i in range(self.read_ports):
            port = getattr(self, f"read{i}")
            plain_read = mem.read_port(domain=self.read_domains[i])
            m.d.comb += [plain_read.addr.eq(port.addr), plain_read.en.eq(port.en),
                         port.data.eq(plain_read.data)]
        return m
