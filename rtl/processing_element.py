"""One processing element of the weight-stationary systolic array."""

from amaranth import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ProcessingElement"]


class ProcessingElement(wiring.Component):
    """psum_out = psum_in + a * w[bank], with the product registered before the adder.

    Two weight banks: the array computes with the bank each input carries (``sel``) while the
    other bank shifts in the next tile's weights (``w_shift`` moves ``w_in`` into bank
    ``w_bank`` and the old value out on ``w_out``, towards the neighbour). Activations move one PE
    right per cycle, partial sums one PE down; every register holds when ``en`` is low.

    Timing: an activation at ``a_in`` in cycle t contributes to ``psum_out`` in cycle t + 2,
    which is when the PE below receives the activation that entered its row one cycle later.
    """

    en: In(1)
    a_in: In(signed(8))
    sel_in: In(1)
    a_out: Out(signed(8))
    sel_out: Out(1)
    psum_in: In(signed(32))
    psum_out: Out(signed(32))
    w_shift: In(1)
    w_bank: In(1)
    w_in: In(signed(8))
    w_out: Out(signed(8))

    def elaborate(self, platform):
        m = Module()
        banks = [Signal(signed(8), name=f"w{i}") for i in range(2)]
        # The datapath registers have no reset: the array's valid chain says when they count.
        product = Signal(signed(16), reset_less=True)
        a_out = Signal(signed(8), reset_less=True)
        sel_out = Signal(reset_less=True)
        psum_out = Signal(signed(32), reset_less=True)
        m.d.comb += [self.a_out.eq(a_out), self.sel_out.eq(sel_out), self.psum_out.eq(psum_out)]
        weight = Signal(signed(8))

        m.d.comb += weight.eq(banks[0])
        with m.If(self.sel_in):
            m.d.comb += weight.eq(banks[1])
        with m.If(self.en):
            m.d.sync += [
                a_out.eq(self.a_in),
                sel_out.eq(self.sel_in),
                product.eq(self.a_in * weight),
                psum_out.eq(self.psum_in + product),
            ]
        with m.If(self.w_shift):
            with m.If(self.w_bank):
                m.d.sync += banks[1].eq(self.w_in)
            with m.Else():
                m.d.sync += banks[0].eq(self.w_in)
        with m.If(self.w_bank):
            m.d.comb += self.w_out.eq(banks[1])
        with m.Else():
            m.d.comb += self.w_out.eq(banks[0])
        return m
