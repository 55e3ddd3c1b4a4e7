import random

import pytest
from amaranth import ClockDomain, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from rtl_harness import BLOCK_CONFIGS, run_block_tb

from golden.config import NpuConfig
from rtl.systolic_array import SystolicArray, array_input_layout, valid_signature, weight_beat_layout


@pytest.mark.parametrize("config", BLOCK_CONFIGS, ids=lambda c: c.name)
def test_systolic_array_matches_golden_matmul(config):
    run_block_tb(component=SystolicArray, config=config, name="systolic_array",
                 tb_module="tb_systolic_array")


class _MuxedWeightPE(wiring.Component):
    """The processing element before the weight register (main at 9493a8c): the bank
    multiplexer, selected by the anti-diagonal's bank, in front of the multiplier."""

    a_in: In(signed(8))
    sel_in: In(1)
    a_out: Out(signed(8))
    psum_in: In(signed(32))
    psum_out: Out(signed(32))
    w_shift: In(2)
    w_in: In(data.ArrayLayout(signed(8), 2))
    w_out: Out(data.ArrayLayout(signed(8), 2))

    def elaborate(self, platform):
        m = Module()
        banks = [Signal(signed(8), name=f"w{i}") for i in range(2)]
        product = Signal(signed(16), reset_less=True)
        a_out = Signal(signed(8), reset_less=True)
        psum_out = Signal(signed(32), reset_less=True)
        m.d.comb += [self.a_out.eq(a_out), self.psum_out.eq(psum_out)]
        weight = Signal(signed(8))
        m.d.comb += weight.eq(Mux(self.sel_in, banks[1], banks[0]))
        m.d.sync += [a_out.eq(self.a_in), product.eq(self.a_in * weight),
                     psum_out.eq(self.psum_in + product)]
        for bank in range(2):
            with m.If(self.w_shift[bank]):
                m.d.sync += banks[bank].eq(self.w_in[bank])
            m.d.comb += self.w_out[bank].eq(banks[bank])
        return m


class _MuxedWeightArray(wiring.Component):
    """The systolic array before the weight register (main at 9493a8c), the reference that the
    lockstep test compares the current array with."""

    def __init__(self, config: NpuConfig):
        self.config = config
        super().__init__({
            "weights": In(valid_signature(weight_beat_layout(config))),
            "inputs": In(valid_signature(array_input_layout(config))),
            "outputs": Out(valid_signature(data.ArrayLayout(signed(32), config.cols))),
        })

    def elaborate(self, platform):
        m = Module()
        rows, cols = self.config.rows, self.config.cols
        shift = Signal(2)
        m.d.comb += shift.eq(Mux(self.weights.payload.bank, 0b10, 0b01)
                             & self.weights.valid.replicate(2))
        pes = [[_MuxedWeightPE() for _ in range(cols)] for _ in range(rows)]
        for k in range(rows):
            for c in range(cols):
                m.submodules[f"pe_{k}_{c}"] = pe = pes[k][c]
                m.d.comb += pe.w_shift.eq(shift)
                for bank in range(2):
                    source = (pes[k][c + 1].w_out[bank] if c + 1 < cols
                              else self.weights.payload.values[k])
                    m.d.comb += pe.w_in[bank].eq(source)
                if c > 0:
                    m.d.comb += pe.a_in.eq(pes[k][c - 1].a_out)
                if k > 0:
                    m.d.comb += pe.psum_in.eq(pes[k - 1][c].psum_out)
        diagonal = [self.inputs.payload.bank]
        for _ in range(1, rows + cols - 1):
            delayed = Signal(reset_less=True)
            m.d.sync += delayed.eq(diagonal[-1])
            diagonal.append(delayed)
        for k in range(rows):
            for c in range(cols):
                m.d.comb += pes[k][c].sel_in.eq(diagonal[k + c])
        for k in range(rows):
            value = self.inputs.payload.values[k]
            for _ in range(k):
                delayed = Signal(signed(8), reset_less=True)
                m.d.sync += delayed.eq(value)
                value = delayed
            m.d.comb += pes[k][0].a_in.eq(value)
        for c in range(cols):
            value = pes[rows - 1][c].psum_out
            for _ in range(cols - 1 - c):
                delayed = Signal(signed(32), reset_less=True)
                m.d.sync += delayed.eq(value)
                value = delayed
            m.d.comb += self.outputs.payload[c].eq(value)
        valid = self.inputs.valid
        for _ in range(rows + cols):
            delayed = Signal()
            m.d.sync += delayed.eq(valid)
            valid = delayed
        m.d.comb += self.outputs.valid.eq(valid)
        return m


class _Lockstep(wiring.Component):
    """The current array and the reference array, fed the same ports, with an explicit reset."""

    def __init__(self, config: NpuConfig):
        self.new = SystolicArray(config)
        self.old = _MuxedWeightArray(config)
        super().__init__({"rst": In(1), "weights": In(valid_signature(weight_beat_layout(config))),
                          "inputs": In(valid_signature(array_input_layout(config)))})

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = domain = ClockDomain()
        m.d.comb += domain.rst.eq(self.rst)
        m.submodules.new, m.submodules.old = self.new, self.old
        for array in (self.new, self.old):
            for port in ("weights", "inputs"):
                ours, theirs = getattr(self, port), getattr(array, port)
                m.d.comb += [theirs.valid.eq(ours.valid), theirs.payload.eq(ours.payload)]
        return m


@pytest.mark.parametrize("shape", [(2, 4), (4, 4), (8, 8), (4, 8), (8, 2)],
                         ids=lambda s: f"{s[0]}x{s[1]}")
def test_weight_register_array_is_cycle_identical_to_the_bank_multiplexer(shape):
    """The current array and the reference (main's array before the weight register) in
    lockstep: ``outputs.valid`` equal in every cycle and ``outputs.payload`` equal in every
    cycle it is valid, under random weight beats into either bank, random input vectors and
    banks (phases of long runs and of a new bank almost every cycle, bubbles with random banks),
    random idle cycles and reset pulses. The beats keep the array's contract: none goes into a
    bank that a valid input in flight computes with (from the cycle it enters to the cycle
    before it reaches the last anti-diagonal)."""
    rows, cols = shape
    config = NpuConfig(name=f"{rows}x{cols}", rows=rows, cols=cols)
    top = _Lockstep(config)
    rng = random.Random(rows * 100 + cols)
    cycles = 1500 if rows * cols <= 16 else 600
    in_use_until = [-1, -1]  # per bank: the last cycle a beat into it would break the contract
    beats = compared = 0

    async def bench(ctx):
        nonlocal beats, compared
        bank = 0
        for cycle in range(cycles):
            if cycle % 100 == 0:
                bank_change = rng.choice([0.0, 0.02, 0.2, 0.5])
                input_rate = rng.choice([0.3, 0.8, 1.0])
            if rng.random() < bank_change:
                bank = 1 - bank
            input_valid = rng.random() < input_rate
            if input_valid:
                in_use_until[bank] = cycle + rows + cols - 3
            ctx.set(top.inputs.valid, input_valid)
            ctx.set(top.inputs.payload.bank, bank if input_valid else rng.randrange(2))
            ctx.set(top.inputs.payload.values, [rng.randrange(-128, 128) for _ in range(rows)])
            beat_bank = rng.randrange(2)
            beat_valid = rng.random() < 0.8 and in_use_until[beat_bank] < cycle
            beats += beat_valid
            ctx.set(top.weights.valid, beat_valid)
            ctx.set(top.weights.payload.bank, beat_bank)
            ctx.set(top.weights.payload.values, [rng.randrange(-128, 128) for _ in range(rows)])
            ctx.set(top.rst, rng.random() < 0.005)
            await ctx.tick()
            valid = ctx.get(top.new.outputs.valid)
            assert valid == ctx.get(top.old.outputs.valid), f"cycle {cycle}: outputs.valid"
            if valid:
                compared += 1
                new = ctx.get(top.new.outputs.payload.as_value())
                old = ctx.get(top.old.outputs.payload.as_value())
                assert new == old, f"cycle {cycle}: outputs.payload {new:#x} != {old:#x}"

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert beats > cycles // 10 and compared > cycles // 3, (beats, compared)
