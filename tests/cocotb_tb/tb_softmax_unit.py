"""cocotb testbench of rtl.softmax_unit.SoftmaxUnit against golden.intops.softmax: rows split into
beats with random partial masks (not starting at lane 0, sometimes not contiguous, garbage in the
unmasked lanes and in gamma/beta), every row sent as pass 0, 1, 2; random idle beats and random
result backpressure; random params, all-equal rows, a dominant value, length-1 rows, int32
extremes, a row of the maximum length, extreme params, bad params set error."""

from collections import deque

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, Timer
from tb_common import ClockedTB, pack, unpack_signed

from golden import intops
from rtl.row_unit_layouts import row_beat_layout
from rtl.softmax_unit import SoftmaxUnit

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def _pack32(values) -> int:
    """Lanes of int32 values as one integer, lane 0 in the low bits (a fast tb_common.pack)."""
    return int.from_bytes(np.asarray(values, np.int64).astype("<u4").tobytes(), "little")


class TB(ClockedTB):
    """Drives ``params`` and the ``beats`` stream, collects the ``results`` stream."""

    def __init__(self, dut, *, beat_idle=0.2, result_stall=0.2):
        super().__init__(dut)
        self.lanes = (len(dut.results__payload) - 1) // 8  # int8 values and the error bit
        self.beat_idle, self.result_stall = beat_idle, result_stall
        dut.beats__valid.value = 0
        dut.results__ready.value = 0

    # --- beats --------------------------------------------------------------------------------

    def garbage(self, shape, row_max=None):
        """Values for unmasked lanes: random, int32 extremes (a stray INT32_MAX would win an
        unmasked maximum) and, given the row maximum, values at or just below it (which would
        add to an unmasked sum)."""
        rng = self.rng
        values = rng.integers(INT32_MIN, INT32_MAX, shape, endpoint=True)
        kind = rng.random(shape)
        values[kind < 0.3] = rng.choice([INT32_MIN, INT32_MAX], (kind < 0.3).sum())
        if row_max is not None:
            near = kind >= 0.6
            values[near] = np.maximum(row_max - rng.integers(0, 3, near.sum()), INT32_MIN)
        return values

    def split(self, length, *, style="random"):
        """Masks of the beats of a row of ``length`` elements (each beat's element count is its
        mask's population). ``full``: full beats from lane 0; ``random``: random counts, offsets
        and, sometimes, scattered lanes."""
        lanes, rng = self.lanes, self.rng
        masks, left = [], length
        while left:
            if style == "full" or rng.random() < 0.4:
                count = min(lanes, left)
            else:
                count = int(rng.integers(1, min(lanes, left) + 1))
            if style == "full":
                chosen = range(count)
            elif rng.random() < 0.25:
                chosen = rng.choice(lanes, count, replace=False)
            else:
                start = int(rng.integers(0, lanes - count + 1))
                chosen = range(start, start + count)
            masks.append(sum(1 << int(lane) for lane in chosen))
            left -= count
        return masks

    def row_words(self, row, masks):
        """The beats of one row: pass 0, 1, 2 with the same masks, fresh garbage in the unmasked
        lanes and in gamma/beta each pass."""
        lanes = self.lanes
        layout = row_beat_layout(lanes)
        lane_lists = [[lane for lane in range(lanes) if mask >> lane & 1] for mask in masks]
        words = []
        for pass_index in range(SoftmaxUnit.passes):
            shape = (len(masks), lanes)
            values = self.garbage(shape, int(row.max()))
            gamma, beta = self.garbage(shape), self.garbage(shape)
            start = 0
            for index, (mask, chosen) in enumerate(zip(masks, lane_lists, strict=True)):
                values[index, chosen] = row[start:start + len(chosen)]
                start += len(chosen)
                fields = {"values": _pack32(values[index]), "gamma": _pack32(gamma[index]),
                          "beta": _pack32(beta[index]), "mask": mask, "pass_index": pass_index,
                          "last": int(index == len(masks) - 1)}
                word = 0
                for name, field in layout:
                    word |= (fields[name] & ((1 << field.width) - 1)) << field.offset
                words.append(word)
        return words

    # --- running ------------------------------------------------------------------------------

    async def stream(self, words, result_count) -> list[int]:
        """Send ``words`` on ``beats``, collect ``result_count`` result words, in order."""
        dut = self.dut
        pending = deque(words)
        results = []
        cycles = 0
        limit = 4 * len(words) + 80 * result_count + 1000
        while len(results) < result_count or pending:
            await FallingEdge(dut.clk)
            cycles += 1
            assert cycles < limit, "the softmax unit stopped accepting beats or producing results"
            send = bool(pending) and self.rng.random() >= self.beat_idle
            if send:
                dut.beats__payload.value = pending[0]
            dut.beats__valid.value = int(send)
            ready = self.rng.random() >= self.result_stall
            dut.results__ready.value = int(ready)
            await Timer(1, unit="ns")
            if send and dut.beats__ready.value:
                pending.popleft()
            if ready and dut.results__valid.value:
                results.append(dut.results__payload.value.to_unsigned())
        # Nothing more may come out.
        dut.beats__valid.value = 0
        dut.results__ready.value = 1
        for _ in range(SoftmaxUnit.latency + 2):
            await FallingEdge(dut.clk)
            assert not dut.results__valid.value, "a result beat without a pass-2 beat"
        return results

    async def run_rows(self, rows, params, *, style="random"):
        """Softmax of ``rows`` (one instruction, ``params`` held throughout): per row, the int8
        outputs of the masked lanes in order and the error bits of its result beats."""
        self.dut.params.value = pack(params, 32)
        layouts = [self.split(len(row), style=style) for row in rows]
        words = [w for row, masks in zip(rows, layouts, strict=True)
                 for w in self.row_words(row, masks)]
        results = await self.stream(words, sum(len(masks) for masks in layouts))
        lanes, outputs, position = self.lanes, [], 0
        for masks in layouts:
            values, errors = [], []
            for mask in masks:
                word = results[position]
                position += 1
                lane_values = unpack_signed(word & ((1 << 8 * lanes) - 1), 8, lanes)
                values.extend(lane_values[lane] for lane in range(lanes) if mask >> lane & 1)
                errors.append(word >> 8 * lanes & 1)
            outputs.append((np.array(values, np.int64), np.array(errors)))
        return outputs

    async def check(self, rows, params, *, style="random"):
        rows = [np.asarray(row, np.int64) for row in rows]
        outputs = await self.run_rows(rows, params, style=style)
        for index, (row, (values, errors)) in enumerate(zip(rows, outputs, strict=True)):
            message = f"row {index} (length {len(row)}), params {list(params)}"
            np.testing.assert_array_equal(errors, np.zeros_like(errors), err_msg=message)
            expected = intops.softmax(row.astype(np.int32), np.asarray(params, np.int32))
            np.testing.assert_array_equal(values, expected, err_msg=message)


def random_params(rng):
    """Valid params from random scales: input scales over the whole accepted range, or typical
    of attention scores; output scales around 1/256 or anywhere in the accepted range."""
    if rng.random() < 0.5:
        input_scale = 2.0 ** rng.uniform(-40, 10)
    else:
        input_scale = 2.0 ** rng.uniform(-14, -4)
    output_scale = 1 / 256 if rng.random() < 0.5 else 2.0 ** rng.uniform(-16, 0)
    zero_point = -128 if rng.random() < 0.5 else int(rng.integers(-128, 128))
    return intops.softmax_params(input_scale=input_scale, output_scale=output_scale,
                                 output_zero_point=zero_point)


def random_row(rng, length, params):
    """Attention-like scores (real values within +-12 of each other) or arbitrary int32 values."""
    input_scale = params[0] / 2.0 ** params[1] / 2.0 ** intops.SOFTMAX_FRAC_BITS / np.log2(np.e)
    if rng.random() < 0.7:
        centre = rng.integers(INT32_MIN // 2, INT32_MAX // 2) if rng.random() < 0.3 else 0
        row = centre + np.round(rng.uniform(-12, 12, length) / input_scale)
        return np.clip(row, INT32_MIN, INT32_MAX).astype(np.int64)
    return rng.integers(INT32_MIN, INT32_MAX, length, endpoint=True) >> rng.integers(0, 32)


@cocotb.test()
async def random_rows_random_params(dut):
    tb = TB(dut)
    await tb.start()
    rng = tb.rng
    for _ in range(6):
        params = random_params(rng)
        lengths = rng.integers(1, 4 * tb.lanes + 4, 6)
        await tb.check([random_row(rng, n, params) for n in lengths], params)


@cocotb.test()
async def special_rows(dut):
    """All-equal rows, one dominant value, length-1 rows, int32 extremes, and a row of length
    11 with partial masks, back to back in one instruction each."""
    tb = TB(dut)
    await tb.start()
    rng = tb.rng
    lanes = tb.lanes
    rows = [
        np.full(7, 5), np.full(3 * lanes + 1, -77), np.full(1, 0),          # all equal
        np.array([INT32_MAX]), np.array([INT32_MIN]), np.array([123456]),   # length 1
        np.where(np.arange(9) == 4, 1000000, -5), np.array([INT32_MAX] + [INT32_MIN] * 10),
        np.array([INT32_MIN] * 5 + [INT32_MAX]), np.full(2 * lanes, INT32_MIN),
        np.full(2 * lanes + 3, INT32_MAX), np.array([INT32_MIN, INT32_MAX] * lanes),
        rng.integers(-40, 40, 11), rng.integers(-40, 40, 11),
    ]
    for params in (intops.softmax_params(input_scale=0.05, output_scale=1 / 256,
                                         output_zero_point=-128),
                   intops.softmax_params(input_scale=1.0, output_scale=2.0 ** -16,
                                         output_zero_point=3),
                   intops.softmax_params(input_scale=2.0 ** -40, output_scale=1.0,
                                         output_zero_point=127)):
        await tb.check(rows, params)
        await tb.check(rows, params, style="full")


@cocotb.test()
async def extreme_params(dut):
    """Every combination of the multiplier and shift bounds; zero points at both ends."""
    tb = TB(dut)
    await tb.start()
    rng = tb.rng
    for mi in (1 << 30, (1 << 31) - 1):
        for si in (0, 62):
            for mo in (1 << 30, (1 << 31) - 1):
                for so in (14, 30):
                    params = np.array([mi, si, mo, so, rng.choice([-128, 127, 0])], np.int32)
                    rows = [rng.integers(INT32_MIN, INT32_MAX, n, endpoint=True)
                            >> rng.integers(0, 32) for n in rng.integers(1, 2 * tb.lanes + 2, 2)]
                    rows.append(np.array([0, -1, -2, -3, INT32_MIN, INT32_MAX - 1, INT32_MAX]))
                    await tb.check(rows, params)


@cocotb.test()
async def maximum_length_row(dut):
    """A row of 65535 equal elements (the largest sum) and a long one of near-equal elements,
    full beats, no idle cycles (keeps the run short)."""
    tb = TB(dut, beat_idle=0, result_stall=0.05)
    await tb.start()
    rng = tb.rng
    length = 65535
    params = intops.softmax_params(input_scale=2.0 ** -10, output_scale=2.0 ** -16,
                                   output_zero_point=-128)
    await tb.check([np.full(length, 42)], params, style="full")
    await tb.check([rng.integers(1000, 1003, 4000)], params)


@cocotb.test()
async def bad_params_set_error(dut):
    """Each param out of range sets error on every result beat; good params clear it again."""
    tb = TB(dut)
    await tb.start()
    rng = tb.rng
    good = [1 << 30, 20, 1 << 30, 20, 0]
    bad = [(0, (1 << 30) - 1), (0, INT32_MIN), (0, 0), (1, -1), (1, 63), (2, (1 << 30) - 1),
           (2, -1), (3, 13), (3, 31), (3, -14), (4, -129), (4, 128)]
    for index, value in bad:
        params = list(good)
        params[index] = value
        rows = [rng.integers(-1000, 1000, n) for n in (1, tb.lanes + 1, 3)]
        outputs = await tb.run_rows(rows, np.array(params, np.int64))
        for _, errors in outputs:
            np.testing.assert_array_equal(errors, np.ones_like(errors),
                                          err_msg=f"params {params}")
        await tb.check([rng.integers(-1000, 1000, n) for n in (2, 5)], np.array(good, np.int32))


def division_tie_case(rng):
    """(row, params) with R = (Mo << 31) // sum exactly on, or one below, the output rounding
    tie of the row maximum (y = round(R / 2**(So + 1)) + zp): R off by one changes y."""
    mi, si = 1 << 30, 30  # nv = m - x
    so = int(rng.integers(23, 28))  # round(R / 2**(So + 1)) <= 256: no saturation with zp -128
    while True:
        row = np.concatenate([[0], -rng.integers(0, 3 << intops.SOFTMAX_FRAC_BITS,
                                                 rng.integers(1, 6))])
        total = int(intops._exp2_neg(-row).sum())
        low, high = ((1 << 61) + total - 1) // total, ((1 << 62) - 1) // total
        step = 1 << (so + 1)
        target = int(rng.integers(low // step, high // step, endpoint=True)) * step + (1 << so) - int(
            rng.integers(0, 2))
        mo = -(-target * total // (1 << 31))  # the smallest Mo with (Mo << 31) // sum >= target
        if (1 << 30) <= mo < (1 << 31) and (mo << 31) // total == target:
            return row, np.array([mi, si, mo, so, -128], np.int32)


@cocotb.test()
async def division_rounding_ties(dut):
    """Rows whose outputs depend on the last bit of the reciprocal R."""
    tb = TB(dut)
    await tb.start()
    for _ in range(30):
        row, params = division_tie_case(tb.rng)
        await tb.check([row], params)
