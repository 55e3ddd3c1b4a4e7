"""A register slice for a stream: cuts the combinational paths through it in both directions."""

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StreamRegister"]


class StreamRegister(wiring.Component):
    """``inputs`` -> ``outputs`` with one cycle of latency and full throughput.

    ``outputs.valid`` and ``outputs.payload`` come from flip-flops, and so does ``inputs.ready``:
    no path goes from one side to the other in a cycle. A second (skid) register takes the payload
    that arrives in the cycle the output stalls, so ``inputs.ready`` only falls when both are full.
    Payloads leave in order; none is lost or repeated. Wrap it in a ``ResetInserter`` to drop what
    it holds.
    """

    def __init__(self, shape):
        self.shape = shape
        super().__init__({"inputs": In(stream.Signature(shape)),
                          "outputs": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        skid = Signal(self.shape)
        skid_valid = Signal()
        m.d.comb += self.inputs.ready.eq(~skid_valid)
        output_free = ~self.outputs.valid | self.outputs.ready
        with m.If(output_free):
            with m.If(skid_valid):
                m.d.sync += [self.outputs.payload.eq(skid), self.outputs.valid.eq(1),
                             skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.outputs.payload.eq(self.inputs.payload),
                             self.outputs.valid.eq(self.inputs.valid)]
        with m.Elif(self.inputs.valid & ~skid_valid):
            m.d.sync += [skid.eq(self.inputs.payload), skid_valid.eq(1)]
        return m
