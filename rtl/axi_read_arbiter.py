"""Shares one AXI4 read half among several read-only masters (fetch and load).

- AR: round robin. Whenever the AR output register is free (empty, or taken this cycle), the
  first client with ``arvalid`` after the one granted last is granted: its AR is copied into the
  register and it sees ``arready``. So the bus sees one burst at a time and at most one AR per
  cycle, and ``arvalid`` on the bus is held until taken, as AXI requires.
- R: every AR granted pushes its client's index into a FIFO (``max_bursts`` deep; a full FIFO
  holds AR back). The R beats go to the client at the head of the FIFO (``rvalid`` only there,
  ``rready`` from there), and the burst's ``rlast`` pops it.

All bursts use ID 0 (``arid`` is forced to 0, ``rid`` passed through), so the slave answers in
order and the FIFO order is the response order. Only reads need arbitration in this design:
fetch and load read, only store writes.
"""

from amaranth import Module, Signal
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out

from golden.config import NpuConfig

from .axi import Axi4ReadSignature

__all__ = ["AxiReadArbiter"]


class AxiReadArbiter(wiring.Component):
    """``client0`` .. ``client{clients - 1}``: read-half slave ports; ``bus``: the read-half
    master port. ``max_bursts``: bursts in flight at most (AR granted, ``rlast`` not yet
    seen)."""

    def __init__(self, config: NpuConfig, *, clients: int, max_bursts: int = 16):
        if not isinstance(config, NpuConfig):
            raise TypeError(f"Config must be an NpuConfig, not {config!r}")
        if not isinstance(clients, int) or isinstance(clients, bool) or clients < 1:
            raise ValueError(f"Clients must be a positive integer, not {clients!r}")
        if not isinstance(max_bursts, int) or isinstance(max_bursts, bool) or max_bursts < 1:
            raise ValueError(f"Max bursts must be a positive integer, not {max_bursts!r}")
        self.config = config
        self.clients = clients
        self.max_bursts = max_bursts
        signature = Axi4ReadSignature(addr_width=config.axi_addr_width,
                                      data_width=config.axi_data_width)
        members = {f"client{i}": In(signature) for i in range(clients)}
        members["bus"] = Out(signature)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        n = self.clients
        bus = self.bus
        ports = [getattr(self, f"client{i}") for i in range(n)]

        m.submodules.route = route = fifo.SyncFIFO(width=max(1, (n - 1).bit_length()),
                                                   depth=self.max_bursts)

        # AR: round robin into the output register.
        last = Signal(range(n))                 # the client granted last
        free = (~bus.arvalid | bus.arready) & route.w_rdy
        grant = Signal(range(n))
        granted = Signal()
        # Priority: last + 1, last + 2, ..., last (the highest priority is assigned last).
        for previous in range(n):
            with m.If(last == previous):
                for step in reversed(range(1, n + 1)):
                    client = (previous + step) % n
                    with m.If(ports[client].arvalid):
                        m.d.comb += [grant.eq(client), granted.eq(1)]
        take = free & granted
        for i, port in enumerate(ports):
            m.d.comb += port.arready.eq(take & (grant == i))

        with m.If(bus.arready):
            m.d.sync += bus.arvalid.eq(0)
        with m.If(take):
            m.d.sync += [bus.arvalid.eq(1), last.eq(grant)]
            with m.Switch(grant):
                for i, port in enumerate(ports):
                    with m.Case(i):
                        m.d.sync += [bus.araddr.eq(port.araddr), bus.arlen.eq(port.arlen),
                                     bus.arsize.eq(port.arsize), bus.arburst.eq(port.arburst)]
        m.d.comb += [bus.arid.eq(0), route.w_data.eq(grant), route.w_en.eq(take)]

        # R: to the client at the head of the route FIFO.
        for i, port in enumerate(ports):
            selected = route.r_rdy & (route.r_data == i)
            m.d.comb += [
                port.rid.eq(bus.rid),
                port.rdata.eq(bus.rdata),
                port.rresp.eq(bus.rresp),
                port.rlast.eq(bus.rlast),
                port.rvalid.eq(bus.rvalid & selected),
            ]
            with m.If(selected):
                m.d.comb += bus.rready.eq(port.rready)
        m.d.comb += route.r_en.eq(bus.rvalid & bus.rready & bus.rlast)
        return m
