"""Seeded random NPU programs built with the golden ISA, for comparing backends.

:func:`random_program` picks one to three kernels (a tiled matmul of random shape; a padded,
strided convolution tile with requantisation in either mode, a random clip and max pooling; a
block of vector operations: residual add, max, GELU, softmax and layernorm rows of random
length) with random tensors and returns the DRAM writes and the instructions. The programs are
valid: each kernel fits the configuration's SRAMs and finishes; the golden machine defines what
each must produce.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from golden import intops, quant
from golden.config import NpuConfig
from golden.isa import Instruction, Memory, Opcode, RequantMode, VectorFunct
from golden.machine import parameter_rows
from sw.matmul import compile_matmul, pack_weights

I, O = Instruction, Opcode
SP, ACC = Memory.SCRATCHPAD, Memory.ACCUMULATOR


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class RandomProgram:
    config: NpuConfig
    rng: np.random.Generator
    first_address: int = 0x1000
    base: int = 0x1000
    writes: list[tuple[int, bytes]] = field(default_factory=list)
    instructions: list[Instruction] = field(default_factory=list)
    kernels: list[str] = field(default_factory=list)

    def tensor(self, array) -> int:
        data = np.ascontiguousarray(array).tobytes()
        address = self.base
        self.base = _ceil_div(self.base + len(data) + 1, 64) * 64
        self.writes.append((address, data))
        return address

    def region(self, size: int) -> int:
        address = self.base
        self.base = _ceil_div(self.base + size + 1, 64) * 64
        return address

    @property
    def dram_bytes(self) -> int:
        return self.base


def add_matmul(p: RandomProgram):
    cfg, rng = p.config, p.rng
    m = int(rng.integers(1, 3 * cfg.rows + 6))
    k = int(rng.integers(1, 3 * cfg.rows + 1))
    n = int(rng.integers(1, 3 * cfg.cols + 1))
    x = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-128, 128, (k, n), dtype=np.int8)
    x_addr, w_addr, y_addr = p.tensor(x), p.tensor(pack_weights(cfg, w)), p.region(m * n * 4)
    program = compile_matmul(cfg, m=m, k=k, n=n, x_addr=x_addr, w_addr=w_addr, y_addr=y_addr,
                             overlap=bool(rng.integers(2)))
    p.instructions += program[:-1]  # without FINISH
    p.instructions.append(I(O.SYNC))
    p.kernels.append(f"matmul {m}x{k}x{n}")


def add_conv(p: RandomProgram):
    """NHWC image (H, W, rows channels) * kernel (kh x kw taps, cols outputs), stride, padding;
    bias; requantise (fp32 or fixed) with a random clip; max of neighbouring outputs; store
    both the int32 accumulators and the int8 results."""
    cfg, rng = p.config, p.rng
    r, c = cfg.rows, cfg.cols
    kernel = int(rng.choice([1, 3]))
    stride = int(rng.integers(1, 3))
    pad = int(rng.integers(0, 2)) if kernel == 3 else 0
    h, w = int(rng.integers(kernel, 7)), int(rng.integers(kernel, 7))
    ph, pw = h + 2 * pad, w + 2 * pad
    oh, ow = (ph - kernel) // stride + 1, (pw - kernel) // stride + 1
    taps = kernel * kernel
    image = rng.integers(-128, 128, (h, w, r), dtype=np.int8)
    weights = rng.integers(-128, 128, (taps, c, r), dtype=np.int8)
    bias = rng.integers(-3000, 3000, c).astype(np.int32)
    fixed = bool(rng.integers(2))
    real_scales = rng.uniform(2e-4, 5e-3, c)
    if fixed:
        pairs = [quant.quantize_multiplier(float(s)) for s in real_scales]
        params = parameter_rows(cfg, np.array([m for m, _ in pairs], np.int32),
                                np.array([s for _, s in pairs], np.int32))
    else:
        params = parameter_rows(cfg, real_scales.astype(np.float32))
    image_addr, weights_addr = p.tensor(image), p.tensor(weights)
    bias_addr, params_addr = p.tensor(bias), p.tensor(params)
    outputs = oh * ow
    out_rows = _ceil_div(c, r)                  # scratchpad rows per output pixel
    acc_out, pool_out = p.region(outputs * c * 4), p.region(outputs * out_rows * r)
    w_row = ph * pw                             # scratchpad: padded image, weights, results
    q_row = w_row + taps * c
    pool_row = q_row + outputs * out_rows
    param_row = outputs                         # accumulator: outputs, then parameters
    zp = int(rng.integers(-20, 20))
    clip_lo, clip_hi = [(-128, 127), (zp, 127), (zp, min(127, zp + 60))][int(rng.integers(3))]
    pad_value = int(rng.integers(-128, 128))
    p.instructions += [
        I(O.LOAD, mem=SP, sram_addr=0, dram_addr=image_addr, rows=h, cols=w, elem_len=r,
          dram_row_stride=w * r, dram_elem_stride=r, pad_top=pad, pad_bottom=pad,
          pad_left=pad, pad_right=pad, pad_value=pad_value),
        I(O.LOAD, mem=SP, sram_addr=w_row, dram_addr=weights_addr, rows=1, cols=taps * c,
          elem_len=r, dram_row_stride=0, dram_elem_stride=r),
        I(O.LOAD, mem=ACC, sram_addr=0, dram_addr=bias_addr, rows=1, cols=outputs, elem_len=c,
          dram_row_stride=0, dram_elem_stride=0),
        I(O.LOAD, mem=ACC, sram_addr=param_row, dram_addr=params_addr, rows=1,
          cols=params.shape[0], elem_len=c, dram_row_stride=0, dram_elem_stride=c * 4,
          push_next=1),
    ]
    for tap in range(taps):
        dy, dx = divmod(tap, kernel)
        p.instructions.append(I(
            O.MATMUL, accumulate=1, load_weights=1, weight_addr=w_row + tap * c, outer_count=oh,
            inner_count=ow, input_addr=dy * pw + dx, input_outer_stride=stride * pw,
            input_inner_stride=stride, acc_addr=0, acc_outer_stride=ow, acc_inner_stride=1,
            pop_prev=tap == 0))
    pool_count = max(1, outputs - 1)
    p.instructions += [
        I(O.VECTOR, funct=VectorFunct.REQUANT, mode=RequantMode.FIXED if fixed else RequantMode.FP32,
          outer_count=1, inner_count=outputs, a_addr=0, a_inner_stride=1, out_addr=q_row,
          out_inner_stride=out_rows, length=c, param_addr=param_row, out_zp=zp, clip_lo=clip_lo,
          clip_hi=clip_hi),
        I(O.VECTOR, funct=VectorFunct.MAX, outer_count=1, inner_count=pool_count, a_addr=q_row,
          a_inner_stride=out_rows, b_addr=q_row + out_rows * min(1, outputs - 1),
          b_inner_stride=out_rows, out_addr=pool_row, out_inner_stride=out_rows, length=c,
          push_next=1),
        I(O.STORE, mem=ACC, sram_addr=0, dram_addr=acc_out, rows=1, cols=outputs, elem_len=c,
          dram_row_stride=0, dram_elem_stride=c * 4, pop_prev=1),
        I(O.STORE, mem=SP, sram_addr=q_row, dram_addr=pool_out, rows=1,
          cols=(outputs + pool_count) * out_rows, elem_len=r, dram_row_stride=0,
          dram_elem_stride=r),
        I(O.SYNC),
    ]
    p.kernels.append(f"conv {h}x{w} k{kernel} s{stride} p{pad} {'fixed' if fixed else 'fp32'}")


def add_vector_block(p: RandomProgram):
    """Residual add (fp32 mode, signed or unsigned codes), GELU, softmax and layernorm rows."""
    cfg, rng = p.config, p.rng
    r, c = cfg.rows, cfg.cols
    groups = int(rng.integers(1, 6))
    add_len = int(rng.integers(1, 3 * r + 1))
    add_rows = _ceil_div(add_len, r)
    a = rng.integers(-128, 128, (groups * add_rows, r), dtype=np.int8)
    b = rng.integers(-128, 128, (groups * add_rows, r), dtype=np.int8)
    sa, sb, f = quant.add_fp32_params(a_scale=float(rng.uniform(0.01, 0.05)), a_zero_point=3,
                                      b_scale=float(rng.uniform(0.01, 0.05)), b_zero_point=-7,
                                      c_scale=0.04, c_zero_point=1)
    row_len = int(rng.integers(2, min(cfg.vector_max_length, 6 * c) + 1))
    row_acc = _ceil_div(row_len, c)
    row_out = _ceil_div(row_len, r)
    nrows = int(rng.integers(1, 4))
    logits = rng.integers(-4000, 4000, (nrows, row_acc * c)).astype(np.int32)
    gamma = rng.uniform(0.5, 1.5, row_len)
    beta = rng.uniform(-0.5, 0.5, row_len)
    ln = intops.layernorm_params(input_scale=0.01, gamma=gamma, beta=beta, output_scale=0.05,
                                 output_zero_point=2)
    k = intops.LAYERNORM_CONST_COUNT
    add_params = parameter_rows(cfg, np.array([sa, sb, f], np.float32))
    softmax_params = parameter_rows(cfg, intops.softmax_params(
        input_scale=0.01, output_scale=1 / 256, output_zero_point=-128))
    gelu_params = parameter_rows(cfg, intops.gelu_params(input_scale=0.002, output_scale=0.05,
                                                         output_zero_point=-10))
    ln_params = parameter_rows(cfg, ln[:k], ln[k:k + row_len], ln[k + row_len:])
    params = np.concatenate([add_params, softmax_params, gelu_params, ln_params])
    p_add, p_soft = 0, add_params.shape[0]
    p_gelu = p_soft + softmax_params.shape[0]
    p_ln = p_gelu + gelu_params.shape[0]
    a_addr, b_addr, l_addr = p.tensor(a), p.tensor(b), p.tensor(logits)
    params_addr = p.tensor(params)
    zeros_addr = p.tensor(np.zeros(r, np.int8))
    # Scratchpad: a, b, add out, then softmax/gelu/layernorm outputs; accumulator: logits, params.
    sa_row, sb_row, add_row = 0, groups * add_rows, 2 * groups * add_rows
    soft_row = add_row + groups * add_rows
    gelu_row = soft_row + nrows * row_out
    ln_row = gelu_row + nrows * row_out
    end_row = ln_row + nrows * row_out
    param_row = nrows * row_acc
    unsigned = int(rng.integers(2))
    out = p.region(end_row * r)
    p.instructions += [
        I(O.LOAD, mem=SP, sram_addr=sa_row, dram_addr=a_addr, rows=1, cols=a.shape[0],
          elem_len=r, dram_row_stride=0, dram_elem_stride=r),
        I(O.LOAD, mem=SP, sram_addr=sb_row, dram_addr=b_addr, rows=1, cols=b.shape[0],
          elem_len=r, dram_row_stride=0, dram_elem_stride=r),
        I(O.LOAD, mem=ACC, sram_addr=0, dram_addr=l_addr, rows=1, cols=nrows * row_acc,
          elem_len=c, dram_row_stride=0, dram_elem_stride=c * 4),
        # The outputs fill their last rows only in part: clear them first (an SRAM keeps what
        # earlier programs left, and the whole rows are stored).
        I(O.LOAD, mem=SP, sram_addr=add_row, dram_addr=zeros_addr, rows=1,
          cols=end_row - add_row, elem_len=r, dram_row_stride=0, dram_elem_stride=0),
        I(O.LOAD, mem=ACC, sram_addr=param_row, dram_addr=params_addr, rows=1,
          cols=params.shape[0], elem_len=c, dram_row_stride=0, dram_elem_stride=c * 4,
          push_next=1),
        I(O.VECTOR, funct=VectorFunct.ADD, mode=RequantMode.FP32, outer_count=1,
          inner_count=groups, a_addr=sa_row, a_inner_stride=add_rows, b_addr=sb_row,
          b_inner_stride=add_rows, out_addr=add_row, out_inner_stride=add_rows, length=add_len,
          param_addr=param_row + p_add, a_unsigned=unsigned, b_unsigned=unsigned,
          out_unsigned=unsigned, clip_lo=-128, clip_hi=127, pop_prev=1),
        I(O.VECTOR, funct=VectorFunct.SOFTMAX, outer_count=1, inner_count=nrows, a_addr=0,
          a_inner_stride=row_acc, out_addr=soft_row, out_inner_stride=row_out, length=row_len,
          param_addr=param_row + p_soft, clip_lo=-128, clip_hi=127),
        I(O.VECTOR, funct=VectorFunct.GELU, outer_count=1, inner_count=nrows, a_addr=0,
          a_inner_stride=row_acc, out_addr=gelu_row, out_inner_stride=row_out, length=row_len,
          param_addr=param_row + p_gelu, clip_lo=-128, clip_hi=127),
        I(O.VECTOR, funct=VectorFunct.LAYERNORM, outer_count=1, inner_count=nrows, a_addr=0,
          a_inner_stride=row_acc, out_addr=ln_row, out_inner_stride=row_out, length=row_len,
          param_addr=param_row + p_ln, clip_lo=-128, clip_hi=127, push_next=1),
        I(O.STORE, mem=SP, sram_addr=0, dram_addr=out, rows=1, cols=end_row, elem_len=r,
          dram_row_stride=0, dram_elem_stride=r, pop_prev=1),
        I(O.SYNC),
    ]
    p.kernels.append(f"vector add {groups}x{add_len}, rows {nrows}x{row_len}")


KERNELS = (add_matmul, add_conv, add_vector_block)


def random_program(config: NpuConfig, seed: int) -> RandomProgram:
    """One to three random kernels, then FINISH."""
    p = RandomProgram(config, np.random.default_rng(seed))
    for _ in range(int(p.rng.integers(1, 4))):
        KERNELS[int(p.rng.integers(len(KERNELS)))](p)
    p.instructions.append(I(O.FINISH))
    return p
