"""cocotb testbench of rtl.quantized_adder.QuantizedAdder against golden.quant, both modes, with
the operand/result offsets and the clip of golden.machine's VECTOR ADD: realistic random scales,
float and integer rounding ties, cancellation, saturation, extreme scale ratios, overflow to inf,
fixed mode with shifts at both ends, both modes interleaved, bad parameters."""


import cocotb
import numpy as np
from tb_common import LaneTB

from golden import quant
from rtl.quantized_adder import adder_input_layout

FIXED_KEYS = ("a_zp", "b_zp", "left_shift", "a_mult", "a_shift", "b_mult", "b_shift", "out_mult",
              "out_shift")


def f32_bits(value) -> int:
    return int(np.float32(value).view(np.uint32))


class TB(LaneTB):
    @staticmethod
    def payload(case: dict) -> int:
        """Pack a case (field name -> integer; missing fields are 0) by the RTL's layout."""
        word = 0
        for name, field in adder_input_layout:
            word |= (int(case.get(name, 0)) & ((1 << field.width) - 1)) << field.offset
        return word

    async def run(self, cases):
        """cases: list of dicts; returns (values, errors) in order."""
        return await self.run_words([self.payload(case) for case in cases])


# The golden machine's VECTOR ADD, one element at a time --------------------------------------

def _raw(stored: int, unsigned: int) -> np.ndarray:
    code = np.array([stored], np.int8)
    return quant.int8_to_uint8(code) if unsigned else code


def golden_fp32_element(case: dict) -> int:
    sa, sb, f = (np.uint32(case[k]).view(np.float32) for k in ("sa", "sb", "f"))
    qmin, qmax = (0, 255) if case["out_unsigned"] else (-128, 127)
    y = quant.add_fp32(_raw(case["a"], case["a_unsigned"]), _raw(case["b"], case["b_unsigned"]),
                       sa, sb, f, qmin=qmin, qmax=qmax)
    y = y - 128 if case["out_unsigned"] else y
    return int(np.clip(y.astype(np.int64), case["clip_lo"], case["clip_hi"])[0])


def ieee_fp32_element(case: dict) -> int:
    """As golden_fp32_element, but converting an infinite total by its sign (golden.quant's
    add_fp32 converts inf to int64 before it clips, which is undefined)."""
    sa, sb, f = (np.uint32(case[k]).view(np.float32) for k in ("sa", "sb", "f"))
    a = _raw(case["a"], case["a_unsigned"]).astype(np.float32)
    b = _raw(case["b"], case["b_unsigned"]).astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        total = quant.fma_f32(a, sa, quant.fma_f32(b, sb, f))
    qmin, qmax = (0, 255) if case["out_unsigned"] else (-128, 127)
    y = int(np.clip(np.rint(total.astype(np.float64)), qmin, qmax)[0])
    y = y - 128 if case["out_unsigned"] else y
    return int(np.clip(y, case["clip_lo"], case["clip_hi"]))


def golden_fixed_element(case: dict) -> int:
    y = quant.add_fixed(np.array([case["a"]], np.int8), np.array([case["b"]], np.int8),
                        a_zero_point=case["a_zp"], b_zero_point=case["b_zp"],
                        c_zero_point=case["out_zp"], left_shift=case["left_shift"],
                        a_multiplier=case["a_mult"], a_shift=case["a_shift"],
                        b_multiplier=case["b_mult"], b_shift=case["b_shift"],
                        out_multiplier=case["out_mult"], out_shift=case["out_shift"])
    return int(np.clip(y.astype(np.int64), case["clip_lo"], case["clip_hi"])[0])


async def check(tb, cases, expected=golden_fp32_element):
    values, errors = await tb.run(cases)
    np.testing.assert_array_equal(errors, np.zeros(len(cases), np.int64))
    np.testing.assert_array_equal(values, np.array([expected(c) for c in cases], np.int8))
    return values


# Case generators -----------------------------------------------------------------------------

def random_clip(rng):
    if rng.random() < 0.6:
        return -128, 127
    lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2))
    return lo, hi


def fp32_case(rng, *, a=None, b=None, sa, sb, f, a_unsigned=None, b_unsigned=None,
              out_unsigned=None, clip=None):
    lo, hi = random_clip(rng) if clip is None else clip
    flag = lambda value: int(rng.integers(0, 2)) if value is None else int(value)  # noqa: E731
    return dict(a=int(rng.integers(-128, 128)) if a is None else int(a),
                b=int(rng.integers(-128, 128)) if b is None else int(b),
                fixed=0, a_unsigned=flag(a_unsigned), b_unsigned=flag(b_unsigned),
                out_unsigned=flag(out_unsigned),
                sa=f32_bits(sa), sb=f32_bits(sb), f=f32_bits(f), out_zp=int(rng.integers(-128, 128)),
                clip_lo=lo, clip_hi=hi)


def stored(raw: int, unsigned: int) -> int:
    """The stored int8 of a raw code."""
    return raw - 128 if unsigned else raw


def random_scales_case(rng, decades_a=(-4, 0), decades_b=(-4, 0), spread=(-1.0, 0.5)):
    """Scales log-uniform over a few decades, c_scale near a_scale + b_scale (so results are
    mostly in range), random zero points and signedness, through golden's add_fp32_params."""
    flags = rng.integers(0, 2, 3)
    a_scale = 10.0 ** rng.uniform(*decades_a)
    b_scale = 10.0 ** rng.uniform(*decades_b)
    c_scale = (a_scale + b_scale) * 10.0 ** rng.uniform(*spread)
    zps = [int(rng.integers(0, 256)) if u else int(rng.integers(-128, 128)) for u in flags]
    sa, sb, f = quant.add_fp32_params(a_scale=a_scale, a_zero_point=zps[0], b_scale=b_scale,
                                      b_zero_point=zps[1], c_scale=c_scale,
                                      c_zero_point=zps[2])
    return fp32_case(rng, sa=sa, sb=sb, f=f, a_unsigned=flags[0], b_unsigned=flags[1],
                     out_unsigned=flags[2])


# Tests ---------------------------------------------------------------------------------------

@cocotb.test()
async def fp32_dense_random(dut):
    tb = TB(dut)
    await tb.start()
    await check(tb, [random_scales_case(tb.rng) for _ in range(5000)])


@cocotb.test()
async def fp32_rounding_ties(dut):
    """Ties of the integer rounding (power-of-two scale ratios: exact sums on .5), and ties of
    each FMA's float32 rounding placed where they decide the integer."""
    tb = TB(dut)
    await tb.start()
    rng = tb.rng
    cases, integer_ties = [], 0
    for _ in range(900):  # integer ties: SA, SB, F exact, so y lands on .5 often
        k_a, k_b = (int(k) for k in rng.integers(-2, 5, 2))
        case = fp32_case(rng, sa=2.0 ** -k_a, sb=2.0 ** -k_b,
                         f=int(rng.integers(-200, 200)) * 0.5 ** int(rng.integers(0, 3)))
        raw_a, raw_b = case["a"] + 128 * case["a_unsigned"], case["b"] + 128 * case["b_unsigned"]
        exact = raw_a * 2.0 ** -k_a + raw_b * 2.0 ** -k_b + np.float32(
            np.uint32(case["f"]).view(np.float32))
        integer_ties += exact % 1 == 0.5
        cases.append(case)
    assert integer_ties > 100, integer_ties
    float_ties = 0
    for i in range(900):  # float ties: the exact sum is a float32 midpoint next to k + 0.5
        k = int(rng.integers(-120, 120))
        sticky = i % 3 == 2  # a tie but for a bit far below: only the sticky bit decides it
        # F = j + 0.5, the product n +- 2^(e-1) (e: the exponent of the float32 ulp at k + 0.5),
        # or for the sticky cases +-2^(e-1) (1 + 2^-t), t > 10: below the alignment window.
        f = k + 0.5 - (0 if sticky else int(rng.integers(-40, 40)))
        ulp_exp = int(np.floor(np.log2(abs(k + 0.5)))) - 23
        half_ulp = float(rng.choice([-1, 1])) * 2.0 ** (ulp_exp - 1)
        product = (k + 0.5 - f) + half_ulp * (1 + (2.0 ** -int(rng.integers(11, 24)) if sticky else 0))
        code = int(rng.choice([1, 2, 4, 8, 16, 32, 64, 128, -1, -2, -64, -128]))
        scale = product / code
        if scale <= 0:
            scale, code = -scale, -code
        if code > 127 or np.float32(scale) != scale:
            continue
        outer = i % 2  # 0: the inner FMA (a = 0), 1: the outer FMA (b = 0, inner = F)
        other = float(10.0 ** rng.uniform(-3, 1))
        case = fp32_case(rng, sa=scale if outer else other, sb=other if outer else scale, f=f,
                         a_unsigned=0, b_unsigned=0, out_unsigned=0, clip=(-128, 127))
        case["a" if outer else "b"] = code
        case["b" if outer else "a"] = 0
        float_ties += 1
        cases.append(case)
    assert float_ties > 600, float_ties
    await check(tb, cases)


@cocotb.test()
async def fp32_cancellation(dut):
    """F = -a*SA exactly (total +0), F = -b*SB (inner zero), and F = -f32(b*SB) (the inner sum
    is the tiny rounding residue: a long normalisation shift)."""
    tb = TB(dut)
    await tb.start()
    rng = tb.rng
    cases = []
    for i in range(900):
        kind = i % 3
        code = int(rng.integers(-128, 256))
        unsigned = int(code > 127 or (code >= 0 and rng.random() < 0.3))
        mantissa_bits = 16 if kind < 2 else 24  # 16: code * scale is exact in float32
        scale = float(np.float32(int(rng.integers(1 << (mantissa_bits - 1), 1 << mantissa_bits))
                                 * 2.0 ** int(rng.integers(-40, -10))))
        product = np.float32(np.float32(code) * np.float32(scale))
        other_scale = float(10.0 ** rng.uniform(-4, 1))
        if kind == 0:  # total = a*SA + (0*SB + F) = 0
            case = fp32_case(rng, a=stored(code, unsigned), b=0, sa=scale, sb=other_scale,
                             f=-product, a_unsigned=unsigned, b_unsigned=0)
        else:  # inner = b*SB + F = 0 or a residue
            case = fp32_case(rng, b=stored(code, unsigned), sb=scale, sa=other_scale, f=-product,
                             b_unsigned=unsigned)
        cases.append(case)
    await check(tb, cases)


@cocotb.test()
async def fp32_saturation(dut):
    """Results far beyond both ends of int8 and uint8, and just at them."""
    tb = TB(dut)
    await tb.start()
    rng = tb.rng
    cases = []
    for _ in range(600):
        sa, sb = (float(10.0 ** rng.uniform(-1, 2)) for _ in range(2))
        f = float(rng.choice([-1, 1]) * 10.0 ** rng.uniform(0, 4))
        cases.append(fp32_case(rng, sa=sa, sb=sb, f=f))
    for _ in range(300):  # totals near the range ends: -129..-127, 126..128, 254..256, -1..1
        target = float(rng.choice([-128, 127, 255, 0])) + float(rng.choice([-1, -0.5, 0, 0.5, 1]))
        f = target - float(rng.uniform(-0.25, 0.25))
        cases.append(fp32_case(rng, a=0, b=0, a_unsigned=0, b_unsigned=0, sa=1.0, sb=1.0,
                               f=np.float32(f) if rng.random() < 0.5 else target))
    values = await check(tb, cases)
    assert (values == 127).sum() > 50 and (values == -128).sum() > 50


@cocotb.test()
async def fp32_extreme_scale_ratios(dut):
    tb = TB(dut)
    await tb.start()
    rng = tb.rng
    cases = [random_scales_case(rng, decades_a=(-6, 3), decades_b=(-6, 3), spread=(-3, 1))
             for _ in range(800)]
    for _ in range(200):  # raw ratios SA, SB in 1e-6 .. 1e3, F anywhere
        sa, sb = (float(10.0 ** rng.uniform(-6, 3)) for _ in range(2))
        cases.append(fp32_case(rng, sa=sa, sb=sb, f=float(rng.uniform(-300, 300))))
    await check(tb, cases)


@cocotb.test()
async def fp32_overflow_and_tiny(dut):
    """Huge scales (an inner sum beyond float32 is inf, and fma(a, SA, +-inf) = +-inf even when
    a * SA is larger; totals beyond it saturate by sign) and tiny ones (inner sums in the float32
    subnormal range are exact, and can break a tie of the outer FMA)."""
    tb = TB(dut)
    await tb.start()
    rng = tb.rng
    cases = []
    for _ in range(200):
        sa = float(np.float32(10.0 ** rng.uniform(30, 38.5)))
        sb = float(np.float32(10.0 ** rng.uniform(30, 38.5)))
        f = float(rng.choice([-1, 1]) * 10.0 ** rng.uniform(0, 38))
        cases.append(fp32_case(rng, sa=sa, sb=sb, f=f))
    for _ in range(200):  # inner = +-inf, a * SA larger still with the other sign
        b = int(rng.choice([-1, 1]) * rng.integers(2, 9))
        sb = float(np.float32(2.0 ** 127 * rng.uniform(1, 2)))
        a = -int(np.sign(b)) * int(rng.integers(64, 128))
        sa = float(np.float32(abs(b) * sb / abs(a) * rng.uniform(1.5, 3)))  # below 2^127
        cases.append(fp32_case(rng, a=a, b=b, a_unsigned=0, b_unsigned=0, sa=sa, sb=sb, f=0.0))
    for _ in range(200):  # inner subnormal (or 0), anything outer
        sb = float(np.float32(2.0 ** int(rng.integers(-126, -105))
                              * (1 + int(rng.integers(0, 1 << 23)) * 2.0 ** -23)))
        code = int(rng.integers(-128, 128))
        f = -np.float32(np.float32(code) * np.float32(sb))  # inner: a subnormal residue or 0
        if f != 0 and abs(f) < np.float32(2.0 ** -126):
            continue
        cases.append(fp32_case(rng, b=code, b_unsigned=0, sb=sb, f=f,
                               sa=float(10.0 ** rng.uniform(-37, 1))))
    ties = 0
    while ties < 150:  # inner = r 2^-149; 3 SA = k + 0.5 + ulp/2, a float32 midpoint
        k = int(rng.integers(-127, 127))
        ulp_exp = int(np.floor(np.log2(abs(k + 0.5)))) - 23
        sa = (k + 0.5 + 2.0 ** (ulp_exp - 1)) / 3
        r = int(rng.integers(1, 1 << 23))
        sign = float(rng.choice([-1, 1]))
        if sa <= 0 or np.float32(sa) != sa:
            continue
        ties += 1
        cases.append(fp32_case(rng, a=3, b=1, a_unsigned=0, b_unsigned=0, out_unsigned=0,
                               clip=(-128, 127), sa=sa, sb=2.0 ** -126 * (1 + r * 2.0 ** -23),
                               f=-2.0 ** -126 if sign > 0 else -2.0 ** -126 * (1 + 2 * r * 2.0 ** -23)))
    await check(tb, cases, expected=ieee_fp32_element)


def fixed_case(rng, **params):
    lo, hi = random_clip(rng)
    case = dict(a=int(rng.integers(-128, 128)), b=int(rng.integers(-128, 128)), fixed=1,
                a_unsigned=int(rng.integers(0, 2)), b_unsigned=int(rng.integers(0, 2)),
                out_unsigned=int(rng.integers(0, 2)), sa=int(rng.integers(0, 1 << 32)),
                sb=int(rng.integers(0, 1 << 32)), f=int(rng.integers(0, 1 << 32)),
                out_zp=int(rng.integers(-128, 128)), clip_lo=lo, clip_hi=hi,
                a_zp=int(rng.integers(-128, 128)), b_zp=int(rng.integers(-128, 128)))
    case.update(params)
    return case


@cocotb.test()
async def fixed_mode_random_and_shift_extremes(dut):
    tb = TB(dut)
    await tb.start()
    rng = tb.rng
    cases = []
    for _ in range(800):  # TFLite's own constants from random scales
        scales = 10.0 ** rng.uniform(-4, 0, 3)
        params = quant.add_fixed_params(a_scale=scales[0], b_scale=scales[1], c_scale=scales[2])
        cases.append(fixed_case(rng, left_shift=params["left_shift"],
                                a_mult=params["a_multiplier"], a_shift=params["a_shift"],
                                b_mult=params["b_multiplier"], b_shift=params["b_shift"],
                                out_mult=params["out_multiplier"], out_shift=params["out_shift"]))
    for _ in range(2000):  # any legal parameters, shifts often at the ends (wrapping shifts)
        def shift():
            return int(rng.choice([-31, 30, 0, -1, 1, int(rng.integers(-31, 31))]))

        def mult():
            return int(rng.choice([0, (1 << 31) - 1, 1 << 30, int(rng.integers(0, 1 << 31))]))

        cases.append(fixed_case(rng, left_shift=int(rng.choice([0, 24, int(rng.integers(0, 25))])),
                                a_mult=mult(), a_shift=shift(), b_mult=mult(), b_shift=shift(),
                                out_mult=mult(), out_shift=shift()))
    await check(tb, cases, expected=golden_fixed_element)


@cocotb.test()
async def mixed_modes(dut):
    """fp32 and fixed elements interleaved at random: the mode travels with each element through
    the shared multipliers and shifters."""
    tb = TB(dut)
    await tb.start()
    rng = tb.rng
    cases, expected = [], []
    for _ in range(2000):
        if rng.random() < 0.5:
            case = random_scales_case(rng)
            expected.append(golden_fp32_element(case))
        else:
            def shift():
                return int(rng.choice([-31, 30, 0, -1, int(rng.integers(-31, 31))]))

            def mult():
                return int(rng.choice([(1 << 31) - 1, int(rng.integers(0, 1 << 31))]))

            case = fixed_case(rng, left_shift=int(rng.integers(0, 25)), a_mult=mult(),
                              a_shift=shift(), b_mult=mult(), b_shift=shift(), out_mult=mult(),
                              out_shift=shift())
            expected.append(golden_fixed_element(case))
        cases.append(case)
    values, errors = await tb.run(cases)
    np.testing.assert_array_equal(errors, np.zeros(len(cases), np.int64))
    np.testing.assert_array_equal(values, np.array(expected, np.int8))


@cocotb.test()
async def bad_parameters_raise_error(dut):
    tb = TB(dut, input_idle=0, output_stall=0)
    await tb.start()
    rng = tb.rng
    good = dict(sa=1.0, sb=0.5, f=3.0)
    bad_values = {"sa": [0.0, -0.0, -0.5, np.inf, np.nan, 1e-40],
                  "sb": [0.0, -1.0, np.inf, -np.inf, np.nan, 1e-45],
                  "f": [np.inf, -np.inf, np.nan, 1e-40, -1e-40]}
    cases, expected = [], []
    for key, values in bad_values.items():
        for value in values:
            cases.append(fp32_case(rng, **(good | {key: value})))
            expected.append(1)
    for f in (0.0, -0.0, -1e-30, 3e38):  # accepted: zero, tiny normal, huge
        cases.append(fp32_case(rng, **(good | {"f": f})))
        expected.append(0)
    ok = dict(left_shift=20, a_mult=1 << 30, a_shift=-1, b_mult=1 << 30, b_shift=0,
              out_mult=1 << 30, out_shift=-20, a_zp=0, b_zp=0)
    bad_fixed = [("left_shift", -1), ("left_shift", 25), ("a_mult", -1), ("b_mult", -(1 << 31)),
                 ("out_mult", -5), ("a_shift", -32), ("a_shift", 31), ("b_shift", 31),
                 ("out_shift", -32), ("out_shift", 1 << 20), ("a_zp", 128), ("a_zp", -129),
                 ("b_zp", 255), ("b_zp", -(1 << 31))]
    for key, value in bad_fixed:
        cases.append(fixed_case(rng, **(ok | {key: value})))
        expected.append(1)
    for key, value in (("left_shift", 0), ("left_shift", 24), ("a_shift", -31), ("a_shift", 30),
                       ("a_zp", -128), ("b_zp", 127), ("out_mult", (1 << 31) - 1)):
        cases.append(fixed_case(rng, **(ok | {key: value})))
        expected.append(0)
    # The other mode's fields never raise an error.
    cases.append(fp32_case(rng, **good) | {"left_shift": -7, "a_mult": -1, "a_zp": 999})
    cases.append(fixed_case(rng, **ok) | {"sa": f32_bits(np.nan), "f": f32_bits(np.inf)})
    expected += [0, 0]
    _, errors = await tb.run(cases)
    np.testing.assert_array_equal(errors, expected)
