"""One lane of the quantised elementwise add (VECTOR funct ADD), both modes, bit-exact with
golden.machine (23 pipeline stages).

fp32 mode (onnxruntime QLinearAdd on raw codes, ``golden.quant.add_fp32``):
y = clip(rne(fma(a, SA, fma(b, SB, F)))). The stored operands become raw codes first
(``a + 128`` when ``a_unsigned``, so -128..255); each fused multiply-add is written out as
ordinary RTL with a single rounding to float32 (nearest even):

- the 8 x 24-bit product of the normalised |code| and the scale's mantissa is exact (32 bits);
- the operand with the larger exponent goes to the top of a 36-bit window, the other is shifted
  right by the exponent difference; what falls off the window is ORed into its lowest bit
  (sticky). Bits only fall off when the exponents differ by more than 3, and then at most two
  bits cancel, so the rounding position stays at least 8 bits above the sticky bit and the
  approximation cannot change the rounding;
- add or subtract the larger magnitude and the smaller (with equal exponents, nothing shifted,
  the mantissas decide which; full cancellation gives zero), leading-zero count, normalise,
  round to 24 bits, nearest even.

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
RoundingDivideByPOT, half away from zero), the wrapping 32-bit sum, the output
MultiplyByQuantizedMultiplier, the zero point ``out_zp`` and the clip. An operand's
(a - a_zp) << left, wrapped in 32 bits, is d * 2^left with d of at most 9 bits (the low
32 - left bits of a - a_zp when left > 23), so its multiply is d * m, 9 x 31 bits, and one
right shift of d * m + 2^(30 - left) by 31 - left + right (a left shift when negative) does
both roundings: the first only adds, RoundingDivideByPOT sees the bits from 31 - left up.

The two modes share the hardware: an operand's 9 x 31-bit product (two MULT18X18D) is the fp32
|code| x mantissa product or the fixed d * m; the output's 32 x 31-bit product (four) is fixed
mode's only. Fixed mode runs through the two FMAs' datapaths: each FMA's alignment shifter does
one operand's rounding shift (a in the first, b in the second) and its adder adds that operand
(to 0, then to a: the wrapping sum); the second FMA's normaliser does the output's wrapping left
shift. The final rounding right shifter is shared as well (float -> integer, or the output's
RoundingDivideByPOT). The mode (``fixed``) travels with each element, so the two may mix freely
from one element to the next.

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

from .arith import (
    add_constant_as_logic,
    fits_signed,
    in_range,
    leading_zeros,
    multiplier_parts,
    round_half_even,
    shift_right_rounding_bits,
)

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

_GUARD = 3      # window bits below the first operand's 32-bit mantissa (lowest: sticky)
_WINDOW = 36    # 32 + _GUARD bits and one carry bit
_MAX_ALIGN = 40  # shifting further than this leaves only the sticky bit
_EXP = signed(10)  # unbiased exponent of the leading bit; values lie in -170..140


class QuantizedAdder(wiring.Component):
    """Add two quantised values per cycle; ``latency`` cycles; stalls as a whole on
    backpressure."""

    inputs: In(stream.Signature(adder_input_layout))
    outputs: Out(stream.Signature(adder_output_layout))

    latency = 23

    def elaborate(self, platform):
        m = Module()
        en = Signal()
        m.d.comb += [en.eq(~self.outputs.valid | self.outputs.ready), self.inputs.ready.eq(en)]

        def reg(value, name, index, shape=None):
            shape = value.shape() if shape is None else shape
            # Only the valid bits need a reset: the data registers take none (on an FPGA a
            # reset on thousands of pipeline flip-flops is a net as wide as the pipeline).
            register = Signal(shape, name=f"{name}_{index}", reset_less=name != "valid")
            with m.If(en):
                m.d.sync += register.eq(value)
            return register

        def comb(value, shape, name):
            wire = Signal(shape, name=name)
            m.d.comb += wire.eq(value)
            return wire

        def advance(previous, index, *parts):
            """The next stage: ``previous`` passed on but for the fields the ``parts`` drop, plus
            their new fields (registered). Each part is a (drop, new) pair, one per datapath
            working in the stage; a new field is a value or a (value, shape) pair."""
            drop = {name for part_drop, _ in parts for name in part_drop}
            stage = {name: reg(value, name, index) for name, value in previous.items()
                     if name not in drop}
            for _, new in parts:
                for name, value in new.items():
                    value, shape = value if isinstance(value, tuple) else (value, None)
                    stage[name] = reg(value, name, index, shape)
            return stage

        p = self.inputs.payload

        # Stage 1: decode -------------------------------------------------------------------------
        def operand(code, unsigned_code, name):
            """A raw code (-128..255) as sign and |code| (its leading zeros: stage 2)."""
            magnitude = Mux(unsigned_code, code ^ 0x80, Mux(code[7], -code, code))[0:8]
            return {f"{name}_sign": ~unsigned_code & code[7], f"{name}_magnitude": (magnitude, 8)}

        def bad_scale(bits):
            return bits[31] | (bits[23:31] == 0) | (bits[23:31] == 0xFF)

        f_exp_bits = p.f[23:31]
        bad_fp32 = (bad_scale(p.sa) | bad_scale(p.sb) | (f_exp_bits == 0xFF)
                    | ((f_exp_bits == 0) & p.f[0:23].any()))
        bad_fixed = (~in_range(p.left_shift, 0, 24) | p.a_mult[31] | p.b_mult[31] | p.out_mult[31]
                     | ~in_range(p.a_shift, -31, 30) | ~in_range(p.b_shift, -31, 30)
                     | ~in_range(p.out_shift, -31, 30)
                     | ~in_range(p.a_zp, -128, 127) | ~in_range(p.b_zp, -128, 127))

        def left(shift):  # a legal shift (-31..30) fits in its low 6 bits
            return Mux(shift[31], 0, shift[0:5])

        def right(shift):
            return Mux(shift[31], -shift[0:5], 0)[0:5]

        def multiplicand(multiplier, scale):
            """The multiplier's second operand: fixed, the multiplier; fp32, the scale's mantissa."""
            return (Mux(p.fixed, multiplier[0:31], Cat(scale[0:23], Const(1, 1))), unsigned(31))

        s = advance({}, 1, ((), dict(
            valid=self.inputs.valid & self.inputs.ready, fixed=p.fixed,
            offset=(Mux(p.fixed, p.out_zp, Mux(p.out_unsigned, -128, 0)), signed(9)),
            lo=p.clip_lo, hi=p.clip_hi, error=Mux(p.fixed, bad_fixed, bad_fp32),
            a_mult=multiplicand(p.a_mult, p.sa), b_mult=multiplicand(p.b_mult, p.sb),
            # fp32: operands, scale exponents, F
            **operand(p.a, p.a_unsigned, "a"), **operand(p.b, p.b_unsigned, "b"),
            sa_exp=p.sa[23:31], sb_exp=p.sb[23:31],
            f_sign=p.f[31], f_zero=(f_exp_bits == 0),
            f_mant=Cat(p.f[0:23], f_exp_bits != 0), f_exp=(f_exp_bits - 127, _EXP),
            # fixed: operands minus zero points, shift amounts, the output multiplier
            a_diff=(p.a - p.a_zp[0:8].as_signed(), signed(9)),
            b_diff=(p.b - p.b_zp[0:8].as_signed(), signed(9)),
            a_left=((p.left_shift[0:5] + left(p.a_shift))[0:6], unsigned(6)),
            b_left=((p.left_shift[0:5] + left(p.b_shift))[0:6], unsigned(6)),
            a_right=right(p.a_shift), b_right=right(p.b_shift),
            out_mult=p.out_mult[0:31], out_left=left(p.out_shift), out_right=right(p.out_shift))))

        # Stage 2: the multipliers' first operands ----------------------------------------------
        # fp32: |code| normalised to 8 bits; the exponent of its product's bit 30.
        # fixed: (code - zp) << left, wrapped in 32 bits, is d * 2^left with d the low
        # 32 - left bits of code - zp (sign-extended) when left > 23, 0 when left > 31, else
        # code - zp: the multiplier forms d * m, 9 x 31 bits, and the rounding (stage 5) and
        # the alignment shifter of an FMA (stage 7 or 14) place it.
        def multiplier_operand(name):
            left_amount, diff = s[f"{name}_left"], s[f"{name}_diff"]
            magnitude = s[f"{name}_magnitude"]
            zeros = leading_zeros(m, magnitude)
            wrapped = Signal(signed(9), name=f"{name}_wrapped")
            with m.Switch(left_amount):
                with m.Case(*range(24)):
                    m.d.comb += wrapped.eq(diff)
                for amount in range(24, 32):
                    with m.Case(amount):
                        m.d.comb += wrapped.eq(diff[0:32 - amount].as_signed())
                with m.Default():
                    m.d.comb += wrapped.eq(0)
            normalised = (magnitude << zeros)[0:8]
            return (f"{name}_magnitude", f"{name}_diff", f"{name}_left",
                    f"s{name}_exp", f"{name}_right"), {
                f"{name}_zero": magnitude == 0,
                f"{name}_operand": (Mux(s["fixed"], wrapped, normalised), signed(9)),
                f"{name}_tp0": (s[f"s{name}_exp"] - 120 - zeros, _EXP),
                # fixed: floor(d * m * 2^left / 2^31 + 1/2) is the rounding shift by
                # n = 31 - left (when left < 31; else an exact left shift), and
                # RoundingDivideByPOT by ``right`` follows: both are one right shift of
                # d * m by n + right (left when negative), cut short at 63.
                f"{name}_n": (Mux(left_amount > 30, 0, 31 - left_amount), unsigned(5)),
                f"{name}_shift": (Mux(s[f"{name}_right"] + 54 - left_amount > 63, 63,
                                      s[f"{name}_right"] + 54 - left_amount), unsigned(6)),
                f"{name}_rounds": s[f"{name}_right"] != 0,
            }

        s = advance(s, 2, multiplier_operand("a"), multiplier_operand("b"))

        # Stage 3: the partial products, two MULT18X18D for each operand ------------------------
        def partial_products(name):
            (_, mult_low), (_, mult_high) = multiplier_parts(s[f"{name}_mult"])
            operand = s[f"{name}_operand"]
            return (f"{name}_operand", f"{name}_mult"), {
                f"{name}_part0": operand * mult_low, f"{name}_part1": operand * mult_high}

        s = advance(s, 3, partial_products("a"), partial_products("b"))

        # Stage 4: the products ------------------------------------------------------------------
        def product(name):
            return (f"{name}_part0", f"{name}_part1"), {
                f"{name}_product": s[f"{name}_part0"] + (s[f"{name}_part1"] << 17)}

        s = advance(s, 4, product("a"), product("b"))

        # Stage 5: fp32: |code| * scale = pm * 2^(tp - 31), pm with its leading one at bit 31.
        # fixed: + 2^(n - 1) (SaturatingRoundingDoublingHighMul's rounding) and the bits below n
        # cleared (RoundingDivideByPOT does not see them).
        def normalise_product(name):
            pm = s[f"{name}_product"][0:32]
            top = pm[31]
            return (), {f"{name}_pm": (Mux(top, pm, pm << 1)[0:32], unsigned(32)),
                        f"{name}_tp": comb(s[f"{name}_tp0"] + top, _EXP, f"{name}_tp")}

        def exponent_differences(tp, ze, ze_plus_1=None, carry=None):
            """For the next stage's alignment: the product's exponent minus the addend's, and
            the reverse; with ``carry``, the addend's exponent is ``ze_plus_1`` when it is set
            (both differences are ready before it)."""
            difference, reverse = tp - ze, ze - tp
            if carry is not None:
                difference = Mux(carry, tp - ze_plus_1, difference)
                reverse = Mux(carry, ze_plus_1 - tp, reverse)
            return (), dict(difference=(difference, signed(11)), reverse=(reverse, signed(11)))

        def nudge_product(name):
            n = s[f"{name}_n"]
            ones = Const((1 << 42) - 1, 42)
            return (f"{name}_product", f"{name}_tp0", f"{name}_n"), {
                f"{name}_nudged": (((s[f"{name}_product"] + ((Const(1, 32) << n) >> 1))
                                    & (ones << n)[0:42]).as_signed(), signed(42))}

        b_product = normalise_product("b")
        s = advance(s, 5, normalise_product("a"), b_product, nudge_product("a"),
                    nudge_product("b"), exponent_differences(b_product[1]["b_tp"], s["f_exp"]))

        # The two fused multiply-adds, six stages each (plus the exponent differences in the
        # stage before); fixed mode runs through them too (see the module's description).
        def fma_align(p, z, *, fixed_in, fixed_amount, fixed_first):
            """Order the product and the addend by exponent (a zero one goes second): the first
            to the top of the window, the second to the alignment shifter, by the exponent
            difference. With equal exponents (no shift) the mantissas decide which is larger:
            ``swap`` tells the adder to swap them back. The shifter's input is 65 bits (fixed:
            ``fixed_in`` from bit 23, shifted by ``fixed_amount``; fp32: the window from bit 23,
            shifted by the difference + 23); fixed: ``fixed_first`` is the adder's other operand."""
            fixed = s["fixed"]
            pm, tp, ze, z_mant = s[f"{p}_pm"], s[f"{p}_tp"], s[f"{z}_exp"], s[f"{z}_mant"]
            zm = Cat(Const(0, 8), z_mant)
            p_zero, z_zero = s[f"{p}_zero"], s[f"{z}_zero"]
            difference = s["difference"]  # tp - ze, from the previous stage
            p_first = comb(z_zero | (~p_zero & ~difference[10]), 1, f"{p}_first")
            # zm's low 8 bits are zero
            swap = ~fixed & ~p_zero & ~z_zero & (difference == 0) & (pm[8:32] < z_mant)

            def distance(difference):
                """min(difference, 40) + 23 (the window starts at bit 23 of the shifter); a
                difference is negative only when one operand is zero: then nothing is left."""
                amount = add_constant_as_logic(difference[0:6], 23)
                return Mux(difference[6:].any() | amount[6], _MAX_ALIGN + 23, amount[0:6])

            p_sign, z_sign = s[f"{p}_sign"], s[f"{z}_sign"]
            second = Cat(Const(0, 23 + _GUARD), Mux(p_first, zm, pm))
            return (("difference", "reverse", *(f"{p}_{n}" for n in ("pm", "tp", "sign", "zero")),
                     *(f"{z}_{n}" for n in ("mant", "exp", "sign", "zero"))),
                    dict(first=(Mux(fixed, fixed_first, Cat(Const(0, _GUARD), Mux(p_first, pm, zm))),
                                unsigned(32 + _GUARD)),
                         shift_in=(Mux(fixed, Cat(Const(0, 23), fixed_in), second).as_signed(),
                                   signed(65)),
                         shift_amount=(Mux(fixed, fixed_amount,
                                           Mux(p_first, distance(difference),
                                               distance(s["reverse"]))), unsigned(6)),
                         t=(Mux(p_first, tp, ze), _EXP),
                         subtract=~fixed & (p_sign ^ z_sign), swap=swap,
                         sign=Mux(p_first & ~swap, p_sign, z_sign)))

        def fma_shift(p):
            """Shift the second operand into the window; the bits that fall off become sticky.
            fixed: the whole part, and RoundingDivideByPOT's rounding as the adder's carry."""
            fixed = s["fixed"]
            whole, guard, sticky = shift_right_rounding_bits(s["shift_in"], s["shift_amount"])
            negative = s["shift_in"][64]
            return ("shift_in", "shift_amount", f"{p}_rounds"), dict(
                aligned=(Cat(whole[0] | (~fixed & (guard | sticky)), whole[1:32 + _GUARD]),
                         unsigned(32 + _GUARD)),
                carry=Mux(fixed, s[f"{p}_rounds"] & guard & (sticky | ~negative), s["subtract"]))

        def fma_add():
            first, aligned, subtract, swap = s["first"], s["aligned"], s["subtract"], s["swap"]
            larger, smaller = Mux(swap, aligned, first), Mux(swap, first, aligned)
            return ("first", "aligned", "subtract", "swap", "carry"), dict(
                # larger - smaller = larger + ~smaller + 1 (in the window's width): one adder
                sum=((larger + (smaller ^ subtract.replicate(_WINDOW)) + s["carry"])[0:_WINDOW],
                     unsigned(_WINDOW)))

        def fma_group():
            """The sum's leading zeros, first step: per nibble, nonzero and its leading zeros."""
            nibbles = [s["sum"][4 * i:4 * i + 4] for i in range(_WINDOW // 4)]
            return (), dict(
                nibble_nonzero=(Cat(nibble.any() for nibble in nibbles), unsigned(len(nibbles))),
                nibble_zeros=(Cat(leading_zeros(m, nibble)[0:2] for nibble in nibbles),
                              unsigned(2 * len(nibbles))))

        def fma_count(*, fixed_zeros):
            """Second step: 4 x the zero nibbles on top, + the first nonzero nibble's zeros (an
            OR of one-hot selected terms: no adder, no multiplexer tree)."""
            nonzero, nibble_zeros = s["nibble_nonzero"], s["nibble_zeros"]
            top = len(nonzero) - 1
            above = Const(0, 1)        # a nonzero nibble above this one
            low, high = Const(0, 2), Const(0, 4)
            for i in reversed(range(len(nonzero))):
                first = comb(nonzero[i] & ~above, 1, f"first_nibble_{i}")
                above = above | nonzero[i]
                low = low | (first.replicate(2) & nibble_zeros[2 * i:2 * i + 2])
                high = high | (first.replicate(4) & Const(top - i, 4))
            return ("nibble_nonzero", "nibble_zeros"), dict(
                zeros=Mux(s["fixed"], fixed_zeros, Mux(nonzero == 0, _WINDOW, Cat(low, high))),
                zero=nonzero == 0)

        def fma_normalise():
            zeros = s["zeros"]
            return ("sum", "zeros", "t"), dict(
                normalised=((s["sum"] << zeros)[0:_WINDOW], unsigned(_WINDOW)),
                exp=(s["t"] + 1 - zeros, _EXP))

        def fma_round(name):
            """Round the normalised sum to 24 bits (nearest even): (kept bits, round up, rounded);
            rounded has 25 bits (2^24 when the rounding carries out)."""
            normalised = s["normalised"]
            kept = normalised[_WINDOW - 24:]
            round_up = comb(round_half_even(kept, normalised[_WINDOW - 25],
                                            normalised[0:_WINDOW - 25].any()), 1,
                            f"{name}_round_up")
            rounded = comb(kept + round_up, 25, f"{name}_rounded")
            return kept, round_up, rounded

        # Stages 6-12: inner = fma(b, SB, F); fixed: operand a's rounding shift, + its rounding
        # (0 + whole + carry), passed on unshifted.
        s = advance(s, 6, fma_align("b", "f", fixed_in=s["a_nudged"], fixed_amount=s["a_shift"],
                                    fixed_first=0),
                    (("a_nudged", "a_shift"), {}))
        s = advance(s, 7, fma_shift("a"))
        s = advance(s, 8, fma_add())
        s = advance(s, 9, fma_group())
        s = advance(s, 10, fma_count(fixed_zeros=0))
        s = advance(s, 11, fma_normalise())
        kept, round_up, rounded = fma_round("inner")
        exp = s["exp"]
        exp_plus_1 = comb(exp + 1, _EXP, "inner_exp_plus_1")
        inner_exp = comb(Mux(rounded[24], exp_plus_1, exp), _EXP, "inner_exp")
        s = advance(s, 12, exponent_differences(s["a_tp"], exp, exp_plus_1, rounded[24]), (
            ("normalised", "exp", "zero", "sign"), dict(
                inner_mant=(rounded[0:24] | (rounded[24] << 23), unsigned(24)),
                inner_exp=inner_exp,
                inner_zero=s["zero"], inner_sign=s["sign"], inf_sign=s["sign"],
                # beyond the float32 range: +-inf; inf + finite = inf, the total saturates
                inf=~s["zero"] & ((exp > 127) | ((exp == 127) & rounded[24])),
                a_scaled=s["normalised"][0:32])))

        # Stages 13-19: total = fma(a, SA, inner); fixed: operand b's rounding shift, + operand
        # a's (the wrapping sum), the output's left shift, the output's partial products.
        s = advance(s, 13, fma_align("a", "inner", fixed_in=s["b_nudged"],
                                     fixed_amount=s["b_shift"], fixed_first=s["a_scaled"]),
                    (("b_nudged", "b_shift", "a_scaled"), {}))
        s = advance(s, 14, fma_shift("b"))
        s = advance(s, 15, fma_add())
        s = advance(s, 16, fma_group())
        s = advance(s, 17, fma_count(fixed_zeros=s["out_left"]), (("out_left",), {}))
        s = advance(s, 18, fma_normalise())
        # total = rounded * 2^(exp - 23): its integer part is rounded[14:] >> (9 - exp) for exp
        # in -1..8; 2^9 and above (and inf) saturate, below 2^-1 is 0.
        kept, round_up, rounded = fma_round("total")
        low_bits = kept[0:14]
        exp = s["exp"]
        fixed = s["fixed"]
        out_operand = s["normalised"][0:32].as_signed()
        (_, operand_low), (_, operand_high) = multiplier_parts(out_operand)
        (_, mult_low), (_, mult_high) = multiplier_parts(s["out_mult"])
        s = advance(s, 19, (("normalised", "exp", "zero", "sign", "inf", "inf_sign"), dict(
            fp32_rounding_in=(rounded[14:25], unsigned(11)),
            fp32_amount=(9 - exp)[0:4],
            # rounded[0:14] != 0, without waiting for the carry chain
            low_sticky=~fixed & Mux(round_up, ~low_bits.all(), low_bits.any()),
            saturate=~fixed & (s["inf"] | (exp >= 9)),
            vanish=~fixed & ~s["inf"] & (s["zero"] | (exp < -1)),
            flip=~fixed & Mux(s["inf"], s["inf_sign"], s["sign"]))), (("out_mult",), dict(
            out_part00=operand_low * mult_low, out_part01=operand_low * mult_high,
            out_part10=operand_high * mult_low, out_part11=operand_high * mult_high)))

        # Stage 20: fixed: the output product + 2^30, added into the low partial product
        # (bits 30..33) and its carry into the high one; floor((x * m + 2^30) / 2^31).
        low = s["out_part00"]  # 17 x 17 bits: below 2^34
        low_top = comb(low[30:34] + 1, 5, "out_low_top")
        outer = Cat(low[0:30], low_top[0:4], s["out_part11"] + low_top[4]).as_signed()
        middle = s["out_part01"] + s["out_part10"]
        s = advance(s, 20, (("out_part00", "out_part01", "out_part10", "out_part11"), dict(
            out_high=((outer + (middle << 17))[31:64].as_signed(), signed(33)))))

        # Stage 21: the rounding right shift: fp32 float -> integer, fixed RoundingDivideByPOT --
        fixed = s["fixed"]
        whole, guard, sticky = shift_right_rounding_bits(
            Mux(fixed, s["out_high"], s["fp32_rounding_in"]),
            Mux(fixed, s["out_right"], s["fp32_amount"]))
        s = advance(s, 21, (("out_high", "out_right", "fp32_rounding_in", "fp32_amount",
                             "low_sticky"), dict(
            whole=whole, guard=guard, sticky=sticky | s["low_sticky"])))

        # Stage 22: round (fp32: half to even, fixed: half away from zero), sign, saturate ------
        # fp32 rounds the magnitude and then negates: -(w + r) = ~w + (1 - r).
        whole, fixed, flip = s["whole"], s["fixed"], s["flip"]
        negative = whole[32]
        round_up = s["guard"] & (s["sticky"] | Mux(fixed, ~negative, whole[0]))
        narrow = whole[0:11].as_signed()
        value = Signal(signed(12))
        with m.If(s["vanish"]):
            m.d.comb += value.eq(0)
        with m.Elif(s["saturate"] | ~fits_signed(whole, 11)):  # beyond any int8 result
            m.d.comb += value.eq(Mux(flip | negative, -1024, 1023))
        with m.Else():
            m.d.comb += value.eq(Mux(flip, ~narrow, narrow) + (round_up ^ flip))
        s = advance(s, 22, (("whole", "guard", "sticky", "flip", "saturate", "vanish"),
                            dict(value=value)))

        # Stage 23: output offset (zero point, or -128 for uint8 codes) and clip ----------------
        total = comb(s["value"] + s["offset"], signed(13), "offset_value")
        low, high = s["lo"], s["hi"]  # int8: within -128..127 already
        clipped = Signal(signed(8))
        with m.If(total < low):
            m.d.comb += clipped.eq(low)
        with m.Elif(total > high):
            m.d.comb += clipped.eq(high)
        with m.Else():
            m.d.comb += clipped.eq(total)
        m.d.comb += [
            self.outputs.valid.eq(reg(s["valid"], "valid", self.latency)),
            self.outputs.payload.value.eq(reg(clipped, "value", self.latency)),
            self.outputs.payload.error.eq(reg(s["error"], "error", self.latency)),
        ]
        return m
