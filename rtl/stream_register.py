"""A register slice for a stream: cuts the combinational paths through it in both directions."""

from amaranth import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StreamRegister"]


class StreamRegister(wiring.Component):
    """``inputs`` -> ``outputs`` with one cycle of latency and full throughput.

    Two payload registers used in turn (a two-entry FIFO): ``inputs.ready`` and
    ``outputs.valid`` come from flip-flops (the fill count), and ``outputs.ready`` only moves the
    read index and the count, never the payload registers' enables, so no path goes from one
    side to the other in a cycle and a wide payload adds no load to the consumer's ``ready``.
    ``outputs.payload`` is the read index's register through one multiplexer. Payloads leave in
    order; none is lost or repeated. Wrap it in a ``ResetInserter`` to drop what it holds.
    """

    def __init__(self, shape):
        self.shape = shape
        super().__init__({"inputs": In(stream.Signature(shape)),
                          "outputs": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        # The fill count says which entries hold a payload: they need no reset of their own.
        entries = [Signal(self.shape, name=f"entry{i}", reset_less=True) for i in range(2)]
        write_index = Signal()
        read_index = Signal()
        count = Signal(range(3))
        push = self.inputs.valid & self.inputs.ready
        pop = self.outputs.valid & self.outputs.ready
        m.d.comb += [
            self.inputs.ready.eq(count != 2),
            self.outputs.valid.eq(count != 0),
            self.outputs.payload.eq(Mux(read_index, entries[1], entries[0])),
        ]
        with m.If(push):
            m.d.sync += write_index.eq(~write_index)
            for i, entry in enumerate(entries):
                with m.If(write_index == i):
                    m.d.sync += entry.eq(self.inputs.payload)
        with m.If(pop):
            m.d.sync += read_index.eq(~read_index)
        m.d.sync += count.eq(count + push - pop)
        return m
