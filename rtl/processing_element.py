"""One processing element of the weight-stationary systolic array."""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ProcessingElement"]


class ProcessingElement(wiring.Component):
    """psum_out = psum_in + a * w[bank], with the product registered before the adder.

    Two weight banks: the array computes with the bank the input in this PE carries (the same
    for every PE of an anti-diagonal) while the other bank shifts in the next tile's weights.
    Each bank is a shift chain of its own: ``w_shift[b]`` moves ``w_in[b]`` into bank ``b`` and
    its old value out on ``w_out[b]``, towards the neighbour, so that no multiplexer picks the
    outgoing weight in every cycle (in a Verilator model that multiplexer was about 4 % of the
    NPU's time). Activations move one PE right per cycle, partial sums one PE down, in every
    cycle (the array never stalls).

    The multiplier takes its weight from a register, not from a bank multiplexer (FPGA timing:
    both multiplier inputs come straight from flip-flops, with no bank select fan-out and
    multiplexer in front of the multiplier). In every cycle the register takes the bank that
    ``weight_bank`` names, as it is in this cycle:

    - In a PE below the top row, ``weight_bank`` is the bank of the input this PE gets in the
      next cycle, and the multiplier takes ``a_in`` and the register. The register then holds
      ``w[bank]`` of the input in this PE unless that bank shifted in the cycle before; a bank
      never shifts while inputs in flight compute with it (the array's contract), so for every
      input that counts it does.
    - In a PE of the top row (``top_row=True``, the row that sees the array's input port,
      where the next cycle's bank is not known), ``weight_bank`` is the bank of this cycle's
      input and the multiplier takes ``a_out``, this input's activation one cycle later. The
      product is then one cycle later than below, and is ``psum_out`` itself: no partial sum
      comes into the top row, so it needs neither the adder nor its register.

    Timing: an activation at ``a_in`` in cycle t contributes to ``psum_out`` in cycle t + 2,
    which is when the PE below receives the activation that entered its row one cycle later.
    """

    def __init__(self, *, top_row: bool = False):
        self.top_row = top_row
        super().__init__({
            "a_in": In(signed(8)),
            "a_out": Out(signed(8)),
            **({} if top_row else {"psum_in": In(signed(32))}),
            "psum_out": Out(signed(32)),
            "w_shift": In(2),
            "w_in": In(data.ArrayLayout(signed(8), 2)),
            "w_out": Out(data.ArrayLayout(signed(8), 2)),
            "weight_bank": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        banks = [Signal(signed(8), name=f"w{i}") for i in range(2)]
        # The datapath registers have no reset: the array's valid chain says when they count.
        weight = Signal(signed(8), reset_less=True)
        product = Signal(signed(16), reset_less=True)
        a_out = Signal(signed(8), reset_less=True)
        m.d.comb += self.a_out.eq(a_out)
        m.d.sync += [a_out.eq(self.a_in), weight.eq(Mux(self.weight_bank, banks[1], banks[0]))]
        if self.top_row:
            m.d.sync += product.eq(a_out * weight)
            m.d.comb += self.psum_out.eq(product)
        else:
            psum_out = Signal(signed(32), reset_less=True)
            m.d.sync += [product.eq(self.a_in * weight), psum_out.eq(self.psum_in + product)]
            m.d.comb += self.psum_out.eq(psum_out)
        for bank in range(2):
            with m.If(self.w_shift[bank]):
                m.d.sync += banks[bank].eq(self.w_in[bank])
            m.d.comb += self.w_out[bank].eq(banks[bank])
        return m
