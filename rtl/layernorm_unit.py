"""The vector unit's LAYERNORM row unit, bit-exact with ``golden.intops.layernorm``.

A row ``x`` of ``L`` int32 elements (1 <= L <= 65535, ``length``) comes in as beats of up to
``lanes`` elements (see :mod:`rtl.row_unit_layouts`), three times (``passes = 3``). With
``[L, Me, Ee, SG, zp] = params`` and the per-element codes ``G_j``, ``B_j`` in the beats'
``gamma`` and ``beta`` lanes, the unit computes (``>>`` is an arithmetic shift, as in numpy's
int64 code):

Pass 0 (one beat per cycle): ``S = sum_j x_j`` and the row's ``x_max`` and ``x_min``: the beat
is registered, then an adder tree and two comparator trees over the masked lanes (one registered
level of each per cycle, ``ceil(log2(lanes))`` levels), then three running registers.

Between passes 0 and 1 (``beats.ready`` low, ``13 + ceil(log2(lanes))`` cycles from the last
beat of pass 0 to the first of pass 1): once the pipeline below is empty, ``S`` becomes the
row's, and ``x_max`` then ``x_min`` go through lane 0 of that pipeline as two extra beats, which
give ``L x_max - S`` and ``L x_min - S`` after its ``D`` stage; then, one step a cycle,
``max_j |D_j| = max(L x_max - S, S - L x_min)`` (no pass over ``D`` is needed), its bit length
(a priority encoder), ``k = max(bitlen - 23, (Ee - 30) >> 1)``, the shift amounts ``min(k + 23,
72)`` and ``min(31 - e, 63)`` with ``e = Ee - 2k`` (``e <= 31`` always), and ``E = (Me << 31) >>
min(31 - e, 63)``, which is ``Me << e`` (``e >= 0``) or ``Me >> min(-e, 63)``.

Pass 1 (one beat per cycle): per lane ``D_j = L x_j - S``, ``D'_j = ((D_j << 23) >> min(k + 23,
72))`` (that is ``D_j << -k`` or ``D_j >> min(k, 63)``), the squares, an adder tree (one
registered level per cycle) and a running register: ``Q = sum D'_j**2``.

Between passes 1 and 2 (``beats.ready`` low, ``76 + ceil(log2(lanes))`` cycles from the last beat
of pass 1 to the first of pass 2): the pipeline drains, ``T = Q + E`` (1 cycle), ``r = isqrt(T)``
by the digit-by-digit method on a 34-bit remainder, two bits of ``T`` a cycle (32 steps), the
divider's set-up (1) and the one division ``R = 2**53 // max(r, 2**22)``, restoring, one quotient
bit a cycle (32 steps: the quotient is below 2**32, so it starts from the remainder ``2**53 >> 32
= 2**21``).

Pass 2 (one beat per cycle, one result beat per beat, in order, ``latency = 13`` cycles later):
``D'_j`` again, ``t_j = (D'_j R) >> 23``, ``y_j = saturate(((t_j G_j + (B_j << 30) + 2**(29 + SG))
>> (30 + SG)) + zp)``. The next row's pass 0 may follow at once.

Passes 1 and 2 share one pipeline, which stalls as a whole while a result is valid and not
ready. Its stages, per lane: 0 the beat's registers; 1 the two partial products of ``L x`` (two
MULT18X18D); 2 the low one minus ``S``; 3 ``D`` (plus the high one); 4 ``D'`` (a barrel shift);
5-7 ``D' D'`` (pass 1) or ``D' R`` (pass 2) on one shared 25 x 33 multiplier: 5 its four partial
products (four MULT18X18D), 6 the outer two side by side and the middle two summed, 7 the
product. Pass 1 then: 8 the masked square, one stage per level of the adder tree, the running
``Q``. Pass 2 then: 8 the four partial products of ``t G`` (four MULT18X18D) and ``(B << 1) +
2**SG``, 9 the outer two side by side plus ``((B << 1) + 2**SG) << 29`` and the middle two summed,
10 ``t G + (B << 30) + 2**(29 + SG)``, 11 its shift by ``30 + SG``, 12 the output: the shifted
value clamped to 10 bits, plus ``zp``, saturated. Ten MULT18X18D a lane in all, none per row.
Pass 0 of the next row overlaps with the draining of pass 2: it has its own registers, and the
row's constants are only replaced once the pipeline is empty.

Widths (every int32 input, L < 2**16; docs/integer_ops.md): ``S`` 48 signed; ``L x_j`` a 16 x 32
multiply, ``D`` and ``L x_max - S`` < 2**48 (kept in 50 bits signed, 49 unsigned); ``k`` -23..485
for valid parameters (kept in 12 bits signed, from ``Ee`` in 11 bits); ``D'`` 25 signed; ``D'**2``
47 unsigned, ``Q`` and ``E`` < 2**62, ``T`` < 2**63; ``r`` < 2**32; ``R`` <= 2**31 (32
unsigned); ``D' R`` a 25 x 33 multiply; ``t`` 32 signed; ``t G`` a 32 x 32 multiply, the sum before
the output shift 64 signed.

``error`` is 1 on every result beat while the parameters fail the checks of
``golden.intops._layernorm_constants``: ``params[0] != length`` (or ``length == 0``), ``Me``
outside [2**30, 2**31), ``Ee`` outside -1000..1000, ``SG`` outside 0..31, ``zp`` outside
-128..127 (the values are then meaningless, but the unit still produces every result beat).
The checks are registered: the parameters are stable long before the first result.
The unit counts the passes itself; ``pass_index`` is not used.
"""

from amaranth import Cat, Const, Module, Mux, ResetSignal, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from .arith import leading_zeros
from .row_unit_layouts import row_beat_layout, row_result_layout

__all__ = ["LayernormUnit"]

_DEV_BITS = 23        # golden LAYERNORM_DEV_BITS
_RECIP_BITS = 53      # golden LAYERNORM_RECIP_BITS
_MIN_ROOT = 1 << 22   # golden LAYERNORM_MIN_ROOT
_NORM_BITS = 30       # golden LAYERNORM_NORM_BITS
_STEPS = 32           # isqrt steps (two bits of T each) and quotient bits
_LOW = 17             # the unsigned low part of an operand split for 18 x 18 signed multipliers
_RESULT_SLOTS = 16    # the results FIFO: more than the pipeline's latency, so no backpressure no stall
_SHIFT_CLIP = 72      # D << 23 is 73 bits: a right shift by 72 leaves its sign alone


def _max(a, b):
    return Mux(a > b, a, b)


def _min(a, b):
    return Mux(a < b, a, b)


def _tree(items, op, register):
    """A balanced reduction tree of ``items`` with the binary ``op``, each level ``register``ed
    (``register(value, level)``); returns the root and the number of levels."""
    items = list(items)
    levels = 0
    while len(items) > 1:
        items = [register(op(items[i], items[i + 1]) if i + 1 < len(items) else items[i], levels)
                 for i in range(0, len(items), 2)]
        levels += 1
    return items[0], levels


def _fits(value, bits):
    """A signed ``value`` is a signed number of ``bits`` bits (its top bits all equal)."""
    top = value[bits - 1:]
    return top.all() | ~top.any()


def _split(value):
    """A signed operand of 18 to 35 bits as its low 17 bits (unsigned) and the rest (signed)."""
    return value[:_LOW], value[_LOW:].as_signed()


def _product(register, a, b, name, *, addend=None):
    """``a * b (+ addend)`` of two signed operands of 18 to 35 bits, over three registered stages:
    the four partial products (one 18 x 18 multiplier each), then the low and the high one side
    by side (plus ``addend``, which must have no bit below bit 17) and the two middle ones summed,
    then the whole product. ``register(value, name)`` makes a stage register."""
    a_low, a_high = _split(a)
    b_low, b_high = _split(b)
    low = register(a_low * b_low, f"{name}_low")
    high = register(a_high * b_high, f"{name}_high")
    cross_a = register(a_low * b_high, f"{name}_cross_a")
    cross_b = register(a_high * b_low, f"{name}_cross_b")
    outer = Cat(low, high).as_signed()
    if addend is not None:
        outer = outer + addend
    outer = register(outer, f"{name}_outer")
    middle = register(cross_a + cross_b, f"{name}_middle")
    return register(outer + (middle << _LOW), f"{name}_sum")


class LayernormUnit(wiring.Component):
    """Integer layernorm of rows streamed three times (see the module docstring).

    ``params`` ([L, Me, Ee, SG, zp]) and ``length`` must be stable from before the first beat of
    an instruction until its last result.
    """

    passes = 3
    #: Cycles from a beat of pass 2 taken to its result valid (without backpressure).
    latency = 14

    def __init__(self, *, lanes: int):
        if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
            self._MustUse__silence = True  # never elaborated: no "created but never used" warning
            raise ValueError(f"Lanes must be a positive integer, not {lanes!r}")
        self.lanes = lanes
        super().__init__({
            "beats": In(stream.Signature(row_beat_layout(lanes))),
            "results": Out(stream.Signature(row_result_layout(lanes))),
            "params": In(data.ArrayLayout(signed(32), 5)),
            "length": In(unsigned(16)),
        })

    def elaborate(self, platform):
        m = Module()
        lanes = self.lanes
        beat = self.beats.payload
        length = self.length
        eps_mult, eps_exp, shift, zero_point = (self.params[i] for i in range(1, 5))

        take = Signal()
        m.d.comb += take.eq(self.beats.valid & self.beats.ready)

        # What the unit uses of the parameters, registered every cycle ----------------------------
        bad = Signal()
        offset = Signal(signed(41), reset_less=True)       # (2 zp + 1) << SG
        out_shift = Signal(5, reset_less=True)             # SG (the output shift is 30 + SG)
        k_min = Signal(signed(12), reset_less=True)        # (Ee - 30) >> 1
        eps_base = Signal(signed(12), reset_less=True)     # 31 - Ee
        m.d.sync += [
            bad.eq((self.params[0] != length) | (length == 0) | eps_mult[31] | ~eps_mult[30]
                   | ~_fits(eps_exp, 11) | (eps_exp[:11].as_signed() < -1000)
                   | (eps_exp[:11].as_signed() > 1000) | shift[5:].any() | ~_fits(zero_point, 8)),
            offset.eq(Cat(Const(1, 1), zero_point[:8]).as_signed() << shift[:5]),
            out_shift.eq(shift[:5]),
            # An Ee outside -1000..1000 (11 bits) raises error.
            k_min.eq((eps_exp[:11].as_signed() - 30) >> 1),
            eps_base.eq(31 - eps_exp[:11].as_signed()),
        ]

        def register(value, name):
            reg = Signal(Value.cast(value).shape(), name=name, reset_less=True)
            m.d.sync += reg.eq(value)
            return reg

        def cleared_register(value, keep, name):
            """A register of ``value`` while ``keep``, else 0: a synchronous reset, no LUT."""
            reg = Signal(Value.cast(value).shape(), name=name, reset_less=True)
            with m.If(keep):
                m.d.sync += reg.eq(value)
            with m.Else():
                m.d.sync += reg.eq(0)
            return reg

        def flag(value, name):
            reg = Signal(name=name)
            m.d.sync += reg.eq(value)
            return reg

        # Pass 0: sum, max and min over the masked lanes -----------------------------------------
        # x_max and x_min are found on the values with bit 31 flipped (unsigned compares); a lane
        # takes part while its mask bit (cleared but for beats of pass 0) is set.
        in_pass0 = Signal()
        p0_valid = [flag(take & in_pass0, "p0_valid_0")]
        p0_mask = register(Mux(take & in_pass0, beat.mask, 0), "p0_mask")
        p0_x = [cleared_register(beat.values[j], take & in_pass0 & beat.mask[j], f"p0_x_{j}")
                for j in range(lanes)]

        def flipped(x):
            return Cat(x[:31], ~x[31])

        def extreme(better):
            def pick(a, b):  # (value, valid) of the better one of two
                a_wins = a[1] & (~b[1] | better(a[0], b[0]))
                return Mux(a_wins, a[0], b[0]), a[1] | b[1]
            return pick

        def tree_register(name):
            def make(value, level):
                return (register(value[0], f"p0_{name}_{level}"),
                        flag(value[1], f"p0_{name}_valid_{level}"))
            return make

        beat_sum, p0_levels = _tree(
            p0_x, lambda a, b: a + b,
            lambda value, level: register(value, f"p0_sum_{level}"))
        leaves = [(flipped(p0_x[j]), p0_mask[j]) for j in range(lanes)]
        beat_max, _ = _tree(leaves, extreme(lambda a, b: a > b), tree_register("max"))
        beat_min, _ = _tree(leaves, extreme(lambda a, b: a < b), tree_register("min"))
        for level in range(p0_levels):
            p0_valid.append(flag(p0_valid[-1], f"p0_valid_{level + 1}"))
        # The running sum and extremes start again once the row's S, x_max and x_min are taken
        # (and on reset): a synchronous reset of their registers, no LUT.
        restart = Signal()

        def running(reg, value):
            with m.If(restart | ResetSignal()):
                m.d.sync += reg.eq(reg.init)
            with m.Else():
                m.d.sync += reg.eq(value)

        s_acc = Signal(signed(48), reset_less=True)
        running(s_acc, s_acc + beat_sum)

        # The running extremes: a loop of two registered stages, the compare of the beat's extreme
        # with the loop's value, then the select, so it holds two running extremes (of the beats
        # of even and of odd cycles), which alternate in it once no beat comes.
        def running_extreme(candidate, better, fill, name):
            held = register(candidate[0], f"{name}_candidate")
            take_it = Signal(name=f"{name}_take")
            current = Signal(32, init=fill, name=f"{name}_current", reset_less=True)
            other = Signal(32, init=fill, name=f"{name}_other", reset_less=True)
            running(take_it, candidate[1] & better(candidate[0], current))
            running(current, Mux(take_it, held, other))
            running(other, current)
            return current, other

        max_pair = running_extreme(beat_max, lambda a, b: a > b, 0, "max")
        min_pair = running_extreme(beat_min, lambda a, b: a < b, (1 << 32) - 1, "min")
        p0_valid.append(flag(p0_valid[-1], "p0_valid_extremes"))
        p0_busy = Cat(*p0_valid).any()

        # Row constants, replaced only while the shared pipeline is empty.
        s_row = Signal(signed(48), reset_less=True)
        x_max = Signal(signed(32), reset_less=True)
        x_min = Signal(signed(32), reset_less=True)
        amount = Signal(range(_SHIFT_CLIP + 1), reset_less=True)  # min(k + 23, 72)
        quotient = Signal(32, reset_less=True)  # R once the division is done

        # Passes 1 and 2: one pipeline that never stalls, into the results FIFO -----------------
        in_pass12 = Signal()
        in_pass2 = Signal()
        inject = Signal()      # a row beat into lane 0: x_max, or x_min with inject_min
        inject_min = Signal()

        # Stage 0: the beat (lane 0 takes the row's x_max or x_min for a row beat).
        valid = [flag(take & in_pass12 | inject, "valid_0")]
        second = [flag(in_pass2, "second_0")]
        row_beat = flag(inject, "row_beat_0")
        row_beat_min = flag(inject_min, "row_beat_min_0")
        mask = [register(beat.mask, "mask_0")]
        row_value = Mux(inject_min, x_min, x_max)
        x = [register(Mux(inject, row_value, beat.values[0]) if j == 0 else beat.values[j],
                      f"x_0_{j}") for j in range(lanes)]
        gamma = [[register(beat.gamma[j], f"gamma_0_{j}")] for j in range(lanes)]
        beta = [[register(beat.beta[j], f"beta_0_{j}")] for j in range(lanes)]

        def advance(stage, *, kept=None):
            """The flags, mask, gamma and beta of the next stage (``kept``: which beats go on)."""
            valid.append(flag(valid[-1] if kept is None else valid[-1] & kept, f"valid_{stage}"))
            second.append(flag(second[-1], f"second_{stage}"))
            mask.append(register(mask[-1], f"mask_{stage}"))
            for j in range(lanes):
                gamma[j].append(register(gamma[j][-1], f"gamma_{stage}_{j}"))
                beta[j].append(register(beta[j][-1], f"beta_{stage}_{j}"))

        # Stages 1-3: D = L x - S, the multiply split at bit 17 of x.
        advance(1)
        x_parts = [_split(x[j]) for j in range(lanes)]
        product_low = [register(length * x_parts[j][0], f"lx_low_1_{j}") for j in range(lanes)]
        product_high = [register(length * x_parts[j][1], f"lx_high_1_{j}") for j in range(lanes)]
        advance(2)
        low_minus_s = [register(product_low[j] - s_row, f"lx_low_minus_s_2_{j}")
                       for j in range(lanes)]
        product_high = [register(product_high[j], f"lx_high_2_{j}") for j in range(lanes)]
        advance(3)
        dev = [register((low_minus_s[j] + (product_high[j] << _LOW))[:49].as_signed(),
                        f"dev_3_{j}") for j in range(lanes)]
        for stage in (1, 2, 3):
            row_beat = flag(row_beat, f"row_beat_{stage}")
            row_beat_min = flag(row_beat_min, f"row_beat_min_{stage}")

        # A row beat leaves here: L x_max - S, then L x_min - S. Only the bit length of the larger
        # of L x_max - S and S - L x_min matters: that of their bitwise or.
        high = Signal(49, reset_less=True)
        biggest = Signal(49, reset_less=True)
        with m.If(valid[3] & row_beat):
            with m.If(row_beat_min):
                m.d.sync += biggest.eq(high | (-dev[0])[:49])
            with m.Else():
                m.d.sync += high.eq(dev[0])
        min_captured = Signal()
        m.d.comb += min_captured.eq(valid[3] & row_beat & row_beat_min)

        # Stages 4-5: D' = (D << 23) >> min(k + 23, 72), that is D << -k or D >> min(k, 63): by a
        # multiple of 8, then by the rest.
        advance(4, kept=~row_beat)
        coarse = [register(((dev[j] << _DEV_BITS) >> Cat(Const(0, 3), amount[3:]))[:32].as_signed(),
                           f"coarse_4_{j}") for j in range(lanes)]
        advance(5)
        norm = []
        factor = []  # D' (pass 1) or R (pass 2): the multiplier's other operand
        for j in range(lanes):
            shifted = Signal(signed(25), name=f"norm_{j}")
            m.d.comb += shifted.eq(coarse[j] >> amount[:3])
            norm.append(register(shifted, f"norm_5_{j}"))
            factor.append(register(Mux(second[4], quotient, shifted), f"factor_5_{j}"))

        # Stages 6-8: D' D' (pass 1) or D' R (pass 2).
        for stage in (6, 7, 8):
            advance(stage)
        scaled = [_product(register, norm[j], factor[j], f"dev_r_{j}") for j in range(lanes)]

        # Pass 1, stage 9 on: the masked squares, the adder tree, Q.
        square_valid = [flag(valid[8] & ~second[8], "square_valid_9")]
        squares = [cleared_register(scaled[j][:47], mask[8][j], f"square_9_{j}")
                   for j in range(lanes)]
        square_sum, square_levels = _tree(
            squares, lambda a, b: a + b, lambda value, level: register(value, f"square_sum_{level}"))
        for level in range(square_levels):
            square_valid.append(flag(square_valid[-1], f"square_valid_{10 + level}"))
        q = Signal(63, reset_less=True)
        with m.If(square_valid[-1]):
            m.d.sync += q.eq(q + square_sum)

        # Pass 2, stages 9-11: t = (D' R) >> 23, t G + (B << 30) + 2**(29 + SG) + (zp << (30 + SG))
        # (zp added before the shift by 30 + SG is added after it: the shift floors).
        out_valid = [flag(valid[8] & second[8], "out_valid_9")]
        totals = []
        for j in range(lanes):
            t = scaled[j][_DEV_BITS:_DEV_BITS + 32].as_signed()
            bias = register(Cat(Const(0, 1), beta[j][8]).as_signed() + offset, f"bias_9_{j}")
            totals.append(_product(register, t, gamma[j][8], f"t_g_{j}",
                                   addend=bias << (_NORM_BITS - 1)))
        for stage in (10, 11):
            out_valid.append(flag(out_valid[-1], f"out_valid_{stage}"))

        # Stage 12: >> (30 + SG) (the sum is below 2**69 in magnitude); 13: saturated, into the
        # FIFO.
        out_valid.append(flag(out_valid[-1], "out_valid_12"))
        shifted = [register(totals[j][_NORM_BITS:70].as_signed() >> out_shift, f"shifted_12_{j}")
                   for j in range(lanes)]
        m.submodules.results = results = SyncFIFO(width=8 * lanes, depth=_RESULT_SLOTS)
        outputs = []
        for j in range(lanes):
            top = shifted[j][7:]  # an int8 when these all equal the sign
            outputs.append(Mux(top.all() | ~top.any(), shifted[j][:8], Mux(top[-1], 0x80, 0x7F)))
        m.d.comb += [
            results.w_en.eq(out_valid[-1]),
            results.w_data.eq(Cat(*outputs)),
            self.results.valid.eq(results.r_rdy),
            self.results.payload.values.eq(results.r_data),
            self.results.payload.error.eq(bad),
            results.r_en.eq(self.results.ready),
        ]
        # Pass 2 beats in the pipeline or in the FIFO: a beat of pass 2 is taken only while there
        # is a FIFO slot for it.
        in_flight = Signal(range(_RESULT_SLOTS + 1))
        m.d.sync += in_flight.eq(in_flight + (take & in_pass2)
                                 - (self.results.valid & self.results.ready))
        slot_free = ~in_flight[-1]  # in_flight < _RESULT_SLOTS, a power of two

        # No beat in stages 0-8 nor in the adder tree of the squares (the row constants are used
        # up to stage 5, Q is complete), registered: one cycle late, as nothing entered since.
        drained = Signal()
        m.d.sync += drained.eq(~Cat(*valid, *square_valid).any() & ~(take & in_pass12 | inject))

        # The row work between the passes ----------------------------------------------------
        zeros = Signal(range(50), reset_less=True)     # leading zeros of max |D| in 49 bits
        k_dev = Signal(signed(7))                      # bitlen(max |D|) - 23
        m.d.comb += k_dev.eq(49 - _DEV_BITS - zeros)
        k = Signal(signed(12), reset_less=True)
        eps_amount = Signal(6, reset_less=True)        # min(31 - e, 63)
        eps_rest = Signal(signed(14))                  # 31 - e
        m.d.comb += eps_rest.eq(eps_base + (k << 1))
        eps = Signal(62, reset_less=True)

        # The isqrt and the division: one step a cycle while the FSM says so, the register's
        # next value a single LUT behind the carry chain of the trial subtraction.
        sqrt_load = Signal()
        sqrt_step = Signal()
        radicand = Signal(64, reset_less=True)  # T; two bits leave at the top each isqrt step
        rem = Signal(34, reset_less=True)       # isqrt remainder (at most 2 root)
        root = Signal(32, reset_less=True)
        rem_next = Signal(36)
        rem_trial = Signal(signed(37))          # rem_next - (4 root + 1)
        m.d.comb += [rem_next.eq(Cat(radicand[-2:], rem)),
                     rem_trial.eq(rem_next - Cat(Const(1, 2), root))]
        with m.If(sqrt_load):
            m.d.sync += [radicand.eq(q + eps), rem.eq(0), root.eq(0)]
        with m.Elif(sqrt_step):
            m.d.sync += [radicand.eq(radicand << 2),
                         rem.eq(Mux(rem_trial < 0, rem_next, rem_trial)),
                         root.eq(Cat(rem_trial >= 0, root))]

        divide_load = Signal()
        divide_step = Signal()
        divisor = Signal(32, reset_less=True)
        div_rem = Signal(32, reset_less=True)
        doubled = Signal(33)
        div_trial = Signal(signed(34))          # doubled - divisor
        m.d.comb += [doubled.eq(Cat(Const(0, 1), div_rem)), div_trial.eq(doubled - divisor)]
        with m.If(divide_load):
            m.d.sync += [divisor.eq(Mux(root[22:].any(), root, _MIN_ROOT)),
                         div_rem.eq(1 << (_RECIP_BITS - _STEPS)), quotient.eq(0)]
        with m.Elif(divide_step):
            m.d.sync += [div_rem.eq(Mux(div_trial < 0, doubled, div_trial)),
                         quotient.eq(Cat(div_trial >= 0, quotient))]
        count = Signal(range(_STEPS), reset_less=True)

        with m.FSM():
            with m.State("PASS0"):
                m.d.comb += [in_pass0.eq(1), self.beats.ready.eq(1)]
                with m.If(take & beat.last):
                    m.next = "WAIT0"
            with m.State("WAIT0"):
                # The row's sum is complete and the previous row's pass 2 has left the pipeline.
                with m.If(~p0_busy & drained):
                    m.d.comb += restart.eq(1)
                    m.d.sync += [s_row.eq(s_acc),
                                 x_max.eq(flipped(_max(*max_pair)).as_signed()),
                                 x_min.eq(flipped(_min(*min_pair)).as_signed())]
                    m.next = "INJECT_MAX"
            with m.State("INJECT_MAX"):
                m.d.comb += inject.eq(1)
                m.next = "INJECT_MIN"
            with m.State("INJECT_MIN"):
                m.d.comb += [inject.eq(1), inject_min.eq(1)]
                m.next = "ROW_DEV"
            with m.State("ROW_DEV"):
                with m.If(min_captured):
                    m.next = "BIT_LENGTH"
            with m.State("BIT_LENGTH"):
                m.d.sync += zeros.eq(leading_zeros(m, biggest))
                m.next = "SHIFT"
            with m.State("SHIFT"):
                m.d.sync += k.eq(_max(k_dev, k_min))
                m.next = "AMOUNTS"
            with m.State("AMOUNTS"):  # k >= -23: the bit length is at least 0
                m.d.sync += [
                    amount.eq(Mux(k > _SHIFT_CLIP - _DEV_BITS, _SHIFT_CLIP, k + _DEV_BITS)),
                    eps_amount.eq(Mux(eps_rest < 0, 0, Mux(eps_rest > 63, 63, eps_rest))),
                ]
                m.next = "EPSILON"
            with m.State("EPSILON"):
                m.d.sync += [eps.eq(Cat(Const(0, 31), eps_mult[:31]) >> eps_amount), q.eq(0)]
                m.next = "PASS1"
            with m.State("PASS1"):
                m.d.comb += [in_pass12.eq(1), self.beats.ready.eq(1)]
                with m.If(take & beat.last):
                    m.next = "WAIT1"
            with m.State("WAIT1"):
                with m.If(drained):  # Q is complete
                    m.d.comb += sqrt_load.eq(1)
                    m.d.sync += count.eq(0)
                    m.next = "SQRT"
            with m.State("SQRT"):
                m.d.comb += sqrt_step.eq(1)
                m.d.sync += count.eq(count + 1)
                with m.If(count == _STEPS - 1):
                    m.next = "DIVIDE_SETUP"
            with m.State("DIVIDE_SETUP"):
                m.d.comb += divide_load.eq(1)
                m.d.sync += count.eq(0)
                m.next = "DIVIDE"
            with m.State("DIVIDE"):
                m.d.comb += divide_step.eq(1)
                m.d.sync += count.eq(count + 1)
                with m.If(count == _STEPS - 1):
                    m.next = "PASS2"
            with m.State("PASS2"):
                m.d.comb += [in_pass12.eq(1), in_pass2.eq(1), self.beats.ready.eq(slot_free)]
                with m.If(take & beat.last):
                    m.next = "PASS0"
        return m
