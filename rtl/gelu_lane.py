"""One lane of VECTOR GELU, bit-exact with ``golden.intops.gelu`` (nine pipeline stages).

With ``[Mi, Si, Mo, So, zp] = params`` (``golden.intops.gelu_params``) and the hard-wired
``A = 553019989``, ``B = 42415`` (see docs/integer_ops.md):

1. ``x * Mi``: 32 x 31-bit product, 63 bits signed (registered);
2. ``w = clip((x * Mi) >> Si, +-(2**31 - 1))``: a 6-bit arithmetic barrel shift, then the clip
   (32 bits signed);
3. ``h = B - min(|w| >> 6, B)``: 16 bits;
4. ``h * h``: 16 x 16-bit product, < 2**31 (registered);
5. ``A * h**2``: 30 x 31-bit product with a constant, < 2**60 (registered);
6. ``P = (A * h**2) >> 31`` (29 bits) and the gate ``g = 2**30 - P`` if ``w >= 0`` else ``P``
   (31 bits);
7. ``w * g``: 32 x 31-bit product, |w * g| < 2**61 (registered);
8. ``t * Mo`` with ``t = (w * g) >> 30`` (a bit slice, 32 bits signed): 32 x 31-bit product,
   |t * Mo| < 2**62 (registered);
9. ``y = saturate(((t * Mo + 2**(So - 1)) >> So) + zp)``, computed as
   ``((t * Mo >> (So - 1)) + 1) >> 1`` (the same value: adding 2**(So-1) before a floor shift by
   So equals shifting by So - 1, adding 1 and shifting by 1), so that the rounding adder is 30
   bits wide instead of 63: ``So - 1`` is ``33 + k`` with ``k = So - 34`` in 0..18, a fixed shift
   and a 5-bit barrel shift.

Every product is registered before the adds or shifts that use it. The parameters travel with
each value (one payload per value), so consecutive values may use different parameters.

``error`` is 1 when the parameters are outside the ranges ``golden.intops.gelu`` accepts
(``Mi``, ``Mo`` outside 2**30 .. 2**31 - 1, ``Si`` outside 0..62, ``So`` outside 34..52, ``zp``
outside -128..127; the instruction stops with ILLEGAL_INSTRUCTION); the value is then
meaningless.
"""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.intops import GELU_ERF_A, GELU_ERF_B, GELU_GATE_BITS, GELU_PARAM_COUNT

__all__ = ["GeluLane", "gelu_input_layout", "gelu_output_layout"]

gelu_input_layout = data.StructLayout({
    "x": signed(32),
    "params": data.ArrayLayout(signed(32), GELU_PARAM_COUNT),  # [Mi, Si, Mo, So, zp]
})

gelu_output_layout = data.StructLayout({"value": signed(8), "error": 1})

_LIMIT = (1 << 31) - 1          # the clip of w
_SO_MIN, _SO_MAX = 34, 52       # output shift range (golden.intops._gelu_constants)


def _multiplier_ok(value):
    """2**30 <= value < 2**31 for a signed 32-bit value: bits 31..30 are 0b01."""
    return value[30:32] == 0b01


def _in_range(value, low: int, high: int):
    return (value >= low) & (value <= high)


class GeluLane(wiring.Component):
    """GELU of one int32 value per cycle; ``latency`` cycles; stalls as a whole on
    backpressure."""

    inputs: In(stream.Signature(gelu_input_layout))
    outputs: Out(stream.Signature(gelu_output_layout))

    latency = 9

    def elaborate(self, platform):
        m = Module()
        en = Signal()
        m.d.comb += [en.eq(~self.outputs.valid | self.outputs.ready), self.inputs.ready.eq(en)]

        def stage(shape, value, name):
            reg = Signal(shape, name=name)
            with m.If(en):
                m.d.sync += reg.eq(value)
            return reg

        def carry(previous, index, names):
            return {name: stage(previous[name].shape(), previous[name], f"{name}_{index}")
                    for name in names}

        p = self.inputs.payload
        mi, si, mo, so, zp = (p.params[i] for i in range(GELU_PARAM_COUNT))
        bad = ~(_multiplier_ok(mi) & _in_range(si, 0, 62) & _multiplier_ok(mo)
                & _in_range(so, _SO_MIN, _SO_MAX) & _in_range(zp, -128, 127))
        common = ("valid", "error", "mo", "k", "zp")

        # Stage 1: x * Mi -------------------------------------------------------------------------
        s1 = {
            "valid": stage(1, self.inputs.valid, "valid_1"),
            "error": stage(1, bad, "error_1"),
            "si": stage(6, si[0:6], "si_1"),
            "mo": stage(31, mo[0:31], "mo_1"),
            "k": stage(5, (so - _SO_MIN)[0:5], "k_1"),
            "zp": stage(signed(8), zp[0:8], "zp_1"),
            "xm": stage(signed(63), p.x * mi[0:31], "xm_1"),
        }

        # Stage 2: w = clip((x * Mi) >> Si) -------------------------------------------------------
        shifted = Signal(signed(63))
        m.d.comb += shifted.eq(s1["xm"] >> s1["si"])
        clipped = Mux(shifted > _LIMIT, _LIMIT, Mux(shifted < -_LIMIT, -_LIMIT, shifted))
        s2 = carry(s1, 2, common) | {"w": stage(signed(32), clipped, "w_2")}

        # Stage 3: h = B - min(|w| >> 6, B) -------------------------------------------------------
        magnitude = Signal(31)
        m.d.comb += magnitude.eq(Mux(s2["w"] < 0, -s2["w"], s2["w"]))
        scaled = magnitude[6:]  # |w| >> 6 (GELU_FRAC_BITS - GELU_POLY_FRAC_BITS)
        h = Mux(scaled > GELU_ERF_B, 0, GELU_ERF_B - scaled)
        s3 = carry(s2, 3, (*common, "w")) | {"h": stage(16, h, "h_3")}

        # Stage 4: h * h ---------------------------------------------------------------------------
        s4 = carry(s3, 4, (*common, "w")) | {"hh": stage(31, s3["h"] * s3["h"], "hh_4")}

        # Stage 5: A * h**2 ------------------------------------------------------------------------
        s5 = carry(s4, 5, (*common, "w")) | {"ahh": stage(60, s4["hh"] * GELU_ERF_A, "ahh_5")}

        # Stage 6: the gate g ---------------------------------------------------------------------
        poly = s5["ahh"][31:60]  # P, 29 bits
        gate = Mux(s5["w"] >= 0, (1 << GELU_GATE_BITS) - poly, poly)
        s6 = carry(s5, 6, (*common, "w")) | {"g": stage(unsigned(31), gate, "g_6")}

        # Stage 7: w * g ---------------------------------------------------------------------------
        s7 = carry(s6, 7, common) | {"wg": stage(signed(62), s6["w"] * s6["g"], "wg_7")}

        # Stage 8: t * Mo, t = (w * g) >> 30 ------------------------------------------------------
        t = s7["wg"][GELU_GATE_BITS:62].as_signed()
        s8 = carry(s7, 8, ("valid", "error", "k", "zp")) | {
            "tm": stage(signed(63), t * s7["mo"], "tm_8")}

        # Stage 9: round, zero point, saturate ----------------------------------------------------
        quotient = Signal(signed(30))  # (t * Mo) >> (So - 1), |.| < 2**29
        m.d.comb += quotient.eq((s8["tm"] >> (_SO_MIN - 1)) >> s8["k"])
        total = Signal(signed(31))
        m.d.comb += total.eq(((quotient + 1) >> 1) + s8["zp"])
        saturated = Mux(total > 127, 127, Mux(total < -128, -128, total))
        out_valid = stage(1, s8["valid"], "valid_9")
        out_value = stage(signed(8), saturated, "value_9")
        out_error = stage(1, s8["error"], "error_9")
        m.d.comb += [
            self.outputs.valid.eq(out_valid),
            self.outputs.payload.value.eq(out_value),
            self.outputs.payload.error.eq(out_error),
        ]
        return m
