"""The row unit of VECTOR SOFTMAX, bit-exact with ``golden.intops.softmax``: three passes over
each row and one sequential division per row.

With ``[Mi, Si, Mo, So, zp] = params`` (``golden.intops.softmax_params``) and the hard-wired
``A = 357921223``, ``B = 65535``, ``C = 357921224`` (see docs/integer_ops.md), for one row:

- **Pass 0: the row maximum** ``m``. The masked lanes of a beat (the others read as -2**31) go
  through a tree of 32-bit signed maxima, registered every two levels, into a running register.
- **Pass 1: the exponentials and their sum.** Per lane, six pipeline stages (every product is
  registered before the adds and shifts that use it):

  A. ``d = m - x``: 0 .. 2**32 - 1, 32 bits unsigned;
  B. ``d * Mi``: 32 x 31-bit product, < 2**63;
  C. ``nv = (d * Mi) >> Si`` (a 63-bit, 6-bit barrel shift), then ``z = min(nv >> 15, 31)`` (5
     bits: 31 when any bit above bit 19 is set) and ``h = B - (nv & 0x7fff)``, which is the
     bitwise complement of the 15-bit fraction with a 1 on top (16 bits, 32768..65535);
  D. ``h * h``: 16 x 16-bit product, < 2**32;
  E. ``A * h**2``: 29 x 32-bit product with a constant, < 2**61;
  F. ``e = (((A * h**2) >> 31) + C) >> z``: 31 bits, 0 .. 2**30 (exactly 2**30 at the maximum).

  The masked ``e`` of a beat go through an adder tree (31 + log2(lanes) bits, registered every
  two levels) into a 47-bit running sum, ``2**30 <= sum <= 65536 * 2**30``.
- **The division** ``R = (Mo << 31) // sum``, restoring, one quotient bit per cycle, 32 cycles
  (``beats.ready`` is low meanwhile). ``R < 2**32`` because ``Mo < 2**31`` and ``sum >= 2**30``,
  so the dividend's bits above bit 31, ``Mo >> 1 < sum``, are the initial remainder and only the
  32 quotient bits 31..0 remain; the remainder stays below ``sum``, 48 bits with the shifted-in
  bit.
- **Pass 2: the outputs.** Stages A-F again (the same hardware recomputes ``e``), then

  G. ``e * R``: 31 x 32-bit product, <= Mo * 2**31 < 2**62 (because ``e <= sum``);
  H. ``y = saturate(((e * R + 2**(So + 30)) >> (So + 31)) + zp)``, computed as
     ``((e * R >> (So + 30)) + 1) >> 1`` (the same value: adding 2**(n-1) before a floor shift by
     n equals shifting by n - 1, adding 1 and shifting by 1), so that the rounding adder is 19
     bits wide: ``So + 30`` is ``44 + k`` with ``k = So - 14`` in 0..16, a fixed shift and a
     5-bit barrel shift.

  One result beat per pass-2 beat, in order, ``latency`` cycles after the beat; the pipeline
  stalls as a whole when ``results`` is not ready (as the one-lane pipelines do).

Throughput: one beat per cycle inside each pass. Between passes ``beats.ready`` is low while the
last beat's reduction completes (after pass 0: the max tree's stages; after pass 1: stages A-F,
the adder tree's stages and the 32 division cycles). The next row's pass 0 may start as soon as
the last pass-2 beat is accepted.

The unit follows the passes itself (it does not look at ``pass_index``); unmasked lanes never
affect a result. ``params`` are registered once; the user holds them from before the first beat
of an instruction until its last result. ``error`` is 1 on every result beat while the params
are outside the ranges ``golden.intops.softmax`` accepts (``Mi``, ``Mo`` outside 2**30 ..
2**31 - 1, ``Si`` outside 0..62, ``So`` outside 14..30, ``zp`` outside -128..127; the
instruction stops with ILLEGAL_INSTRUCTION); the values are then meaningless.
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.intops import (
    SOFTMAX_EXP_A,
    SOFTMAX_EXP_B,
    SOFTMAX_EXP_BITS,
    SOFTMAX_EXP_C,
    SOFTMAX_FRAC_BITS,
    SOFTMAX_MAX_SHIFT,
    SOFTMAX_PARAM_COUNT,
)

from .row_unit_layouts import row_beat_layout, row_result_layout

__all__ = ["SoftmaxUnit"]

_INT32_MIN = -(1 << 31)
_SO_MIN, _SO_MAX = 14, 30                 # output shift range (golden.intops._softmax_constants)
_EXP_WIDTH = SOFTMAX_EXP_BITS + 1         # e: 0 .. 2**30
_SUM_WIDTH = 47                           # sum: up to 65536 * 2**30
_QUOTIENT_WIDTH = 32                      # R < 2**32
_TREE_LEVELS_PER_STAGE = 2                # reduction trees: a register every two levels

assert SOFTMAX_EXP_B == (1 << 16) - 1     # h = B - f is the complement of f (stage C)
assert SOFTMAX_MAX_SHIFT == 31            # z saturates at 31 (stage C)


class _Phase(enum.Enum, shape=2):
    MAX = 0      # accepting pass 0
    SUM = 1      # accepting pass 1
    DIVIDE = 2   # R = (Mo << 31) // sum; no beats accepted
    OUTPUT = 3   # accepting pass 2


def _multiplier_ok(value):
    """2**30 <= value < 2**31 for a signed 32-bit value: bits 31..30 are 0b01."""
    return value[30:32] == 0b01


def _in_range(value, low: int, high: int):
    return (value >= low) & (value <= high)


class SoftmaxUnit(wiring.Component):
    """Softmax of rows of up to 65536 int32 elements, ``lanes`` elements per beat, in ``passes``
    passes; results ``latency`` cycles after their pass-2 beats."""

    passes = 3
    latency = 8

    def __init__(self, *, lanes: int):
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"Lanes must be a positive integer, not {lanes!r}")
        self.lanes = lanes
        super().__init__({
            "beats": In(stream.Signature(row_beat_layout(lanes))),
            "results": Out(stream.Signature(row_result_layout(lanes))),
            "params": In(data.ArrayLayout(signed(32), SOFTMAX_PARAM_COUNT)),
        })

    def elaborate(self, platform):
        m = Module()
        lanes = self.lanes
        en = Signal()  # the pipeline moves (everything but the divider stalls as a whole)
        m.d.comb += en.eq(~self.results.valid | self.results.ready)

        def stage(shape, value, name):
            reg = Signal(shape, name=name)
            with m.If(en):
                m.d.sync += reg.eq(value)
            return reg

        def delay(value, stages, name):
            for index in range(stages):
                value = stage(value.shape(), value, f"{name}_d{index}")
            return value

        def tree(values, op, shape, name):
            """Reduce ``values`` with ``op``; (registered result, number of register stages)."""
            values = list(values)
            stages = 0
            while True:
                for _ in range(_TREE_LEVELS_PER_STAGE):
                    if len(values) == 1:
                        break
                    values = [op(values[i], values[i + 1]) if i + 1 < len(values) else values[i]
                              for i in range(0, len(values), 2)]
                values = [stage(shape, v, f"{name}_t{stages}_{i}") for i, v in enumerate(values)]
                stages += 1
                if len(values) == 1:
                    return values[0], stages

        # Parameters, registered once (held stable by the user) --------------------------------
        params = Signal(data.ArrayLayout(signed(32), SOFTMAX_PARAM_COUNT))
        m.d.sync += params.eq(self.params)
        mi, si, mo, so, zp = (params[i] for i in range(SOFTMAX_PARAM_COUNT))
        error = Signal()
        m.d.sync += error.eq(~(_multiplier_ok(mi) & _in_range(si, 0, 62) & _multiplier_ok(mo)
                               & _in_range(so, _SO_MIN, _SO_MAX) & _in_range(zp, -128, 127)))

        # Pass control --------------------------------------------------------------------------
        phase = Signal(_Phase)
        closed = Signal()  # the pass's last beat is in: wait for its reduction
        beat = self.beats.payload
        accept = Signal()
        m.d.comb += [
            self.beats.ready.eq(en & ~closed & (phase != _Phase.DIVIDE)),
            accept.eq(self.beats.valid & self.beats.ready),
        ]
        with m.If(accept & beat.last):
            with m.If(phase == _Phase.OUTPUT):
                m.d.sync += phase.eq(_Phase.MAX)
            with m.Else():
                m.d.sync += closed.eq(1)

        # Pass 0: the row maximum -----------------------------------------------------------------
        masked = [Mux(beat.mask[i], beat.values[i], _INT32_MIN) for i in range(lanes)]
        beat_max, max_stages = tree(masked, lambda a, b: Mux(a >= b, a, b), signed(32), "max")
        max_valid = delay(accept & (phase == _Phase.MAX), max_stages, "max_valid")
        max_last = delay(beat.last, max_stages, "max_last")
        row_max = Signal(signed(32))
        max_first = Signal(init=1)
        with m.If(en & max_valid):
            m.d.sync += [row_max.eq(Mux(max_first | (beat_max > row_max), beat_max, row_max)),
                         max_first.eq(max_last)]
            with m.If(max_last):
                m.d.sync += [phase.eq(_Phase.SUM), closed.eq(0)]

        # Passes 1 and 2: e per lane (stages A-F) -------------------------------------------------
        tags = {"sum": accept & (phase == _Phase.SUM), "out": accept & (phase == _Phase.OUTPUT),
                "last": beat.last, "mask": beat.mask}

        def carry(previous, index):
            return {name: stage(value.shape(), value, f"{name}_{index}")
                    for name, value in previous.items()}

        tags_a = carry(tags, "a")
        d = [stage(32, row_max - beat.values[i], f"d_a{i}") for i in range(lanes)]
        tags_b = carry(tags_a, "b")
        product = [stage(63, d[i] * mi[0:31], f"dm_b{i}") for i in range(lanes)]
        tags_c = carry(tags_b, "c")
        z, h = [], []
        for i in range(lanes):
            nv = Signal(63, name=f"nv_{i}")
            m.d.comb += nv.eq(product[i] >> si[0:6])
            frac = nv[0:SOFTMAX_FRAC_BITS]
            whole = nv[SOFTMAX_FRAC_BITS:]
            z.append(stage(5, Mux(whole[5:].any(), SOFTMAX_MAX_SHIFT, whole[0:5]), f"z_c{i}"))
            h.append(stage(16, Cat(~frac, Const(1, 1)), f"h_c{i}"))
        tags_d = carry(tags_c, "d")
        hh = [stage(32, h[i] * h[i], f"hh_d{i}") for i in range(lanes)]
        z_d = [stage(5, z[i], f"z_d{i}") for i in range(lanes)]
        tags_e = carry(tags_d, "e")
        ahh = [stage(61, hh[i] * SOFTMAX_EXP_A, f"ahh_e{i}") for i in range(lanes)]
        z_e = [stage(5, z_d[i], f"z_e{i}") for i in range(lanes)]
        tags_f = carry(tags_e, "f")
        e = [stage(_EXP_WIDTH, (ahh[i][31:61] + SOFTMAX_EXP_C) >> z_e[i], f"e_f{i}")
             for i in range(lanes)]

        # Pass 1: the sum, then the division ------------------------------------------------------
        sum_width = _EXP_WIDTH + (lanes - 1).bit_length()
        beat_sum, sum_stages = tree([Mux(tags_f["mask"][i], e[i], 0) for i in range(lanes)],
                                    lambda a, b: a + b, unsigned(sum_width), "sum")
        sum_valid = delay(tags_f["sum"], sum_stages, "sum_valid")
        sum_last = delay(tags_f["last"], sum_stages, "sum_last")
        total = Signal(_SUM_WIDTH)
        sum_first = Signal(init=1)
        remainder = Signal(_SUM_WIDTH + 1)
        quotient = Signal(_QUOTIENT_WIDTH)  # R, once the division is done
        next_bit = Signal()
        count = Signal(range(_QUOTIENT_WIDTH + 1))
        with m.If(en & sum_valid):
            m.d.sync += [total.eq(Mux(sum_first, 0, total) + beat_sum), sum_first.eq(sum_last)]
            with m.If(sum_last):
                m.d.sync += [phase.eq(_Phase.DIVIDE), closed.eq(0), count.eq(_QUOTIENT_WIDTH),
                             remainder.eq(mo[1:31]), next_bit.eq(mo[0])]

        trial = Signal(_SUM_WIDTH + 1)
        m.d.comb += trial.eq(Cat(next_bit, remainder[0:_SUM_WIDTH]))
        with m.If(phase == _Phase.DIVIDE):
            m.d.sync += [next_bit.eq(0), count.eq(count - 1)]
            with m.If(trial >= total):
                m.d.sync += [remainder.eq(trial - total), quotient.eq(Cat(Const(1, 1), quotient[0:31]))]
            with m.Else():
                m.d.sync += [remainder.eq(trial), quotient.eq(Cat(Const(0, 1), quotient[0:31]))]
            with m.If(count == 1):
                m.d.sync += phase.eq(_Phase.OUTPUT)

        # Pass 2: the outputs (stages G, H) -------------------------------------------------------
        out_g = stage(1, tags_f["out"], "out_g")
        product_g = [stage(62, e[i] * quotient, f"er_g{i}") for i in range(lanes)]
        k = (so - _SO_MIN)[0:5]
        values = []
        for i in range(lanes):
            scaled = Signal(18, name=f"scaled_{i}")  # (e * R) >> (So + 30)
            m.d.comb += scaled.eq((product_g[i] >> (_SO_MIN + 30)) >> k)
            total_i = Signal(signed(20), name=f"y_{i}")
            m.d.comb += total_i.eq(((scaled + 1) >> 1) + zp[0:8].as_signed())
            values.append(stage(signed(8), Mux(total_i > 127, 127,
                                               Mux(total_i < -128, -128, total_i)), f"y_h{i}"))
        out_h = stage(1, out_g, "out_h")
        m.d.comb += [
            self.results.valid.eq(out_h),
            self.results.payload.error.eq(error),
        ]
        m.d.comb += [self.results.payload.values[i].eq(values[i]) for i in range(lanes)]
        return m
