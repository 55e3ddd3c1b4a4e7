"""Shared pieces of the cocotb testbenches: configuration, seeds, payload packing, clocking."""

from __future__ import annotations

import json
import os
from collections import deque

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge, Timer

from golden.config import NpuConfig

CLOCK_NS = 10


def config_from_env() -> NpuConfig:
    return NpuConfig(**json.loads(os.environ["NPU_CONFIG"]))


def seeded_rng() -> np.random.Generator:
    seed = int(os.environ.get("NPU_SEED", "1"))
    cocotb.log.info("random seed %d (rerun with NPU_SEED=%d)", seed, seed)
    return np.random.default_rng(seed)


def pack(values, width: int) -> int:
    """Lanes (lane 0 in the low bits) of ``width`` bits each as one integer."""
    word = 0
    for lane, value in enumerate(values):
        word |= (int(value) & ((1 << width) - 1)) << (lane * width)
    return word


def unpack_signed(word: int, width: int, lanes: int) -> np.ndarray:
    mask = (1 << width) - 1
    values = [(word >> (lane * width)) & mask for lane in range(lanes)]
    return np.array([v - (1 << width) if v >> (width - 1) else v for v in values], np.int64)


class ClockedTB:
    """Owns the clock and reset; the block testbenches derive from it."""

    def __init__(self, dut):
        self.dut = dut
        self.config = config_from_env()
        self.rng = seeded_rng()

    async def start(self):
        cocotb.start_soon(Clock(self.dut.clk, CLOCK_NS, unit="ns").start())
        self.dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        await FallingEdge(self.dut.clk)

    async def stream_through(self, payloads, *, input_idle: float, output_stall: float) -> list[int]:
        """Send ``payloads`` into ``inputs`` and collect as many ``outputs`` words, in order, with
        random idle cycles on the input and random backpressure on the output."""
        dut = self.dut
        pending = deque(payloads)
        words = []
        cycles = 0
        while len(words) < len(payloads):
            await FallingEdge(dut.clk)
            cycles += 1
            assert cycles < 20 * len(payloads) + 100, "the pipeline stopped producing outputs"
            send = bool(pending) and self.rng.random() >= input_idle
            if send:
                dut.inputs__payload.value = pending[0]
            dut.inputs__valid.value = int(send)
            ready = self.rng.random() >= output_stall
            dut.outputs__ready.value = int(ready)
            await Timer(1, unit="ns")
            if send and dut.inputs__ready.value:
                pending.popleft()
            if ready and dut.outputs__valid.value:
                words.append(dut.outputs__payload.value.to_unsigned())
        return words


def decode_value_and_error(words) -> tuple[np.ndarray, np.ndarray]:
    """Lane outputs laid out as {value: signed 8, error: 1}."""
    values = [w & 0xFF for w in words]
    return (np.array([v - 256 if v >= 128 else v for v in values], np.int8),
            np.array([w >> 8 & 1 for w in words]))


class LaneTB(ClockedTB):
    """A one-lane pipeline with ``inputs``/``outputs`` streams of {value, error} results."""

    def __init__(self, dut, *, input_idle=0.2, output_stall=0.2):
        super().__init__(dut)
        self.input_idle, self.output_stall = input_idle, output_stall
        dut.inputs__valid.value = 0
        dut.outputs__ready.value = 0

    async def run_words(self, payloads) -> tuple[np.ndarray, np.ndarray]:
        """(values, errors) for ``payloads``, in order."""
        words = await self.stream_through(payloads, input_idle=self.input_idle,
                                          output_stall=self.output_stall)
        return decode_value_and_error(words)
