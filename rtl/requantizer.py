"""One lane of requantisation, both modes, bit-exact with golden.quant (five pipeline stages).

fp32 mode (``golden.quant.requantize_fp32``), written out in ordinary RTL:

1. int32 -> float32, rounded to nearest even (leading-zero count, normalise, round);
2. 24 x 24-bit mantissa product;
3. normalise and round the product to float32 (nearest even); products below 2^-126 flush to
   zero, which changes nothing: they round to the integer 0 in the next step either way;
4. float32 -> integer, rounded half to even; magnitudes of 2^9 and more saturate (no int8 result
   plus a zero point can reach them);
5. add the zero point, clip to [max(-128, clip_lo), min(127, clip_hi)].

fixed mode (``golden.quant.requantize_fixed``): left shift (wrapping in 32 bits), the 32 x 31-bit
product, SaturatingRoundingDoublingHighMul (truncating toward zero), RoundingDivideByPOT (half
away from zero), then step 5.

The scale must be a positive normal float32, the multiplier non-negative and the shift in
-31..30; anything else raises ``error`` with the result (the golden machine stops with
ILLEGAL_INSTRUCTION).
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .arith import leading_zeros, round_half_even

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


class Requantizer(wiring.Component):
    """Requantise one int32 value per cycle; ``latency`` cycles; stalls as a whole on
    backpressure."""

    inputs: In(stream.Signature(requant_input_layout))
    outputs: Out(stream.Signature(requant_output_layout))

    latency = 5

    def elaborate(self, platform):
        m = Module()
        en = Signal()
        m.d.comb += [en.eq(~self.outputs.valid | self.outputs.ready), self.inputs.ready.eq(en)]

        def stage(shape, value, name):
            reg = Signal(shape, name=name)
            with m.If(en):
                m.d.sync += reg.eq(value)
            return reg

        p = self.inputs.payload
        valid = self.inputs.valid & self.inputs.ready

        # Fields every stage passes on: a register per stage, from the previous stage's copy.
        def carry(previous, index):
            return {name: stage(previous[name].shape(), previous[name], f"{name}_{index}")
                    for name in ("valid", "fixed", "zp", "lo", "hi")}

        common = {"valid": valid, "fixed": p.fixed, "zp": p.zero_point, "lo": p.clip_lo,
                  "hi": p.clip_hi}

        # Stage 1 --------------------------------------------------------------------------------
        # fp32: int32 -> float32 (round to nearest even).
        negative = p.acc < 0
        magnitude = Signal(32)
        m.d.comb += magnitude.eq(Mux(negative, -p.acc, p.acc))
        zeros = leading_zeros(m, magnitude)
        normalised = Signal(32)
        m.d.comb += normalised.eq(magnitude << zeros)
        mantissa = normalised[8:32]
        round_up = round_half_even(mantissa, normalised[7], normalised[0:7].any())
        rounded = Signal(25)
        m.d.comb += rounded.eq(mantissa + round_up)
        exponent = Signal(signed(8))
        m.d.comb += exponent.eq(31 - zeros + rounded[24])
        scale_exponent = p.scale[23:31]
        bad_scale = p.scale[31] | (scale_exponent == 0) | (scale_exponent == 0xFF)
        # fixed: wrap-around left shift.
        left = Mux(p.shift > 0, p.shift, 0)
        right = Mux(p.shift < 0, -p.shift, 0)
        shifted = Signal(signed(32))
        m.d.comb += shifted.eq((p.acc << left[0:5])[0:32])
        bad_fixed = p.scale[31] | (p.shift < -31) | (p.shift > 30)

        s1 = carry(common, 1)
        s1 |= {
            "sign": stage(1, negative ^ p.scale[31], "sign_1"),
            "zero": stage(1, magnitude == 0, "zero_1"),
            "a_mant": stage(24, Mux(rounded[24], rounded[1:25], rounded[0:24]), "a_mant_1"),
            "exp": stage(signed(10), exponent + scale_exponent - 127, "exp_1"),
            "s_mant": stage(24, Cat(p.scale[0:23], Const(1, 1)), "s_mant_1"),
            "x": stage(signed(32), shifted, "x_1"),
            "mult": stage(32, p.scale, "mult_1"),
            "right": stage(6, right, "right_1"),
            "error": stage(1, Mux(p.fixed, bad_fixed, bad_scale), "error_1"),
        }

        # Stage 2: the products --------------------------------------------------------------------
        s2 = carry(s1, 2) | {name: stage(s1[name].shape(), s1[name], f"{name}_2")
                                 for name in ("sign", "zero", "exp", "right", "error")}
        s2["product"] = stage(48, s1["a_mant"] * s1["s_mant"], "product_2")
        s2["ab"] = stage(signed(64), s1["x"] * s1["mult"][0:31], "ab_2")

        # Stage 3 ----------------------------------------------------------------------------------
        # fp32: normalise the product to 24 bits and round (nearest even).
        product = s2["product"]
        top = product[47]
        kept = Signal(24)
        guard, sticky = Signal(), Signal()
        with m.If(top):
            m.d.comb += [kept.eq(product[24:48]), guard.eq(product[23]), sticky.eq(product[0:23].any())]
        with m.Else():
            m.d.comb += [kept.eq(product[23:47]), guard.eq(product[22]), sticky.eq(product[0:22].any())]
        rounded_product = Signal(25)
        m.d.comb += rounded_product.eq(kept + round_half_even(kept, guard, sticky))
        product_exp = Signal(signed(10))
        m.d.comb += product_exp.eq(s2["exp"] + top + rounded_product[24])
        # fixed: SaturatingRoundingDoublingHighMul (the multiplier is never INT32_MIN here).
        ab = s2["ab"]
        nudged = Signal(signed(65))
        m.d.comb += nudged.eq(ab + Mux(ab >= 0, 1 << 30, 1 - (1 << 30)))
        floor_quotient = nudged >> 31
        inexact = nudged[0:31].any()
        high = Signal(signed(34))
        m.d.comb += high.eq(floor_quotient + ((nudged < 0) & inexact))

        s3 = carry(s2, 3) | {name: stage(s2[name].shape(), s2[name], f"{name}_3")
                                 for name in ("sign", "right", "error")}
        s3["zero"] = stage(1, s2["zero"] | (product_exp < -126), "zero_3")
        s3["mant"] = stage(24, Mux(rounded_product[24], rounded_product[1:25], rounded_product[0:24]),
                           "mant_3")
        s3["exp"] = stage(signed(10), product_exp, "exp_3")
        s3["high"] = stage(signed(32), high, "high_3")

        # Stage 4 ----------------------------------------------------------------------------------
        # fp32: float32 -> integer magnitude, nearest even; 2^9 and above saturate.
        exp = s3["exp"]
        mant = s3["mant"]
        int_magnitude = Signal(unsigned(11))
        shift = Signal(range(25))
        m.d.comb += shift.eq(23 - exp)
        whole = Signal(24)
        m.d.comb += whole.eq(mant >> shift)
        fraction_mask = Signal(24)
        m.d.comb += fraction_mask.eq((Const(1, 25) << shift) - 1)
        fraction = mant & fraction_mask
        half = Signal(25)
        m.d.comb += half.eq((Const(1, 25) << shift) >> 1)
        rne = (fraction > half) | ((fraction == half) & whole[0])
        with m.If(s3["zero"] | (exp < -1)):
            m.d.comb += int_magnitude.eq(0)
        with m.Elif(exp >= 9):
            m.d.comb += int_magnitude.eq(1023)
        with m.Else():
            m.d.comb += int_magnitude.eq(whole + rne)
        float_result = Signal(signed(12))
        m.d.comb += float_result.eq(Mux(s3["sign"], -int_magnitude, int_magnitude))
        # fixed: RoundingDivideByPOT.
        x = s3["high"]
        right_amount = s3["right"]
        mask = Signal(32)
        m.d.comb += mask.eq((Const(1, 33) << right_amount) - 1)
        remainder = x.as_unsigned() & mask
        threshold = (mask >> 1) + (x < 0)
        divided = Signal(signed(33))
        m.d.comb += divided.eq((x >> right_amount) + (remainder > threshold))
        saturated_fixed = Signal(signed(12))
        with m.If(divided > 1023):
            m.d.comb += saturated_fixed.eq(1023)
        with m.Elif(divided < -1023):
            m.d.comb += saturated_fixed.eq(-1023)
        with m.Else():
            m.d.comb += saturated_fixed.eq(divided)

        s4 = carry(s3, 4) | {"error": stage(1, s3["error"], "error_4")}
        s4["value"] = stage(signed(12), Mux(s3["fixed"], saturated_fixed, float_result), "value_4")

        # Stage 5: zero point and clip -----------------------------------------------------------
        total = Signal(signed(13))
        m.d.comb += total.eq(s4["value"] + s4["zp"])
        low = Mux(s4["lo"] > -128, s4["lo"], -128)
        high_bound = Mux(s4["hi"] < 127, s4["hi"], 127)
        clipped = Signal(signed(8))
        with m.If(total < low):
            m.d.comb += clipped.eq(low)
        with m.Elif(total > high_bound):
            m.d.comb += clipped.eq(high_bound)
        with m.Else():
            m.d.comb += clipped.eq(total)
        out_valid = stage(1, s4["valid"], "valid_5")
        out_value = stage(signed(8), clipped, "value_5")
        out_error = stage(1, s4["error"], "error_5")
        m.d.comb += [
            self.outputs.valid.eq(out_valid),
            self.outputs.payload.value.eq(out_value),
            self.outputs.payload.error.eq(out_error),
        ]
        return m
