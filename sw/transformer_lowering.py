"""Lowering of the transformer layers: the channel-major projection, attention, layernorm, GELU.

All of them need a square array (``rows == cols``): an accumulator row then holds exactly the
lanes of one scratchpad row, so rows of both memories map one to one.

- **Channel-major projection** (the V that ``P @ V`` reads): ``V^T = W^T X^T`` with the roles of
  the operands swapped. A tile of ``cols`` tokens of X is the weight tile, the rows of ``W^T``
  (one per output channel, a constant) stream through the array, and every accumulator row is
  one output channel over the tile's tokens. No transpose anywhere, on the host or in DRAM.
- **Attention**, per (image, head, query tile): ``Q K^T`` into accumulator rows on top of the
  host's additive mask, the integer SOFTMAX into int8 probabilities in the scratchpad, ``P V``
  with the V^T rows as weight tiles, REQUANT, and the store into the merged (N, S, H) context.
  Both matmuls multiply two activations, so both operands have zero points:
  ``sum (a - za)(b - zb) = sum a b + sum a (-zb) + sum (-za) b + n za zb``. The extra terms are
  more MATMULs: a constant row of ``-za`` streamed against the same weight tile, a constant
  weight tile of ``-zb`` against the same inputs, and the constant in the initial accumulator
  value. For ``Q K^T`` the terms that are constant along a softmax row are left out (softmax is
  exactly invariant to them).
- **Layernorm and GELU**: an identity weight tile lifts the int8 codes into accumulator rows
  (GELU on top of ``-zero_point``; layernorm is invariant to it), then one VECTOR LAYERNORM per
  token (a group of ``hidden`` elements over ``hidden / cols`` rows) or VECTOR GELU.
"""

from __future__ import annotations

import numpy as np

from golden import intops, quant
from golden.isa import Instruction, Memory, Opcode, VectorFunct
from golden.machine import parameter_rows

from .graph import Attention, Conv, Gelu, LayerNorm, ResidualLayerNorm

MAX_COUNT = 1023


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _int8_parts(value: int) -> list[int]:
    """``value`` (-128..128) as a sum of int8 values; none for 0."""
    if value == 0:
        return []
    return [value] if -128 <= value <= 127 else [64, 64]


def _require_square(low, layer):
    cfg = low.config
    if cfg.rows != cfg.cols:
        from .compiler import CompileError

        raise CompileError(f"{layer.name}: transformer layers need a square array, not "
                           f"{cfg.rows}x{cfg.cols}")


def _fail(layer, message: str):
    from .compiler import CompileError

    raise CompileError(f"{layer.name}: {message}")


def _check_channels(layer, channels: int, width: int, what: str):
    if channels % width:
        _fail(layer, f"{what} ({channels}) must be a multiple of the array size {width}")


def _token_load(*, sram_addr: int, dram_addr: int, tokens: int, channels: int,
                width: int) -> Instruction:
    """``tokens`` rows of ``channels`` int8 values (a multiple of ``width``) into
    ``tokens * channels / width`` scratchpad rows: token t, chunk k at
    ``sram_addr + t * chunks + k``."""
    return Instruction(Opcode.LOAD, mem=Memory.SCRATCHPAD, sram_addr=sram_addr,
                       dram_addr=dram_addr, rows=tokens, cols=channels // width, elem_len=width,
                       dram_row_stride=channels, dram_elem_stride=width)


def _token_store(*, sram_addr: int, dram_addr: int, tokens: int, channels: int, width: int,
                 row_stride: int) -> Instruction:
    return Instruction(Opcode.STORE, mem=Memory.SCRATCHPAD, sram_addr=sram_addr,
                       dram_addr=dram_addr, rows=tokens, cols=channels // width, elem_len=width,
                       dram_row_stride=row_stride, dram_elem_stride=width)


def _matmul_walk(*, weight_addr: int | None, input_addr: int, input_stride: int, acc_addr: int,
                 acc_stride: int, count: int) -> list[Instruction]:
    """MATMULs (accumulating) over ``count`` input rows, cut at the 10-bit walk count; a
    ``weight_addr`` of None keeps the array's weight tile."""
    result = []
    for first in range(0, count, MAX_COUNT):
        steps = min(MAX_COUNT, count - first)
        load = weight_addr is not None and first == 0
        result.append(Instruction(
            Opcode.MATMUL, accumulate=1, load_weights=int(load),
            weight_addr=weight_addr if load else 0, outer_count=1, inner_count=steps,
            input_addr=input_addr + first * input_stride, input_inner_stride=input_stride,
            acc_addr=acc_addr + first * acc_stride, acc_inner_stride=acc_stride))
    return result


def _fits(low, layer, *, scratchpad: int, accumulator: int, what: str):
    cfg = low.config
    if scratchpad > cfg.scratchpad_depth or accumulator > cfg.accumulator_depth:
        _fail(layer, f"{what} needs {scratchpad} scratchpad and {accumulator} accumulator rows; "
                     f"the {cfg.name} configuration has {cfg.scratchpad_depth} and "
                     f"{cfg.accumulator_depth}: use a larger configuration")


def _largest(limit: int, fits) -> int:
    size = min(limit, MAX_COUNT)
    while size > 1 and not fits(size):
        size -= 1
    return size


# Channel-major projection -----------------------------------------------------------------------

def linear_channel_major(low, layer: Conv) -> list:
    from .compiler import Step, _load_contiguous_rows

    _require_square(low, layer)
    cfg = low.config
    r = c = cfg.rows
    n, _, seq, k_in = layer.input.shape
    cout = layer.output.shape[3]
    _check_channels(layer, k_in, r, "input channels")
    kc = k_in // r
    weights = layer.weights[:, :, 0, 0]                                   # (cout, k_in)
    w_rows = np.ascontiguousarray(weights.reshape(cout, kc, r).transpose(1, 0, 2)).reshape(-1, r)
    x_zp = layer.input.quant.stored_zero_point
    bias = quant.fold_zero_point(layer.bias, layer.weights, x_zp)
    bias_rows = np.repeat(bias[:, None], c, axis=1).astype(np.int32)     # one row per channel
    if c - 1 > 15:
        _fail(layer, "the channel-major projection needs cols <= 16 (LOAD padding)")

    # Output channels in blocks: all of them with the weights resident when they fit, else
    # the largest block whose weights (streamed, two buffers) fit beside the token tiles.
    def fits(block: int, resident: bool) -> bool:
        weights = kc * cout if resident else 2 * kc * block
        return weights + 2 * kc * c + 2 * block <= cfg.scratchpad_depth and \
            2 * block + 2 * cout <= cfg.accumulator_depth

    resident = fits(cout, True)
    block = cout if resident else _largest(cout, lambda b: fits(b, False))
    if not fits(block, resident):
        _fits(low, layer, scratchpad=2 * kc * block + 2 * kc * c + 2 * block,
              accumulator=2 * block + 2 * cout, what="the channel-major projection")
    block = _ceil_div(cout, _ceil_div(cout, block))
    blocks = [(first, min(block, cout - first)) for first in range(0, cout, block)]
    # One REQUANT group covers a block's channels, so each row gets its own scale.
    param_blocks = [parameter_rows(cfg, *low.requant_sections(
        np.repeat(layer.scale[first:first + size], c),
        np.repeat(layer.real_multiplier[first:first + size], c))) for first, size in blocks]
    param_starts = np.cumsum([0] + [len(p) for p in param_blocks[:-1]])
    params = np.concatenate(param_blocks).astype(np.int32)
    w_offset = low.image.constant(w_rows)
    bias_offset = low.image.constant(bias_rows)
    params_offset = low.image.constant(params)

    w_region = kc * cout if resident else 2 * kc * block
    x_bufs = (w_region, w_region + kc * c)
    out_bufs = (w_region + 2 * kc * c, w_region + 2 * kc * c + block)
    acc_bufs, prm = (0, block), 2 * block
    low.plan = dict(tile=(1, c), channel_block=block, weights_resident=resident,
                    channel_major=True)

    x_addr, y_addr = low.address(layer.input), low.address(layer.output)
    steps = []
    for image in range(n):
        for t0, tokens in [(t, min(c, seq - t)) for t in range(0, seq, c)]:
            for b, (first, size) in enumerate(blocks):
                u = len(steps)
                xb, ab, ob = x_bufs[u % 2], acc_bufs[u % 2], out_bufs[u % 2]
                step = Step()
                if u == 0:
                    if resident:
                        step.loads += _load_contiguous_rows(
                            mem=Memory.SCRATCHPAD, sram_addr=0, dram_addr=w_offset,
                            rows=kc * cout, row_bytes=r, elem_len=r)
                    step.loads += _load_contiguous_rows(
                        mem=Memory.ACCUMULATOR, sram_addr=prm, dram_addr=params_offset,
                        rows=len(params), row_bytes=4 * c, elem_len=c)
                if resident:
                    w_rows_at = [k * cout + first for k in range(kc)]
                else:  # this block's rows of every chunk, chunk-major
                    wb = (u % 2) * kc * block
                    step.loads.append(Instruction(
                        Opcode.LOAD, mem=Memory.SCRATCHPAD, sram_addr=wb,
                        dram_addr=w_offset + first * r, rows=kc, cols=size, elem_len=r,
                        dram_row_stride=cout * r, dram_elem_stride=r))
                    w_rows_at = [wb + k * size for k in range(kc)]
                # Token tile, chunk-major: chunk k of token t in row xb + k * c + t (a weight
                # tile per chunk; the rows past the last token are padding, zero).
                step.loads.append(Instruction(
                    Opcode.LOAD, mem=Memory.SCRATCHPAD, sram_addr=xb,
                    dram_addr=x_addr + (image * seq + t0) * k_in, rows=kc, cols=tokens,
                    elem_len=r, dram_row_stride=r, dram_elem_stride=k_in, pad_right=c - tokens))
                step.loads += _load_contiguous_rows(mem=Memory.ACCUMULATOR, sram_addr=ab,
                                                    dram_addr=bias_offset + 4 * c * first,
                                                    rows=size, row_bytes=4 * c, elem_len=c)
                for k in range(kc):
                    step.computes += _matmul_walk(weight_addr=xb + k * c, input_addr=w_rows_at[k],
                                                  input_stride=1, acc_addr=ab, acc_stride=1,
                                                  count=size)
                step.computes.append(Instruction(
                    Opcode.VECTOR, funct=VectorFunct.REQUANT, mode=low.requant_mode,
                    outer_count=1, inner_count=1, a_addr=ab, out_addr=ob, length=size * c,
                    param_addr=prm + int(param_starts[b]),
                    out_zp=layer.output.quant.stored_zero_point, clip_lo=layer.clip[0],
                    clip_hi=layer.clip[1]))
                for part, count in [(p, min(MAX_COUNT, size - p)) for p in range(0, size, MAX_COUNT)]:
                    step.stores.append(Instruction(
                        Opcode.STORE, mem=Memory.SCRATCHPAD, sram_addr=ob + part,
                        dram_addr=y_addr + (image * cout + first + part) * seq + t0, rows=1,
                        cols=count, elem_len=tokens, dram_elem_stride=seq))
                steps.append(step)
    return steps


# Attention ----------------------------------------------------------------------------------------

def mask_bias(layer: Attention, mask: np.ndarray | None, *, batch: int, cols: int) -> np.ndarray:
    """The host's additive mask (N, 1, 1, S) float in accumulator steps of the scores, int32,
    padded to whole accumulator rows: what the attention program loads under ``Q K^T``."""
    seq = layer.q.shape[2]
    padded = _ceil_div(seq, cols) * cols
    bias = np.zeros((batch, padded), np.int32)
    if mask is not None:
        mask = np.asarray(mask, np.float64)
        if mask.size != batch * seq:
            raise ValueError(f"{layer.name}: the attention mask must have shape ({batch}, 1, 1, "
                             f"{seq}) (one value per key), not {mask.shape}")
        steps = np.rint(mask.reshape(batch, seq) / layer.score_scale)
        bias[:, :seq] = np.clip(steps, -2**30, 2**30).astype(np.int32)
    return bias


def attention(low, layer: Attention) -> list:
    from .compiler import Step, _load_contiguous_rows

    _require_square(low, layer)
    cfg = low.config
    r = c = cfg.rows
    q, k, v, y = layer.q, layer.k, layer.v, layer.output
    n, _, seq, hidden = q.shape
    heads = layer.heads
    dh = hidden // heads
    _check_channels(layer, dh, r, "the head size")
    if seq > cfg.vector_max_length:
        _fail(layer, f"sequence length {seq} is above the softmax row limit "
                     f"(vector_max_length {cfg.vector_max_length})")
    kc = dh // r                      # head-dim chunks (= d-tiles of the context)
    tiles = _ceil_div(seq, c)         # key tiles of the scores = t-chunks of P
    zq, zk = q.quant.stored_zero_point, k.quant.stored_zero_point
    zv, zp = v.quant.stored_zero_point, layer.probs.stored_zero_point
    del zk  # its terms are constant along a softmax row
    mq_parts, mp_parts, u_parts = _int8_parts(-zq), _int8_parts(-zp), _int8_parts(-zv)

    # Constants: rows of -zq and -zp parts, then per -zv part a full tile and (if the last key
    # chunk is partial) a tile with only its valid lanes.
    const_rows = [np.full(r, part, np.int8) for part in mq_parts + mp_parts]
    u_tiles = []
    last = seq - (tiles - 1) * r
    for part in u_parts:
        full = np.full((c, r), part, np.int8)
        partial = full.copy()
        partial[:, last:] = 0
        u_tiles.append((len(const_rows) + len(u_tiles) * 2 * c, full, partial))
    consts = const_rows + [row for _, full, partial in u_tiles for row in (*full, *partial)]
    const_region = len(consts)
    mq_rows = list(range(len(mq_parts)))
    mp_rows = list(range(len(mq_parts), len(mq_parts) + len(mp_parts)))

    softmax = parameter_rows(cfg, intops.softmax_params(
        input_scale=layer.score_scale, output_scale=float(layer.probs.scale),
        output_zero_point=zp))
    real = float(layer.probs.scale) * float(v.quant.scale) / float(y.quant.scale)
    scale = quant.fp32_requant_scale(layer.probs.scale, np.full(c, v.quant.scale, np.float32),
                                     y.quant.scale)
    requant = parameter_rows(cfg, *low.requant_sections(scale, np.full(c, real)))
    params = np.concatenate([softmax, requant]).astype(np.int32)
    prm_softmax_rows = len(softmax)
    ctx_init = np.full(c, seq * zp * zv, np.int32)  # sum over keys of (-zp)(-zv)

    def buffers(sq: int) -> tuple[int, int]:
        scratch = kc * sq + kc * tiles * c + tiles * kc * c + sq * tiles + sq * kc
        acc = sq * tiles + sq * kc
        return scratch, acc

    def fits(sq: int) -> bool:
        scratch, acc = buffers(sq)
        return const_region + 2 * scratch <= cfg.scratchpad_depth and \
            2 * acc + len(params) <= cfg.accumulator_depth

    sq = _largest(seq, fits)
    scratch, acc_size = buffers(sq)
    _fits(low, layer, scratchpad=const_region + 2 * scratch,
          accumulator=2 * acc_size + len(params), what="attention")
    if tiles * c - seq > 15:
        _fail(layer, "attention needs cols <= 16 (LOAD padding of the last key tile)")
    sq = _ceil_div(seq, _ceil_div(seq, sq))
    low.plan = dict(query_tile=sq, key_tiles=tiles, head_chunks=kc,
                    zero_point_matmuls=dict(k=len(mq_parts), p=len(mp_parts), v=len(u_parts)))

    const_offset = low.image.constant(np.array(consts, np.int8).reshape(-1, r)) if consts else None
    params_offset = low.image.constant(params)
    init_offset = low.image.constant(ctx_init)
    mask_offset = low.image.constant(np.zeros((n, tiles * c), np.int32))
    low.mask_offsets[layer.name] = mask_offset

    def layout(base: int, sq_: int) -> dict:
        q_buf = base
        k_buf = q_buf + kc * sq_
        v_buf = k_buf + kc * tiles * c
        p_buf = v_buf + tiles * kc * c
        o_buf = p_buf + sq_ * tiles
        return dict(q=q_buf, k=k_buf, v=v_buf, p=p_buf, o=o_buf)

    prm = 2 * acc_size
    q_addr, k_addr, v_addr, y_addr = (low.address(t) for t in (q, k, v, y))
    full_chunks, partial = divmod(seq, r)
    steps = []
    for image in range(n):
        for head in range(heads):
            for q0 in range(0, seq, sq):
                rows = min(sq, seq - q0)
                u = len(steps)
                sp = layout(const_region + (u % 2) * scratch, rows)
                s_buf = (u % 2) * acc_size
                ctx_buf = s_buf + rows * tiles
                step = Step()
                if u == 0:
                    if consts:
                        step.loads += _load_contiguous_rows(
                            mem=Memory.SCRATCHPAD, sram_addr=0, dram_addr=const_offset,
                            rows=const_region, row_bytes=r, elem_len=r)
                    step.loads += _load_contiguous_rows(
                        mem=Memory.ACCUMULATOR, sram_addr=prm, dram_addr=params_offset,
                        rows=len(params), row_bytes=4 * c, elem_len=c)
                head_col = head * dh
                step.loads.append(Instruction(  # Q tile, chunk-major: row q + k * rows + s
                    Opcode.LOAD, mem=Memory.SCRATCHPAD, sram_addr=sp["q"],
                    dram_addr=q_addr + (image * seq + q0) * hidden + head_col, rows=kc,
                    cols=rows, elem_len=r, dram_row_stride=r, dram_elem_stride=hidden))
                step.loads.append(Instruction(  # K, chunk-major, padded to whole key tiles
                    Opcode.LOAD, mem=Memory.SCRATCHPAD, sram_addr=sp["k"],
                    dram_addr=k_addr + image * seq * hidden + head_col, rows=kc, cols=seq,
                    elem_len=r, dram_row_stride=r, dram_elem_stride=hidden,
                    pad_right=tiles * c - seq))
                v_head = v_addr + (image * hidden + head_col) * seq
                if full_chunks:  # V^T: key chunk j, head channel d in row v + j * dh + d
                    step.loads.append(Instruction(
                        Opcode.LOAD, mem=Memory.SCRATCHPAD, sram_addr=sp["v"], dram_addr=v_head,
                        rows=full_chunks, cols=dh, elem_len=r, dram_row_stride=r,
                        dram_elem_stride=seq))
                if partial:
                    step.loads.append(Instruction(
                        Opcode.LOAD, mem=Memory.SCRATCHPAD, sram_addr=sp["v"] + full_chunks * dh,
                        dram_addr=v_head + full_chunks * r, rows=1, cols=dh, elem_len=partial,
                        dram_elem_stride=seq))
                step.loads.append(Instruction(  # the mask under every query's scores
                    Opcode.LOAD, mem=Memory.ACCUMULATOR, sram_addr=s_buf,
                    dram_addr=mask_offset + image * tiles * c * 4, rows=rows, cols=tiles,
                    elem_len=c, dram_elem_stride=4 * c))
                step.loads.append(Instruction(  # the constant zero-point term of P V
                    Opcode.LOAD, mem=Memory.ACCUMULATOR, sram_addr=ctx_buf,
                    dram_addr=init_offset, rows=rows, cols=kc, elem_len=c))

                for j in range(tiles):        # scores of query s, key tile j: s_buf + s * tiles + j
                    for chunk in range(kc):
                        walk = dict(acc_addr=s_buf + j, acc_stride=tiles, count=rows)
                        step.computes += _matmul_walk(
                            weight_addr=sp["k"] + chunk * tiles * c + j * c,
                            input_addr=sp["q"] + chunk * rows, input_stride=1, **walk)
                        for row in mq_rows:
                            step.computes += _matmul_walk(weight_addr=None, input_addr=row,
                                                          input_stride=0, **walk)
                step.computes.append(Instruction(
                    Opcode.VECTOR, funct=VectorFunct.SOFTMAX, outer_count=1, inner_count=rows,
                    a_addr=s_buf, a_inner_stride=tiles, out_addr=sp["p"], out_inner_stride=tiles,
                    length=seq, param_addr=prm, clip_lo=-128, clip_hi=127))
                for d_tile in range(kc):      # context of query s: ctx_buf + s * kc + d_tile
                    for j in range(tiles):
                        walk = dict(acc_addr=ctx_buf + d_tile, acc_stride=kc, count=rows)
                        step.computes += _matmul_walk(
                            weight_addr=sp["v"] + j * kc * c + d_tile * c,
                            input_addr=sp["p"] + j, input_stride=tiles, **walk)
                        for row in mp_rows:
                            step.computes += _matmul_walk(weight_addr=None, input_addr=row,
                                                          input_stride=0, **walk)
                        for base, _, _ in u_tiles:
                            tile = base + (c if j == tiles - 1 and partial else 0)
                            step.computes += _matmul_walk(
                                weight_addr=tile, input_addr=sp["p"] + j, input_stride=tiles,
                                **walk)
                step.computes.append(Instruction(
                    Opcode.VECTOR, funct=VectorFunct.REQUANT, mode=low.requant_mode,
                    outer_count=rows, inner_count=kc, a_addr=ctx_buf, a_outer_stride=kc,
                    a_inner_stride=1, out_addr=sp["o"], out_outer_stride=kc, out_inner_stride=1,
                    length=c, param_addr=prm + prm_softmax_rows,
                    out_zp=y.quant.stored_zero_point, clip_lo=-128, clip_hi=127))
                step.stores.append(_token_store(
                    sram_addr=sp["o"], dram_addr=y_addr + (image * seq + q0) * hidden + head_col,
                    tokens=rows, channels=dh, width=r, row_stride=hidden))
                steps.append(step)
    return steps


# Layernorm and GELU ---------------------------------------------------------------------------------

def row_op(low, layer: LayerNorm | ResidualLayerNorm | Gelu) -> list:
    from .compiler import Step, _load_contiguous_rows

    _require_square(low, layer)
    cfg = low.config
    r = c = cfg.rows
    gelu = isinstance(layer, Gelu)
    if isinstance(layer, ResidualLayerNorm):
        terms, wide, input_scale = layer.terms, layer.wide, layer.unit_scale
    else:
        terms, wide, input_scale = [(layer.input, 1)], None, float(layer.input.quant.scale)
    y = layer.output
    n, _, seq, channels = y.shape
    _check_channels(layer, channels, r, "channels")
    chunks = channels // r
    tokens_total = n * seq
    yq = y.quant
    if gelu:
        params = parameter_rows(cfg, intops.gelu_params(
            input_scale=input_scale, output_scale=float(yq.scale),
            output_zero_point=yq.stored_zero_point))
    else:
        if channels > cfg.vector_max_length:
            _fail(layer, f"{channels} channels are above the layernorm row limit "
                         f"(vector_max_length {cfg.vector_max_length})")
        p = intops.layernorm_params(input_scale=input_scale, gamma=layer.gamma, beta=layer.beta,
                                    output_scale=float(yq.scale),
                                    output_zero_point=yq.stored_zero_point, epsilon=layer.epsilon)
        k = intops.LAYERNORM_CONST_COUNT
        params = parameter_rows(cfg, p[:k], p[k:k + channels], p[k + channels:])
    # Identity weight tiles (times each term's multiplier) lift int8 codes into the accumulator.
    multipliers = sorted({m for _, m in terms})
    identity_offset = low.image.constant(np.concatenate(
        [np.eye(r, dtype=np.int64) * m for m in multipliers]).astype(np.int8))
    identity_rows = {m: i * c for i, m in enumerate(multipliers)}
    const_region = len(multipliers) * c
    params_offset = low.image.constant(params.astype(np.int32))
    # GELU is not shift-invariant: it starts from minus the zero point. Layernorm is, so the
    # zero points (constant along a row) are left out.
    init_offset = low.image.constant(
        np.full(c, -terms[0][0].quant.stored_zero_point, np.int32)) if gelu else None

    def fits(tile: int) -> bool:
        return const_region + 2 * (len(terms) + 1) * tile * chunks <= cfg.scratchpad_depth and \
            2 * tile * chunks + len(params) <= cfg.accumulator_depth

    tile = _largest(tokens_total, fits)
    _fits(low, layer, scratchpad=const_region + 2 * (len(terms) + 1) * tile * chunks,
          accumulator=2 * tile * chunks + len(params), what=layer.op)
    tile = _ceil_div(tokens_total, _ceil_div(tokens_total, tile))
    low.plan = dict(tile=(tile, chunks))
    size = tile * chunks
    buffers = len(terms) + 1  # one per term, then the output
    acc_bufs, prm = (0, size), 2 * size
    addresses = [low.address(t) for t, _ in terms]
    y_addr = low.address(y)
    steps = []
    for t0 in range(0, tokens_total, tile):
        tokens = min(tile, tokens_total - t0)
        u = len(steps)
        base = const_region + (u % 2) * buffers * size
        ab, ob = acc_bufs[u % 2], base + len(terms) * size
        step = Step()
        if u == 0:
            step.loads += _load_contiguous_rows(mem=Memory.SCRATCHPAD, sram_addr=0,
                                                dram_addr=identity_offset, rows=const_region,
                                                row_bytes=r, elem_len=r)
            step.loads += _load_contiguous_rows(mem=Memory.ACCUMULATOR, sram_addr=prm,
                                                dram_addr=params_offset, rows=len(params),
                                                row_bytes=4 * c, elem_len=c)
        for i, address in enumerate(addresses):
            step.loads.append(_token_load(sram_addr=base + i * size,
                                          dram_addr=address + t0 * channels, tokens=tokens,
                                          channels=channels, width=r))
        started = False
        if gelu:
            step.loads.append(Instruction(
                Opcode.LOAD, mem=Memory.ACCUMULATOR, sram_addr=ab, dram_addr=init_offset,
                rows=tokens, cols=chunks, elem_len=c))
            started = True
        if wide is not None:  # the int32 residual, straight into the accumulator rows
            step.loads.append(Instruction(
                Opcode.LOAD, mem=Memory.ACCUMULATOR, sram_addr=ab,
                dram_addr=low.address(wide) + 4 * t0 * channels, rows=tokens, cols=chunks,
                elem_len=c, dram_row_stride=4 * channels, dram_elem_stride=4 * c))
            started = True
        for i, (_, multiplier) in enumerate(terms):
            step.computes.append(Instruction(
                Opcode.MATMUL, accumulate=int(started), load_weights=1,
                weight_addr=identity_rows[multiplier], outer_count=tokens, inner_count=chunks,
                input_addr=base + i * size, input_outer_stride=chunks, input_inner_stride=1,
                acc_addr=ab, acc_outer_stride=chunks, acc_inner_stride=1))
            started = True
        if gelu:
            step.computes.append(Instruction(
                Opcode.VECTOR, funct=VectorFunct.GELU, outer_count=tokens, inner_count=chunks,
                a_addr=ab, a_outer_stride=chunks, a_inner_stride=1, out_addr=ob,
                out_outer_stride=chunks, out_inner_stride=1, length=c, param_addr=prm,
                clip_lo=-128, clip_hi=127))
        else:
            step.computes.append(Instruction(
                Opcode.VECTOR, funct=VectorFunct.LAYERNORM, outer_count=1, inner_count=tokens,
                a_addr=ab, a_inner_stride=chunks, out_addr=ob, out_inner_stride=chunks,
                length=channels, param_addr=prm, clip_lo=-128, clip_hi=127))
        step.stores.append(_token_store(sram_addr=ob, dram_addr=y_addr + t0 * channels,
                                        tokens=tokens, channels=channels, width=r,
                                        row_stride=channels))
        steps.append(step)
    return steps
