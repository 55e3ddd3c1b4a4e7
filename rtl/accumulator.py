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

    - ``accumulate``: one row per cycle, always ready. The update is a three-stage pipeline: the
      row is read in the cycle it arrives, the block RAM's output is registered in the next, and
      ``old + values`` (int32 wrap-around; or ``values`` alone) is written in the third. The
      memory's output goes straight into a register, so the add does not follow the RAM's access
      time in one cycle. The read misses the two writes made in its own and the next cycle (an
      update of the same row one or two rows earlier, as in a pooling sum, or a DMA write); the
      last two writes are kept and forwarded lane by lane, so every update sees all earlier ones.
      A row is readable on the plain ports three cycles after its update's handshake.
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
        rmw_read = mem.read_port()
        layout = accumulate_layout(self.config)

        # The last two writes (any source), lane by lane: ``written[0]`` the previous cycle's.
        write_record = data.StructLayout({"addr": self.config.accumulator_addr_width,
                                          "lanes": cols, "values": self.row_layout})
        # Only valid bits take a reset here: the other registers hold writes that were made,
        # or data that a valid bit guards.
        written = [Signal(write_record, name=f"written_{age}", reset_less=True) for age in (1, 2)]
        m.d.sync += [written[0].addr.eq(write.addr), written[0].lanes.eq(write.en),
                     written[0].values.eq(write.data), written[1].eq(written[0])]

        # Stage 0: read the row being updated.
        m.d.comb += [
            self.accumulate.ready.eq(1),
            rmw_read.addr.eq(self.accumulate.payload.addr),
            rmw_read.en.eq(self.accumulate.valid),
        ]
        stage1 = Signal(layout, reset_less=True)
        stage1_valid = Signal()
        m.d.sync += stage1_valid.eq(self.accumulate.valid)
        with m.If(self.accumulate.valid):
            m.d.sync += stage1.eq(self.accumulate.payload)

        # Stage 1: register the RAM's output; find the lanes the read missed: this cycle's write
        # (forwarded from ``written[0]`` next cycle) and the previous one's (``written[1]``).
        stage2 = Signal(layout, reset_less=True)
        stage2_valid = Signal()
        old_read = Signal(self.row_layout, reset_less=True)
        forward_newer = Signal(cols, reset_less=True)
        forward_older = Signal(cols, reset_less=True)
        m.d.sync += [
            stage2_valid.eq(stage1_valid),
            stage2.eq(stage1),
            old_read.eq(rmw_read.data),
            forward_newer.eq(write.en & (write.addr == stage1.addr).replicate(cols)),
            forward_older.eq(written[0].lanes & (written[0].addr == stage1.addr).replicate(cols)),
        ]

        # Stage 2: add and write back; otherwise the DMA may write.
        with m.If(stage2_valid):
            m.d.comb += [write.addr.eq(stage2.addr), write.en.eq(-1)]
            for lane in range(cols):
                old = Mux(forward_newer[lane], written[0].values[lane],
                          Mux(forward_older[lane], written[1].values[lane], old_read[lane]))
                m.d.comb += write.data[lane].eq(Mux(stage2.accumulate, old, 0)
                                                + stage2.values[lane])
        with m.Else():
            m.d.comb += [
                write.addr.eq(self.write.addr),
                write.data.eq(self.write.data),
                write.en.eq(self.write.lanes & self.write.en.replicate(cols)),
            ]
        m.d.comb += self.write.ready.eq(~stage2_valid)

        for i in range(self.read_ports):
            port = getattr(self, f"read{i}")
            plain_read = mem.read_port(domain=self.read_domains[i])
            m.d.comb += [plain_read.addr.eq(port.addr), plain_read.en.eq(port.en),
                         port.data.eq(plain_read.data)]
        return m
