"""The vector unit: executes one ``VECTOR`` instruction at a time, bit-exact with golden.machine.

Structure (one instruction at a time, in this order):

1. **Check** (the cycle after the command is taken, its result registered; the unit takes a
   command at once, so that its ``footprint`` is known, and then waits until the compute unit
   lets it start, at least one cycle). The
   instruction's static fields (funct, length, clip bounds, out_lane,
   loop counts, ``vector_max_length`` for the row operations) give ``ILLEGAL_INSTRUCTION``; then
   the last row of each walk (``a``, ``b``, ``out``) and of the parameter sections give
   ``SRAM_OUT_OF_RANGE``, in the order the golden machine checks them. Strides are unsigned, so
   a walk's last group is its highest. A failing instruction touches nothing.
2. **Constants**: ADD, GELU, SOFTMAX and LAYERNORM read their (at most nine) constant words from
   the accumulator rows at ``param_addr`` into registers.
3. **Beats**. The sequencer walks the groups (outer, inner) and, inside a group, the elements
   ``j`` in *beats*: runs of at most ``vector_lanes`` consecutive elements that lie in one input
   row and one output row (flat lane mapping, ``docs/isa.md``). Input rows are ``cols`` int32
   lanes (accumulator operands) or ``rows`` int8 lanes (scratchpad operands), and element ``j``
   sits in input lane ``j % row width``; per-element parameters (REQUANT scales and biases or
   multipliers and shifts, LAYERNORM gamma and beta) start on a row boundary too, so they are
   lane-aligned with the operand and are read in the same cycle through two more accumulator
   read ports. The read stage gathers a beat's elements from their rows into lanes 0, 1, ...
   of the function units. One beat is issued per cycle; when ``vector_lanes`` equals the input
   and output widths and ``out_lane`` is 0, a beat is a whole row.
4. **Function units**, all fed from the same read stage through two registers (the gathered
   beat; the beat plus the REQUANT bias added to its values, a :class:`StreamRegister` so that a
   unit's ``ready`` stops there), one of them selected by
   ``funct``, each ``vector_lanes`` wide: :class:`Requantizer` lanes, :class:`QuantizedAdder`
   lanes, an elementwise max (no pipeline), :class:`GeluLane` s, and the row units
   :class:`SoftmaxUnit` and :class:`LayernormUnit`, which see each group three times (passes)
   and may pause the sequencer between passes for their per-row division.
5. **Write**. A result beat is rotated from lanes 0, 1, ... to its output lanes (from
   ``(out_lane + j) % rows`` on), clipped to ``[clip_lo, clip_hi]`` and written with a lane
   mask. A FIFO carries each output beat's row and lanes from the sequencer
   to the write stage, so the function units only see data.

Errors found in the data (a bad scale, shift or softmax/GELU/layernorm constant, flagged by the
function units on the elements in use) give ``ILLEGAL_INSTRUCTION``. The instruction then runs to
its end with every write from the faulting beat on suppressed (so the row units finish their
rows and the unit is ready for the next instruction); earlier beats of that instruction may
already have been written. ``done`` carries one word per instruction with its error code.
``footprint`` says, from the cycle after the command handshake until ``done``, which SRAM rows the
instruction reads and writes, so that the compute unit can run independent MATMULs alongside it
(also while it waits for ``start``).
"""

from amaranth import Array, C, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from golden import intops
from golden.config import NpuConfig
from golden.isa import Opcode

from .gelu_lane import GeluLane
from .isa_layouts import ErrorCode, RequantMode, VectorFunct, format_layout
from .layernorm_unit import LayernormUnit
from .ports import ReadPortSignature, WritePortSignature
from .quantized_adder import QuantizedAdder
from .requantizer import Requantizer
from .softmax_unit import SoftmaxUnit
from .stream_register import StreamRegister

__all__ = ["VectorUnit", "vector_done_layout", "vector_footprint_layout", "FOOTPRINT_BITS"]

vector_done_layout = data.StructLayout({"error": ErrorCode})
#: Width of a footprint bound (the check stage's row arithmetic, before the range checks).
FOOTPRINT_BITS = 28
#: The SRAM rows the instruction in progress may touch, as half-open row ranges [first, end)
#: (conservative: the parameter range covers every section a funct may read).
vector_footprint_layout = data.StructLayout({
    "reads_scratchpad": 1,                       # ADD, MAX: the operands are scratchpad rows
    "acc_first": FOOTPRINT_BITS, "acc_end": FOOTPRINT_BITS,       # accumulator operand rows
    "param_first": FOOTPRINT_BITS, "param_end": FOOTPRINT_BITS,   # accumulator parameter rows
    "spad_first": FOOTPRINT_BITS, "spad_end": FOOTPRINT_BITS,     # scratchpad output rows
})

#: Constant words read at ``param_addr`` before the beats: ADD fixed mode has the most.
_CONST_WORDS = 9
#: Output beats between the sequencer and the write stage (covers the deepest function unit).
_BEATS_IN_FLIGHT = 32


def _log2(value: int) -> int:
    return value.bit_length() - 1


def _lane_run(*, first, count, width: int):
    """A ``width``-bit lane mask with lanes ``first`` .. ``first + count - 1`` set."""
    return (((C(1, 1) << count) - 1) << first)[:width]


class VectorUnit(wiring.Component):
    """``command``: the fields of one VECTOR instruction; ``done``: its error code, once it has
    finished; ``start``: a pulse (or a level) that lets the taken instruction leave the check
    stage, at the earliest in the cycle after the command handshake (it touches no memory before).
    Memory ports: three accumulator read ports (operand, two parameter sections), two
    scratchpad read ports (operands ``a`` and ``b``) and the scratchpad write port; each must be
    the unit's own (a read port's data must hold while its ``en`` is low)."""

    def __init__(self, config: NpuConfig):
        self.config = config
        spad_row = data.ArrayLayout(signed(8), config.rows)
        acc_row = data.ArrayLayout(signed(32), config.cols)
        spad_addr, acc_addr = config.scratchpad_addr_width, config.accumulator_addr_width
        super().__init__({
            "command": In(stream.Signature(format_layout(Opcode.VECTOR))),
            "done": Out(stream.Signature(vector_done_layout)),
            "start": In(1),
            "footprint": Out(vector_footprint_layout),
            "acc_values": Out(ReadPortSignature(addr_width=acc_addr, row_shape=acc_row)),
            "acc_params0": Out(ReadPortSignature(addr_width=acc_addr, row_shape=acc_row)),
            "acc_params1": Out(ReadPortSignature(addr_width=acc_addr, row_shape=acc_row)),
            "spad_a": Out(ReadPortSignature(addr_width=spad_addr, row_shape=spad_row)),
            "spad_b": Out(ReadPortSignature(addr_width=spad_addr, row_shape=spad_row)),
            "spad_write": Out(WritePortSignature(addr_width=spad_addr, row_shape=spad_row,
                                                 lanes=config.rows)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        rows, cols = cfg.rows, cfg.cols
        lanes = max(rows, cols)                   # widest input row
        width = cfg.vector_lanes                  # elements per beat: the function units' lanes
        log_rows, log_cols, log_width = _log2(rows), _log2(cols), _log2(width)
        wide = FOOTPRINT_BITS                     # row arithmetic before the range checks

        ins = Signal(format_layout(Opcode.VECTOR))
        error = Signal(ErrorCode)

        funct = ins.funct
        spad_op = (funct == VectorFunct.ADD) | (funct == VectorFunct.MAX)
        row_op = (funct == VectorFunct.SOFTMAX) | (funct == VectorFunct.LAYERNORM)
        has_consts = spad_op & (funct != VectorFunct.MAX) | row_op | (funct == VectorFunct.GELU)
        passes = Mux(row_op, SoftmaxUnit.passes, 1)
        assert SoftmaxUnit.passes == LayernormUnit.passes

        def ceil_cols(count):
            return (count + (cols - 1)) >> log_cols

        length_rows = Signal(range((1 << 16) // cols + 2))   # rows of one per-element section
        m.d.comb += length_rows.eq(ceil_cols(ins.length))
        gamma_offset = Mux(funct == VectorFunct.LAYERNORM,
                           ceil_cols(intops.LAYERNORM_CONST_COUNT), 0)

        # 1. Check ----------------------------------------------------------------------------
        # The row bounds of the walks (products of counts and strides, then sums) are computed
        # from the command as it is taken and registered with it, so that neither the check nor
        # the compute unit's comparisons with the footprint have a multiplier in front of them.
        def walk_ends(command):
            """The end rows (one past the last) of the ``a``, ``b`` and ``out`` walks, and the
            parameter rows, of the instruction ``command``."""
            command_spad_op = ((command.funct == VectorFunct.ADD)
                               | (command.funct == VectorFunct.MAX))

            def last_group(prefix):
                return (command[f"{prefix}_addr"]
                        + (command.outer_count - 1) * command[f"{prefix}_outer_stride"]
                        + (command.inner_count - 1) * command[f"{prefix}_inner_stride"])

            last_element = command.length - 1
            command_length_rows = ceil_cols(command.length)
            param_rows = Signal(wide, name="param_rows_next")
            with m.Switch(command.funct):
                with m.Case(VectorFunct.REQUANT):
                    m.d.comb += param_rows.eq(Mux((command.mode == RequantMode.FIXED)
                                                  | command.bias,
                                                  2 * command_length_rows, command_length_rows))
                with m.Case(VectorFunct.ADD):
                    m.d.comb += param_rows.eq(Mux(command.mode == RequantMode.FIXED,
                                                  ceil_cols(9), ceil_cols(3)))
                with m.Case(VectorFunct.SOFTMAX):
                    m.d.comb += param_rows.eq(ceil_cols(intops.SOFTMAX_PARAM_COUNT))
                with m.Case(VectorFunct.GELU):
                    m.d.comb += param_rows.eq(ceil_cols(intops.GELU_PARAM_COUNT))
                with m.Case(VectorFunct.LAYERNORM):
                    m.d.comb += param_rows.eq(ceil_cols(intops.LAYERNORM_CONST_COUNT)
                                              + 2 * command_length_rows)
            return {
                "a_end": last_group("a") + 1 + Mux(command_spad_op, last_element >> log_rows,
                                                   last_element >> log_cols),
                "b_end": last_group("b") + 1 + (last_element >> log_rows),
                "out_end": last_group("out") + 1 + ((command.out_lane + last_element)
                                                    >> log_rows),
                "param_end": command.param_addr + param_rows,
                "has_params": param_rows != 0,
            }

        ends = {name: Signal(wide if name != "has_params" else 1, name=name)
                for name in ("a_end", "b_end", "out_end", "param_end", "has_params")}
        with m.If(self.command.valid & self.command.ready):
            m.d.sync += [ends[name].eq(value)
                         for name, value in walk_ends(self.command.payload).items()]

        bias_misused = ins.bias & ((funct != VectorFunct.REQUANT) | (ins.mode == RequantMode.FIXED))
        m.d.comb += [self.footprint.reads_scratchpad.eq(spad_op),
                     self.footprint.acc_first.eq(ins.a_addr),
                     self.footprint.acc_end.eq(ends["a_end"]),
                     self.footprint.param_first.eq(ins.param_addr),
                     self.footprint.param_end.eq(ends["param_end"]),
                     self.footprint.spad_first.eq(ins.out_addr),
                     self.footprint.spad_end.eq(ends["out_end"])]

        illegal = ((funct > max(f.value for f in VectorFunct)) | (ins.length == 0) | bias_misused
                   | (ins.clip_lo > ins.clip_hi) | (ins.out_lane >= rows)
                   | (row_op & (ins.length > cfg.vector_max_length))
                   | (ins.outer_count == 0) | (ins.inner_count == 0))
        out_of_range = ((ends["a_end"] > Mux(spad_op, cfg.scratchpad_depth,
                                             cfg.accumulator_depth))
                        | (spad_op & (ends["b_end"] > cfg.scratchpad_depth))
                        | (ends["out_end"] > cfg.scratchpad_depth)
                        | (ends["has_params"] & (ends["param_end"] > cfg.accumulator_depth)))
        check_result = Mux(illegal, ErrorCode.ILLEGAL_INSTRUCTION,
                           Mux(out_of_range, ErrorCode.SRAM_OUT_OF_RANGE, ErrorCode.NONE))
        check_error = Signal(ErrorCode)    # registered in CHECK, used once ``start`` is high
        started = Signal()                 # ``start`` came during CHECK

        # 2. Constants ------------------------------------------------------------------------
        const_rows = ceil_cols(_CONST_WORDS)
        consts = Array(Signal(signed(32), name=f"const{i}") for i in range(_CONST_WORDS))
        const_row = Signal(range(const_rows + 1))
        const_capture = Signal()

        # 3. Sequencer state -------------------------------------------------------------------
        j = Signal(17)
        pass_index = Signal(2)
        outer = Signal(10)
        inner = Signal(10)
        base = {p: Signal(wide, name=f"{p}_base") for p in ("a", "b", "out")}
        outer_base = {p: Signal(wide, name=f"{p}_outer_base") for p in ("a", "b", "out")}

        in_lane = Signal(range(lanes))
        m.d.comb += in_lane.eq(Mux(spad_op, j[:log_rows], j[:log_cols]) if lanes > 1 else 0)
        out_position = Signal(18)
        m.d.comb += out_position.eq(ins.out_lane + j)
        out_lane = Signal(range(rows))
        m.d.comb += out_lane.eq(out_position[:log_rows])
        in_room = Mux(spad_op, rows, cols) - in_lane
        out_room = rows - out_lane
        remaining = Signal(17)  # ins.length - j, kept in a register: no subtraction in the loop
        row_room = Mux(in_room < out_room, in_room, out_room)
        room = Signal(range(width + 1))
        m.d.comb += room.eq(Mux(row_room < width, row_room, width))
        count = Signal(range(width + 1))
        row_last = remaining <= room
        m.d.comb += count.eq(Mux(row_last, remaining, room))
        output_pass = pass_index == passes - 1

        # Output beats travel to the write stage through a FIFO.
        beat_layout = data.StructLayout({
            "out_row": cfg.scratchpad_addr_width,
            "out_lane": range(rows),
            "count": range(width + 1),
        })
        m.submodules.beats = beats = fifo.SyncFIFO(width=beat_layout.size, depth=_BEATS_IN_FLIGHT)

        # The read stage: the memories' outputs plus this register set.
        s1_valid = Signal()
        s1_in_lane = Signal(range(lanes))
        s1_mask = Signal(width)
        s1_pass = Signal(2)
        s1_last = Signal()
        s1_ready = Signal()
        advance = ~s1_valid | s1_ready
        issue = Signal()

        # 4. Function units --------------------------------------------------------------------
        requantizers = [Requantizer() for _ in range(width)]
        adders = [QuantizedAdder() for _ in range(width)]
        gelus = [GeluLane() for _ in range(width)]
        for i, unit in enumerate(requantizers):
            m.submodules[f"requantizer{i}"] = unit
        for i, unit in enumerate(adders):
            m.submodules[f"adder{i}"] = unit
        for i, unit in enumerate(gelus):
            m.submodules[f"gelu{i}"] = unit
        m.submodules.softmax = softmax = SoftmaxUnit(lanes=width)
        m.submodules.layernorm = layernorm = LayernormUnit(lanes=width)

        def beat_lanes(row, row_width, name):
            """The beat's ``width`` elements of a read row: lane k holds row lane
            ``(s1_in_lane + k) % row_width`` (the beat's first element is in lane 0)."""
            shape = row.shape().elem_shape
            beat = Signal(data.ArrayLayout(shape, width), name=name)
            source = Array(row[i] for i in range(row_width))
            for k in range(width):
                index = (s1_in_lane + k)[:_log2(row_width)]
                m.d.comb += beat[k].eq(source[index])
            return beat

        # The gathered beat passes two registers on its way to the function units: the first
        # takes the elements as gathered (behind the memories' outputs and the gather
        # multiplexers), the second (a register slice) adds the REQUANT bias to the accumulator
        # values.
        unit_ready = Signal()      # the selected function unit takes a beat
        gathered = {"values": beat_lanes(self.acc_values.data, cols, "beat_values"),
                    "params0": beat_lanes(self.acc_params0.data, cols, "beat_params0"),
                    "params1": beat_lanes(self.acc_params1.data, cols, "beat_params1"),
                    "a": beat_lanes(self.spad_a.data, rows, "beat_a"),
                    "b": beat_lanes(self.spad_b.data, rows, "beat_b"),
                    "mask": s1_mask, "pass_index": s1_pass, "last": s1_last}

        def register_stage(fields, *, valid, take, name):
            """Registers for ``fields`` that load (with ``valid``) whenever ``take``."""
            stage = {key: Signal(value.shape(), name=f"{name}_{key}", reset_less=True)
                     for key, value in fields.items()}  # only ``stage_valid`` needs a reset
            stage_valid = Signal(name=f"{name}_valid")
            with m.If(take):
                m.d.sync += [stage_valid.eq(valid)]
                m.d.sync += [stage[key].eq(value) for key, value in fields.items()]
            return stage, stage_valid

        s2_take = Signal()
        s2, s2_valid = register_stage(gathered, valid=s1_valid, take=s2_take, name="s2")
        biased = Signal(data.ArrayLayout(signed(32), width))
        m.d.comb += [biased[lane].eq(s2["values"][lane] + Mux(ins.bias, s2["params1"][lane], 0))
                     for lane in range(width)]   # int32, wraps
        # The third register is a register slice: whether a function unit takes a beat (its
        # ``ready``, which follows its pipeline's state) reaches no further back than it, so the
        # read stage and the sequencer advance on flip-flops alone.
        s3_fields = {**s2, "biased": biased}
        m.submodules.unit_input = unit_input = StreamRegister(data.StructLayout(
            {key: value.shape() for key, value in s3_fields.items()}))
        m.d.comb += [unit_input.inputs.valid.eq(s2_valid),
                     *(unit_input.inputs.payload[key].eq(value)
                       for key, value in s3_fields.items()),
                     unit_input.outputs.ready.eq(unit_ready),
                     s2_take.eq(~s2_valid | unit_input.inputs.ready), s1_ready.eq(s2_take)]
        s3, s3_valid = unit_input.outputs.payload, unit_input.outputs.valid
        acc_values, params0, params1 = s3["values"], s3["params0"], s3["params1"]
        a_values, b_values = s3["a"], s3["b"]
        for lane, unit in enumerate(requantizers):
            p = unit.inputs.payload
            m.d.comb += [p.acc.eq(s3["biased"][lane]), p.fixed.eq(ins.mode == RequantMode.FIXED),
                         p.scale.eq(params0[lane]), p.shift.eq(params1[lane]),
                         p.zero_point.eq(ins.out_zp), p.clip_lo.eq(ins.clip_lo),
                         p.clip_hi.eq(ins.clip_hi)]
        adder_consts = ("a_zp", "b_zp", "left_shift", "a_mult", "a_shift", "b_mult", "b_shift",
                        "out_mult", "out_shift")
        for lane, unit in enumerate(adders):
            p = unit.inputs.payload
            m.d.comb += [p.a.eq(a_values[lane]), p.b.eq(b_values[lane]),
                         p.fixed.eq(ins.mode == RequantMode.FIXED),
                         p.a_unsigned.eq(ins.a_unsigned), p.b_unsigned.eq(ins.b_unsigned),
                         p.out_unsigned.eq(ins.out_unsigned),
                         p.sa.eq(consts[0]), p.sb.eq(consts[1]), p.f.eq(consts[2]),
                         p.out_zp.eq(ins.out_zp), p.clip_lo.eq(ins.clip_lo),
                         p.clip_hi.eq(ins.clip_hi)]
            m.d.comb += [p[name].eq(consts[i]) for i, name in enumerate(adder_consts)]
        for lane, unit in enumerate(gelus):
            p = unit.inputs.payload
            m.d.comb += p.x.eq(acc_values[lane])
            m.d.comb += [p.params[i].eq(consts[i]) for i in range(intops.GELU_PARAM_COUNT)]
        for unit in (softmax, layernorm):
            p = unit.beats.payload
            m.d.comb += [p.values.eq(acc_values), p.gamma.eq(params0), p.beta.eq(params1),
                         p.mask.eq(s3["mask"]), p.pass_index.eq(s3["pass_index"]),
                         p.last.eq(s3["last"])]
            m.d.comb += [unit.params[i].eq(consts[i]) for i in range(5)]
        m.d.comb += layernorm.length.eq(ins.length)

        # Results: one stream from whichever unit runs, plus the lane-error mask of its beat.
        head = Signal(beat_layout)
        m.d.comb += head.eq(beats.r_data)
        head_mask = Signal(width)
        m.d.comb += head_mask.eq(_lane_run(first=0, count=head.count, width=width))
        result_valid = Signal()
        result_ready = Signal()
        result_values = Signal(data.ArrayLayout(signed(8), width))
        result_error = Signal()

        def lane_array(units, select):
            """Units that share one valid and one ready: they stall together."""
            m.d.comb += [unit.inputs.valid.eq(s3_valid & select) for unit in units]
            m.d.comb += [unit.outputs.ready.eq(result_ready & select) for unit in units]
            with m.If(select):
                m.d.comb += [unit_ready.eq(units[0].inputs.ready),
                             result_valid.eq(units[0].outputs.valid),
                             result_error.eq((Cat(u.outputs.payload.error for u in units)
                                              & head_mask[:len(units)]).any())]
                m.d.comb += [result_values[lane].eq(u.outputs.payload.value)
                             for lane, u in enumerate(units)]

        def row_unit(unit, select):
            m.d.comb += [unit.beats.valid.eq(s3_valid & select),
                         unit.results.ready.eq(result_ready & select)]
            with m.If(select):
                m.d.comb += [unit_ready.eq(unit.beats.ready),
                             result_valid.eq(unit.results.valid),
                             result_error.eq(unit.results.payload.error)]
                m.d.comb += [result_values[lane].eq(unit.results.payload.values[lane])
                             for lane in range(width)]

        lane_array(requantizers, funct == VectorFunct.REQUANT)
        lane_array(adders, funct == VectorFunct.ADD)
        lane_array(gelus, funct == VectorFunct.GELU)
        row_unit(softmax, funct == VectorFunct.SOFTMAX)
        row_unit(layernorm, funct == VectorFunct.LAYERNORM)
        with m.If(funct == VectorFunct.MAX):  # combinational: the read stage is the pipeline
            m.d.comb += [unit_ready.eq(result_ready), result_valid.eq(s3_valid)]
            m.d.comb += [result_values[lane].eq(Mux(a_values[lane] > b_values[lane],
                                                    a_values[lane], b_values[lane]))
                         for lane in range(width)]

        # 5. Write ---------------------------------------------------------------------------
        faulted = Signal()
        write = self.spad_write
        m.d.comb += [result_ready.eq(write.ready), beats.r_en.eq(result_valid & write.ready)]
        for lane in range(rows):
            source = (lane - head.out_lane)[:log_width] if width > 1 else 0
            value = result_values[source]
            clipped = Mux(value < ins.clip_lo, ins.clip_lo,
                          Mux(value > ins.clip_hi, ins.clip_hi, value))
            m.d.comb += write.data[lane].eq(clipped)
        m.d.comb += write.lanes.eq(_lane_run(first=head.out_lane, count=head.count, width=rows))
        m.d.comb += [write.addr.eq(head.out_row),
                     write.en.eq(result_valid & ~result_error & ~faulted)]
        with m.If(result_valid & result_ready & result_error & ~faulted):
            m.d.sync += [faulted.eq(1), error.eq(ErrorCode.ILLEGAL_INSTRUCTION)]

        # Read stage registers and the memory read ports.
        in_row = base["a"] + Mux(spad_op, j >> log_rows, j >> log_cols)
        param_row = ins.param_addr + gamma_offset + (j >> log_cols)
        m.d.comb += [
            self.acc_values.addr.eq(in_row),
            self.acc_params0.addr.eq(param_row),
            self.acc_params1.addr.eq(param_row + length_rows),
            self.spad_a.addr.eq(in_row),
            self.spad_b.addr.eq(base["b"] + (j >> log_rows)),
        ]
        read_acc = advance & ~spad_op
        read_spad = advance & spad_op
        m.d.comb += [self.acc_values.en.eq(read_acc), self.acc_params1.en.eq(read_acc),
                     self.acc_params0.en.eq(read_acc), self.spad_a.en.eq(read_spad),
                     self.spad_b.en.eq(read_spad)]
        with m.If(advance):
            m.d.sync += [
                s1_valid.eq(issue),
                s1_in_lane.eq(in_lane),
                s1_mask.eq(_lane_run(first=0, count=count, width=width)),
                s1_pass.eq(pass_index),
                s1_last.eq(row_last),
            ]
        out_row = base["out"] + (out_position >> log_rows)
        beat = Signal(beat_layout)
        m.d.comb += [beat.out_row.eq(out_row), beat.out_lane.eq(out_lane), beat.count.eq(count),
                     beats.w_data.eq(beat), beats.w_en.eq(issue & output_pass)]

        # Control ------------------------------------------------------------------------------
        m.d.comb += self.done.payload.error.eq(error)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.command.ready.eq(1)
                with m.If(self.command.valid):
                    m.d.sync += [ins.eq(self.command.payload), faulted.eq(0),
                                 error.eq(ErrorCode.NONE)]
                    m.next = "CHECK"
            with m.State("CHECK"):
                m.d.sync += [check_error.eq(check_result), j.eq(0), remaining.eq(ins.length),
                             pass_index.eq(0), outer.eq(0),
                             inner.eq(0), const_row.eq(0), const_capture.eq(0)]
                for p in base:
                    m.d.sync += [base[p].eq(ins[f"{p}_addr"]), outer_base[p].eq(ins[f"{p}_addr"])]
                m.d.sync += started.eq(self.start)
                m.next = "WAIT"
            with m.State("WAIT"):  # until ``start`` (a pulse, which may come in CHECK)
                with m.If(~self.start & ~started):
                    pass
                with m.Elif(check_error != ErrorCode.NONE):
                    m.d.sync += error.eq(check_error)
                    m.next = "DONE"
                with m.Elif(has_consts):
                    m.next = "CONSTS"
                with m.Else():
                    m.next = "RUN"
            with m.State("CONSTS"):
                # Read row k, capture it the next cycle: two cycles a row, at most five rows.
                m.d.comb += [self.acc_params0.addr.eq(ins.param_addr + const_row),
                             self.acc_params0.en.eq(~const_capture)]
                m.d.sync += const_capture.eq(~const_capture)
                with m.If(const_capture):
                    for row in range(const_rows):
                        with m.If(const_row == row):
                            for lane, word in enumerate(self.acc_params0.data):
                                if row * cols + lane < _CONST_WORDS:
                                    m.d.sync += consts[row * cols + lane].eq(word)
                    m.d.sync += const_row.eq(const_row + 1)
                    with m.If(const_row == const_rows - 1):
                        m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += issue.eq(advance & (~output_pass | beats.w_rdy))
                with m.If(issue):
                    m.d.sync += [j.eq(j + count), remaining.eq(remaining - count)]
                    with m.If(row_last):
                        m.d.sync += [j.eq(0), remaining.eq(ins.length)]
                        with m.If(~output_pass):
                            m.d.sync += pass_index.eq(pass_index + 1)
                        with m.Else():
                            m.d.sync += pass_index.eq(0)
                            with m.If(inner + 1 < ins.inner_count):
                                m.d.sync += inner.eq(inner + 1)
                                for p in base:
                                    m.d.sync += base[p].eq(base[p] + ins[f"{p}_inner_stride"])
                            with m.Elif(outer + 1 < ins.outer_count):
                                m.d.sync += [outer.eq(outer + 1), inner.eq(0)]
                                for p in base:
                                    step = outer_base[p] + ins[f"{p}_outer_stride"]
                                    m.d.sync += [outer_base[p].eq(step), base[p].eq(step)]
                            with m.Else():
                                m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(~s1_valid & ~s2_valid & ~s3_valid & (beats.level == 0)):
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += self.done.valid.eq(1)
                with m.If(self.done.ready):
                    m.next = "IDLE"
        return m
