"""Shared helpers for the tests: running hand-assembled programs on the golden machine."""

from __future__ import annotations

import numpy as np

from golden.isa import Instruction, encode_program
from golden.machine import Machine, RunResult

PROGRAM_ADDR = 0x100


def run_program(machine: Machine, program: list[Instruction], *, address: int = PROGRAM_ADDR) -> RunResult:
    machine.write_dram(address, encode_program(program, instruction_bytes=machine.config.instruction_bytes))
    return machine.run(program_address=address, instruction_count=len(program))


def read_array(machine: Machine, address: int, shape, dtype) -> np.ndarray:
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer(machine.read_dram(address, size), dtype).reshape(shape).copy()


def as_int32_bits(values: np.ndarray) -> np.ndarray:
    """float32 values as the int32 words the accumulator holds for parameters."""
    return np.ascontiguousarray(values, dtype=np.float32).view(np.int32)
