"""The vector unit's LAYERNORM row unit, bit-exact with ``golden.intops.layernorm``.

A row ``x`` of ``L`` int32 elements (1 <= L <= 65535, ``length``) comes in as beats of up to
``lanes`` elements (see :mod:`rtl.row_unit_layouts`), three times (``passes = 3``). With
``[L, Me, Ee, SG, zp] = params`` and the per-element codes ``G_j``, ``B_j`` in the beats'
``gamma`` and ``beta`` lanes, the unit computes (``>>`` is an arithmetic shift, as in numpy's
int64 code):

Pass 0 (one beat per cycle): ``S = sum_j x_j`` and the row's ``x_max`` and ``x_min``, each an
adder / comparator tree over the masked lanes into a one-stage register, then a running register.

Between passes 0 and 1 (4 idle cycles): ``max_j |D_j| = max(L x_max - S, S - L x_min)`` (no
pass over ``D`` is needed), its bit length (a priority encoder), ``k = max(bitlen - 23, (Ee - 30)
>> 1)``, then ``e = Ee - 2k`` and ``E = Me << e`` (``e >= 0``) or ``Me >> min(-e, 63)``.

Pass 1 (one beat per cycle): per lane ``D_j = L x_j - S`` and ``D'_j = D_j << -k`` (``k < 0``) or
``D_j >> min(k, 63)``, the squares, an adder tree and a running register: ``Q = sum D'_j**2``.

Between passes 1 and 2 (70 idle cycles, ``beats.ready`` low): the pipeline drains (4), ``T = Q +
E`` (1), ``r = isqrt(T)`` by the bitwise method of ``golden.intops._isqrt`` (32 steps, one a
cycle), the divider's set-up (1) and the one division ``R = 2**53 // max(r, 2**22)``, restoring,
one quotient bit a cycle (32 steps: the quotient is below 2**32, so it starts from the remainder
``2**53 >> 32 = 2**21``).

Pass 2 (one beat per cycle, one result beat per beat, in order, 5 cycles later): ``D'_j`` again,
``t_j = (D'_j R) >> 23``, ``y_j = saturate(((t_j G_j + (B_j << 30) + 2**(29 + SG)) >> (30 + SG))
+ zp)``. The next row's pass 0 may follow at once.

Passes 1 and 2 share one pipeline of five stages (``D``, ``D'``, the square or ``t``, the tree or
the ``G``/``B`` sum, the accumulate or the output), which stalls as a whole while a result is
valid and not ready. Pass 0 of the next row overlaps with the draining of pass 2: it has its own
running registers, and the row's constants are only replaced once the pipeline is empty.

Widths (every int32 input, L < 2**16; docs/integer_ops.md): ``S`` 48 signed; ``L x_j`` a 17 x 32
multiply, ``D`` and ``L x_max - S`` < 2**48 (kept in 50 bits signed, 49 unsigned); ``k`` -23..485
for valid parameters (kept in 34 bits signed, ``e`` in 36); ``D'`` 25 signed; ``D'**2`` 47
unsigned, ``Q`` and ``E`` < 2**62, ``T`` < 2**63 (64 unsigned); ``r`` < 2**32; ``R`` <= 2**31 (32
unsigned); ``D' R`` a 25 x 32 multiply; ``t`` 32 signed; ``t G`` a 32 x 32 multiply, the sum before
the output shift 64 signed.

``error`` is 1 on every result beat while the parameters fail the checks of
``golden.intops._layernorm_constants``: ``params[0] != length`` (or ``length == 0``), ``Me``
outside [2**30, 2**31), ``Ee`` outside -1000..1000, ``SG`` outside 0..31, ``zp`` outside
-128..127 (the values are then meaningless, but the unit still produces every result beat).
The unit counts the passes itself; ``pass_index`` is not used.
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .arith import leading_zeros
from .row_unit_layouts import row_beat_layout, row_result_layout

__all__ = ["LayernormUnit"]

_DEV_BITS = 23        # golden LAYERNORM_DEV_BITS
_RECIP_BITS = 53      # golden LAYERNORM_RECIP_BITS
_MIN_ROOT = 1 << 22   # golden LAYERNORM_MIN_ROOT
_NORM_BITS = 30       # golden LAYERNORM_NORM_BITS
_STEPS = 32           # isqrt steps and quotient bits


def _tree(items, op):
    """A balanced reduction tree of ``items`` with the binary ``op``."""
    items = list(items)
    while len(items) > 1:
        items = [op(items[i], items[i + 1]) if i + 1 < len(items) else items[i]
                 for i in range(0, len(items), 2)]
    return items[0]


def _max(a, b):
    return Mux(a > b, a, b)


def _min(a, b):
    return Mux(a < b, a, b)


class LayernormUnit(wiring.Component):
    """Integer layernorm of rows streamed three times (see the module docstring).

    ``params`` ([L, Me, Ee, SG, zp]) and ``length`` must be stable from before the first beat of
    an instruction until its last result.
    """

    passes = 3

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
        en = Signal()
        m.d.comb += [
            take.eq(self.beats.valid & self.beats.ready),
            en.eq(~self.results.valid | self.results.ready),
        ]

        bad = Signal()
        m.d.comb += bad.eq((self.params[0] != length) | (length == 0) | (eps_mult < (1 << 30))
                           | (eps_exp < -1000) | (eps_exp > 1000) | (shift < 0) | (shift > 31)
                           | (zero_point < -128) | (zero_point > 127))

        # Row constants, replaced only while the shared pipeline is empty.
        s_row = Signal(signed(48))
        k = Signal(signed(34))
        k_neg = Signal()
        left = Signal(5)      # -k when k < 0 (1..23)
        right = Signal(6)     # min(k, 63) when k >= 0
        eps = Signal(signed(64))
        quotient = Signal(32)  # R once the division is done

        # Pass 0: sum, max and min over the masked lanes ---------------------------------------
        in_pass0 = Signal()
        def masked(fill):
            return [Mux(beat.mask[j], beat.values[j], fill) for j in range(lanes)]

        beat_sum = _tree(masked(0), lambda a, b: a + b)
        beat_max = _tree(masked(-(1 << 31)), _max)
        beat_min = _tree(masked((1 << 31) - 1), _min)
        p0_valid = Signal()
        p0_sum = Signal(signed(32 + (lanes - 1).bit_length()))
        p0_max = Signal(signed(32))
        p0_min = Signal(signed(32))
        m.d.sync += [p0_valid.eq(take & in_pass0), p0_sum.eq(beat_sum), p0_max.eq(beat_max),
                     p0_min.eq(beat_min)]
        s_acc = Signal(signed(48))
        max_acc = Signal(signed(32), init=-(1 << 31))
        min_acc = Signal(signed(32), init=(1 << 31) - 1)
        with m.If(p0_valid):
            m.d.sync += [s_acc.eq(s_acc + p0_sum), max_acc.eq(_max(max_acc, p0_max)),
                         min_acc.eq(_min(min_acc, p0_min))]

        # Passes 1 and 2: one pipeline, stalled as a whole ---------------------------------------
        def stage(shape, value, name):
            reg = Signal(shape, name=name)
            with m.If(en):
                m.d.sync += reg.eq(value)
            return reg

        in_pass12 = Signal()
        in_pass2 = Signal()

        # Stage 1: D = L x - S.
        valid1 = stage(1, take & in_pass12, "valid_1")
        second1 = stage(1, in_pass2, "second_1")
        error1 = stage(1, bad, "error_1")
        mask1 = stage(lanes, beat.mask, "mask_1")
        dev1 = [stage(signed(50), length * beat.values[j] - s_row, f"dev_1_{j}")
                for j in range(lanes)]
        gamma1 = [stage(signed(32), beat.gamma[j], f"gamma_1_{j}") for j in range(lanes)]
        beta1 = [stage(signed(32), beat.beta[j], f"beta_1_{j}") for j in range(lanes)]

        # Stage 2: D' = D << -k or D >> min(k, 63) (|D'| <= 2**23).
        valid2 = stage(1, valid1, "valid_2")
        second2 = stage(1, second1, "second_2")
        error2 = stage(1, error1, "error_2")
        mask2 = stage(lanes, mask1, "mask_2")
        norm2 = []
        for j in range(lanes):
            shifted = Signal(signed(25), name=f"shifted_{j}")
            with m.If(k_neg):
                m.d.comb += shifted.eq(dev1[j] << left)
            with m.Else():
                m.d.comb += shifted.eq(dev1[j] >> right)
            norm2.append(stage(signed(25), shifted, f"norm_2_{j}"))
        gamma2 = [stage(signed(32), gamma1[j], f"gamma_2_{j}") for j in range(lanes)]
        beta2 = [stage(signed(32), beta1[j], f"beta_2_{j}") for j in range(lanes)]

        # Stage 3: pass 1 the squares, pass 2 t = (D' R) >> 23.
        valid3 = stage(1, valid2, "valid_3")
        second3 = stage(1, second2, "second_3")
        error3 = stage(1, error2, "error_3")
        square3 = [stage(unsigned(47), Mux(mask2[j], norm2[j] * norm2[j], 0), f"square_3_{j}")
                   for j in range(lanes)]
        norm3 = [stage(signed(32), (norm2[j] * quotient) >> _DEV_BITS, f"t_3_{j}")
                 for j in range(lanes)]
        gamma3 = [stage(signed(32), gamma2[j], f"gamma_3_{j}") for j in range(lanes)]
        beta3 = [stage(signed(32), beta2[j], f"beta_3_{j}") for j in range(lanes)]

        # Stage 4: pass 1 the sum of the squares, pass 2 t G + (B << 30) + 2**(29 + SG).
        shift5 = shift[0:5]  # SG; an out-of-range SG raises error
        half = Signal(61)
        m.d.comb += half.eq(Const(1, 1) << (shift5 + (_NORM_BITS - 1)))
        valid4 = stage(1, valid3, "valid_4")
        second4 = stage(1, second3, "second_4")
        error4 = stage(1, error3, "error_4")
        sum4 = stage(unsigned(47 + (lanes - 1).bit_length()), _tree(square3, lambda a, b: a + b),
                     "square_sum_4")
        total4 = [stage(signed(64), norm3[j] * gamma3[j] + (beta3[j] << _NORM_BITS) + half,
                        f"total_4_{j}")
                  for j in range(lanes)]

        # Stage 5: pass 1 Q += the beat's sum, pass 2 the outputs.
        q = Signal(unsigned(63))
        with m.If(en & valid4 & ~second4):
            m.d.sync += q.eq(q + sum4)
        valid5 = stage(1, valid4 & second4, "valid_5")
        error5 = stage(1, error4, "error_5")
        out_shift = Signal(6)
        m.d.comb += out_shift.eq(shift5 + _NORM_BITS)
        out5 = []
        for j in range(lanes):
            value = Signal(signed(65), name=f"value_{j}")
            m.d.comb += value.eq((total4[j] >> out_shift) + zero_point)
            saturated = Mux(value > 127, 127, Mux(value < -128, -128, value))
            out5.append(stage(signed(8), saturated, f"out_5_{j}"))
        m.d.comb += [
            self.results.valid.eq(valid5),
            self.results.payload.error.eq(error5),
            *(self.results.payload.values[j].eq(out5[j]) for j in range(lanes)),
        ]
        drained = ~(valid1 | valid2 | valid3 | valid4)

        # The row work between the passes ----------------------------------------------------
        high = Signal(49)   # L x_max - S
        low = Signal(49)    # S - L x_min
        biggest = Signal(49)
        m.d.comb += biggest.eq(Mux(high > low, high, low))
        bit_length = Signal(signed(8))
        m.d.comb += bit_length.eq(49 - leading_zeros(m, biggest))
        k_min = Signal(signed(33))
        m.d.comb += k_min.eq((eps_exp - 30) >> 1)
        k_dev = Signal(signed(8))
        m.d.comb += k_dev.eq(bit_length - _DEV_BITS)

        e = Signal(signed(36))
        m.d.comb += e.eq(eps_exp - (k << 1))
        e_left = Signal(5)
        e_right = Signal(6)
        m.d.comb += [e_left.eq(Mux(e > 31, 31, e)), e_right.eq(Mux(e < -63, 63, -e))]

        rem = Signal(64)    # isqrt remainder
        root = Signal(64)
        bit = Signal(64)
        trial = Signal(65)
        m.d.comb += trial.eq(root + bit)
        divisor = Signal(32)
        div_rem = Signal(32)
        doubled = Signal(33)
        m.d.comb += doubled.eq(Cat(Const(0, 1), div_rem))
        count = Signal(range(_STEPS))

        with m.FSM():
            with m.State("PASS0"):
                m.d.comb += [in_pass0.eq(1), self.beats.ready.eq(1)]
                with m.If(take & beat.last):
                    m.next = "WAIT0"
            with m.State("WAIT0"):
                # The row's sum is complete and the previous row's pass 2 has left the pipeline.
                with m.If(~p0_valid & drained):
                    m.d.sync += [
                        s_row.eq(s_acc),
                        high.eq(length * max_acc - s_acc),
                        low.eq(s_acc - length * min_acc),
                        s_acc.eq(0), max_acc.eq(-(1 << 31)), min_acc.eq((1 << 31) - 1),
                    ]
                    m.next = "SHIFT"
            with m.State("SHIFT"):
                m.d.sync += k.eq(Mux(k_dev > k_min, k_dev, k_min))
                m.next = "EPSILON"
            with m.State("EPSILON"):
                m.d.sync += [
                    k_neg.eq(k < 0),
                    left.eq(-k),
                    right.eq(Mux(k > 63, 63, k)),
                    eps.eq(Mux(e >= 0, eps_mult << e_left, eps_mult >> e_right)),
                    q.eq(0),
                ]
                m.next = "PASS1"
            with m.State("PASS1"):
                m.d.comb += [in_pass12.eq(1), self.beats.ready.eq(en)]
                with m.If(take & beat.last):
                    m.next = "WAIT1"
            with m.State("WAIT1"):
                with m.If(drained):  # Q is complete
                    m.d.sync += [rem.eq(q + eps), root.eq(0), bit.eq(1 << 62)]
                    m.next = "SQRT"
            with m.State("SQRT"):
                with m.If(bit != 0):
                    with m.If(rem >= trial):
                        m.d.sync += [rem.eq(rem - trial), root.eq((root >> 1) + bit)]
                    with m.Else():
                        m.d.sync += root.eq(root >> 1)
                    m.d.sync += bit.eq(bit >> 2)
                with m.Else():
                    m.d.sync += [
                        divisor.eq(Mux(root < _MIN_ROOT, _MIN_ROOT, root)),
                        div_rem.eq(1 << (_RECIP_BITS - _STEPS)),
                        quotient.eq(0),
                        count.eq(0),
                    ]
                    m.next = "DIVIDE"
            with m.State("DIVIDE"):
                with m.If(doubled >= divisor):
                    m.d.sync += [div_rem.eq(doubled - divisor), quotient.eq(Cat(Const(1, 1), quotient))]
                with m.Else():
                    m.d.sync += [div_rem.eq(doubled), quotient.eq(Cat(Const(0, 1), quotient))]
                m.d.sync += count.eq(count + 1)
                with m.If(count == _STEPS - 1):
                    m.next = "PASS2"
            with m.State("PASS2"):
                m.d.comb += [in_pass12.eq(1), in_pass2.eq(1), self.beats.ready.eq(en)]
                with m.If(take & beat.last):
                    m.next = "PASS0"
        return m
