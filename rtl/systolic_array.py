"""The weight-stationary systolic array: R x C processing elements with skew and de-skew."""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from golden.config import NpuConfig

from .processing_element import ProcessingElement

__all__ = ["SystolicArray", "array_input_layout", "weight_beat_layout", "valid_signature"]


def array_input_layout(config: NpuConfig) -> data.StructLayout:
    """One input vector: ``rows`` int8 activations and the weight bank to multiply them with."""
    return data.StructLayout({"values": data.ArrayLayout(signed(8), config.rows), "bank": 1})


def valid_signature(payload_shape) -> wiring.Signature:
    """A stream without ``ready``: the receiver takes every payload whose ``valid`` is high."""
    return wiring.Signature({"valid": Out(1), "payload": Out(payload_shape)})


def weight_beat_layout(config: NpuConfig) -> data.StructLayout:
    """One column of a weight tile (``rows`` int8) and the bank it goes to."""
    return data.StructLayout({"values": data.ArrayLayout(signed(8), config.rows), "bank": 1})


class SystolicArray(wiring.Component):
    """Weight-stationary R x C array: ``outputs[n] = sum_k inputs.values[k] * w[bank][k][n]``.

    The array never stalls: every register moves in every cycle, and its ports have no
    ``ready`` (the consumer takes every output; the compute unit guarantees it can). In a
    Verilator model the enable a stall needs was a fifth of the whole NPU's time on a matmul.

    - ``weights``: a tile is ``cols`` beats, column 0 first; each beat shifts the bank it names
      one column towards column 0 (beats enter at column ``cols - 1``), so after ``cols`` beats
      column n holds beat n. The bank being loaded must not be the one a valid input in flight
      computes with, from the cycle it enters until it reaches the last PE (the controller
      alternates banks: double buffering); the PEs' weight registers rely on it (see
      :class:`ProcessingElement`).
    - ``inputs`` / ``outputs``: at most one vector in and one out per cycle, in order,
      ``latency`` cycles apart.
    - int32 sums wrap like the golden model.
    """

    def __init__(self, config: NpuConfig):
        self.config = config
        super().__init__({
            "weights": In(valid_signature(weight_beat_layout(config))),
            "inputs": In(valid_signature(array_input_layout(config))),
            "outputs": Out(valid_signature(data.ArrayLayout(signed(32), config.cols))),
        })

    @property
    def latency(self) -> int:
        """Enabled cycles from accepting an input vector to its output vector being valid."""
        return self.config.rows + self.config.cols

    def elaborate(self, platform):
        m = Module()
        rows, cols = self.config.rows, self.config.cols

        # A beat shifts the bank it names; each bank is a shift chain of its own.
        shift = Signal(2)
        m.d.comb += shift.eq(Mux(self.weights.payload.bank, 0b10, 0b01)
                             & self.weights.valid.replicate(2))
        pes = [[ProcessingElement(top_row=k == 0) for _ in range(cols)] for k in range(rows)]
        for k in range(rows):
            for c in range(cols):
                m.submodules[f"pe_{k}_{c}"] = pe = pes[k][c]
                m.d.comb += pe.w_shift.eq(shift)
                for bank in range(2):
                    if c + 1 < cols:
                        m.d.comb += pe.w_in[bank].eq(pes[k][c + 1].w_out[bank])
                    else:
                        m.d.comb += pe.w_in[bank].eq(self.weights.payload.values[k])
                if c > 0:
                    m.d.comb += pe.a_in.eq(pes[k][c - 1].a_out)
                if k > 0:
                    m.d.comb += pe.psum_in.eq(pes[k - 1][c].psum_out)

        # Bank select: an input vector reaches PE (k, c) k + c cycles after it enters, so every
        # PE of an anti-diagonal computes with the same bank: one register per anti-diagonal
        # (not one per PE and skew stage: fewer registers for Verilator to move every cycle).
        # A PE's weight register takes the bank its next multiply uses: in the top row that of
        # the input in the PE now, below it that of the input in the PE in the next cycle,
        # which is the anti-diagonal before it now.
        diagonal = [self.inputs.payload.bank]  # diagonal[d]: anti-diagonal d's bank now
        for d in range(1, rows + cols - 2):  # the PEs read up to rows + cols - 3 (rows >= 2)
            delayed = Signal(name=f"bank_diagonal_{d}", reset_less=True)
            m.d.sync += delayed.eq(diagonal[-1])
            diagonal.append(delayed)
        for k in range(rows):
            for c in range(cols):
                m.d.comb += pes[k][c].weight_bank.eq(diagonal[c] if k == 0 else diagonal[k + c - 1])

        # Input skew: row k enters k cycles late.
        for k in range(rows):
            value = self.inputs.payload.values[k]
            for stage in range(k):
                delayed_value = Signal(signed(8), name=f"skew_{k}_{stage}", reset_less=True)
                m.d.sync += delayed_value.eq(value)
                value = delayed_value
            m.d.comb += pes[k][0].a_in.eq(value)

        # Output de-skew: column c leaves the array c cycles after column 0; delay it cols-1-c.
        for c in range(cols):
            value = pes[rows - 1][c].psum_out
            for stage in range(cols - 1 - c):
                delayed = Signal(signed(32), name=f"deskew_{c}_{stage}", reset_less=True)
                m.d.sync += delayed.eq(value)
                value = delayed
            m.d.comb += self.outputs.payload[c].eq(value)

        # Valid travels alongside: the PE pipeline is rows + 1 deep (product register) and the
        # skew + de-skew add cols - 1, so an input's output appears rows + cols cycles later.
        valid = self.inputs.valid
        for stage in range(self.latency):
            delayed = Signal(name=f"valid_{stage}")
            m.d.sync += delayed.eq(valid)
            valid = delayed
        m.d.comb += self.outputs.valid.eq(valid)
        return m
