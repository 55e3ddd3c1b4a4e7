"""Hand-assembled programs on the golden machine, compared with the golden operations."""

import numpy as np
import pytest
from helpers import as_int32_bits, read_array, run_program

from golden import quant
from golden.config import NpuConfig, get_config
from golden.isa import ErrorCode, Instruction, Memory, Opcode, RequantMode, VectorFunct
from golden.machine import Machine, parameter_rows
from sw.matmul import compile_matmul, pack_weights

I, O = Instruction, Opcode
SP, ACC = Memory.SCRATCHPAD, Memory.ACCUMULATOR
NON_SQUARE = NpuConfig(name="4x8", rows=4, cols=8, scratchpad_depth=1024, accumulator_depth=512,
                       axi_data_width=64, vector_max_length=256)
CONFIGS = [get_config("tiny"), get_config("small"), NON_SQUARE]


def config_id(config):
    return config.name


@pytest.fixture
def rng(request):
    seed = abs(hash(request.node.name)) % (1 << 32)
    print(f"seed {seed}")
    return np.random.default_rng(seed)


# Matmul ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
@pytest.mark.parametrize("m, k, n", [(5, 3, 2), (37, 13, 11), (64, 40, 24)])
def test_tiled_matmul_with_k_and_n_larger_than_the_array(config, m, k, n, rng):
    x = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-128, 128, (k, n), dtype=np.int8)
    machine = Machine(config, dram_size=1 << 20)
    machine.write_dram(0x10000, x)
    machine.write_dram(0x40000, pack_weights(config, w))
    program = compile_matmul(config, m=m, k=k, n=n, x_addr=0x10000, w_addr=0x40000, y_addr=0x80000)
    result = run_program(machine, program)
    assert result.ok, result.message
    np.testing.assert_array_equal(read_array(machine, 0x80000, (m, n), np.int32), quant.matmul(x, w))
    assert result.counters.macs == m * -(-k // config.rows) * -(-n // config.cols) * config.pes
    assert result.counters.dram_write_bytes == m * n * 4


def test_long_k_of_minus_128_products():
    config = get_config("small")
    k = 1600  # 1600 products of 16384 each, summed over 200 accumulating MATMULs
    x = np.full((3, k), -128, np.int8)
    w = np.full((k, 8), -128, np.int8)
    machine = Machine(config, dram_size=1 << 20)
    machine.write_dram(0x10000, x)
    machine.write_dram(0x40000, pack_weights(config, w))
    program = compile_matmul(config, m=3, k=k, n=8, x_addr=0x10000, w_addr=0x40000, y_addr=0x80000)
    assert run_program(machine, program).ok
    np.testing.assert_array_equal(read_array(machine, 0x80000, (3, 8), np.int32),
                                  np.full((3, 8), 1600 * 16384, np.int32))


def test_accumulation_wraps_like_a_32_bit_adder():
    machine = Machine("tiny", dram_size=1 << 16)
    machine.scratchpad[0:4] = -128  # weights
    machine.scratchpad[8] = -128
    machine.accumulator[0] = (1 << 31) - 4 * 16384 + 5  # four products later: 2^31 + 5
    program = [I(O.MATMUL, accumulate=1, load_weights=1, weight_addr=0, outer_count=1,
                 inner_count=1, input_addr=8, acc_addr=0), I(O.FINISH)]
    assert run_program(machine, program).ok
    np.testing.assert_array_equal(machine.accumulator[0], np.full(4, -(1 << 31) + 5, np.int32))


def test_overwrite_versus_accumulate():
    config = get_config("tiny")
    machine = Machine(config, dram_size=1 << 16)
    machine.scratchpad[0:4] = np.eye(4, dtype=np.int8)        # identity weights
    machine.scratchpad[8] = [1, 2, 3, 4]
    machine.accumulator[0] = [100, 100, 100, 100]
    walk = dict(weight_addr=0, load_weights=1, outer_count=1, inner_count=1, input_addr=8, acc_addr=0)
    assert run_program(machine, [I(O.MATMUL, accumulate=1, **walk), I(O.FINISH)]).ok
    np.testing.assert_array_equal(machine.accumulator[0], [101, 102, 103, 104])
    assert run_program(machine, [I(O.MATMUL, accumulate=0, **walk), I(O.FINISH)]).ok
    np.testing.assert_array_equal(machine.accumulator[0], [1, 2, 3, 4])
    # Reusing the weights already in the array (load_weights=0) after the tile changed.
    machine.scratchpad[0:4] = 0
    assert run_program(machine, [I(O.MATMUL, **{**walk, "load_weights": 0}), I(O.FINISH)]).ok
    np.testing.assert_array_equal(machine.accumulator[0], [1, 2, 3, 4])


def test_double_buffered_program_beats_the_serialised_one():
    config = get_config("small")
    m, k, n = 256, 64, 64
    machine = Machine(config, dram_size=1 << 20)
    cycles = {}
    for overlap in (True, False):
        program = compile_matmul(config, m=m, k=k, n=n, x_addr=0x10000, w_addr=0x40000,
                                 y_addr=0x80000, overlap=overlap)
        result = run_program(machine, program)
        assert result.ok
        cycles[overlap] = result.cycles
    assert cycles[True] < 0.85 * cycles[False], cycles


# Convolution tile --------------------------------------------------------------------------------

def conv_tile_program(*, h, w, cin, cout, kernel, stride, pad, zp, out_zp, relu, x_addr, w_addr,
                      bias_addr, scale_addr, y_addr, config):
    """One output tile of an NHWC convolution: padded load, one MATMUL per tap, requant, store."""
    hp, wp = h + 2 * pad, w + 2 * pad
    oh, ow = (hp - kernel) // stride + 1, (wp - kernel) // stride + 1
    taps = kernel * kernel
    c = config.cols
    w_base = hp * wp                      # weight tiles after the padded input
    out_base = w_base + taps * c          # requantised output after the weights
    scale_row = oh * ow                   # per-channel scales after the output tile
    program = [
        I(O.LOAD, mem=SP, sram_addr=0, dram_addr=x_addr, rows=h, cols=w, elem_len=cin,
          dram_row_stride=w * cin, dram_elem_stride=cin, pad_top=pad, pad_bottom=pad,
          pad_left=pad, pad_right=pad, pad_value=zp),
        I(O.LOAD, mem=SP, sram_addr=w_base, dram_addr=w_addr, rows=taps, cols=cout, elem_len=cin,
          dram_row_stride=cin, dram_elem_stride=taps * cin),
        I(O.LOAD, mem=ACC, sram_addr=0, dram_addr=bias_addr, rows=1, cols=oh * ow, elem_len=cout,
          dram_elem_stride=0),
        I(O.LOAD, mem=ACC, sram_addr=scale_row, dram_addr=scale_addr, rows=1, cols=1,
          elem_len=cout, push_next=1),
    ]
    for tap in range(taps):
        ky, kx = divmod(tap, kernel)
        program.append(I(
            O.MATMUL, accumulate=1, load_weights=1, weight_addr=w_base + tap * c,
            outer_count=oh, inner_count=ow, input_addr=ky * wp + kx,
            input_outer_stride=stride * wp, input_inner_stride=stride,
            acc_addr=0, acc_outer_stride=ow, acc_inner_stride=1, pop_prev=int(tap == 0)))
    program += [
        I(O.VECTOR, funct=VectorFunct.REQUANT, mode=RequantMode.FP32, outer_count=1,
          inner_count=oh * ow, a_addr=0, a_inner_stride=1, out_addr=out_base,
          out_inner_stride=-(-c // config.rows), length=cout, param_addr=scale_row, out_zp=out_zp,
          clip_lo=out_zp if relu else -128, clip_hi=127, push_next=1),
        I(O.STORE, mem=SP, sram_addr=out_base, dram_addr=y_addr, rows=1,
          cols=oh * ow * -(-c // config.rows), elem_len=min(cout, config.rows),
          dram_elem_stride=min(cout, config.rows), pop_prev=1),
        I(O.FINISH),
    ]
    return program, (oh, ow)


@pytest.mark.parametrize("config", [get_config("tiny"), get_config("small")], ids=config_id)
@pytest.mark.parametrize("kernel, stride, pad, relu", [(3, 1, 1, True), (3, 2, 1, False), (1, 1, 0, True),
                                                       (5, 2, 2, False)])
def test_padded_strided_conv_tile_matches_golden_conv(config, kernel, stride, pad, relu, rng):
    h, w, cin, cout = 7, 6, config.rows - 1, config.cols  # odd channel count
    zp, out_zp = int(rng.integers(-20, 20)), int(rng.integers(-10, 10))
    x = rng.integers(-128, 128, (1, h, w, cin), dtype=np.int8)
    wt = rng.integers(-128, 128, (cout, kernel, kernel, cin), dtype=np.int8)  # OHWI
    bias = rng.integers(-5000, 5000, cout).astype(np.int32)
    w_oihw = np.ascontiguousarray(wt.transpose(0, 3, 1, 2))
    folded = quant.fold_zero_point(bias, w_oihw, zp)
    scale = quant.fp32_requant_scale(0.02, rng.uniform(0.001, 0.01, cout), 0.05 * kernel)
    machine = Machine(config, dram_size=1 << 20)
    addresses = dict(x_addr=0x10000, w_addr=0x20000, bias_addr=0x30000, scale_addr=0x31000,
                     y_addr=0x40000)
    machine.write_dram(addresses["x_addr"], x)
    machine.write_dram(addresses["w_addr"], wt)
    machine.write_dram(addresses["bias_addr"], folded)
    machine.write_dram(addresses["scale_addr"], as_int32_bits(scale))
    program, (oh, ow) = conv_tile_program(h=h, w=w, cin=cin, cout=cout, kernel=kernel, stride=stride,
                                          pad=pad, zp=zp, out_zp=out_zp, relu=relu, config=config,
                                          **addresses)
    result = run_program(machine, program)
    assert result.ok, result.message
    got = read_array(machine, addresses["y_addr"], (oh, ow, cout), np.int8)
    acc = quant.conv2d(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), w_oihw, stride=stride,
                       pads=pad, pad_value=zp)
    acc = quant.wrap_int32(acc.astype(np.int64) + folded[None, :, None, None])
    expected = quant.requantize_fp32(acc, scale, zero_point=out_zp, axis=1,
                                     qmin=out_zp if relu else -128)
    np.testing.assert_array_equal(got, expected[0].transpose(1, 2, 0))


# Vector operations -------------------------------------------------------------------------------

@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
@pytest.mark.parametrize("mode", list(RequantMode))
def test_requant_with_relu6_clip_and_lane_mapping(config, mode, rng):
    """REQUANT of accumulator rows (cols lanes) into scratchpad rows (rows lanes), flat."""
    r, c = config.rows, config.cols
    groups = 6
    machine = Machine(config, dram_size=1 << 16)
    acc = rng.integers(-(1 << 20), 1 << 20, (groups, c)).astype(np.int32)
    acc[0, :2] = [(1 << 31) - 1, -(1 << 31)]  # saturation at both ends
    machine.accumulator[:groups] = acc
    if mode == RequantMode.FP32:
        scale = rng.uniform(1e-5, 1e-3, c).astype(np.float32)
        machine.accumulator[100] = as_int32_bits(scale)
    else:
        mult_shift = [quant.quantize_multiplier(v) for v in rng.uniform(1e-5, 1e-3, c)]
        machine.accumulator[100] = [m for m, _ in mult_shift]
        machine.accumulator[101] = [s for _, s in mult_shift]
    rows_per_group = -(-c // r)
    lo, hi = -3, 60  # ReLU6-style clip around a zero point of -3
    program = [I(O.VECTOR, funct=VectorFunct.REQUANT, mode=mode, outer_count=2, inner_count=3,
                 a_addr=0, a_outer_stride=3, a_inner_stride=1, out_addr=200,
                 out_outer_stride=3 * rows_per_group, out_inner_stride=rows_per_group,
                 length=c, param_addr=100, out_zp=-3, clip_lo=lo, clip_hi=hi), I(O.FINISH)]
    assert run_program(machine, program).ok
    got = machine.scratchpad[200:200 + groups * rows_per_group].reshape(groups, -1)[:, :c]
    if mode == RequantMode.FP32:
        expected = quant.requantize_fp32(acc, scale, zero_point=-3, qmin=lo, qmax=hi)
    else:
        expected = quant.requantize_fixed(acc, [m for m, _ in mult_shift], [s for _, s in mult_shift],
                                          zero_point=-3, qmin=lo, qmax=hi)
    np.testing.assert_array_equal(got, expected)
    assert got[0, 0] == hi and got[0, 1] == lo


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_requant_with_bias_adds_the_bias_section_first_with_int32_wraparound(config, rng):
    """REQUANT fp32 with ``bias``: the section after the scales is added to the int32 values
    (wrapping like the accumulator) before the scale, i.e. exactly what a bias row loaded into
    the accumulator and accumulated onto gave before."""
    c = config.cols
    groups = 4
    machine = Machine(config, dram_size=1 << 16)
    acc = rng.integers(-(1 << 20), 1 << 20, (groups, c)).astype(np.int32)
    bias = rng.integers(-(1 << 20), 1 << 20, c).astype(np.int32)
    acc[0, 0], bias[0] = (1 << 31) - 5, 10  # wraps to a large negative sum
    scale = rng.uniform(1e-5, 1e-3, c).astype(np.float32)
    machine.accumulator[:groups] = acc
    machine.accumulator[100] = as_int32_bits(scale)
    machine.accumulator[101] = bias
    rows_per_group = -(-c // config.rows)
    program = [I(O.VECTOR, funct=VectorFunct.REQUANT, bias=1, outer_count=1, inner_count=groups,
                 a_addr=0, a_inner_stride=1, out_addr=200, out_inner_stride=rows_per_group,
                 length=c, param_addr=100, out_zp=5, clip_lo=-128, clip_hi=127), I(O.FINISH)]
    assert run_program(machine, program).ok
    got = machine.scratchpad[200:200 + groups * rows_per_group].reshape(groups, -1)[:, :c]
    summed = quant.wrap_int32(acc.astype(np.int64) + bias)
    np.testing.assert_array_equal(got, quant.requantize_fp32(summed, scale, zero_point=5))
    assert got[0, 0] == -128  # the wrapped sum, not a saturated positive one


def test_requant_into_a_lane_offset_leaves_other_lanes_alone():
    config = NpuConfig(name="8x4", rows=8, cols=4, scratchpad_depth=256, accumulator_depth=64,
                       axi_data_width=64, vector_max_length=64)
    machine = Machine(config, dram_size=1 << 16)
    machine.scratchpad[10] = np.arange(8, dtype=np.int8)
    machine.accumulator[0] = [10, 20, 30, 40]
    machine.accumulator[1] = as_int32_bits(np.full(4, 0.5, np.float32))
    program = [I(O.VECTOR, funct=VectorFunct.REQUANT, outer_count=1, inner_count=1, out_addr=10,
                 out_lane=4, length=3, param_addr=1, clip_lo=-128, clip_hi=127), I(O.FINISH)]
    assert run_program(machine, program).ok
    np.testing.assert_array_equal(machine.scratchpad[10], [0, 1, 2, 3, 5, 10, 15, 7])


def test_loads_at_a_lane_offset_fill_one_row_in_parts():
    """Two LOADs build rows of [3 bytes of pixel x, 2 bytes of pixel x + 1]: the first writes
    lanes 0..2 and zeroes the rest, the second (merge) writes lanes 3..4 only; a padding
    element of a merging LOAD writes pad_value into its lanes only."""
    config = NpuConfig(name="8x4", rows=8, cols=4, scratchpad_depth=256, accumulator_depth=64,
                       axi_data_width=64, vector_max_length=64)
    machine = Machine(config, dram_size=1 << 16)
    machine.write_dram(0x1000, bytes(range(1, 13)))   # 4 pixels of 3 channels: 1 2 3 | 4 5 6 ...
    machine.scratchpad[:4] = -1
    program = [
        I(O.LOAD, mem=SP, sram_addr=0, dram_addr=0x1000, rows=1, cols=3, elem_len=3,
          dram_elem_stride=3),
        I(O.LOAD, mem=SP, sram_addr=0, dram_addr=0x1003, rows=1, cols=2, elem_len=2,
          dram_elem_stride=3, lane_offset=3, merge=1, pad_right=1, pad_value=-7),
        I(O.FINISH)]
    assert run_program(machine, program).ok
    np.testing.assert_array_equal(machine.scratchpad[:4], [
        [1, 2, 3, 4, 5, 0, 0, 0],
        [4, 5, 6, 7, 8, 0, 0, 0],
        [7, 8, 9, -7, -7, 0, 0, 0],
        [-1] * 8])
    for bad in (dict(mem=SP, lane_offset=6, elem_len=3), dict(mem=ACC, lane_offset=1, elem_len=1),
                dict(mem=ACC, merge=1, elem_len=1)):
        result = run_program(machine, [I(O.LOAD, rows=1, cols=1, **bad), I(O.FINISH)])
        assert result.error == ErrorCode.ILLEGAL_INSTRUCTION, bad
        assert "lane" in result.message


@pytest.mark.parametrize("a_unsigned, b_unsigned, out_unsigned", [(0, 0, 0), (1, 1, 1), (1, 0, 1)])
def test_residual_add_fp32_mode_on_raw_codes(a_unsigned, b_unsigned, out_unsigned, rng):
    config = get_config("tiny")
    machine = Machine(config, dram_size=1 << 16)
    n = 10  # elements, spanning three scratchpad rows
    a = rng.integers(-128, 128, n, dtype=np.int8)
    b = rng.integers(-128, 128, n, dtype=np.int8)
    machine.scratchpad.reshape(-1)[0:n] = a
    machine.scratchpad.reshape(-1)[16:16 + n] = b
    zps = [int(rng.integers(0, 256)) if u else int(rng.integers(-128, 128))
           for u in (a_unsigned, b_unsigned, out_unsigned)]
    sa, sb, f = quant.add_fp32_params(a_scale=0.03, a_zero_point=zps[0], b_scale=0.05,
                                      b_zero_point=zps[1], c_scale=0.07, c_zero_point=zps[2])
    machine.accumulator[0, :3] = as_int32_bits(np.array([sa, sb, f], np.float32))
    program = [I(O.VECTOR, funct=VectorFunct.ADD, outer_count=1, inner_count=1, a_addr=0, b_addr=4,
                 out_addr=8, length=n, param_addr=0, a_unsigned=a_unsigned, b_unsigned=b_unsigned,
                 out_unsigned=out_unsigned, clip_lo=-128, clip_hi=127), I(O.FINISH)]
    assert run_program(machine, program).ok
    raw = lambda q, u: quant.int8_to_uint8(q) if u else q  # noqa: E731
    y = quant.add_fp32(raw(a, a_unsigned), raw(b, b_unsigned), sa, sb, f,
                       qmin=0 if out_unsigned else -128, qmax=255 if out_unsigned else 127)
    expected = (y - 128 if out_unsigned else y).astype(np.int8)
    np.testing.assert_array_equal(machine.scratchpad.reshape(-1)[32:32 + n], expected)


def test_residual_add_fixed_mode():
    config = get_config("tiny")
    machine = Machine(config, dram_size=1 << 16)
    rng = np.random.default_rng(3)
    a = rng.integers(-128, 128, (2, 4), dtype=np.int8)
    b = rng.integers(-128, 128, (2, 4), dtype=np.int8)
    machine.scratchpad[0:2], machine.scratchpad[2:4] = a, b
    p = quant.add_fixed_params(a_scale=0.03, b_scale=0.05, c_scale=0.07)
    params = [5, -7, p["left_shift"], p["a_multiplier"], p["a_shift"], p["b_multiplier"],
              p["b_shift"], p["out_multiplier"], p["out_shift"]]
    machine.accumulator.reshape(-1)[0:9] = params
    program = [I(O.VECTOR, funct=VectorFunct.ADD, mode=RequantMode.FIXED, outer_count=1,
                 inner_count=2, a_addr=0, a_inner_stride=1, b_addr=2, b_inner_stride=1, out_addr=4,
                 out_inner_stride=1, length=4, param_addr=0, out_zp=3, clip_lo=-128, clip_hi=127),
               I(O.FINISH)]
    assert run_program(machine, program).ok
    expected = quant.add_fixed(a, b, a_zero_point=5, b_zero_point=-7, c_zero_point=3,
                               **{k: v for k, v in p.items()})
    np.testing.assert_array_equal(machine.scratchpad[4:6], expected)


def test_max_pool_by_max_taps_with_padded_edges(rng):
    config = get_config("tiny")
    h, w, kernel, stride, pad = 7, 7, 3, 2, 1
    x = rng.integers(-128, 128, (1, h, w, 4), dtype=np.int8)
    machine = Machine(config, dram_size=1 << 16)
    machine.write_dram(0x1000, x)
    hp, wp = h + 2 * pad, w + 2 * pad
    oh, ow = (hp - kernel) // stride + 1, (wp - kernel) // stride + 1
    out = 200
    program = [I(O.LOAD, mem=SP, dram_addr=0x1000, rows=h, cols=w, elem_len=4, dram_row_stride=w * 4,
                 dram_elem_stride=4, pad_top=pad, pad_bottom=pad, pad_left=pad, pad_right=pad,
                 pad_value=-128, push_next=1)]
    for tap in range(kernel * kernel):
        ky, kx = divmod(tap, kernel)
        program.append(I(
            O.VECTOR, funct=VectorFunct.MAX, outer_count=oh, inner_count=ow, pop_prev=int(tap == 0),
            a_addr=out if tap else ky * wp + kx, a_outer_stride=ow if tap else stride * wp,
            a_inner_stride=1 if tap else stride,
            b_addr=ky * wp + kx, b_outer_stride=stride * wp, b_inner_stride=stride,
            out_addr=out, out_outer_stride=ow, out_inner_stride=1, length=4, clip_lo=-128,
            clip_hi=127))
    program.append(I(O.FINISH))
    assert run_program(machine, program).ok
    expected = quant.max_pool2d(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), kernel=kernel,
                                stride=stride, pads=pad)
    np.testing.assert_array_equal(machine.scratchpad[out:out + oh * ow].reshape(oh, ow, 4),
                                  expected[0].transpose(1, 2, 0))


def test_global_average_pool_by_identity_matmul_and_requant(rng):
    config = get_config("tiny")
    hw, zp = 49, 7
    x = rng.integers(-128, 128, (hw, 4), dtype=np.int8)
    machine = Machine(config, dram_size=1 << 16)
    machine.scratchpad[:hw] = x
    machine.scratchpad[100:104] = np.eye(4, dtype=np.int8)
    machine.accumulator[0] = -hw * zp  # zero-point correction as the initial sum
    scale = quant.global_average_pool_scale(x_scale=0.1, y_scale=0.08, count=hw)
    machine.accumulator[1] = as_int32_bits(np.full(4, scale, np.float32))
    program = [
        I(O.MATMUL, accumulate=1, load_weights=1, weight_addr=100, outer_count=1, inner_count=hw,
          input_addr=0, input_inner_stride=1, acc_addr=0, acc_inner_stride=0),
        I(O.VECTOR, funct=VectorFunct.REQUANT, outer_count=1, inner_count=1, a_addr=0, out_addr=200,
          length=4, param_addr=1, out_zp=-5, clip_lo=-128, clip_hi=127),
        I(O.FINISH)]
    assert run_program(machine, program).ok
    total = x.astype(np.int32).sum(axis=0, dtype=np.int32) - hw * zp
    np.testing.assert_array_equal(machine.scratchpad[200],
                                  quant.requantize_fp32(total, np.float32(scale), zero_point=-5))


def test_transformer_row_ops_match_golden_intops(rng):
    from golden import intops

    config = get_config("tiny")
    length = 10  # three accumulator rows per group, the last one partial
    x = rng.integers(-2000, 2000, (2, length)).astype(np.int32)
    machine = Machine(config, dram_size=1 << 16)
    for g in range(2):
        machine.accumulator.reshape(-1)[g * 12:g * 12 + length] = x[g]
    cases = {
        VectorFunct.SOFTMAX: (intops.softmax_params(input_scale=0.004, output_scale=1 / 256,
                                                    output_zero_point=-128), intops.softmax),
        VectorFunct.GELU: (intops.gelu_params(input_scale=0.002, output_scale=0.03,
                                              output_zero_point=0), intops.gelu),
        VectorFunct.LAYERNORM: (intops.layernorm_params(
            input_scale=0.01, gamma=rng.uniform(0.5, 1.5, length), beta=rng.uniform(-0.2, 0.2, length),
            output_scale=0.05, output_zero_point=0), intops.layernorm),
    }
    for funct, (params, function) in cases.items():
        if funct == VectorFunct.LAYERNORM:  # constants, gamma, beta: each on new rows
            const_count = intops.LAYERNORM_CONST_COUNT
            rows = parameter_rows(config, params[:const_count],
                                  params[const_count:const_count + length],
                                  params[const_count + length:])
        else:
            rows = parameter_rows(config, params)
        machine.accumulator[100:100 + len(rows)] = rows
        program = [I(O.VECTOR, funct=funct, outer_count=1, inner_count=2, a_addr=0, a_inner_stride=3,
                     out_addr=300, out_inner_stride=3, length=length, param_addr=100,
                     clip_lo=-128, clip_hi=127), I(O.FINISH)]
        result = run_program(machine, program)
        assert result.ok, (funct, result.message)
        got = machine.scratchpad[300:306].reshape(2, 12)[:, :length]
        np.testing.assert_array_equal(got, function(x, params), err_msg=funct.name)


# Errors ------------------------------------------------------------------------------------------

def test_errors_report_code_and_faulting_index_and_machine_stays_usable():
    config = get_config("tiny")
    machine = Machine(config, dram_size=1 << 16)
    ok_load = I(O.LOAD, mem=SP, dram_addr=0x2000, rows=1, cols=1, elem_len=4)
    cases = [
        ([ok_load, I(O.SYNC), 0, I(O.FINISH)], ErrorCode.ILLEGAL_INSTRUCTION, 2),
        ([ok_load, I(O.LOAD, mem=SP, sram_addr=1023, rows=1, cols=2, elem_len=4), I(O.FINISH)],
         ErrorCode.SRAM_OUT_OF_RANGE, 1),
        ([I(O.MATMUL, outer_count=1, inner_count=1, acc_addr=512), I(O.FINISH)],
         ErrorCode.SRAM_OUT_OF_RANGE, 0),
        ([I(O.LOAD, mem=SP, dram_addr=0xFFFE, rows=1, cols=1, elem_len=4), I(O.FINISH)],
         ErrorCode.BUS_ERROR, 0),
        ([I(O.STORE, mem=ACC, dram_addr=0xFFF8, rows=1, cols=1, elem_len=4), I(O.FINISH)],
         ErrorCode.BUS_ERROR, 0),
        ([ok_load, I(O.MATMUL, pop_prev=1, outer_count=1, inner_count=1), I(O.FINISH)],
         ErrorCode.DEADLOCK, 1),
        ([ok_load], ErrorCode.MISSING_FINISH, 1),
        ([I(O.LOAD, pop_prev=1, rows=1, cols=1, elem_len=1), I(O.FINISH)],
         ErrorCode.ILLEGAL_INSTRUCTION, 0),
        ([I(O.STORE, push_next=1, rows=1, cols=1, elem_len=1), I(O.FINISH)],
         ErrorCode.ILLEGAL_INSTRUCTION, 0),
        ([I(O.LOAD, rows=1, cols=1, elem_len=5), I(O.FINISH)], ErrorCode.ILLEGAL_INSTRUCTION, 0),
        ([I(O.LOAD, rows=0, cols=1, elem_len=1), I(O.FINISH)], ErrorCode.ILLEGAL_INSTRUCTION, 0),
        ([I(O.VECTOR, funct=9, outer_count=1, inner_count=1, length=1), I(O.FINISH)],
         ErrorCode.ILLEGAL_INSTRUCTION, 0),
        ([I(O.VECTOR, outer_count=1, inner_count=1, length=4, clip_lo=5, clip_hi=4), I(O.FINISH)],
         ErrorCode.ILLEGAL_INSTRUCTION, 0),
        ([I(O.VECTOR, funct=VectorFunct.SOFTMAX, outer_count=1, inner_count=1, length=257,
            clip_hi=127), I(O.FINISH)], ErrorCode.ILLEGAL_INSTRUCTION, 0),
        ([I(O.SYNC, push_next=1), I(O.FINISH)], ErrorCode.ILLEGAL_INSTRUCTION, 0),
        ([I(O.VECTOR, outer_count=1, inner_count=1, length=4, clip_hi=127, bias=1,
            mode=RequantMode.FIXED), I(O.FINISH)], ErrorCode.ILLEGAL_INSTRUCTION, 0),
        ([I(O.VECTOR, funct=VectorFunct.GELU, outer_count=1, inner_count=1, length=4, clip_hi=127,
            bias=1), I(O.FINISH)], ErrorCode.ILLEGAL_INSTRUCTION, 0),
    ]
    for program, code, index in cases:
        words = [p if isinstance(p, Instruction) else None for p in program]
        if None in words:  # an illegal opcode: write a raw zero word
            result = _run_with_raw_zero_word(machine, program)
        else:
            result = run_program(machine, program)
        assert (result.error, result.error_index) == (code, index), (program, result)
        assert result.message
    # After all those errors the machine still runs a good program.
    machine.write_dram(0x2000, bytes([1, 2, 3, 4]))
    assert run_program(machine, [ok_load, I(O.FINISH)]).ok
    np.testing.assert_array_equal(machine.scratchpad[0], [1, 2, 3, 4])


def _run_with_raw_zero_word(machine, program):
    from golden.isa import encode_program

    size = machine.config.instruction_bytes
    data = b"".join(bytes(size) if p == 0 else encode_program([p], instruction_bytes=size)
                    for p in program)
    machine.write_dram(0x100, data)
    return machine.run(program_address=0x100, instruction_count=len(program))


def test_a_bad_fp32_parameter_is_an_error_not_an_exception():
    machine = Machine("tiny", dram_size=1 << 16)
    machine.accumulator[1] = as_int32_bits(np.full(4, np.inf, np.float32))
    result = run_program(machine, [I(O.VECTOR, outer_count=1, inner_count=1, length=4, param_addr=1,
                                     clip_lo=-128, clip_hi=127), I(O.FINISH)])
    assert result.error == ErrorCode.ILLEGAL_INSTRUCTION and result.error_index == 0


def test_host_access_checks_its_arguments():
    machine = Machine("tiny", dram_size=1 << 12)
    with pytest.raises(ValueError, match="must lie inside the 0x1000-byte DRAM"):
        machine.write_dram(0xFFF, b"ab")
    with pytest.raises(ValueError, match="Size must be between 0 and inf, not -1"):
        machine.read_dram(0, -1)
    with pytest.raises(ValueError, match="Instruction count must be between 1"):
        machine.run(program_address=0, instruction_count=0)
    with pytest.raises(ValueError, match="Dram size must be between 1 and"):
        Machine("tiny", dram_size=0)
    result = machine.run(program_address=0xFF0, instruction_count=2)
    assert result.error == ErrorCode.BUS_ERROR


@pytest.mark.parametrize("sa, sb, f", [(0.0, 0.5, 1.0), (-0.5, 0.5, 1.0), (0.5, np.inf, 1.0),
                                       (0.5, 0.5, np.nan), (0.5, 0.5, 1e-40), (1e-40, 0.5, 0.0)])
def test_bad_fp32_add_constants_are_illegal(sa, sb, f):
    machine = Machine("tiny", dram_size=1 << 16)
    machine.accumulator[0, :3] = as_int32_bits(np.array([sa, sb, f], np.float32))
    result = run_program(machine, [I(O.VECTOR, funct=VectorFunct.ADD, outer_count=1, inner_count=1,
                                     length=4, clip_lo=-128, clip_hi=127), I(O.FINISH)])
    assert (result.error, result.error_index) == (ErrorCode.ILLEGAL_INSTRUCTION, 0)


def test_fp32_add_with_zero_offset_is_legal():
    machine = Machine("tiny", dram_size=1 << 16)
    machine.accumulator[0, :3] = as_int32_bits(np.array([0.5, 0.5, 0.0], np.float32))
    machine.scratchpad[0] = [3, 5, -7, 100]
    result = run_program(machine, [I(O.VECTOR, funct=VectorFunct.ADD, outer_count=1, inner_count=1,
                                     b_addr=0, out_addr=1, length=4, clip_lo=-128, clip_hi=127),
                                   I(O.FINISH)])
    assert result.ok
    np.testing.assert_array_equal(machine.scratchpad[1], [3, 5, -7, 100])  # (a + a) / 2
