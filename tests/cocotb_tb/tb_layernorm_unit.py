"""cocotb testbench of rtl.layernorm_unit.LayernormUnit against golden.intops.layernorm.

Rows go in as beats of up to ``lanes`` elements (packed, starting mid-beat, random contiguous
runs, scattered lanes; the unmasked lanes hold fresh garbage on every pass), three passes per row,
several rows back to back per instruction, with random idle cycles on ``beats`` and random
backpressure on ``results``. Covered: random rows and gamma/beta, constant rows, length-1 rows,
int32 extremes, input scales from tiny to huge (both normalisations, both signs of e, the shift
clips), bad parameters, and the throughput of each pass.
"""

from __future__ import annotations

from collections import deque

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, Timer
from tb_common import ClockedTB, pack, unpack_signed

from golden import intops
from rtl.layernorm_unit import LayernormUnit
from rtl.row_unit_layouts import row_beat_layout

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
LAYOUT_MODES = ("packed", "offset", "runs", "scattered")


def make_layout(rng, length: int, lanes: int, mode: str) -> list[list[int]]:
    """The lanes of each beat of a row; elements fill them in order."""
    beats, remaining = [], length
    offset = int(rng.integers(0, lanes))
    while remaining:
        if mode == "packed":
            chosen = list(range(min(lanes, remaining)))
        elif mode == "offset":  # the row starts mid-beat, later beats start at lane 0
            start = offset if not beats else 0
            chosen = list(range(start, start + min(lanes - start, remaining)))
        elif mode == "runs":
            start = int(rng.integers(0, lanes))
            count = int(rng.integers(1, min(lanes - start, remaining) + 1))
            chosen = list(range(start, start + count))
        elif mode == "scattered":
            count = int(rng.integers(1, min(lanes, remaining) + 1))
            chosen = sorted(int(v) for v in rng.choice(lanes, count, replace=False))
        else:
            raise ValueError(f"Mode must be one of {', '.join(LAYOUT_MODES)}, not {mode!r}")
        beats.append(chosen)
        remaining -= len(chosen)
    return beats


def random_params(rng, length: int, *, input_scale: float, epsilon: float = 1e-5) -> np.ndarray:
    gamma = rng.normal(1.0, 0.5, length)
    beta = rng.normal(0.0, 1.0, length)
    return intops.layernorm_params(input_scale=input_scale, gamma=gamma, beta=beta,
                                   output_scale=float(rng.uniform(0.01, 0.1)),
                                   output_zero_point=int(rng.integers(-128, 128)),
                                   epsilon=epsilon)


def random_values(rng, shape, *, bits=None) -> np.ndarray:
    """int32 values of random magnitudes (or of about ``bits`` bits)."""
    values = rng.integers(INT32_MIN, INT32_MAX + 1, shape, dtype=np.int64)
    shifts = rng.integers(0, 32, shape) if bits is None else np.full(shape, 32 - bits)
    return (values >> shifts).astype(np.int32)


def normalisation(row: np.ndarray, head) -> set[str]:
    """Which branches golden layernorm takes for ``row`` (Python integers, as the docs)."""
    length, eps_exp = len(row), int(head[2])
    total = sum(int(v) for v in row)
    biggest = max(abs(length * int(v) - total) for v in row)
    k_min = (eps_exp - 30) >> 1
    k = max(biggest.bit_length() - 23, k_min)
    e = eps_exp - 2 * k
    return {"k from the deviations" if k > k_min else "k from epsilon",
            "k < 0" if k < 0 else "k >= 0", "e >= 0" if e >= 0 else "e < 0"} \
        | ({"k > 63"} if k > 63 else set()) | ({"e < -63"} if e < -63 else set())


class TB(ClockedTB):
    """Drives ``beats``, ``params`` and ``length``; takes ``results``."""

    def __init__(self, dut, *, input_idle: float = 0.2, output_stall: float = 0.2):
        super().__init__(dut)
        self.lanes = (len(dut.results__payload.value) - 1) // 8  # lanes int8 values and error
        self.fields = {name: field.offset for name, field in row_beat_layout(self.lanes)}
        self.input_idle, self.output_stall = input_idle, output_stall
        self.branches: set[str] = set()
        self.cycles = 0
        dut.beats__valid.value = 0
        dut.results__ready.value = 0
        dut.params.value = 0
        dut.length.value = 0

    def beat_word(self, x, gamma, beta, lanes_used, pass_index, last) -> int:
        garbage = self.rng.integers(INT32_MIN, INT32_MAX + 1, (3, self.lanes))
        values, gammas, betas = garbage
        mask = 0
        for lane, index in zip(lanes_used, range(len(lanes_used)), strict=True):
            values[lane], gammas[lane], betas[lane] = x[index], gamma[index], beta[index]
            mask |= 1 << lane
        f = self.fields
        return (pack(values, 32) << f["values"] | pack(gammas, 32) << f["gamma"]
                | pack(betas, 32) << f["beta"] | mask << f["mask"]
                | pass_index << f["pass_index"] | int(last) << f["last"])

    def row_words(self, row, gamma, beta, layout) -> list[int]:
        words = []
        for pass_index in range(LayernormUnit.passes):
            start = 0
            for number, lanes_used in enumerate(layout):
                end = start + len(lanes_used)
                words.append(self.beat_word(row[start:end], gamma[start:end], beta[start:end],
                                            lanes_used, pass_index, number == len(layout) - 1))
                start = end
        return words

    async def stream(self, words, result_count: int) -> list[int]:
        dut = self.dut
        pending = deque(words)
        results = []
        cycles = 0
        limit = 4 * len(words) / max(1e-3, 1 - max(self.input_idle, self.output_stall)) + 1000
        while len(results) < result_count:
            await FallingEdge(dut.clk)
            cycles += 1
            assert cycles < limit, "the unit stopped taking beats or producing results"
            send = bool(pending) and self.rng.random() >= self.input_idle
            if send:
                dut.beats__payload.value = pending[0]
            dut.beats__valid.value = int(send)
            ready = self.rng.random() >= self.output_stall
            dut.results__ready.value = int(ready)
            await Timer(1, unit="ns")
            if send and dut.beats__ready.value:
                pending.popleft()
            if ready and dut.results__valid.value:
                results.append(dut.results__payload.value.to_unsigned())
        dut.beats__valid.value = 0
        assert not pending, "results came before all beats went in"
        self.cycles = cycles
        return results

    async def run(self, x, params, *, layouts=None, head=None, length=None):
        """One instruction: the rows ``x`` (R, L) with ``params`` (5 + 2L), checked against
        golden; ``head`` replaces params[:5] and ``length`` the row length the unit is told (to
        make bad parameters); ``layouts`` (one per row) default to random ones."""
        x = np.asarray(x, np.int32)
        rows, row_length = x.shape
        length = row_length if length is None else length
        params = np.asarray(params, np.int32).copy()
        if head is not None:
            params[:5] = head
        head = [int(v) for v in params[:5]]
        gamma, beta = params[5:5 + row_length], params[5 + row_length:]
        try:
            expected = intops.layernorm(x, params) if length == row_length else None
        except ValueError:
            expected = None
        if layouts is None:
            layouts = [make_layout(self.rng, row_length, self.lanes,
                                   LAYOUT_MODES[int(self.rng.integers(0, len(LAYOUT_MODES)))])
                       for _ in range(rows)]
        words = []
        for row, layout in zip(x, layouts, strict=True):
            words += self.row_words(row, gamma, beta, layout)
            if expected is not None:
                self.branches |= normalisation(row, head)
        self.dut.params.value = pack(head, 32)
        self.dut.length.value = length
        result_words = await self.stream(words, sum(len(layout) for layout in layouts))

        got = np.zeros((rows, row_length), np.int8)
        errors = []
        results = iter(result_words)
        for r, layout in enumerate(layouts):
            start = 0
            for lanes_used in layout:
                word = next(results)
                values = unpack_signed(word, 8, self.lanes)
                errors.append(word >> (8 * self.lanes) & 1)
                got[r, start:start + len(lanes_used)] = values[lanes_used]
                start += len(lanes_used)
        if expected is None:
            np.testing.assert_array_equal(errors, np.ones(len(errors), np.int64))
        else:
            np.testing.assert_array_equal(errors, np.zeros(len(errors), np.int64))
            np.testing.assert_array_equal(got, expected)

    async def no_stray_results(self, cycles=20):
        self.dut.results__ready.value = 1
        for _ in range(cycles):
            await FallingEdge(self.dut.clk)
            assert not self.dut.results__valid.value, "a result beat without a beat"


@cocotb.test()
async def random_rows_match_golden(dut):
    """Random lengths, layouts, values, gamma/beta and scales; several rows per instruction."""
    tb = TB(dut)
    await tb.start()
    rng = tb.rng
    for _ in range(10):
        length = int(rng.integers(1, 5 * max(tb.lanes, 4)))  # a few beats, also on one lane
        params = random_params(rng, length, input_scale=float(10.0 ** rng.uniform(-5, 0)))
        x = random_values(rng, (int(rng.integers(1, 5)), length))
        await tb.run(x, params)
    await tb.no_stray_results()


@cocotb.test()
async def constant_and_short_rows(dut):
    """Constant rows (all deviations 0: epsilon alone, the result is beta) and length-1 rows."""
    tb = TB(dut)
    await tb.start()
    rng = tb.rng
    for length in (1, 2, 11, 3 * tb.lanes + 1):
        params = random_params(rng, length, input_scale=1e-3)
        x = np.array([np.full(length, v) for v in (0, 5, -7, INT32_MIN, INT32_MAX)], np.int32)
        await tb.run(x, params)
    for scale in (1e-9, 1e-3, 10.0):  # length 1: every row is constant
        await tb.run(random_values(rng, (4, 1)), random_params(rng, 1, input_scale=scale))
    await tb.no_stray_results()


@cocotb.test()
async def partial_masks_over_several_beats(dut):
    """Length 11 (and others) in every layout mode, masks not starting at lane 0."""
    tb = TB(dut)
    await tb.start()
    rng = tb.rng
    for length in (11, 2 * tb.lanes - 1, 2 * tb.lanes + 3):
        params = random_params(rng, length, input_scale=1e-2)
        for mode in LAYOUT_MODES:
            x = random_values(rng, (2, length))
            layouts = [make_layout(rng, length, tb.lanes, mode) for _ in range(2)]
            await tb.run(x, params, layouts=layouts)
    # The first beat holds one element in the top lane, the last one element in lane 0.
    length = tb.lanes + 2
    layout = [[tb.lanes - 1], list(range(tb.lanes)), [0]]
    await tb.run(random_values(rng, (1, length)), random_params(rng, length, input_scale=1e-2),
                 layouts=[layout])


@cocotb.test()
async def int32_extremes(dut):
    """Rows of INT32_MIN and INT32_MAX (max |D| and S at their widths) and near-constant rows."""
    tb = TB(dut)
    await tb.start()
    rng = tb.rng
    for length in (2, 7, 4 * tb.lanes + 1):
        params = random_params(rng, length, input_scale=1e-9)
        x = rng.choice([INT32_MIN, INT32_MAX], (3, length)).astype(np.int32)
        x[1, 0] = INT32_MIN
        x[1, 1:] = INT32_MAX  # one outlier
        near = np.full(length, INT32_MAX, np.int32)
        near[-1] -= 1
        await tb.run(np.vstack([x, near]), params)
    # A long row at the extremes: S and L x_j need their 48 bits.
    length = 1200
    x = rng.choice([INT32_MIN, INT32_MAX], (1, length)).astype(np.int32)
    x[0, : length // 2 + 100] = INT32_MIN
    await tb.run(x, random_params(rng, length, input_scale=1e-9))


@cocotb.test()
async def input_scales_cover_both_normalisations(dut):
    """Epsilon from far below to far above the variance: k from the deviations or from epsilon,
    k < 0 (left shifts), both signs of e, and the clips of both shift amounts."""
    tb = TB(dut)
    await tb.start()
    rng = tb.rng
    cases = [(2.0 ** -100, 1e-5, 8), (1e-9, 1e-5, 4), (1e-4, 1e-5, 2), (1e-3, 1e-5, 6),
             (0.05, 1e-5, 3), (0.05, 1e-12, 12), (10.0, 1e-12, 20), (1e3, 1e-12, 31),
             (1.0, 1e-12, 31), (2.0 ** -30, 1.0, 1), (1e-2, 1e-5, 10), (1e-3, 1e-7, 16)]
    for input_scale, epsilon, bits in cases:
        length = int(rng.integers(2, 3 * max(tb.lanes, 4)))  # k > 63 needs L >= 3
        params = random_params(rng, length, input_scale=input_scale, epsilon=epsilon)
        await tb.run(random_values(rng, (3, length), bits=bits), params)
    required = {"k from the deviations", "k from epsilon", "k < 0", "k >= 0", "e >= 0", "e < 0",
                "k > 63", "e < -63"}
    assert required <= tb.branches, f"not covered: {required - tb.branches}"


@cocotb.test()
async def bad_params_raise_error(dut):
    """Every check of golden _layernorm_constants; the next good instruction clears error."""
    tb = TB(dut)
    await tb.start()
    rng = tb.rng
    length = 6
    params = random_params(rng, length, input_scale=1e-3)
    good = [int(v) for v in params[:5]]

    def with_(index, value):
        head = list(good)
        head[index] = value
        return head

    bad_heads = [with_(0, length + 1), with_(0, length - 1), with_(0, -length),
                 with_(1, (1 << 30) - 1), with_(1, INT32_MIN), with_(1, 0), with_(2, 1001),
                 with_(2, -1001), with_(2, INT32_MAX), with_(3, 32), with_(3, -1),
                 with_(4, 128), with_(4, -129)]
    for head in bad_heads:
        await tb.run(random_values(rng, (2, length)), params, head=head)
    await tb.run(random_values(rng, (2, length)), params)
    # The row length the instruction uses differs from params[0] (and from the row).
    await tb.run(random_values(rng, (1, length)), params, length=length + 1)
    # Edges that are still valid.
    for head in (with_(1, 1 << 30), with_(1, INT32_MAX), with_(2, 1000), with_(2, -1000),
                 with_(3, 0), with_(3, 31), with_(4, 127), with_(4, -128)):
        await tb.run(random_values(rng, (2, length)), params, head=head)
    await tb.no_stray_results()


@cocotb.test()
async def throughput(dut):
    """Without idle cycles or backpressure: one beat per cycle in each pass, 13 + levels cycles
    between passes 0 and 1 and 77 + levels between 1 and 2 (levels = ceil(log2(lanes)), the depth
    of the adder trees), results LayernormUnit.latency cycles after their beats."""
    tb = TB(dut, input_idle=0, output_stall=0)
    await tb.start()
    rng = tb.rng
    beats, rows = 20, 3  # pass 0 outlasts the draining of the previous row's pass 2
    length = beats * tb.lanes
    x = random_values(rng, (rows, length))
    layouts = [make_layout(rng, length, tb.lanes, "packed") for _ in range(rows)]
    await tb.run(x, random_params(rng, length, input_scale=1e-3), layouts=layouts)
    levels = (tb.lanes - 1).bit_length()
    # Per row: 3 passes of one beat a cycle, the gaps; then the last row's pipeline latency.
    expected = rows * (3 * beats + 13 + 77 + 2 * levels) + LayernormUnit.latency
    cocotb.log.info("%d rows of %d beats: %d cycles (expected %d)", rows, beats, tb.cycles,
                    expected)
    assert tb.cycles <= expected + 2, f"{tb.cycles} cycles, expected {expected}"


@cocotb.test()
async def longest_row(dut):
    """L = 65535 at the int32 extremes: S, L x_j and D at their full widths, Q near 2**62."""
    tb = TB(dut, input_idle=0.05, output_stall=0.05)
    await tb.start()
    rng = tb.rng
    length = (1 << 16) - 1
    x = rng.choice([INT32_MIN, INT32_MAX], (1, length)).astype(np.int32)
    x[0, : length // 2 + 1000] = INT32_MIN
    layouts = [make_layout(rng, length, tb.lanes, "offset")]
    await tb.run(x, random_params(rng, length, input_scale=1e-9), layouts=layouts)


@cocotb.test()
async def rows_overlap_under_heavy_backpressure(dut):
    """Rows back to back while results are rarely taken: the next row's pass 0 (and its new k)
    comes while the previous row's pass 2 is still stalled in the pipeline. Rows of many
    one-element beats alternate with packed rows, so a short pass 0 follows a full pipeline."""
    tb = TB(dut, input_idle=0, output_stall=0.85)
    await tb.start()
    rng = tb.rng
    for length in (1, 2 * tb.lanes):
        params = random_params(rng, length, input_scale=float(10.0 ** rng.uniform(-5, 0)))
        rows = 12
        layouts = [make_layout(rng, length, tb.lanes, "packed") if r % 2 else
                   [[int(rng.integers(0, tb.lanes))] for _ in range(length)] for r in range(rows)]
        await tb.run(random_values(rng, (rows, length)), params, layouts=layouts)
