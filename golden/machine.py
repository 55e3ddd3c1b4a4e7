"""Instruction-level functional model of the whole NPU.

The machine holds DRAM (bytes), the scratchpad (int8 rows of ``rows`` lanes), the accumulator
(int32 rows of ``cols`` lanes), the weights held in the array, and the four dependency-token
queues between the load, compute and store units. :meth:`Machine.run` executes an encoded program
from DRAM exactly as the hardware does and returns a :class:`RunResult` with an error code, the
faulting instruction's index, the performance counters and a cycle estimate (DESIGN section 6).
It never lets a numpy or index error escape for a bad program.

Scheduling: instructions are dispatched in program order to their unit's queue; SYNC and FINISH
are barriers that wait for every earlier instruction. Inside a unit instructions run in order;
an instruction starts when the tokens it pops are available. Programs whose units touch the same
SRAM rows without tokens between them are racy and their result is undefined (as in hardware).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from . import quant
from .config import NpuConfig, get_config
from .isa import (
    DecodeError,
    ErrorCode,
    Instruction,
    Memory,
    Opcode,
    RequantMode,
    Unit,
    VectorFunct,
    decode,
    decode_program,
    unit_of,
)

__all__ = ["Machine", "RunResult", "Counters", "CostModel", "parameter_rows"]


class _Fault(Exception):
    def __init__(self, code: ErrorCode, message: str, *, index: int | None = None):
        super().__init__(message)
        self.code = code
        self.index = index


@dataclass
class Counters:
    """The hardware's performance counters (the same names as the CSRs)."""

    cycles: int = 0
    instructions: int = 0
    macs: int = 0                  # R * C per input row streamed through the array
    dram_read_bytes: int = 0       # tensor and program bytes read
    dram_write_bytes: int = 0
    busy_load: int = 0
    busy_compute: int = 0
    busy_store: int = 0
    busy_vector: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class RunResult:
    error: ErrorCode
    error_index: int | None
    message: str
    counters: Counters = field(default_factory=Counters)

    @property
    def ok(self) -> bool:
        return self.error == ErrorCode.NONE

    @property
    def cycles(self) -> int:
        return self.counters.cycles


@dataclass(frozen=True)
class CostModel:
    """Cycle estimate of each instruction (DESIGN section 6), for a config."""

    config: NpuConfig
    dma_latency: int = 24        # DRAM round trip plus descriptor set-up, per instruction
    vector_latency: int = 8      # vector unit pipeline depth
    row_op_passes: int = 3       # softmax/layernorm: max/sum pass, normalise pass, write pass

    def dma(self, *, bytes_moved: int, sram_rows: int) -> int:
        beats = -(-bytes_moved // self.config.axi_data_bytes)
        return self.dma_latency + max(beats, sram_rows)

    def matmul(self, *, rows: int, load_weights: bool) -> int:
        """Cycles the array is occupied: one input row a cycle; a new weight tile shifts in over
        cols cycles into the shadow buffer while the previous tile still streams."""
        return max(rows, self.config.cols if load_weights else 1)

    @property
    def matmul_drain(self) -> int:
        """Cycles from the last input row entering the array to its accumulator row written."""
        return self.config.rows + self.config.cols + 1

    def vector(self, *, funct: VectorFunct, groups: int, length: int) -> int:
        beats = groups * -(-length // self.config.vector_lanes)
        passes = self.row_op_passes if funct in (VectorFunct.SOFTMAX, VectorFunct.LAYERNORM) else 1
        return self.vector_latency + passes * beats


class Machine:
    """The golden NPU. ``dram_size`` bytes of DRAM, all memories zero at creation."""

    def __init__(self, config: NpuConfig | str = "default", *, dram_size: int = 1 << 24):
        self.config = get_config(config)
        dram_size = quant.check_int("dram size", dram_size, minimum=1,
                                    maximum=self.config.dram_size_max)
        self.dram = np.zeros(dram_size, np.uint8)
        self.scratchpad = np.zeros((self.config.scratchpad_depth, self.config.rows), np.int8)
        self.accumulator = np.zeros((self.config.accumulator_depth, self.config.cols), np.int32)
        self.weights = np.zeros((self.config.rows, self.config.cols), np.int8)  # w[k, n]
        self.cost = CostModel(self.config)

    # Host access --------------------------------------------------------------------------------

    def write_dram(self, address: int, data) -> None:
        data = np.frombuffer(bytes(data), np.uint8) if isinstance(data, (bytes, bytearray)) \
            else np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        self._check_dram_host(address, data.size)
        self.dram[address:address + data.size] = data

    def read_dram(self, address: int, size: int) -> bytes:
        self._check_dram_host(address, size)
        return self.dram[address:address + size].tobytes()

    def _check_dram_host(self, address, size):
        quant.check_int("address", address, minimum=0)
        quant.check_int("size", size, minimum=0)
        if address + size > self.dram.size:
            raise ValueError(f"Address range [{address:#x}, {address + size:#x}) must lie inside "
                             f"the {self.dram.size:#x}-byte DRAM")

    # Running ------------------------------------------------------------------------------------

    def run(self, *, program_address: int, instruction_count: int) -> RunResult:
        """Fetch ``instruction_count`` instructions at ``program_address`` and execute them."""
        quant.check_int("program address", program_address, minimum=0)
        quant.check_int("instruction count", instruction_count, minimum=1, maximum=(1 << 24))
        counters = Counters()
        state = _RunState(self, counters)
        size = instruction_count * self.config.instruction_bytes
        if program_address + size > self.dram.size:
            return RunResult(ErrorCode.BUS_ERROR, 0, "program fetch past the end of DRAM", counters)
        words = decode_program(self.read_dram(program_address, size),
                               instruction_bytes=self.config.instruction_bytes)
        counters.dram_read_bytes += size
        try:
            for index, word in enumerate(words):
                try:
                    instruction = decode(word)
                except DecodeError as error:
                    state.drain()  # the instructions dispatched before it still complete
                    raise _Fault(ErrorCode.ILLEGAL_INSTRUCTION, str(error), index=index) from None
                unit = unit_of(instruction.opcode)
                if unit is None:
                    state.barrier(index, instruction)
                    if instruction.opcode == Opcode.FINISH:
                        counters.cycles = state.time[0]
                        return RunResult(ErrorCode.NONE, None, "", counters)
                else:
                    state.check_tokens(index, instruction, unit)
                    state.queues[unit].append((index, instruction))
            state.drain()
            raise _Fault(ErrorCode.MISSING_FINISH, "the program ended without FINISH",
                         index=instruction_count)
        except _Fault as fault:
            counters.cycles = max(state.time)
            return RunResult(fault.code, fault.index, str(fault), counters)

    # Instruction semantics ----------------------------------------------------------------------

    def execute(self, instruction: Instruction, counters: Counters) -> int:
        """Execute one instruction; return its estimated cycles."""
        handler = {Opcode.LOAD: self._load, Opcode.STORE: self._store,
                   Opcode.MATMUL: self._matmul, Opcode.VECTOR: self._vector}[instruction.opcode]
        return handler(instruction, counters)

    def _memory(self, mem: int) -> np.ndarray:
        return self.accumulator if mem == Memory.ACCUMULATOR else self.scratchpad

    def _dma_shape(self, ins: Instruction):
        memory = self._memory(ins.mem)
        width = memory.shape[1]
        _require(ins.rows >= 1 and ins.cols >= 1, "rows and cols must be at least 1")
        _require(1 <= ins.elem_len <= width,
                 f"elem_len must be between 1 and the row width {width}, not {ins.elem_len}")
        return memory, width, memory.dtype.itemsize

    def _dram_indices(self, ins: Instruction, itemsize: int) -> np.ndarray:
        """Byte addresses (rows, cols, elem_len * itemsize) of a DMA's DRAM side."""
        y = np.arange(ins.rows, dtype=np.int64)[:, None, None] * ins.dram_row_stride
        x = np.arange(ins.cols, dtype=np.int64)[None, :, None] * ins.dram_elem_stride
        b = np.arange(ins.elem_len * itemsize, dtype=np.int64)[None, None, :]
        addresses = ins.dram_addr + y + x + b
        last = int(addresses.max())
        if last >= self.dram.size:
            raise _Fault(ErrorCode.BUS_ERROR, f"DRAM address {last:#x} is past the end of the "
                                              f"{self.dram.size:#x}-byte DRAM")
        return addresses

    def _load(self, ins: Instruction, counters: Counters) -> int:
        memory, width, itemsize = self._dma_shape(ins)
        height = ins.pad_top + ins.rows + ins.pad_bottom
        row_len = ins.pad_left + ins.cols + ins.pad_right
        lanes = slice(ins.lane_offset, ins.lane_offset + ins.elem_len)
        if ins.mem == Memory.ACCUMULATOR:
            _require(ins.lane_offset == 0 and not ins.merge,
                     "lane_offset and merge are for the scratchpad; an accumulator LOAD needs 0")
        _require(lanes.stop <= width, f"lane_offset + elem_len ({lanes.stop}) must not exceed "
                                      f"the row width {width}")
        _check_rows(memory, ins.sram_addr, height * row_len)
        addresses = self._dram_indices(ins, itemsize)
        raw = self.dram[addresses].reshape(ins.rows, ins.cols, ins.elem_len * itemsize)
        values = raw.copy().view(memory.dtype).reshape(ins.rows, ins.cols, ins.elem_len)
        block = np.full((height, row_len, width), ins.pad_value, memory.dtype)
        inner = np.zeros((ins.rows, ins.cols, width), memory.dtype)
        inner[:, :, lanes] = values
        block[ins.pad_top:ins.pad_top + ins.rows, ins.pad_left:ins.pad_left + ins.cols] = inner
        target = slice(ins.sram_addr, ins.sram_addr + height * row_len)
        if ins.merge:
            memory[target, lanes] = block.reshape(-1, width)[:, lanes]
        else:
            memory[target] = block.reshape(-1, width)
        counters.dram_read_bytes += raw.size
        return self.cost.dma(bytes_moved=raw.size, sram_rows=height * row_len)

    def _store(self, ins: Instruction, counters: Counters) -> int:
        memory, width, itemsize = self._dma_shape(ins)
        _check_rows(memory, ins.sram_addr, ins.rows * ins.cols)
        addresses = self._dram_indices(ins, itemsize)
        rows = memory[ins.sram_addr:ins.sram_addr + ins.rows * ins.cols, :ins.elem_len]
        data = np.ascontiguousarray(rows).view(np.uint8).reshape(addresses.shape)
        self.dram[addresses.reshape(-1)] = data.reshape(-1)  # later elements win on overlap
        counters.dram_write_bytes += data.size
        return self.cost.dma(bytes_moved=data.size, sram_rows=ins.rows * ins.cols)

    def _matmul(self, ins: Instruction, counters: Counters) -> int:
        rows, cols = self.config.rows, self.config.cols
        inputs = _walk(ins, "input")
        accs = _walk(ins, "acc")
        _check_rows(self.scratchpad, int(inputs.max()), 1)
        _check_rows(self.accumulator, int(accs.max()), 1)
        if ins.load_weights:
            _check_rows(self.scratchpad, ins.weight_addr, cols)
            self.weights = self.scratchpad[ins.weight_addr:ins.weight_addr + cols].T.copy()
        products = self.scratchpad[inputs].astype(np.int64) @ self.weights.astype(np.int64)
        if ins.accumulate:
            total = self.accumulator.astype(np.int64)
            np.add.at(total, accs, products)
            self.accumulator[:] = quant.wrap_int32(total)
        else:
            last = {int(a): i for i, a in enumerate(accs)}  # sequential: the last step wins
            steps = np.fromiter(last.values(), np.int64)
            self.accumulator[accs[steps]] = quant.wrap_int32(products[steps])
        counters.macs += inputs.size * rows * cols
        return self.cost.matmul(rows=inputs.size, load_weights=bool(ins.load_weights))

    def _vector(self, ins: Instruction, counters: Counters) -> int:
        try:
            funct = VectorFunct(ins.funct)
        except ValueError:
            raise _Fault(ErrorCode.ILLEGAL_INSTRUCTION,
                         f"VECTOR funct must be one of {[f.name for f in VectorFunct]}, "
                         f"not {ins.funct}") from None
        _require(ins.length >= 1, "VECTOR length must be at least 1")
        _require(ins.clip_lo <= ins.clip_hi,
                 f"clip_lo ({ins.clip_lo}) must not exceed clip_hi ({ins.clip_hi})")
        _require(ins.out_lane < self.config.rows,
                 f"out_lane must be below the scratchpad width {self.config.rows}, not {ins.out_lane}")
        if funct in (VectorFunct.SOFTMAX, VectorFunct.LAYERNORM):
            _require(ins.length <= self.config.vector_max_length,
                     f"length must be at most vector_max_length "
                     f"{self.config.vector_max_length}, not {ins.length}")
        mode = RequantMode(ins.mode)
        _require(not ins.bias or (funct == VectorFunct.REQUANT and mode == RequantMode.FP32),
                 "bias is only for REQUANT in fp32 mode")
        a_rows, out_rows = _walk(ins, "a"), _walk(ins, "out")
        length = ins.length
        # Every row the instruction touches is checked before any parameter value: a, b, out,
        # then the parameter rows (the order the hardware checks them in).
        if funct in (VectorFunct.ADD, VectorFunct.MAX):
            a = _gather(self.scratchpad, a_rows, 0, length)
            b = _gather(self.scratchpad, _walk(ins, "b"), 0, length)
            _flat_indices(self.scratchpad, out_rows, ins.out_lane, length)
            out = self._elementwise(funct, mode, ins, a, b)
        else:
            acc = _gather(self.accumulator, a_rows, 0, length)
            _flat_indices(self.scratchpad, out_rows, ins.out_lane, length)
            out = self._from_accumulator(funct, mode, ins, acc)
        out = np.clip(out.astype(np.int64), ins.clip_lo, ins.clip_hi).astype(np.int8)
        _scatter(self.scratchpad, out_rows, ins.out_lane, out)
        return self.cost.vector(funct=funct, groups=a_rows.size, length=length)

    def _params(self, ins: Instruction, *sections: int) -> list[np.ndarray]:
        """Parameter sections from the accumulator, each starting on a new row at param_addr."""
        row, result = ins.param_addr, []
        for count in sections:
            values = _gather(self.accumulator, np.array([row]), 0, count)[0]
            result.append(values)
            row += -(-count // self.config.cols)
        return result

    def _elementwise(self, funct, mode, ins, a, b) -> np.ndarray:
        if funct == VectorFunct.MAX:
            return np.maximum(a, b)
        if mode == RequantMode.FP32:
            (consts,) = self._params(ins, 3)
            exponent = (consts.view(np.uint32) >> 23) & 0xFF
            fraction = consts.view(np.uint32) & 0x7FFFFF
            _require(bool(np.all((consts[:2] >= 0) & (exponent[:2] > 0) & (exponent[:2] < 0xFF))),
                     "ADD scales SA and SB must be positive normal float32 values")
            _require(bool(exponent[2] < 0xFF and (exponent[2] > 0 or fraction[2] == 0)),
                     "ADD offset F must be zero or a normal float32 value")
            sa, sb, f = consts.view(np.float32)
            a_raw = quant.int8_to_uint8(a) if ins.a_unsigned else a
            b_raw = quant.int8_to_uint8(b) if ins.b_unsigned else b
            qmin, qmax = (0, 255) if ins.out_unsigned else (-128, 127)
            y = quant.add_fp32(a_raw, b_raw, sa, sb, f, qmin=qmin, qmax=qmax)
            return y - 128 if ins.out_unsigned else y
        (p,) = self._params(ins, 9)
        _require(0 <= p[2] <= 24, f"ADD left shift must be between 0 and 24, not {p[2]}")
        _require(all(-31 <= s <= 30 for s in p[4::2]) and all(m >= 0 for m in p[3::2]),
                 "ADD fixed-mode multipliers must be non-negative and shifts between -31 and 30")
        _require(all(-128 <= z <= 127 for z in p[:2]), "ADD zero points must be int8")
        return quant.add_fixed(a, b, a_zero_point=int(p[0]), b_zero_point=int(p[1]),
                               c_zero_point=ins.out_zp, left_shift=int(p[2]),
                               a_multiplier=int(p[3]), a_shift=int(p[4]),
                               b_multiplier=int(p[5]), b_shift=int(p[6]),
                               out_multiplier=int(p[7]), out_shift=int(p[8]))

    def _from_accumulator(self, funct, mode, ins, acc) -> np.ndarray:
        length = ins.length
        if funct == VectorFunct.REQUANT:
            if mode == RequantMode.FP32:
                bits, *bias = self._params(ins, length, *([length] if ins.bias else []))
                exponent = (bits.view(np.uint32) >> 23) & 0xFF
                _require(bool(np.all((bits >= 0) & (exponent > 0) & (exponent < 0xFF))),
                         "REQUANT scales must be positive normal float32 values")
                scale = bits.view(np.float32)
                if bias:  # the layer's bias, int32 with wrap-around like the accumulator
                    acc = quant.wrap_int32(acc.astype(np.int64) + bias[0])
                return quant.requantize_fp32(acc, scale, zero_point=ins.out_zp)
            multiplier, shift = self._params(ins, length, length)
            _require(bool(np.all((shift >= -31) & (shift <= 30)) and np.all(multiplier >= 0)),
                     "REQUANT multipliers must be non-negative and shifts between -31 and 30")
            return quant.requantize_fixed(acc, multiplier, shift, zero_point=ins.out_zp)
        from . import intops

        try:
            if funct == VectorFunct.GELU:
                (p,) = self._params(ins, intops.GELU_PARAM_COUNT)
                return intops.gelu(acc, p)
            if funct == VectorFunct.SOFTMAX:
                (p,) = self._params(ins, intops.SOFTMAX_PARAM_COUNT)
                return intops.softmax(acc, p)
            consts, gamma, beta = self._params(ins, intops.LAYERNORM_CONST_COUNT, length, length)
            return intops.layernorm(acc, np.concatenate([consts, gamma, beta]))
        except (ValueError, TypeError) as error:
            raise _Fault(ErrorCode.ILLEGAL_INSTRUCTION, f"{funct.name}: {error}") from None


class _RunState:
    """Queues, tokens and the per-unit timeline of one run."""

    # (from unit, to unit) for each token flag of an instruction executing on a unit
    NEIGHBOURS = {Unit.LOAD: (None, Unit.COMPUTE), Unit.COMPUTE: (Unit.LOAD, Unit.STORE),
                  Unit.STORE: (Unit.COMPUTE, None)}

    def __init__(self, machine: Machine, counters: Counters):
        self.machine = machine
        self.counters = counters
        self.queues = {unit: deque() for unit in Unit}
        self.tokens = {(a, b): deque() for a in Unit for b in Unit if abs(a - b) == 1}
        self.time = [0, 0, 0]
        self.results_ready = 0  # when the array's last MATMUL has drained into the accumulator

    def check_tokens(self, index: int, ins: Instruction, unit: Unit):
        prev, nxt = self.NEIGHBOURS[unit]
        if (prev is None and (ins.pop_prev or ins.push_prev)) or \
                (nxt is None and (ins.pop_next or ins.push_next)):
            self.drain()
            raise _Fault(ErrorCode.ILLEGAL_INSTRUCTION,
                         f"{ins.opcode.name} runs on the {unit.name.lower()} unit, which has no "
                         f"{'previous' if prev is None else 'next'} unit to exchange tokens with",
                         index=index)

    def barrier(self, index: int, ins: Instruction):
        if ins.pop_prev or ins.pop_next or ins.push_prev or ins.push_next:
            self.drain()
            raise _Fault(ErrorCode.ILLEGAL_INSTRUCTION, f"{ins.opcode.name} takes no token flags",
                         index=index)
        self.drain()
        self.time = [max(self.time + [self.results_ready])] * 3
        self.counters.instructions += 1

    def drain(self):
        """Run the queued instructions until all are done; raise on a deadlock."""
        while any(self.queues.values()):
            ready = [unit for unit in Unit if self.queues[unit] and self._can_start(unit)]
            if not ready:
                blocked = min(self.queues[u][0][0] for u in Unit if self.queues[u])
                raise _Fault(ErrorCode.DEADLOCK,
                             f"instruction {blocked} waits for a token that never comes",
                             index=blocked)
            unit = min(ready, key=lambda u: self.queues[u][0][0])
            self._step(unit)

    def _flags(self, unit: Unit, ins: Instruction):
        prev, nxt = self.NEIGHBOURS[unit]
        pops = [(other, unit) for other, flag in ((prev, ins.pop_prev), (nxt, ins.pop_next)) if flag]
        pushes = [(unit, other) for other, flag in ((prev, ins.push_prev), (nxt, ins.push_next))
                  if flag]
        return pops, pushes

    def _can_start(self, unit: Unit) -> bool:
        pops, _ = self._flags(unit, self.queues[unit][0][1])
        return all(self.tokens[q] for q in pops)

    def _step(self, unit: Unit):
        index, ins = self.queues[unit].popleft()
        pops, pushes = self._flags(unit, ins)
        start = max([self.time[unit]] + [self.tokens[q].popleft() for q in pops])
        try:
            cycles = self.machine.execute(ins, self.counters)
        except _Fault as fault:
            fault.index = index
            raise
        except (ValueError, TypeError) as error:  # e.g. a bad parameter read from SRAM
            raise _Fault(ErrorCode.ILLEGAL_INSTRUCTION, f"{ins.opcode.name}: {error}",
                         index=index) from None
        if ins.opcode == Opcode.VECTOR:  # it reads the accumulator: wait for the array to drain
            start = max(start, self.results_ready)
        end = start + cycles
        self.time[unit] = end
        if ins.opcode == Opcode.MATMUL:
            self.results_ready = end = end + self.machine.cost.matmul_drain
        setattr(self.counters, f"busy_{unit.name.lower()}",
                getattr(self.counters, f"busy_{unit.name.lower()}") + cycles)
        if ins.opcode == Opcode.VECTOR:
            self.counters.busy_vector += cycles
        self.counters.instructions += 1
        for q in pushes:
            self.tokens[q].append(end)


# Helpers ------------------------------------------------------------------------------------------

def _require(condition: bool, message: str):
    if not condition:
        raise _Fault(ErrorCode.ILLEGAL_INSTRUCTION, message)


def _walk(ins: Instruction, prefix: str) -> np.ndarray:
    """SRAM rows visited by a 2D walk: addr + o * outer_stride + i * inner_stride."""
    _require(ins.outer_count >= 1 and ins.inner_count >= 1,
             "outer_count and inner_count must be at least 1")
    o = np.arange(ins.outer_count, dtype=np.int64)[:, None] * getattr(ins, f"{prefix}_outer_stride")
    i = np.arange(ins.inner_count, dtype=np.int64)[None, :] * getattr(ins, f"{prefix}_inner_stride")
    return (getattr(ins, f"{prefix}_addr") + o + i).reshape(-1)


def _check_rows(memory: np.ndarray, first: int, count: int):
    if first + count > memory.shape[0]:
        name = "scratchpad" if memory.dtype == np.int8 else "accumulator"
        raise _Fault(ErrorCode.SRAM_OUT_OF_RANGE,
                     f"{name} rows [{first}, {first + count}) exceed its depth {memory.shape[0]}")


def parameter_rows(config: NpuConfig | str, *sections) -> np.ndarray:
    """Parameter sections as accumulator rows (int32, ``cols`` lanes), each section starting on a
    new row: what ``VECTOR`` reads from ``param_addr`` on."""
    cols = get_config(config).cols
    rows = []
    for section in sections:
        values = np.asarray(section).reshape(-1)
        if values.dtype == np.float32:  # float32 parameters are stored as their bit patterns
            values = values.view(np.int32)
        if values.dtype.kind not in "iu":
            raise TypeError(f"Parameter sections must be integer or float32 arrays, "
                            f"not {values.dtype}")
        values = values.astype(np.int32)
        block = np.zeros(-(-values.size // cols) * cols, np.int32)
        block[:values.size] = values
        rows.append(block.reshape(-1, cols))
    return np.concatenate(rows) if rows else np.zeros((0, cols), np.int32)


def _flat_indices(memory: np.ndarray, rows: np.ndarray, lane: int, length: int) -> np.ndarray:
    """Flat element indices of ``length`` elements from (row, lane) for each row: element j of a
    group lies in row + (lane + j) // width, lane (lane + j) % width."""
    width = memory.shape[1]
    indices = rows[:, None] * width + lane + np.arange(length, dtype=np.int64)[None, :]
    if indices.size and int(indices.max()) >= memory.size:
        _check_rows(memory, int(indices.max()) // width, 1)
    return indices


def _gather(memory: np.ndarray, rows: np.ndarray, lane: int, length: int) -> np.ndarray:
    return memory.reshape(-1)[_flat_indices(memory, rows, lane, length)]


def _scatter(memory: np.ndarray, rows: np.ndarray, lane: int, values: np.ndarray):
    memory.reshape(-1)[_flat_indices(memory, rows, lane, values.shape[1])] = values
