"""cocotb testbench of rtl.gelu_lane.GeluLane against golden.intops.gelu: dense random inputs over
the whole int32 range and near 0 with random valid params (a different parameter set on
neighbouring values), the interesting region |x * input_scale| < 8, extreme params (every shift
and multiplier bound, saturation at both ends), bad params raise error."""


import cocotb
import numpy as np
from tb_common import LaneTB

from golden import intops
from rtl.gelu_lane import gelu_input_layout

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


class TB(LaneTB):
    @staticmethod
    def payload(x, params) -> int:
        """Pack one value and its five params by the RTL's layout."""
        fields = {"x": int(x), "params": sum((int(v) & 0xFFFFFFFF) << (32 * i)
                                             for i, v in enumerate(params))}
        word = 0
        for name, field in gelu_input_layout:
            word |= (fields[name] & ((1 << field.width) - 1)) << field.offset
        return word

    async def check(self, x, param_sets, choice):
        """Run x[i] with param_sets[choice[i]]; compare with golden.intops.gelu."""
        x = np.asarray(x, np.int32)
        values, errors = await self.run_words(
            [self.payload(v, param_sets[c]) for v, c in zip(x, choice, strict=True)])
        expected = np.empty(x.shape, np.int8)
        for index, params in enumerate(param_sets):
            selected = choice == index
            expected[selected] = intops.gelu(x[selected], params)
        np.testing.assert_array_equal(errors, np.zeros_like(errors))
        np.testing.assert_array_equal(values, expected)


def random_params(rng, count):
    """``count`` valid param sets from random scales over the accepted ranges."""
    sets = []
    for _ in range(count):
        sets.append(intops.gelu_params(input_scale=2.0 ** rng.uniform(-40, 10),
                                       output_scale=2.0 ** rng.uniform(-16, 2),
                                       output_zero_point=int(rng.integers(-128, 128))))
    return sets


def realistic_params(rng, count):
    """Param sets with input scales typical of a BERT GELU input and output scales near 0.03."""
    return [intops.gelu_params(input_scale=2.0 ** rng.uniform(-24, -2),
                               output_scale=2.0 ** rng.uniform(-9, -3),
                               output_zero_point=int(rng.integers(-128, -80)))
            for _ in range(count)]


@cocotb.test()
async def dense_random_full_range(dut):
    """Random int32 values of every magnitude (uniform bits shifted right 0..31), random params."""
    tb = TB(dut)
    await tb.start()
    rng = tb.rng
    n = 3000
    x = (rng.integers(INT32_MIN, INT32_MAX, n, endpoint=True) >> rng.integers(0, 32, n))
    x[:8] = [INT32_MIN, INT32_MAX, 0, 1, -1, 2, -2, INT32_MIN + 1]
    param_sets = random_params(rng, 40)
    await tb.check(x, param_sets, rng.integers(0, len(param_sets), n))


@cocotb.test()
async def interesting_region_and_near_zero(dut):
    """|x * input_scale| up to 8 (where the erf polynomial matters) and small integers near 0."""
    tb = TB(dut)
    await tb.start()
    rng = tb.rng
    param_sets = random_params(rng, 20) + realistic_params(rng, 20)
    n = 3000
    choice = rng.integers(0, len(param_sets), n)
    scales = np.array([p[0] / 2.0 ** p[1] / 2.0 ** 20 for p in param_sets])  # input_scale
    real = rng.uniform(-8, 8, n)
    x = np.clip(np.round(real / scales[choice]), INT32_MIN, INT32_MAX).astype(np.int64)
    near_zero = rng.random(n) < 0.25
    x[near_zero] = rng.integers(-300, 301, near_zero.sum())
    await tb.check(x, param_sets, choice)


@cocotb.test()
async def extreme_params(dut):
    """Every combination of the multiplier and shift bounds, the zero point ends."""
    tb = TB(dut)
    await tb.start()
    rng = tb.rng
    param_sets = []
    for mi in (1 << 30, (1 << 31) - 1):
        for si in (0, 62):
            for mo in (1 << 30, (1 << 31) - 1):
                for so in (34, 52):
                    for zp in (-128, 127, 0):
                        param_sets.append(np.array([mi, si, mo, so, zp], np.int32))
    n = 2400
    x = (rng.integers(INT32_MIN, INT32_MAX, n, endpoint=True) >> rng.integers(0, 32, n))
    x[::7] = rng.choice([INT32_MIN, INT32_MAX, INT32_MIN + 1, 0, -1, 1], len(x[::7]))
    await tb.check(x, param_sets, rng.integers(0, len(param_sets), n))


@cocotb.test()
async def bad_params_raise_error(dut):
    tb = TB(dut, input_idle=0, output_stall=0.3)
    await tb.start()
    good = [1 << 30, 20, 1 << 30, 40, 0]
    bad = [
        (0, (1 << 30) - 1), (0, INT32_MAX + 1 - (1 << 32)), (0, 0),   # Mi
        (1, -1), (1, 63),                                             # Si
        (2, (1 << 30) - 1), (2, INT32_MIN),                           # Mo
        (3, 33), (3, 53), (3, 0),                                     # So
        (4, -129), (4, 128),                                          # zp
    ]
    cases = []
    for index, value in bad:
        params = list(good)
        params[index] = value
        cases.append(params)
    cases += [good, [(1 << 31) - 1, 62, (1 << 31) - 1, 52, 127], [1 << 30, 0, 1 << 30, 34, -128]]
    _, errors = await tb.run_words([tb.payload(12345, params) for params in cases])
    np.testing.assert_array_equal(errors, [1] * len(bad) + [0, 0, 0])
