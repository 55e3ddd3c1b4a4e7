"""The row unit of VECTOR SOFTMAX, bit-exact with ``golden.intops.softmax``: three passes over
each row and one sequential division per row.

With ``[Mi, Si, Mo, So, zp] = params`` (``golden.intops.softmax_params``) and the hard-wired
``A = 357921223``, ``B = 65535``, ``C = 357921224`` (see docs/integer_ops.md), for one row:

- **Pass 0: the row maximum** ``m``. The masked lanes of a beat (the others read as -2**31) go
  through a tree of 32-bit signed maxima, registered after every level, into a running register.
- **Pass 1: the exponentials and their sum.** Per lane, twelve pipeline stages. Every product
  wider than one MULT18X18D is split into tiles (``rtl.tiled_product``): one stage registers the
  tile products, two more sum them (one adder level per stage), so no adder follows a multiplier
  in a cycle and no two wide carry chains are chained:

  A. ``d = m - x``: 0 .. 2**32 - 1, 32 bits unsigned;
  B. ``d * Mi``: 32 x 31-bit product, < 2**63 (4 tiles, three stages);
  C. ``nv = (d * Mi) >> Si`` in two stages: a shift by ``8 * (Si >> 3)`` (63 bits), then by
     ``Si & 7`` to the 20 low bits of ``nv``, and whether ``nv >> 15 >= 32`` (any bit of the first
     shift from ``20 + (Si & 7)`` up: one flag per ``Si & 7``, then a multiplexer). ``h = B -
     (nv & 0x7fff)`` is the bitwise complement of the 15-bit fraction with a 1 on top (16 bits,
     32768..65535; the constant 1 is not registered);
  D. ``h * h``: 16 x 16-bit product, < 2**32 (one multiplier);
  E. ``A * h**2``: 29 x 32-bit product with a constant, < 2**61 (4 tiles, three stages; the
     tile of the constant's top 12 bits, ``2730 = 3 * 7 * 130``, from three adders);
  F. ``poly = ((A * h**2) >> 31) + C``, then in the next stage ``e = poly >> z`` with
     ``z = min(nv >> 15, 31)`` (``e`` is 0 for ``z = 31``: ``poly <= 2**30``): 31 bits,
     0 .. 2**30 (exactly 2**30 at the maximum).

  The masked ``e`` of a beat go through an adder tree (31 + log2(lanes) bits, registered after
  every level) into a 47-bit running sum, ``2**30 <= sum <= 65536 * 2**30``.
- **The division** ``R = (Mo << 31) // sum``, restoring, one quotient bit per cycle, 32 cycles
  (``beats.ready`` is low meanwhile). ``R < 2**32`` because ``Mo < 2**31`` and ``sum >= 2**30``,
  so the dividend's bits above bit 31, ``Mo >> 1 < sum``, are the initial remainder and only the
  32 quotient bits 31..0 remain; the remainder stays below ``sum``, 48 bits with the shifted-in
  bit.
- **Pass 2: the outputs.** Stages A-F again (the same hardware recomputes ``e``), then

  G. ``e`` registered once more (a register that feeds only the multipliers), then ``e * R``:
     31 x 32-bit product, <= Mo * 2**31 < 2**62 (because ``e <= sum``; 4 tiles, three stages);
  H. ``y = saturate(((e * R + 2**(So + 30)) >> (So + 31)) + zp)``, computed as
     ``((e * R >> (So + 30)) + 1) >> 1`` (the same value: adding 2**(n-1) before a floor shift by
     n equals shifting by n - 1, adding 1 and shifting by 1), so that the rounding adder is 19
     bits wide: ``So + 30`` is ``44 + k`` with ``k = So - 14`` in 0..16, a fixed shift and a
     5-bit barrel shift (one stage); then ``+ 2 * zp + 1`` (the even ``2 * zp`` commutes with
     the last shift), the shift by one and the saturation (one stage).

  One result beat per pass-2 beat, in order, ``latency`` cycles after the beat; the pipeline
  stalls as a whole when ``results`` is not ready (as the one-lane pipelines do).

12 MULT18X18D per lane. The registers that feed every lane (``R``, the params) have copies, one
per group of lanes (at most eight groups), so that none drives the multipliers of all lanes.

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

from .arith import in_range
from .row_unit_layouts import row_beat_layout, row_result_layout
from .tiled_product import TILE_BITS, tiled_product

__all__ = ["SoftmaxUnit"]

_INT32_MIN = -(1 << 31)
_SO_MIN, _SO_MAX = 14, 30                 # output shift range (golden.intops._softmax_constants)
_EXP_WIDTH = SOFTMAX_EXP_BITS + 1         # e: 0 .. 2**30
_SUM_WIDTH = 47                           # sum: up to 65536 * 2**30
_QUOTIENT_WIDTH = 32                      # R < 2**32
_LANE_COPIES = 8                          # copies of R and the params at most, for the lanes
_SCALED_WIDTH = 18                        # (e * R) >> (So + 30) < 2**18

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



def _saturate_int8(value):
    """``value`` (signed) clamped to -128..127 from its bits: it fits when its bits from 7 up
    are all equal (no comparator behind the adder that makes it)."""
    high = value[7:]
    fits = (high == 0) | (high == (1 << len(high)) - 1)
    return Mux(fits, value[0:8], Mux(value[-1], -128, 127))



class SoftmaxUnit(wiring.Component):
    """Softmax of rows of up to 65536 int32 elements, ``lanes`` elements per beat, in ``passes``
    passes; results ``latency`` cycles after their pass-2 beats."""

    passes = 3
    latency = 18

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

        def stage(shape, value, name, *, control=False):
            # Only the control bits (valid, pass tags) need a reset; the data registers take
            # none (on an FPGA a reset on every pipeline flip-flop is a net as wide as the unit).
            reg = Signal(shape, name=name, reset_less=not control)
            with m.If(en):
                m.d.sync += reg.eq(value)
            return reg

        def delay(value, stages, name, *, control=False):
            for index in range(stages):
                value = stage(value.shape(), value, f"{name}_d{index}", control=control)
            return value

        def tree(values, op, shape, name):
            """Reduce ``values`` with ``op``, a register after every level (one after the single
            value of one lane); (registered result, number of register stages)."""
            values = list(values)
            stages = 0
            while True:
                if len(values) > 1:
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
        m.d.sync += error.eq(~(_multiplier_ok(mi) & in_range(si, 0, 62) & _multiplier_ok(mo)
                               & in_range(so, _SO_MIN, _SO_MAX) & in_range(zp, -128, 127)))

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
        max_valid = delay(accept & (phase == _Phase.MAX), max_stages, "max_valid", control=True)
        max_last = delay(beat.last, max_stages, "max_last", control=True)
        row_max = Signal(signed(32))
        max_first = Signal(init=1)
        with m.If(en & max_valid):
            m.d.sync += [row_max.eq(Mux(max_first | (beat_max > row_max), beat_max, row_max)),
                         max_first.eq(max_last)]
            with m.If(max_last):
                m.d.sync += [phase.eq(_Phase.SUM), closed.eq(0)]

        # Copies of registers that feed every lane ---------------------------------------------
        def copies(value, count, name):
            """Per lane, one of ``count`` copies of the register ``value`` (itself when ``count``
            is 1), so that no register drives the multipliers of more than ``lanes / count``
            lanes. The copies form a chain, each a cycle behind the one before (yosys merges
            parallel copies into one): the last has the value ``count`` cycles later."""
            if count == 1:
                return [value] * lanes
            chain = []
            for index_copy in range(count):
                copy = Signal(value.shape(), name=f"{name}_copy{index_copy}")
                m.d.sync += copy.eq(chain[-1] if chain else value)
                chain.append(copy)
            return [chain[i * count // lanes] for i in range(lanes)]

        # The params: the first pass-1 beat reaches stage B (the first to use them) 3 +
        # max_stages cycles after the first pass-0 beat, with which the params are valid.
        param_copies = min(lanes, _LANE_COPIES, max_stages + 2)
        lane_mi = copies(mi[0:31], param_copies, "mi")
        lane_si = copies(si[0:6], param_copies, "si")
        lane_k = copies((so - _SO_MIN)[0:5], param_copies, "k")
        lane_zp2 = copies(Cat(Const(1, 1), zp[0:8]).as_signed(), param_copies, "zp2")  # 2zp + 1

        # Passes 1 and 2: e per lane (stages A-F) -------------------------------------------------
        index = 0  # the stage of the lane pipelines being built

        def advance(carried, **new):
            """The next stage: registers of ``carried`` (name: a register or a list of them, one
            per lane) and of ``new`` (name: a list of (shape, value), one per lane)."""
            nonlocal index
            index += 1

            def register(name, value):
                if isinstance(value, list):
                    return [stage(v.shape(), v, f"{name}_{index}_{i}") for i, v in enumerate(value)]
                return stage(value.shape(), value, f"{name}_{index}", control=name in tag_names)

            return ({name: register(name, value) for name, value in carried.items()}
                    | {name: [stage(shape, value, f"{name}_{index}_{i}")
                              for i, (shape, value) in enumerate(lanes_new)]
                       for name, lanes_new in new.items()})

        def multiply(carried, pairs, name, lut_tiles=()):
            """(``carried`` moved along the stages of the products, the registered products of
            ``pairs``, one (a, b) per lane)."""
            products = [tiled_product(stage, a, b, name=f"{name}_{index + 1}_{i}",
                                      lut_tiles=lut_tiles)
                        for i, (a, b) in enumerate(pairs)]
            for _ in range(products[0][1]):
                carried = advance(carried)
            return carried, [value for value, _ in products]

        def keep(carried, *names):
            return {name: carried[name] for name in names}

        tag_names = ("sum", "out", "last", "mask")
        s = {"sum": accept & (phase == _Phase.SUM), "out": accept & (phase == _Phase.OUTPUT),
             "last": beat.last, "mask": beat.mask}
        # A: d = m - x; B: d * Mi; C: >> Si in two stages, by 8 * Si[3:6], then by f = Si[0:3]:
        # the fraction (h = its complement), the integer part's low five bits and whether the
        # integer part is 32 or more (any bit of the coarse shift from 20 + f up: one flag per
        # f, then a multiplexer)
        s = advance(s, d=[(32, row_max - beat.values[i]) for i in range(lanes)])
        s, dm = multiply(keep(s, *tag_names), list(zip(s["d"], lane_mi, strict=True)), "dm")
        s = advance(s, coarse=[(63, product >> Cat(Const(0, 3), si[3:6]))
                               for product, si in zip(dm, lane_si, strict=True)])
        fine = [si[0:3] for si in lane_si]
        window, large = [], []
        for i, (coarse, f) in enumerate(zip(s["coarse"], fine, strict=True)):
            large_by_fine = Signal(8, name=f"large_by_fine_{i}")
            m.d.comb += [large_by_fine[j].eq(coarse[SOFTMAX_FRAC_BITS + 5 + j:].any())
                         for j in range(8)]
            window.append((coarse >> f)[0:SOFTMAX_FRAC_BITS + 5])
            large.append(large_by_fine.bit_select(f, 1))
        s = advance(keep(s, *tag_names),
                    low_h=[(SOFTMAX_FRAC_BITS, ~v[0:SOFTMAX_FRAC_BITS]) for v in window],
                    whole=[(5, v[SOFTMAX_FRAC_BITS:]) for v in window],
                    large=[(1, v) for v in large])
        # D: h * h; E: A * h**2 (the constants's top tile from adders); F: ((A * h**2) >> 31) + C,
        # then e = that >> z, z = min(integer part, 31): 0 when z is 31 (poly <= 2**30). (h's
        # top bit, a constant 1, is not registered: yosys would merge that flip-flop of all lanes.)
        h = [Cat(low_h, Const(1, 1)) for low_h in s["low_h"]]
        s, hh = multiply(keep(s, *tag_names, "whole", "large"), [(h_i, h_i) for h_i in h], "hh")
        s, ahh = multiply(s, [(SOFTMAX_EXP_A, product) for product in hh], "ahh",
                          lut_tiles={(TILE_BITS, TILE_BITS)})
        s = advance(s, poly=[(_EXP_WIDTH, product[31:61] + SOFTMAX_EXP_C) for product in ahh])
        s = advance(keep(s, *tag_names),
                    e=[(_EXP_WIDTH, Mux(large, 0, poly >> whole))
                       for poly, whole, large in zip(s["poly"], s["whole"], s["large"],
                                                     strict=True)])

        # Pass 1: the sum, then the division ------------------------------------------------------
        sum_width = _EXP_WIDTH + (lanes - 1).bit_length()
        beat_sum, sum_stages = tree([Mux(s["mask"][i], s["e"][i], 0) for i in range(lanes)],
                                    lambda a, b: a + b, unsigned(sum_width), "sum")
        sum_valid = delay(s["sum"], sum_stages, "sum_valid", control=True)
        sum_last = delay(s["last"], sum_stages, "sum_last", control=True)
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

        # Pass 2: the outputs (G: e * R; H: shift, round, zero point, saturate) ------------------
        # R for the lanes' multipliers: copies (see ``copies``); the last has R before the first
        # pass-2 beat reaches stage G (1 + stages A-F cycles after the division's end).
        lane_quotient = copies(quotient, min(lanes, _LANE_COPIES, index), "quotient")
        s = advance(keep(s, "out", "e"))  # e again, next to the multipliers (away from the sum)
        s, er = multiply(keep(s, "out"), list(zip(s["e"], lane_quotient, strict=True)), "er")
        s = advance(s, scaled=[(_SCALED_WIDTH, (product[_SO_MIN + 30:] >> k)[0:_SCALED_WIDTH])
                               for product, k in zip(er, lane_k, strict=True)])
        rounded = [(scaled + zp2) >> 1 for scaled, zp2 in zip(s["scaled"], lane_zp2, strict=True)]
        s = advance(keep(s, "out"), y=[(signed(8), _saturate_int8(value)) for value in rounded])
        assert index == self.latency
        m.d.comb += [
            self.results.valid.eq(s["out"]),
            self.results.payload.error.eq(error),
        ]
        m.d.comb += [self.results.payload.values[i].eq(s["y"][i]) for i in range(lanes)]
        return m
