"""Tiled int8 matmul programs: Y (M, N) int32 = X (M, K) int8 @ W (K, N) int8.

The first piece of the compiler. It tiles a matmul of any size onto the array, double-buffers
the scratchpad and accumulator tiles, and synchronises the three units with dependency tokens so
that loads of the next tile overlap the current tile's compute and the previous tile's store.

DRAM layout: X row-major (M, K); W packed by :func:`pack_weights` (weights are constants, so the
compiler lays them out in exactly the order one LOAD puts them in the scratchpad); Y row-major
(M, N) int32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from golden.config import NpuConfig
from golden.isa import Instruction, Memory, Opcode
from golden.quant import check_array, check_int

__all__ = ["MatmulPlan", "plan_matmul", "pack_weights", "compile_matmul"]

MAX_TILE_ROWS = 512  # rows streamed by one MATMUL (inner_count is a 10-bit field)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class MatmulPlan:
    m: int
    k: int
    n: int
    tile_m: int       # rows of X per tile
    k_chunks: int     # ceil(K / rows)
    n_tiles: int      # ceil(N / cols)

    @property
    def m_tiles(self) -> int:
        return _ceil_div(self.m, self.tile_m)


def plan_matmul(config: NpuConfig, *, m: int, k: int, n: int) -> MatmulPlan:
    """Tile sizes that fit two X tiles, two W tiles and two accumulator tiles on chip."""
    m = check_int("m", m, minimum=1)
    k = check_int("k", k, minimum=1)
    n = check_int("n", n, minimum=1)
    k_chunks = _ceil_div(k, config.rows)
    weight_rows = k_chunks * config.cols
    free = config.scratchpad_depth - 2 * weight_rows
    if free < 2 * k_chunks:
        k_max = config.scratchpad_depth // (2 * (config.cols + 1)) * config.rows
        raise ValueError(f"K must be at most {k_max} for the {config.name} scratchpad, not {k} "
                         f"(split K into several matmuls)")
    tile_max = min(m, MAX_TILE_ROWS, config.accumulator_depth // 2, free // (2 * k_chunks))
    tile_m = _ceil_div(m, _ceil_div(m, tile_max))  # balanced tiles, no small remainder tile
    return MatmulPlan(m=m, k=k, n=n, tile_m=tile_m, k_chunks=k_chunks,
                      n_tiles=_ceil_div(n, config.cols))


def pack_weights(config: NpuConfig, w: np.ndarray) -> np.ndarray:
    """W (K, N) int8 as tiles [n_tile][k_chunk][column][row] of (cols x rows), zero-padded."""
    check_array("w", w, np.int8, ndim=2)
    k, n = w.shape
    r, c = config.rows, config.cols
    kc, nt = _ceil_div(k, r), _ceil_div(n, c)
    padded = np.zeros((kc * r, nt * c), np.int8)
    padded[:k, :n] = w
    return np.ascontiguousarray(padded.reshape(kc, r, nt, c).transpose(2, 0, 3, 1))


def compile_matmul(config: NpuConfig, *, m: int, k: int, n: int, x_addr: int, w_addr: int,
                   y_addr: int, overlap: bool = True) -> list[Instruction]:
    """The instructions of a tiled matmul, ending with FINISH.

    With ``overlap=False`` every tile is fenced with SYNC: the same work with all units
    serialised, for measuring what double buffering gains.
    """
    plan = plan_matmul(config, m=m, k=k, n=n)
    r, c = config.rows, config.cols
    weight_rows = plan.k_chunks * c
    x_buffers = (2 * weight_rows, 2 * weight_rows + plan.tile_m * plan.k_chunks)
    w_buffers = (0, weight_rows)
    acc_buffers = (0, plan.tile_m)
    program: list[Instruction] = []
    step = 0
    for mt in range(plan.m_tiles):
        m0 = mt * plan.tile_m
        rows = min(plan.tile_m, m - m0)
        for nt in range(plan.n_tiles):
            n0 = nt * c
            cols = min(c, n - n0)
            x_buf, w_buf, acc_buf = x_buffers[mt % 2], w_buffers[step % 2], acc_buffers[step % 2]
            loads = []
            if nt == 0:  # X tile (k_chunk, row) -> x_buf + k_chunk * rows + row
                full = k // r
                if full:
                    loads.append(Instruction(
                        Opcode.LOAD, mem=Memory.SCRATCHPAD, sram_addr=x_buf,
                        dram_addr=x_addr + m0 * k, rows=full, cols=rows, elem_len=r,
                        dram_row_stride=r, dram_elem_stride=k))
                if k % r:
                    loads.append(Instruction(
                        Opcode.LOAD, mem=Memory.SCRATCHPAD, sram_addr=x_buf + full * rows,
                        dram_addr=x_addr + m0 * k + full * r, rows=1, cols=rows,
                        elem_len=k % r, dram_elem_stride=k))
            loads.append(Instruction(
                Opcode.LOAD, mem=Memory.SCRATCHPAD, sram_addr=w_buf,
                dram_addr=w_addr + nt * weight_rows * r, rows=plan.k_chunks, cols=c,
                elem_len=r, dram_row_stride=c * r, dram_elem_stride=r))
            waits = step >= 2 and overlap
            loads[0] = loads[0].replace(pop_next=int(waits))
            loads[-1] = loads[-1].replace(push_next=1)
            program += loads
            for kc in range(plan.k_chunks):
                program.append(Instruction(
                    Opcode.MATMUL, accumulate=int(kc > 0), load_weights=1,
                    weight_addr=w_buf + kc * c, outer_count=1, inner_count=rows,
                    input_addr=x_buf + kc * rows, input_inner_stride=1,
                    acc_addr=acc_buf, acc_inner_stride=1,
                    pop_prev=int(kc == 0), pop_next=int(kc == 0 and waits),
                    push_prev=int(kc == plan.k_chunks - 1 and overlap),
                    push_next=int(kc == plan.k_chunks - 1)))
            program.append(Instruction(
                Opcode.STORE, mem=Memory.ACCUMULATOR, sram_addr=acc_buf,
                dram_addr=y_addr + (m0 * n + n0) * 4, rows=rows, cols=1, elem_len=cols,
                dram_row_stride=n * 4, pop_prev=1, push_prev=int(overlap)))
            if not overlap:
                program.append(Instruction(Opcode.SYNC))
            step += 1
    program.append(Instruction(Opcode.FINISH))
    return program
