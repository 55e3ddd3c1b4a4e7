"""cocotb testbench of rtl.systolic_array.SystolicArray against golden.quant.matmul."""

from __future__ import annotations

from collections import deque

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, Timer
from tb_common import CLOCK_NS, ClockedTB, pack, unpack_signed

from golden import quant


class TB(ClockedTB):
    """Drives weights and inputs with random idle cycles, takes every output (the array has no
    backpressure: it never stalls)."""

    def __init__(self, dut, *, input_idle: float):
        super().__init__(dut)
        self.input_idle = input_idle
        for name in ("weights__valid", "inputs__valid"):
            getattr(dut, name).value = 0

    async def run_tiles(self, tiles):
        """tiles: list of (x (M, rows) int8, w (rows, cols) int8). Returns the output rows per tile.

        Tile i uses bank i % 2; its weights shift in while tile i - 1 streams (double buffering),
        but only once tile i - 2, which used the same bank, has fully come out.
        """
        rows, cols = self.config.rows, self.config.cols
        dut = self.dut
        outputs = [[] for _ in tiles]
        inputs = deque()           # (tile, row vector)
        weight_beats = deque()     # (tile, column vector)
        loaded = [False] * len(tiles)
        next_weights = next_feed = received_tile = 0
        cycles = 0
        while received_tile < len(tiles):
            await FallingEdge(dut.clk)
            cycles += 1
            assert cycles < 100_000, "the array stopped producing outputs"
            # Tile i's weights go into bank i % 2 once tile i - 2 (same bank) is all out.
            if not weight_beats and next_weights < len(tiles) and received_tile >= next_weights - 1:
                w = tiles[next_weights][1]
                weight_beats.extend((next_weights, w[:, n]) for n in range(cols))
                next_weights += 1
            weight_valid = bool(weight_beats)
            if weight_valid:
                tile, column = weight_beats[0]
                dut.weights__payload.value = pack(column, 8) | (tile % 2) << (8 * rows)
            dut.weights__valid.value = int(weight_valid)
            # Tile i's inputs stream once its weights are in.
            if not inputs and next_feed < len(tiles) and loaded[next_feed]:
                inputs.extend((next_feed, row) for row in tiles[next_feed][0])
                next_feed += 1
            input_valid = bool(inputs) and self.rng.random() >= self.input_idle
            if input_valid:
                tile, row = inputs[0]
                dut.inputs__payload.value = pack(row, 8) | (tile % 2) << (8 * rows)
            dut.inputs__valid.value = int(input_valid)
            await Timer(1, unit="ns")
            if weight_valid:
                tile, _ = weight_beats.popleft()
                if not weight_beats or weight_beats[0][0] != tile:
                    loaded[tile] = True  # takes effect at the coming edge
            if input_valid:
                inputs.popleft()
            if dut.outputs__valid.value:
                word = dut.outputs__payload.value.to_unsigned()
                outputs[received_tile].append(unpack_signed(word, 32, cols))
                if len(outputs[received_tile]) == len(tiles[received_tile][0]):
                    received_tile += 1
        self.cycles = cycles
        return [np.array(o).astype(np.int32) for o in outputs]


def random_tiles(tb, count, *, extreme=False):
    rows, cols = tb.config.rows, tb.config.cols
    tiles = []
    for _ in range(count):
        m = int(tb.rng.integers(1, 3 * rows))
        if extreme:
            x = np.full((m, rows), -128, np.int8)
            w = np.full((rows, cols), -128, np.int8)
        else:
            x = tb.rng.integers(-128, 128, (m, rows), dtype=np.int8)
            w = tb.rng.integers(-128, 128, (rows, cols), dtype=np.int8)
        tiles.append((x, w))
    return tiles


async def check(tb, tiles):
    await tb.start()
    outputs = await tb.run_tiles(tiles)
    for index, ((x, w), got) in enumerate(zip(tiles, outputs, strict=True)):
        np.testing.assert_array_equal(got, quant.matmul(x, w), err_msg=f"tile {index}")


@cocotb.test()
async def random_tiles_with_idle_inputs(dut):
    tb = TB(dut, input_idle=0.3)
    await check(tb, random_tiles(tb, 6))


@cocotb.test()
async def back_to_back_tiles_at_full_rate(dut):
    tb = TB(dut, input_idle=0.0)
    tiles = random_tiles(tb, 4)
    await check(tb, tiles)
    rows = sum(len(x) for x, _ in tiles)
    dut._log.info("%d input rows in %d cycles", rows, tb.cycles)


@cocotb.test()
async def minus_128_products(dut):
    tb = TB(dut, input_idle=0.1)
    await check(tb, random_tiles(tb, 2, extreme=True))


@cocotb.test()
async def latency_is_rows_plus_cols(dut):
    tb = TB(dut, input_idle=0.0)
    await tb.start()
    rows, cols = tb.config.rows, tb.config.cols
    w = np.eye(rows, cols, dtype=np.int8)
    for n in range(cols):
        dut.weights__payload.value = pack(w[:, n], 8)
        dut.weights__valid.value = 1
        await FallingEdge(dut.clk)
    dut.weights__valid.value = 0
    dut.inputs__payload.value = pack(np.arange(1, rows + 1), 8)
    dut.inputs__valid.value = 1
    await FallingEdge(dut.clk)
    dut.inputs__valid.value = 0
    for cycle in range(1, 3 * (rows + cols)):  # noqa: B007 (read after the loop)
        await Timer(1, unit="ns")
        if dut.outputs__valid.value:
            break
        await FallingEdge(dut.clk)
    assert cycle == rows + cols, f"latency {cycle}, expected {rows + cols}"
    got = unpack_signed(dut.outputs__payload.value.to_unsigned(), 32, cols)
    np.testing.assert_array_equal(got, np.arange(1, rows + 1) @ w.astype(np.int64))
    await Timer(CLOCK_NS, unit="ns")
