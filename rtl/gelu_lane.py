"""One lane of VECTOR GELU, bit-exact with ``golden.intops.gelu`` (20 pipeline stages).

With ``[Mi, Si, Mo, So, zp] = params`` (``golden.intops.gelu_params``) and the hard-wired
``A = 553019989``, ``B = 42415`` (see docs/integer_ops.md). Every product wider than one
MULT18X18D is split into tiles (``rtl.tiled_product``): one stage registers the tile products,
two more sum them (one adder level per stage), so no adder follows a multiplier in a cycle and no
two wide carry chains are chained.

1. the inputs, registered (``x``, the params, ``error``; ``2 * zp + 1`` for stage 20);
2. - 4. ``x * Mi``: 32 x 31-bit product, 63 bits signed (4 tiles);
5. ``(x * Mi) >> (8 * (Si >> 3))``, a 63-bit arithmetic shift by a multiple of 8;
6. ``>> (Si & 7)``: the low 31 bits of ``(x * Mi) >> Si``, and whether ``w``, clipped to
   ``-2**30 .. 2**30 - 1`` (31 bits signed), needs no clip: stage 5's bits from ``30 + (Si & 7)``
   up all equal (one flag per ``Si & 7``, then a multiplexer). Golden clips to
   ``+-(2**31 - 1)``; both give the same output: for ``|w| >= 2**22`` the erf polynomial is 0
   (``h = 0``), so a negative ``w`` gives ``t = 0`` and a positive one ``t = w``, and
   ``w >= 2**30 - 1`` saturates the output to 127 (``t * Mo >> So >= 2**60 >> 52``, then
   ``+ zp >= 128``);
7. ``h = B - min(|w| >> 6, B)`` (16 bits) in one adder (``|w| >> 6`` is ``w >> 6`` or its
   complement, plus a carry in), ``|w|``'s low 22 bits and ``max(w, 0)`` (30 bits); a clipped ``w``
   gives ``h = 0`` and ``max(w, 0)`` 0 or ``2**30 - 1``;
8. ``h * h``: < 2**31 (one multiplier);
9. - 11. ``A * h**2``: < 2**60 (4 tiles); ``P = (A * h**2) >> 31`` is its bits 31..59;
12. - 14. ``u = |w| * P``: only ``|w| < 64 * B < 2**22`` gives ``P > 0``, so ``|w|``'s low 22
    bits suffice: 22 x 29-bit product (4 tiles);
15. ``t = (w * g) >> 30`` with the gate ``g = 2**30 - P`` if ``w >= 0`` else ``P``, computed as
    ``t = ((max(w, 0) << 30) - u) >> 30`` (``w * g`` is ``(w << 30) - |w| * P`` for ``w >= 0`` and
    ``-|w| * P`` otherwise), a 31-bit subtraction whose borrow in is ``u mod 2**30 != 0``:
    ``-2**21 < t < 2**30``, 31 bits signed;
16. - 18. ``t * Mo``: 31 x 31-bit product, |t * Mo| < 2**61 (4 tiles);
19. ``q = (t * Mo) >> (So - 1)``: ``So - 1`` is ``33 + k`` with ``k = So - 34`` in 0..18, a fixed
    shift and a 5-bit barrel shift (29 bits signed);
20. ``y = saturate(((t * Mo + 2**(So - 1)) >> So) + zp)``, which is ``(q + 2 * zp + 1) >> 1``
    saturated (adding 2**(So-1) before a floor shift by So equals shifting by So - 1, adding 1
    and shifting by 1; the even ``2 * zp`` commutes with the last shift): one adder.

The parameters travel with each value (one payload per value), so consecutive values may use
different parameters. 17 MULT18X18D.

``error`` is 1 when the parameters are outside the ranges ``golden.intops.gelu`` accepts
(``Mi``, ``Mo`` outside 2**30 .. 2**31 - 1, ``Si`` outside 0..62, ``So`` outside 34..52, ``zp``
outside -128..127; the instruction stops with ILLEGAL_INSTRUCTION); the value is then
meaningless.
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.intops import (
    GELU_ERF_A,
    GELU_ERF_B,
    GELU_FRAC_BITS,
    GELU_GATE_BITS,
    GELU_PARAM_COUNT,
    GELU_POLY_FRAC_BITS,
)

from .arith import in_range
from .tiled_product import TILE_BITS, tiled_product

__all__ = ["GeluLane", "gelu_input_layout", "gelu_output_layout"]

gelu_input_layout = data.StructLayout({
    "x": signed(32),
    "params": data.ArrayLayout(signed(32), GELU_PARAM_COUNT),  # [Mi, Si, Mo, So, zp]
})

gelu_output_layout = data.StructLayout({"value": signed(8), "error": 1})

_W_BITS = 31                    # w, clipped to -2**30 .. 2**30 - 1
_W_LIMIT = 1 << (_W_BITS - 1)
_ERF_BITS = 22                  # |w| < 2**22 where the erf polynomial is not 0
_SO_MIN, _SO_MAX = 34, 52       # output shift range (golden.intops._gelu_constants)
_TOP_TILE = {(TILE_BITS, TILE_BITS)}  # the tile of two top chunks (the product's bits 34 up)


def _multiplier_ok(value):
    """2**30 <= value < 2**31 for a signed 32-bit value: bits 31..30 are 0b01."""
    return value[30:32] == 0b01



def _saturate_int8(value):
    """``value`` (signed) clamped to -128..127 from its bits: it fits when its bits from 7 up
    are all equal (no comparator behind the adder that makes it)."""
    high = value[7:]
    fits = (high == 0) | (high == (1 << len(high)) - 1)
    return Mux(fits, value[0:8], Mux(value[-1], -128, 127))



class GeluLane(wiring.Component):
    """GELU of one int32 value per cycle; ``latency`` cycles; stalls as a whole on
    backpressure."""

    inputs: In(stream.Signature(gelu_input_layout))
    outputs: Out(stream.Signature(gelu_output_layout))

    latency = 20

    def elaborate(self, platform):
        m = Module()
        en = Signal()
        m.d.comb += [en.eq(~self.outputs.valid | self.outputs.ready), self.inputs.ready.eq(en)]
        index = 0  # the stage being built

        def stage(shape, value, name):
            # Only the valid bits need a reset (none on the data: see QuantizedAdder).
            reg = Signal(shape, name=name, reset_less=not name.startswith("valid"))
            with m.If(en):
                m.d.sync += reg.eq(value)
            return reg

        def advance(carried, **new):
            """The next stage: registers of ``carried`` (a dict of registers) and of ``new``
            (name: (shape, value))."""
            nonlocal index
            index += 1
            return ({name: stage(reg.shape(), reg, f"{name}_{index}")
                     for name, reg in carried.items()}
                    | {name: stage(shape, value, f"{name}_{index}")
                       for name, (shape, value) in new.items()})

        def multiply(carried, a, b, name, lut_tiles=()):
            """(``carried`` moved along the stages of ``a * b``, the registered product)."""
            result, stages = tiled_product(stage, a, b, name=f"{name}_{index + 1}",
                                           lut_tiles=lut_tiles)
            for _ in range(stages):
                carried = advance(carried)
            return carried, result

        def keep(carried, *names):
            return {name: carried[name] for name in names}

        p = self.inputs.payload
        mi, si, mo, so, zp = (p.params[i] for i in range(GELU_PARAM_COUNT))
        bad = ~(_multiplier_ok(mi) & in_range(si, 0, 62) & _multiplier_ok(mo)
                & in_range(so, _SO_MIN, _SO_MAX) & in_range(zp, -128, 127))
        common = ("valid", "error", "mo", "k", "zp2")

        # 1: the inputs ----------------------------------------------------------------------------
        s = advance({}, valid=(1, self.inputs.valid), error=(1, bad), x=(signed(32), p.x),
                    mi=(31, mi[0:31]), si=(6, si[0:6]), mo=(31, mo[0:31]),
                    k=(5, (so - _SO_MIN)[0:5]), zp2=(signed(9), Cat(Const(1, 1), zp[0:8])))

        # 2-4: x * Mi; 5-6: >> Si, w, clipped ---------------------------------------------------
        # The shift by Si in two stages: by 8 * Si[3:6], then by f = Si[0:3]. w fits (no clip) when
        # the bits of the coarse shift from 30 + f up are all equal (one flag per f, then a
        # multiplexer: no comparison behind the fine shift). A clipped w is left to stage 7.
        s, xm = multiply(keep(s, *common, "si"), s["x"], s["mi"], "xm")
        s = advance(keep(s, *common, "si"),
                    coarse=(signed(63), xm >> Cat(Const(0, 3), s["si"][3:6])))
        coarse, fine = s["coarse"], s["si"][0:3]
        fits_by_fine = Signal(8)
        for f in range(8):
            high = coarse[_W_BITS - 1 + f:]
            m.d.comb += fits_by_fine[f].eq((high == 0) | (high == (1 << len(high)) - 1))
        s = advance(keep(s, *common), window=(signed(_W_BITS), (coarse >> fine)[0:_W_BITS]),
                    fits=(1, fits_by_fine.bit_select(fine, 1)), negative=(1, coarse[-1]))

        # 7: h = B - min(|w| >> 6, B), |w|, max(w, 0); 8: h * h; 9-11: A * h**2 -----------------
        # B - (|w| >> 6) in one adder: with a = w >> 6, |w| >> 6 is a for w >= 0, and for w < 0
        # ~a + 1 if w is a multiple of 64, ~a otherwise; B - v is B + ~v + 1. A clipped w has
        # h = 0 (then |w| does not matter: P = 0) and max(w, 0) = 0 or 2**30 - 1.
        w, negative, fits = s["window"], s["negative"], s["fits"]
        high = w >> (GELU_FRAC_BITS - GELU_POLY_FRAC_BITS)
        exact = w[0:GELU_FRAC_BITS - GELU_POLY_FRAC_BITS] == 0
        h = Signal(signed(len(high) + 2))  # < 0 when |w| >> 6 > B
        carry_in = ~(negative & exact)  # in the adder: (2a + c + 2b + 1) >> 1 = a + b + c
        m.d.comb += h.eq((Cat(carry_in, Mux(negative, high, ~high)).as_signed()
                          + Cat(Const(1, 1), Const(GELU_ERF_B, 17))) >> 1)
        s = advance(keep(s, *common), h=(16, Mux((h < 0) | ~fits, 0, h[0:16])),
                    near=(_ERF_BITS, Mux(negative, -w, w)[0:_ERF_BITS]),
                    positive=(_W_BITS - 1, Mux(negative, 0, Mux(fits, w[0:_W_BITS - 1],
                                                               _W_LIMIT - 1))))
        s, hh = multiply(keep(s, *common, "positive", "near"), s["h"], s["h"], "hh")
        s, ahh = multiply(s, GELU_ERF_A, hh[0:31], "ahh", lut_tiles=_TOP_TILE)

        # 12-14: u = |w| * P; 15: t = ((max(w, 0) << 30) - u) >> 30 ---------------------------
        s, u = multiply(keep(s, *common, "positive"), s["near"], ahh[31:60], "u",
                        lut_tiles=_TOP_TILE)
        # (2 * max(w, 0) - (2 * (u >> 30) + (u mod 2**30 != 0))) >> 1: one 31-bit subtraction
        borrow = u[0:GELU_GATE_BITS].any()
        gated = (Cat(Const(0, 1), s["positive"]) - Cat(borrow, u[GELU_GATE_BITS:])) >> 1
        s = advance(keep(s, *common), t=(signed(_W_BITS), gated))

        # 16-18: t * Mo; 19: q = (t * Mo) >> (So - 1); 20: (q + 2 * zp + 1) >> 1, saturated ---
        s, tm = multiply(keep(s, "valid", "error", "k", "zp2"), s["t"], s["mo"], "tm")
        quotient = tm[_SO_MIN - 1:].as_signed() >> s["k"]
        s = advance(keep(s, "valid", "error", "zp2"), quotient=(signed(len(tm) - _SO_MIN + 1),
                                                               quotient))
        rounded = Signal(signed(len(s["quotient"])))
        m.d.comb += rounded.eq((s["quotient"] + s["zp2"]) >> 1)
        s = advance(keep(s, "valid", "error"), value=(signed(8), _saturate_int8(rounded)))
        assert index == self.latency
        m.d.comb += [
            self.outputs.valid.eq(s["valid"]),
            self.outputs.payload.value.eq(s["value"]),
            self.outputs.payload.error.eq(s["error"]),
        ]
        return m
