"""One lane of requantisation, both modes, bit-exact with golden.quant (nine pipeline stages).

fp32 mode (``golden.quant.requantize_fp32``), written out in ordinary RTL:

1. int32 -> float32, rounded to nearest even (leading-zero count, normalise, round);
2. 24 x 24-bit mantissa product;
3. round the product to 24 bits (nearest even), kept as 25 bits (2^24 when the rounding carries
   out) with an unchanged exponent; products below 2^-126 are not flushed, which changes
   nothing: they round to the integer 0 in the next step either way;
4. float32 -> integer, rounded half to even; magnitudes of 2^9 and more saturate (no int8 result
   plus a zero point can reach them);
5. add the zero point, clip to [clip_lo, clip_hi] (int8, so within -128..127).

fixed mode (``golden.quant.requantize_fixed``): left shift (wrapping in 32 bits), the 32 x 31-bit
product x * m, SaturatingRoundingDoublingHighMul (for a multiplier m >= 0 exactly
floor((x * m + 2^30) / 2^31)), RoundingDivideByPOT (half away from zero), then step 5.

The two modes share the hardware that does the same thing: one left shifter (the int32 -> float32
normalisation, or the wrapping left shift), one 32 x 31-bit multiplier (the 24 x 24-bit mantissa
product, or x * m; four MULT18X18D, their partial products registered and added in the next
stage) and one rounding right shifter (float -> integer, or RoundingDivideByPOT). The mode
(``fixed``) travels with each value, so the two may mix freely from one value to the next.

The scale must be a positive normal float32, the multiplier non-negative and the shift in
-31..30; anything else raises ``error`` with the result (the golden machine stops with
ILLEGAL_INSTRUCTION).
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .arith import (
    fits_signed,
    in_range,
    leading_zeros,
    multiplier_parts,
    round_half_even,
    shift_right_rounding_bits,
)

__all__ = ["Requantizer", "requant_input_layout", "requant_output_layout"]

requant_input_layout = data.StructLayout({
    "acc": signed(32),
    "fixed": 1,            # RequantMode: 0 fp32, 1 fixed
    "scale": 32,           # fp32: float32 bits; fixed: the multiplier
    "shift": signed(32),   # fixed: the shift (positive = left)
    "zero_point": signed(8),
    "clip_lo": signed(8),
    "clip_hi": signed(8),
})

requant_output_layout = data.StructLayout({"value": signed(8), "error": 1})

_EXP = signed(10)  # unbiased exponents of the product: -126..160


class Requantizer(wiring.Component):
    """Requantise one int32 value per cycle; ``latency`` cycles; stalls as a whole on
    backpressure."""

    inputs: In(stream.Signature(requant_input_layout))
    outputs: Out(stream.Signature(requant_output_layout))

    latency = 9

    def elaborate(self, platform):
        m = Module()
        en = Signal()
        m.d.comb += [en.eq(~self.outputs.valid | self.outputs.ready), self.inputs.ready.eq(en)]

        def reg(value, name, index, shape=None):
            shape = value.shape() if shape is None else shape
            # Only the valid bits need a reset (none on the data: see QuantizedAdder).
            register = Signal(shape, name=f"{name}_{index}", reset_less=name != "valid")
            with m.If(en):
                m.d.sync += register.eq(value)
            return register

        def comb(value, shape, name):
            wire = Signal(shape, name=name)
            m.d.comb += wire.eq(value)
            return wire

        def advance(previous, index, drop=(), **new):
            """The next stage: ``previous`` minus ``drop`` passed on, plus ``new`` (registered;
            a value or a (value, shape) pair)."""
            stage = {name: reg(value, name, index) for name, value in previous.items()
                     if name not in drop}
            for name, value in new.items():
                value, shape = value if isinstance(value, tuple) else (value, None)
                stage[name] = reg(value, name, index, shape)
            return stage

        p = self.inputs.payload

        # Stage 1: decode; fp32: |acc| and its leading zeros (fixed: acc and the left shift) ----
        # The leading zeros are counted on acc, or ~acc = |acc| - 1 when acc < 0 (in parallel
        # with the negation): one too many when |acc| is a power of two, which then shifts out
        # of the 32 bits into bit 32 (stage 3 takes it as a carry).
        scale_exponent = p.scale[23:31]
        bad_scale = p.scale[31] | (scale_exponent == 0) | (scale_exponent == 0xFF)
        bad_fixed = p.scale[31] | ~in_range(p.shift, -31, 30)
        negative = p.acc[31]
        zeros = leading_zeros(m, p.acc.as_unsigned() ^ negative.replicate(32))
        s = advance({}, 1,
                    valid=self.inputs.valid & self.inputs.ready, fixed=p.fixed,
                    zp=p.zero_point, lo=p.clip_lo, hi=p.clip_hi,
                    error=Mux(p.fixed, bad_fixed, bad_scale),
                    value=(Mux(negative & ~p.fixed, -p.acc, p.acc)[0:32], 32),
                    # a legal shift fits in its low 6 bits
                    left_amount=(Mux(p.fixed, Mux(p.shift[31], 0, p.shift[0:5]), zeros), 6),
                    right=(Mux(p.shift[31], -p.shift[0:5], 0)[0:5], 5),
                    sign=negative, zero=p.acc == 0,
                    scale_exp=scale_exponent,
                    # the multiplier's second operand: the multiplier, or the scale's mantissa
                    mult=(Mux(p.fixed, p.scale[0:31], Cat(p.scale[0:23], Const(1, 1))), 31))

        # Stage 2: the left shift: fp32 normalises |acc|, fixed shifts by ``left`` (wrapping) -
        s = advance(s, 2, drop=("value", "left_amount", "scale_exp"),
                    shifted=((s["value"] << s["left_amount"])[0:33], 33),
                    # the exponent of the float32 product's leading bit, but for two carries
                    exp=(s["scale_exp"] - 96 - s["left_amount"], _EXP))

        # Stage 3: fp32: round |acc| to 24 bits (nearest even); the multiplier's first operand -
        shifted = s["shifted"]
        mantissa = shifted[8:32]
        rounded = comb(mantissa + round_half_even(mantissa, shifted[7], shifted[0:7].any()), 25,
                       "acc_rounded")
        # |acc| = 2^k with one leading zero too many, or a carry out of the rounding: 2^24, that
        # is mantissa 2^23 and exponent + 1.
        carry = shifted[32] | rounded[24]
        acc_mantissa = rounded[0:24] | (carry << 23)
        s = advance(s, 3, drop=("shifted",),
                    operand=(Mux(s["fixed"], shifted[0:32], acc_mantissa).as_signed(), signed(32)),
                    acc_carry=carry)

        # Stage 4: the partial products (one MULT18X18D each) ---------------------------------
        # operand: 17 unsigned + 15 signed bits, mult: 17 + 14 unsigned bits
        (_, operand_low), (_, operand_high) = multiplier_parts(s["operand"])
        (_, mult_low), (_, mult_high) = multiplier_parts(s["mult"])
        s = advance(s, 4, drop=("operand", "mult", "exp", "acc_carry"),
                    exp=(s["exp"] + s["acc_carry"], _EXP),
                    part00=operand_low * mult_low, part01=operand_low * mult_high,
                    part10=operand_high * mult_low, part11=operand_high * mult_high)

        # Stage 5: the product; fixed: + 2^30 (the doubling high multiply's rounding), added into
        # the low partial product (bits 30..33) and its carry into the high one.
        low = s["part00"]  # 17 x 17 bits: below 2^34
        low_top = comb(low[30:34] + s["fixed"], 5, "low_top")
        outer = Cat(low[0:30], low_top[0:4], s["part11"] + low_top[4]).as_signed()
        middle = s["part01"] + s["part10"]
        s = advance(s, 5, drop=("part00", "part01", "part10", "part11"),
                    product=((outer + (middle << 17))[0:64], 64))

        # Stage 6: fp32: round the product to 24 bits (nearest even); the rounding shifter's input
        product = s["product"]
        top = product[47]
        kept = comb(Mux(top, product[24:48], product[23:47]), 24, "product_kept")
        guard = Mux(top, product[23], product[22])
        sticky = product[0:22].any() | (top & product[22])
        round_up = comb(round_half_even(kept, guard, sticky), 1, "product_round_up")
        product_rounded = comb(kept + round_up, 25, "product_rounded")
        # product_rounded[0:14] != 0, without waiting for the carry chain
        low_bits = kept[0:14]
        low_sticky = Mux(round_up, ~low_bits.all(), low_bits.any())
        # product_rounded * 2^(exp + top - 23): its integer part is product_rounded[14:] >>
        # (9 - exp - top) for exp + top in -1..8 (each case chosen by top, not added).
        exp = s["exp"]
        fixed = s["fixed"]
        s = advance(s, 6, drop=("product", "exp", "right", "zero"),
                    # fixed: floor((x * m + 2^30) / 2^31)
                    rounding_in=(Mux(fixed, product[31:64].as_signed(), product_rounded[14:25]),
                                 signed(33)),
                    rounding_amount=(Mux(fixed, s["right"], Mux(top, 8 - exp, 9 - exp)[0:4]), 5),
                    low_sticky=~fixed & low_sticky,
                    saturate=~fixed & Mux(top, exp >= 8, exp >= 9),
                    vanish=~fixed & (s["zero"] | Mux(top, exp < -2, exp < -1)))

        # Stage 7: the rounding right shift -------------------------------------------------
        whole, guard, sticky = shift_right_rounding_bits(s["rounding_in"], s["rounding_amount"])
        s = advance(s, 7, drop=("rounding_in", "rounding_amount", "low_sticky"),
                    whole=whole, guard=guard, sticky=sticky | s["low_sticky"])

        # Stage 8: round (fp32: half to even, fixed: half away from zero), sign, saturate ------
        # fp32 rounds the magnitude and then negates: -(w + r) = ~w + (1 - r).
        whole = s["whole"]
        fixed = s["fixed"]
        negative = whole[32]
        round_up = s["guard"] & (s["sticky"] | Mux(fixed, ~negative, whole[0]))
        flip = ~fixed & s["sign"]
        narrow = whole[0:11].as_signed()
        value = Signal(signed(12))
        with m.If(s["vanish"]):
            m.d.comb += value.eq(0)
        with m.Elif(s["saturate"] | ~fits_signed(whole, 11)):  # beyond any int8 result
            m.d.comb += value.eq(Mux(flip | negative, -1024, 1023))
        with m.Else():
            m.d.comb += value.eq(Mux(flip, ~narrow, narrow) + (round_up ^ flip))
        s = advance(s, 8, drop=("whole", "guard", "sticky", "sign", "saturate", "vanish"),
                    value=value)

        # Stage 9: zero point and clip -------------------------------------------------------
        total = comb(s["value"] + s["zp"], signed(13), "total")
        low, high = s["lo"], s["hi"]  # int8: within -128..127 already
        clipped = Signal(signed(8))
        with m.If(total < low):
            m.d.comb += clipped.eq(low)
        with m.Elif(total > high):
            m.d.comb += clipped.eq(high)
        with m.Else():
            m.d.comb += clipped.eq(total)
        m.d.comb += [
            self.outputs.valid.eq(reg(s["valid"], "valid", 9)),
            self.outputs.payload.value.eq(reg(clipped, "value", 9)),
            self.outputs.payload.error.eq(reg(s["error"], "error", 9)),
        ]
        return m
