"""One processing element of the weight-stationary systolic array."""

from amaranth import Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ProcessingElement"]


class ProcessingElement(wiring.Component):
    """psum_out = psum_in + a * w[bank], with the product registered before the adder.

    Two weight banks: the array computes with the bank the input in this PE carries
    (``sel_in``, from the array: the same for every PE of an anti-diagonal) while the other
    bank shifts in the next tile's weights. Each bank is a shift chain of its own:
    ``w_shift[b]`` moves ``w_in[b]`` into bank ``b`` and its old value out on ``w_out[b]``,
    towards the neighbour, so that no multiplexer picks the outgoing weight in every cycle (in a
    Verilator model that multiplexer was about 4 % of the NPU's time). Activations move one PE
    right per cycle, partial sums one PE down, in every cycle (the array never stalls).

    Timing: an activation at ``a_in`` in cycle t contributes to ``psum_out`` in cycle t + 2,
    which is when the PE below receives the activation that entered its row one cycle later.
    """

    a_in: In(signed(8))
    sel_in: In(1)
    a_out: Out(signed(8))
    psum_in: In(signed(32))
    psum_out: Out(signed(32))
    w_shift: In(2)
    w_in: In(data.ArrayLayout(signed(8), 2))
    w_out: Out(data.ArrayLayout(signed(8), 2))

    def elaborate(self, platform):
        m = Module()
        banks = [Signal(signed(8), name=f"w{i}") for i in range(2)]
        # The datapath registers have no reset: the array's valid chain says when they count.
        product = Signal(signed(16), reset_less=True)
        a_out = Signal(signed(8), reset_less=True)
        psum_out = Signal(signed(32), reset_less=True)
        m.d.comb += [self.a_out.eq(a_out), self.psum_out.eq(psum_out)]
        weight = Signal(signed(8))

        m.d.comb += weight.eq(banks[0])
        with m.If(self.sel_in):
            m.d.comb += weight.eq(banks[1])
        m.d.sync += [
            a_out.eq(self.a_in),
            product.eq(self.a_in * weight),
            psum_out.eq(self.psum_in + product),
        ]
        for bank in range(2):
            with m.If(self.w_shift[bank]):
                m.d.sync += banks[bank].eq(self.w_in[bank])
            m.d.comb += self.w_out[bank].eq(banks[bank])
        return m
