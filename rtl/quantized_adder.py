"""One lane of the quantised elementwise add (VECTOR funct ADD), both modes, bit-exact with
golden.machine (14 pipeline stages).

fp32 mode (onnxruntime QLinearAdd on raw codes, ``golden.quant.add_fp32``):
y = clip(rne(fma(a, SA, fma(b, SB, F)))). The stored operands become raw codes first
(``a + 128`` when ``a_unsigned``, so -128..255); each fused multiply-add is written out as
ordinary RTL with a single rounding to float32 (nearest even):

- the 8 x 24-bit product of the normalised |code| and the scale's mantissa is exact (32 bits);
- the operand with the larger magnitude goes to the top of a 36-bit window, the other is shifted
  right by the exponent difference; what falls off the window is ORed into its lowest bit
  (sticky). Bits only fall off when the exponents differ by more than 3, and then at most two
  bits cancel, so the rounding position stays at least 8 bits above the sticky bit and the
  approximation cannot change the rounding;
- add or subtract (full cancellation gives zero), leading-zero count, normalise, round to 24
  bits, nearest even.

Exponents are kept in 10 bits, wider than float32's: nothing is flushed. That is exact, not an
approximation: both addends of either FMA are integer multiples of 2^-149 (an integer times a
float32, and a float32), so a sum below 2^-126 is a multiple of 2^-149 with fewer than 23
significant bits, which the float32 subnormal represents exactly and the 24-bit rounding leaves
unchanged. An inner sum beyond the float32 range becomes +-inf as in IEEE arithmetic, and
fma(a, SA, +-inf) = +-inf; any total of magnitude 512 or more (including inf) saturates with its
sign. Then float32 -> integer (half to even), the output range (0..255 when ``out_unsigned``,
stored as y - 128), and the instruction's clip.

fixed mode (TFLite add, ``golden.quant.add_fixed``): (a - a_zp) << left_shift and each operand's
MultiplyByQuantizedMultiplier (wrap-around left shift, SaturatingRoundingDoublingHighMul, which
for a non-negative multiplier is exactly floor((x * m + 2^30) / 2^31) and never saturates,
RoundingDivideByPOT, half away from zero, as (x + 2^(r-1) - [x < 0]) >> r), the wrapping 32-bit
sum, the output MultiplyByQuantizedMultiplier, the zero point ``out_zp`` and the clip.

``error`` (the golden machine stops with ILLEGAL_INSTRUCTION; the value is then meaningless):

- fp32: ``sa`` or ``sb`` not a positive normal float32 (zero, negative, subnormal, inf, nan);
  ``f`` inf, nan or subnormal (+-0 is accepted);
- fixed: ``left_shift`` outside 0..24; ``a_mult``, ``b_mult`` or ``out_mult`` negative;
  ``a_shift``, ``b_shift`` or ``out_shift`` outside -31..30; ``a_zp`` or ``b_zp`` outside -128..127.

The parameter fields are as wide as the accumulator words they come from, so that the lane can
check them itself. ``out_zp`` is only used in fixed mode (fp32 mode folds it into F).
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .arith import leading_zeros, round_half_even

__all__ = ["QuantizedAdder", "adder_input_layout", "adder_output_layout"]

adder_input_layout = data.StructLayout({
    "a": signed(8),            # stored operands (int8; raw code - 128 when unsigned)
    "b": signed(8),
    "fixed": 1,                # RequantMode: 0 fp32, 1 fixed
    "a_unsigned": 1,           # fp32 mode: operand/result codes are uint8
    "b_unsigned": 1,
    "out_unsigned": 1,
    "sa": 32,                  # fp32 mode: float32 bit patterns of SA, SB, F
    "sb": 32,
    "f": 32,
    "a_zp": signed(32),        # fixed mode: the nine parameter words
    "b_zp": signed(32),
    "left_shift": signed(32),
    "a_mult": signed(32),
    "a_shift": signed(32),
    "b_mult": signed(32),
    "b_shift": signed(32),
    "out_mult": signed(32),
    "out_shift": signed(32),
    "out_zp": signed(8),       # fixed mode: output zero point (stored domain)
    "clip_lo": signed(8),      # the instruction's clip (stored domain)
    "clip_hi": signed(8),
})

adder_output_layout = data.StructLayout({"value": signed(8), "error": 1})

_GUARD = 3      # window bits below the larger operand's 32-bit mantissa (lowest: sticky)
_WINDOW = 36    # 32 + _GUARD bits and one carry bit
_MAX_ALIGN = 40  # shifting further than this leaves only the sticky bit
_EXP = signed(10)  # unbiased exponent of the leading bit; values lie in -170..140


def _exponent_key(exponent):
    """An exponent as an unsigned number that compares like it (flip the sign bit)."""
    return Cat(exponent[0:len(exponent) - 1], ~exponent[len(exponent) - 1])


class QuantizedAdder(wiring.Component):
    """Add two quantised values per cycle; ``latency`` cycles; stalls as a whole on
    backpressure."""

    inputs: In(stream.Signature(adder_input_layout))
    outputs: Out(stream.Signature(adder_output_layout))

    latency = 14

    def elaborate(self, platform):
        m = Module()
        en = Signal()
        m.d.comb += [en.eq(~self.outputs.valid | self.outputs.ready), self.inputs.ready.eq(en)]

        def reg(value, name, index, shape=None):
            shape = value.shape() if shape is None else shape
            register = Signal(shape, name=f"{name}_{index}")
            with m.If(en):
                m.d.sync += register.eq(value)
            return register

        def comb(value, shape, name):
            wire = Signal(shape, name=name)
            m.d.comb += wire.eq(value)
            return wire

        def advance(previous, index, drop=(), **new):
            """The next stage: ``previous`` minus ``drop`` passed on, plus ``new`` (registered)."""
            stage = {name: reg(value, name, index) for name, value in previous.items()
                     if name not in drop}
            for name, value in new.items():
                value, shape = value if isinstance(value, tuple) else (value, None)
                stage[name] = reg(value, name, index, shape)
            return stage

        p = self.inputs.payload

        # Stage 1: decode -------------------------------------------------------------------------
        def operand(code, unsigned_code, name):
            """A raw code (-128..255) as sign, |code| normalised to 8 bits, its exponent, zero."""
            raw = comb(code + Mux(unsigned_code, 128, 0), signed(10), f"{name}_raw")
            magnitude = comb(Mux(raw < 0, -raw, raw)[0:8], 8, f"{name}_magnitude")
            zeros = leading_zeros(m, magnitude)
            return {f"{name}_sign": raw < 0, f"{name}_zero": magnitude == 0,
                    f"{name}_norm": ((magnitude << zeros)[0:8], unsigned(8)),
                    f"{name}_k": ((7 - zeros)[0:3], unsigned(3))}

        def scale(bits, name):
            return {f"{name}_mant": Cat(bits[0:23], Const(1, 1)),
                    f"{name}_exp": (bits[23:31] - 127, _EXP)}

        def bad_scale(bits):
            return bits[31] | (bits[23:31] == 0) | (bits[23:31] == 0xFF)

        f_exp_bits = p.f[23:31]
        bad_fp32 = (bad_scale(p.sa) | bad_scale(p.sb) | (f_exp_bits == 0xFF)
                    | ((f_exp_bits == 0) & p.f[0:23].any()))

        def outside(value, low, high):
            return (value < low) | (value > high)

        bad_fixed = (outside(p.left_shift, 0, 24) | p.a_mult[31] | p.b_mult[31] | p.out_mult[31]
                     | outside(p.a_shift, -31, 30) | outside(p.b_shift, -31, 30)
                     | outside(p.out_shift, -31, 30)
                     | outside(p.a_zp, -128, 127) | outside(p.b_zp, -128, 127))

        def left(shift):
            return Mux(shift > 0, shift[0:5], 0)

        def right(shift):
            return Mux(shift < 0, -shift, 0)[0:5]

        s = advance({}, 1,
                    valid=self.inputs.valid & self.inputs.ready, fixed=p.fixed,
                    offset=(Mux(p.fixed, p.out_zp, Mux(p.out_unsigned, -128, 0)), signed(9)),
                    lo=p.clip_lo, hi=p.clip_hi,
                    error=Mux(p.fixed, bad_fixed, bad_fp32),
                    # fp32: operands and scales
                    **operand(p.a, p.a_unsigned, "a"), **operand(p.b, p.b_unsigned, "b"),
                    **scale(p.sa, "sa"), **scale(p.sb, "sb"),
                    f_sign=p.f[31], f_zero=(f_exp_bits == 0),
                    f_mant=Cat(p.f[0:23], f_exp_bits != 0), f_exp=(f_exp_bits - 127, _EXP),
                    # fixed: operands minus zero points, shift amounts, multipliers
                    da=(p.a - p.a_zp[0:8].as_signed(), signed(10)),
                    db=(p.b - p.b_zp[0:8].as_signed(), signed(10)),
                    la=((p.left_shift[0:5] + left(p.a_shift))[0:6], unsigned(6)),
                    lb=((p.left_shift[0:5] + left(p.b_shift))[0:6], unsigned(6)),
                    ra=right(p.a_shift), rb=right(p.b_shift),
                    ma=p.a_mult[0:31], mb=p.b_mult[0:31], mo=p.out_mult[0:31],
                    lo_out=left(p.out_shift), ro=right(p.out_shift))

        # Stage 2: products ------------------------------------------------------------------------
        # fp32: |code| * scale = pm * 2^(tp0 - 30), pm has its leading one at bit 30 or 31.
        s = advance(s, 2, drop=("a_norm", "a_k", "b_norm", "b_k", "sa_mant", "sa_exp", "sb_mant",
                                "sb_exp", "da", "db", "la", "lb"),
                    a_pm=s["a_norm"] * s["sa_mant"], a_tp0=(s["sa_exp"] + s["a_k"], _EXP),
                    b_pm=s["b_norm"] * s["sb_mant"], b_tp0=(s["sb_exp"] + s["b_k"], _EXP),
                    # fixed: the wrapping left shifts ((a - zp) << left_shift << a_shift)
                    xa=((s["da"] << s["la"])[0:32].as_signed(), signed(32)),
                    xb=((s["db"] << s["lb"])[0:32].as_signed(), signed(32)))

        # The two fused multiply-adds, five stages each; every stage also carries the fixed-mode
        # work of that stage (``drop``: fields used for the last time, ``new``: its results).
        def fma_align(s, index, product, z, drop=(), **new):
            """Order the product and the addend by magnitude; the exponent difference."""
            pm, tp0 = s[f"{product}_pm"], s[f"{product}_tp0"]
            top = pm[31]
            pm32 = comb(Mux(top, pm, pm << 1)[0:32], 32, f"pm32_{index}")
            tp = comb(tp0 + top, _EXP, f"tp_{index}")
            zm32 = Cat(Const(0, 8), s[f"{z}_mant"])
            ze = s[f"{z}_exp"]
            p_zero, z_zero = s[f"{product}_zero"], s[f"{z}_zero"]
            p_big = comb(z_zero | (~p_zero & (Cat(pm32, _exponent_key(tp))
                                              >= Cat(zm32, _exponent_key(ze)))), 1,
                         f"p_big_{index}")
            difference = comb(Mux(p_big, tp - ze, ze - tp), signed(12), f"difference_{index}")
            distance = Mux((difference < 0) | (difference > _MAX_ALIGN), _MAX_ALIGN, difference)
            p_sign, z_sign = s[f"{product}_sign"], s[f"{z}_sign"]
            drop = [*drop, *(f"{product}_{n}" for n in ("pm", "tp0", "sign", "zero")),
                    *(f"{z}_{n}" for n in ("mant", "exp", "sign", "zero"))]
            return advance(s, index, drop=drop,
                           big=(Mux(p_big, pm32, zm32), unsigned(32)),
                           small=(Mux(p_big, zm32, pm32), unsigned(32)),
                           distance=(distance[0:6], unsigned(6)),
                           t=(Mux(p_big, tp, ze), _EXP),
                           subtract=p_sign ^ z_sign,
                           sign=Mux(p_big, p_sign, z_sign), **new)

        def fma_shift(s, index, drop=(), **new):
            """Shift the smaller operand into the window; the bits that fall off become sticky."""
            small = Cat(Const(0, _GUARD), s["small"])
            distance = s["distance"]
            shifted = comb((small >> distance)[0:len(small)], len(small), f"shifted_{index}")
            mask = comb((Const(1, _MAX_ALIGN + 1) << distance) - 1, _MAX_ALIGN, f"mask_{index}")
            sticky = (small & mask).any()
            return advance(s, index, drop=("small", "distance", *drop),
                           aligned=(shifted | sticky, unsigned(len(small))), **new)

        def fma_add(s, index, drop=(), **new):
            big = Cat(Const(0, _GUARD), s["big"])
            aligned = s["aligned"]  # never above big: the difference is not negative
            return advance(s, index, drop=("big", "aligned", "subtract", *drop),
                           sum=(Mux(s["subtract"], big - aligned, big + aligned)[0:_WINDOW],
                                unsigned(_WINDOW)), **new)

        def fma_normalise(s, index, drop=(), **new):
            total = s["sum"]
            zeros = leading_zeros(m, total)
            return advance(s, index, drop=("sum", "t", *drop),
                           normalised=((total << zeros)[0:_WINDOW], unsigned(_WINDOW)),
                           exp=(s["t"] + 1 - zeros, _EXP),
                           zero=total == 0, **new)

        def fma_round(s, index, name, drop=(), overflow=False, **new):
            """Round to 24 bits (nearest even): the float ``name``_sign/mant/exp/zero, and
            ``name``_inf (beyond the float32 range) when ``overflow``."""
            normalised = s["normalised"]
            kept = normalised[_WINDOW - 24:]
            rounded = comb(kept + round_half_even(kept, normalised[_WINDOW - 25],
                                                   normalised[0:_WINDOW - 25].any()),
                           25, f"rounded_{index}")
            exp = comb(s["exp"] + rounded[24], _EXP, f"exp_rounded_{index}")
            mant = Mux(rounded[24], rounded[1:25], rounded[0:24])
            result = {f"{name}_sign": s["sign"], f"{name}_zero": s["zero"],
                      f"{name}_mant": (Mux(s["zero"], 0, mant), unsigned(24)),
                      f"{name}_exp": exp}
            if overflow:
                result[f"{name}_inf"] = ~s["zero"] & (exp > 127)
            return advance(s, index, drop=("normalised", "exp", "zero", "sign", *drop),
                           **result, **new)

        def srdhm(product):
            """SaturatingRoundingDoublingHighMul from x * m, m >= 0: floor((x m + 2^30) / 2^31)."""
            return (product[31:].as_signed() + product[30], signed(32))

        def round_for_shift(x, amount):
            """x + 2^(r-1) - [x < 0] (r > 0): then >> r is RoundingDivideByPOT(x, r)."""
            half = (Const(1, 33) << amount) >> 1
            return (x + half - ((amount != 0) & (x < 0)), signed(33))

        # Stages 3-7: inner = fma(b, SB, F); fixed: the operands' MultiplyByQuantizedMultiplier and
        # the wrapping sum.
        s = fma_align(s, 3, "b", "f", drop=("xa", "xb", "ma", "mb"),
                      pa=s["xa"] * s["ma"], pb=s["xb"] * s["mb"])
        s = fma_shift(s, 4, drop=("pa", "pb"), ha=srdhm(s["pa"]), hb=srdhm(s["pb"]))
        s = fma_add(s, 5, drop=("ha", "hb"), va=round_for_shift(s["ha"], s["ra"]),
                    vb=round_for_shift(s["hb"], s["rb"]))
        s = fma_normalise(s, 6, drop=("va", "vb", "ra", "rb"),
                          qa=((s["va"] >> s["ra"])[0:32].as_signed(), signed(32)),
                          qb=((s["vb"] >> s["rb"])[0:32].as_signed(), signed(32)))
        s = fma_round(s, 7, "inner", drop=("qa", "qb"), overflow=True,
                      raw_sum=((s["qa"] + s["qb"])[0:32].as_signed(), signed(32)))
        # inf + finite = inf: the total saturates with the inner sum's sign.
        s["inf_sign"] = s["inner_sign"]
        s["inf"] = s.pop("inner_inf")

        # Stages 8-12: total = fma(a, SA, inner); fixed: the output MultiplyByQuantizedMultiplier.
        s = fma_align(s, 8, "a", "inner", drop=("raw_sum", "lo_out"),
                      xo=((s["raw_sum"] << s["lo_out"])[0:32].as_signed(), signed(32)))
        s = fma_shift(s, 9, drop=("xo", "mo"), po=s["xo"] * s["mo"])
        s = fma_add(s, 10, drop=("po",), ho=srdhm(s["po"]))
        s = fma_normalise(s, 11, drop=("ho",), vo=round_for_shift(s["ho"], s["ro"]))
        s = fma_round(s, 12, "total", drop=("vo", "ro"),
                      qo=((s["vo"] >> s["ro"])[0:32].as_signed(), signed(32)))

        # Stage 13: float32 -> integer, nearest even; 2^9 and above (and inf) saturate. ---------
        exp, mant = s["total_exp"], s["total_mant"]
        shift = comb(23 - exp, range(25), "int_shift")
        whole = comb(mant >> shift, 24, "int_whole")
        fraction = mant & comb((Const(1, 25) << shift) - 1, 24, "int_fraction_mask")
        half = comb((Const(1, 25) << shift) >> 1, 25, "int_half")
        rne = (fraction > half) | ((fraction == half) & whole[0])
        magnitude = Signal(unsigned(10))
        with m.If(s["inf"] | (exp >= 9)):
            m.d.comb += magnitude.eq(1023)
        with m.Elif(s["total_zero"] | (exp < -1)):
            m.d.comb += magnitude.eq(0)
        with m.Else():
            m.d.comb += magnitude.eq(whole + rne)
        negative = Mux(s["inf"], s["inf_sign"], s["total_sign"])
        float_value = comb(Mux(negative, -magnitude, magnitude), signed(11), "float_value")
        qo = s["qo"]
        fixed_value = comb(Mux(qo > 1023, 1023, Mux(qo < -1023, -1023, qo)), signed(11),
                           "fixed_value")
        s = {name: reg(s[name], name, 13) for name in ("valid", "offset", "lo", "hi", "error")} | {
            "value": reg(Mux(s["fixed"], fixed_value, float_value), "value", 13, signed(11))}

        # Stage 14: output offset (zero point, or -128 for uint8 codes) and clip ----------------
        total = comb(s["value"] + s["offset"], signed(12), "offset_value")
        low = Mux(s["lo"] > -128, s["lo"], -128)
        high = Mux(s["hi"] < 127, s["hi"], 127)
        clipped = Signal(signed(8))
        with m.If(total < low):
            m.d.comb += clipped.eq(low)
        with m.Elif(total > high):
            m.d.comb += clipped.eq(high)
        with m.Else():
            m.d.comb += clipped.eq(total)
        m.d.comb += [
            self.outputs.valid.eq(reg(s["valid"], "valid", 14)),
            self.outputs.payload.value.eq(reg(clipped, "value", 14)),
            self.outputs.payload.error.eq(reg(s["error"], "error", 14)),
        ]
        return m
