"""The compute unit: MATMUL on the systolic array and VECTOR on the vector unit, in program order.

MATMUL runs in two overlapping stages, so that the next instruction's weight tile shifts in
while the current one's inputs stream (double-buffered weights):

- **weights stage**: takes the next instruction, checks it (``ILLEGAL_INSTRUCTION`` for a loop
  count of 0, ``SRAM_OUT_OF_RANGE`` for an input, accumulator or weight row past the end, in the
  golden machine's order) and, with ``load_weights``, reads the ``cols`` weight rows into the bank
  the array is not computing with, one row per cycle, once no input in flight uses that bank;
  then hands the instruction to
- **input stage**: walks the input rows (outer x inner), one scratchpad row per cycle into the
  array, each tagged with its bank; a FIFO carries each row's accumulator row, the accumulate
  flag and its bank to the array's output, where the row goes to the accumulator's
  ``accumulate`` stream. The instruction is done (``done``) when its last row is written.

VECTOR runs on the vector unit (which has two scratchpad read ports of its own,
``vector_spad_a`` and ``vector_spad_b``; the NPU may share them with the matmul stages'
``spad_read0`` and ``spad_read1``, which are never busy at once). The unit takes a VECTOR as soon
as the weights stage is free, while older MATMULs are still in flight, and holds it in its check
stage (``start`` low) until every row of every older MATMUL is in the accumulator and readable
(``_ACCUMULATOR_SETTLE``): all the rows, not only those it touches, so that it never reads a row
an older MATMUL is still summing and never overwrites an input row an older MATMUL has yet to
read. MATMULs after a VECTOR start while it waits or runs (a convolution's next n-tile computes
while the previous one's rows drain and are requantised, so the array does not drain before each
VECTOR), unless they touch rows it reads or writes: the vector unit's ``footprint`` (accumulator
operand and parameter rows, scratchpad output rows) against the MATMUL's accumulator rows, input
rows and weight rows, or it reads the scratchpad (ADD, MAX, which may share the scratchpad read
ports with the matmul stages; no MATMUL passes these, so they start on an empty pipeline, as
before). Such a MATMUL waits in the check stage until the VECTOR is done. A second VECTOR waits
for the first.
``done`` carries the instruction index and error code of every instruction, in program order: the
MATMULs older than a VECTOR report before it (its done waits for them), the younger ones after
it (their dones wait in a FIFO while it is taken). The unit holds at most ``OUTSTANDING``
instructions between command and done, and that FIFO is as deep, so a finished MATMUL's done
always has a place: the array never stalls (it has no ``ready``), and the ``accumulate`` stream
must always be ready (the accumulator is).

``vector_domain`` names the clock domain the vector unit runs in (``sync`` unless the NPU gates
its clock, see :class:`~rtl.npu.Npu`); ``vector_enable`` is high in every cycle the unit has work:
a VECTOR offered to it, waiting or running, from the command handshake to the done handshake (the
unit drains its pipelines before it reports done). ``vector_busy`` is high while one runs (not
while it waits).

``flush`` (after an error elsewhere) stops issuing: the weights and input stages drop their
instructions at once; rows already in the array complete, and so does a VECTOR already taken (a
waiting one starts once those rows are in the accumulator). ``idle`` is high
when nothing is in flight.
"""

from amaranth import DomainRenamer, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.config import NpuConfig
from golden.isa import Opcode as IsaOpcode

from .accumulator import accumulate_layout
from .isa_layouts import ErrorCode, Opcode, format_layout
from .ports import ReadPortSignature, WritePortSignature
from .systolic_array import SystolicArray
from .vector_unit import VectorUnit

__all__ = ["ComputeUnit", "compute_command_layout", "compute_done_layout", "INDEX_BITS",
           "OUTSTANDING"]

#: Width of an instruction index (PROGRAM_LENGTH is a 32-bit register).
INDEX_BITS = 32
#: Cycles between the last accumulate handshake and its row being readable (the accumulator's
#: read, register and write-back, then a plain read).
_ACCUMULATOR_SETTLE = 3
#: Instructions the unit holds at most between command and done (the NPU's FIFO of token
#: pushes is as deep). The dones of the MATMULs younger than a VECTOR that finish before it wait
#: in a FIFO of this depth, so that they never hold up the array.
OUTSTANDING = 8


def compute_command_layout() -> data.StructLayout:
    return data.StructLayout({
        "index": INDEX_BITS,
        "opcode": Opcode,
        "fields": data.UnionLayout({"matmul": format_layout(IsaOpcode.MATMUL),
                                    "vector": format_layout(IsaOpcode.VECTOR)}),
    })


def compute_done_layout() -> data.StructLayout:
    return data.StructLayout({"index": INDEX_BITS, "error": ErrorCode})


class ComputeUnit(wiring.Component):
    def __init__(self, config: NpuConfig, *, vector_domain: str = "sync"):
        self.config = config
        self.vector_domain = vector_domain
        spad_row = data.ArrayLayout(signed(8), config.rows)
        acc_row = data.ArrayLayout(signed(32), config.cols)
        spad_addr, acc_addr = config.scratchpad_addr_width, config.accumulator_addr_width
        super().__init__({
            "command": In(stream.Signature(compute_command_layout())),
            "done": Out(stream.Signature(compute_done_layout())),
            "spad_read0": Out(ReadPortSignature(addr_width=spad_addr, row_shape=spad_row)),
            "spad_read1": Out(ReadPortSignature(addr_width=spad_addr, row_shape=spad_row)),
            "vector_spad_a": Out(ReadPortSignature(addr_width=spad_addr, row_shape=spad_row)),
            "vector_spad_b": Out(ReadPortSignature(addr_width=spad_addr, row_shape=spad_row)),
            "spad_write": Out(WritePortSignature(addr_width=spad_addr, row_shape=spad_row,
                                                 lanes=config.rows)),
            "acc_read0": Out(ReadPortSignature(addr_width=acc_addr, row_shape=acc_row)),
            "acc_read1": Out(ReadPortSignature(addr_width=acc_addr, row_shape=acc_row)),
            "acc_read2": Out(ReadPortSignature(addr_width=acc_addr, row_shape=acc_row)),
            "accumulate": Out(stream.Signature(accumulate_layout(config))),
            "flush": In(1),
            "idle": Out(1),
            "vector_busy": Out(1),
            "vector_reads_scratchpad": Out(1),
            "vector_enable": Out(1),
            "macs": Out(range(config.rows * config.cols + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        rows, cols = cfg.rows, cfg.cols
        wide = 28
        m.submodules.array = array = SystolicArray(cfg)
        vector = VectorUnit(cfg)
        m.submodules.vector = DomainRenamer(self.vector_domain)(vector)
        matmul_layout = format_layout(IsaOpcode.MATMUL)

        # Row bookkeeping that travels with each input row through the array.
        tag_layout = data.StructLayout({"acc_addr": cfg.accumulator_addr_width, "accumulate": 1,
                                        "bank": 1, "last": 1, "index": INDEX_BITS})
        m.submodules.tags = tags = fifo.SyncFIFO(width=tag_layout.size, depth=rows + cols + 4)
        in_flight = [Signal(range(rows + cols + 5), name=f"in_flight_bank{b}") for b in range(2)]

        # Done sources: the matmul output side (a FIFO of instruction indices: the dones of
        # MATMULs younger than a VECTOR wait there until it reports), the weights stage's check
        # errors and the vector unit (``stage_done``, one register).
        m.submodules.matmul_dones = matmul_dones = fifo.SyncFIFO(width=INDEX_BITS,
                                                                 depth=OUTSTANDING)
        held = Signal(range(OUTSTANDING + 1))  # instructions taken whose done is still to come
        stage_done = Signal(compute_done_layout())
        stage_done_valid = Signal()

        # ---- weights stage ------------------------------------------------------------------
        w_ins = Signal(matmul_layout)
        w_index = Signal(INDEX_BITS)
        w_bank = Signal()           # the bank this instruction computes with
        last_bank = Signal()        # the bank the most recent weight tile went into
        w_row = Signal(range(cols + 1))
        w_beat_valid = Signal()

        # ---- input stage --------------------------------------------------------------------
        i_busy = Signal()
        i_ins = Signal(matmul_layout)
        i_index = Signal(INDEX_BITS)
        i_bank = Signal()
        outer = Signal(10)
        inner = Signal(10)
        input_base = Signal(wide)
        input_outer = Signal(wide)
        acc_base = Signal(wide)
        acc_outer = Signal(wide)
        handoff = Signal()

        def end_row(ins, prefix):
            """One past the last row of a walk: computed from the command as it is taken and
            registered with it, so that no multiplier sits in front of the check."""
            return (ins[f"{prefix}_addr"] + (ins.outer_count - 1) * ins[f"{prefix}_outer_stride"]
                    + (ins.inner_count - 1) * ins[f"{prefix}_inner_stride"] + 1)

        check = Signal(ErrorCode)
        illegal = (w_ins.outer_count == 0) | (w_ins.inner_count == 0)
        input_end = Signal(wide)
        acc_end = Signal(wide)
        out_of_range = ((input_end > cfg.scratchpad_depth)
                        | (acc_end > cfg.accumulator_depth)
                        | (w_ins.load_weights & (w_ins.weight_addr + cols > cfg.scratchpad_depth)))
        m.d.comb += check.eq(Mux(illegal, ErrorCode.ILLEGAL_INSTRUCTION,
                                 Mux(out_of_range, ErrorCode.SRAM_OUT_OF_RANGE, ErrorCode.NONE)))

        # Whether the MATMUL in the check stage must wait for the running VECTOR.
        footprint = vector.footprint

        def overlap(first, end, other_first, other_end):  # half-open row ranges
            return (first < other_end) & (other_first < end)

        acc_rows = (w_ins.acc_addr, acc_end)
        vector_conflict = Signal()
        m.d.comb += vector_conflict.eq(
            footprint.reads_scratchpad
            | overlap(*acc_rows, footprint.acc_first, footprint.acc_end)
            | overlap(*acc_rows, footprint.param_first, footprint.param_end)
            | overlap(w_ins.input_addr, input_end,
                      footprint.spad_first, footprint.spad_end)
            | (w_ins.load_weights & overlap(w_ins.weight_addr, w_ins.weight_addr + cols,
                                            footprint.spad_first, footprint.spad_end)))

        settle = Signal(range(_ACCUMULATOR_SETTLE + 1))
        settle_next = Signal.like(settle)
        pipeline_empty = Signal()
        m.d.comb += pipeline_empty.eq(~i_busy & (tags.level == 0) & ~matmul_dones.r_rdy
                                      & (settle == 0))
        m.d.comb += settle_next.eq(Mux(tags.level != 0, _ACCUMULATOR_SETTLE,
                                       Mux(settle != 0, settle - 1, 0)))
        m.d.sync += settle.eq(settle_next)

        # The VECTOR: taken (``vector_active``), it waits in the vector unit's check stage
        # (``vector_waiting``) until every MATMUL row older than it is in the accumulator: the
        # rest of the input stage's instruction when it was taken (``older_busy``), the rows in
        # the array then and since from that instruction (``older_rows``; rows leave in order),
        # and the settle after the last of them (``older_settle``). Younger MATMULs pass it
        # meanwhile if they do not touch its rows (the check stage, below).
        vector_active = Signal()
        vector_waiting = Signal()
        vector_index = Signal(INDEX_BITS)
        older_busy = Signal()
        older_rows = Signal(range(rows + cols + 5))
        older_settle = Signal.like(settle)
        older_dones = Signal(range(OUTSTANDING))  # the first ones in ``matmul_dones`` are older
        take_vector = Signal()
        m.d.comb += vector.start.eq(vector_waiting & ~older_busy & (older_rows == 0)
                                    & (older_settle == 0))
        with m.If(vector.start):
            m.d.sync += vector_waiting.eq(0)
        new_bank = ~last_bank
        bank_free = ~(i_busy & (i_bank == new_bank)) & (Mux(new_bank, in_flight[1], in_flight[0]) == 0)

        # Weight beats: read row n this cycle, the beat goes into the array the next.
        m.d.comb += [array.weights.valid.eq(w_beat_valid),
                     array.weights.payload.values.eq(self.spad_read1.data),
                     array.weights.payload.bank.eq(w_bank)]
        m.d.sync += w_beat_valid.eq(0)

        issue = Signal()  # the input stage sends a row into the array (below)
        last_input = (outer + 1 == i_ins.outer_count) & (inner + 1 == i_ins.inner_count)

        cmd = self.command.payload
        with m.FSM(name="weights") as weights_fsm:
            with m.State("IDLE"):
                with m.If(self.command.valid & ~self.flush & (held != OUTSTANDING)):
                    with m.If(cmd.opcode == Opcode.MATMUL):
                        m.d.comb += self.command.ready.eq(1)
                        m.d.sync += [w_ins.eq(cmd.fields.matmul), w_index.eq(cmd.index),
                                     input_end.eq(end_row(cmd.fields.matmul, "input")),
                                     acc_end.eq(end_row(cmd.fields.matmul, "acc"))]
                        m.next = "CHECK"
                    with m.Elif(~stage_done_valid & ~vector_active):
                        m.d.comb += [self.command.ready.eq(vector.command.ready),
                                     vector.command.valid.eq(1),
                                     take_vector.eq(vector.command.ready)]
            with m.State("CHECK"):
                with m.If(check != ErrorCode.NONE):
                    m.next = "REPORT"
                with m.Elif(vector_active & vector_conflict):
                    pass  # wait until the VECTOR is done
                with m.Elif(w_ins.load_weights):
                    m.d.sync += [w_bank.eq(new_bank), w_row.eq(0)]
                    m.next = "WAIT_BANK"
                with m.Else():
                    m.d.sync += w_bank.eq(last_bank)
                    m.next = "HANDOFF"
                with m.If(self.flush):  # drop the instruction
                    m.next = "IDLE"
            with m.State("WAIT_BANK"):
                with m.If(bank_free):
                    m.next = "LOAD"
                with m.If(self.flush):  # drop the instruction
                    m.next = "IDLE"
            with m.State("LOAD"):
                m.d.comb += [self.spad_read1.addr.eq(w_ins.weight_addr + w_row),
                             self.spad_read1.en.eq(1)]
                m.d.sync += [w_beat_valid.eq(1), w_row.eq(w_row + 1)]
                with m.If(w_row == cols - 1):
                    m.d.sync += last_bank.eq(w_bank)
                    m.next = "HANDOFF"
                with m.If(self.flush):  # drop the instruction
                    m.next = "IDLE"
            with m.State("HANDOFF"):  # in the cycle the input stage issues its last row
                with m.If(~i_busy | (issue & last_input)):
                    m.d.comb += handoff.eq(1)
                    m.next = "IDLE"
                with m.If(self.flush):  # drop the instruction
                    m.next = "IDLE"
            with m.State("REPORT"):
                with m.If(pipeline_empty & ~stage_done_valid & ~vector_active):
                    m.d.sync += [stage_done_valid.eq(1), stage_done.index.eq(w_index),
                                 stage_done.error.eq(check)]
                    m.next = "IDLE"
                with m.If(self.flush):  # drop the instruction
                    m.next = "IDLE"
        # The VECTOR's done, whatever the weights stage is doing (REPORT waits for it), once every
        # older MATMUL has reported.
        vector_done_ready = ~stage_done_valid & (older_dones == 0)
        m.d.comb += vector.done.ready.eq(vector_done_ready)
        with m.If(vector.done.valid & vector_done_ready):
            m.d.sync += [stage_done_valid.eq(1), stage_done.index.eq(vector_index),
                         stage_done.error.eq(vector.done.payload.error), vector_active.eq(0)]
        m.d.comb += vector.command.payload.eq(cmd.fields.vector)

        # ---- input stage: a read stage (the scratchpad port) in front of the array ---------
        s1_valid = Signal()
        s1_bank = Signal()
        m.d.comb += [array.inputs.valid.eq(s1_valid),
                     array.inputs.payload.values.eq(self.spad_read0.data),
                     array.inputs.payload.bank.eq(s1_bank)]
        m.d.sync += [s1_valid.eq(issue), s1_bank.eq(i_bank)]
        tag = Signal(tag_layout)
        m.d.comb += [tag.acc_addr.eq(acc_base), tag.accumulate.eq(i_ins.accumulate),
                     tag.bank.eq(i_bank), tag.last.eq(last_input), tag.index.eq(i_index),
                     tags.w_data.eq(tag), tags.w_en.eq(issue)]
        m.d.comb += [self.spad_read0.addr.eq(input_base), self.spad_read0.en.eq(1)]
        m.d.comb += issue.eq(i_busy & tags.w_rdy & ~self.flush)
        with m.If(issue):
            with m.If(inner + 1 < i_ins.inner_count):
                m.d.sync += [inner.eq(inner + 1),
                             input_base.eq(input_base + i_ins.input_inner_stride),
                             acc_base.eq(acc_base + i_ins.acc_inner_stride)]
            with m.Elif(outer + 1 < i_ins.outer_count):
                next_input = input_outer + i_ins.input_outer_stride
                next_acc = acc_outer + i_ins.acc_outer_stride
                m.d.sync += [outer.eq(outer + 1), inner.eq(0),
                             input_base.eq(next_input), input_outer.eq(next_input),
                             acc_base.eq(next_acc), acc_outer.eq(next_acc)]
            with m.Else():
                m.d.sync += i_busy.eq(0)
        with m.If(handoff):  # after the issue above: the next instruction's first row follows
            m.d.sync += [i_busy.eq(1), i_ins.eq(w_ins), i_index.eq(w_index), i_bank.eq(w_bank),
                         outer.eq(0), inner.eq(0),
                         input_base.eq(w_ins.input_addr), input_outer.eq(w_ins.input_addr),
                         acc_base.eq(w_ins.acc_addr), acc_outer.eq(w_ins.acc_addr)]
        with m.If(self.flush):
            m.d.sync += i_busy.eq(0)

        # ---- array output -> accumulator --------------------------------------------------
        head = Signal(tag_layout)
        m.d.comb += head.eq(tags.r_data)
        retire = array.outputs.valid
        input_done = issue & last_input
        m.d.comb += [
            self.accumulate.valid.eq(array.outputs.valid),
            self.accumulate.payload.addr.eq(head.acc_addr),
            self.accumulate.payload.values.eq(array.outputs.payload),
            self.accumulate.payload.accumulate.eq(head.accumulate),
            tags.r_en.eq(retire),
        ]
        retire_last = retire & head.last
        m.d.comb += [matmul_dones.w_data.eq(head.index), matmul_dones.w_en.eq(retire_last)]
        report_matmul = Signal()  # the done at the head of ``matmul_dones`` goes out

        # ---- the rows older than the VECTOR (see above) --------------------------------------
        with m.If(take_vector):
            # Everything in flight is older; so are the dones not yet reported.
            m.d.sync += [vector_index.eq(cmd.index), vector_active.eq(1), vector_waiting.eq(1),
                         older_busy.eq(i_busy & ~input_done),
                         older_rows.eq(tags.level + issue - retire),
                         older_settle.eq(settle_next),
                         older_dones.eq(matmul_dones.level + retire_last - report_matmul)]
        with m.Else():
            with m.If(input_done | self.flush):
                m.d.sync += older_busy.eq(0)
            m.d.sync += older_rows.eq(older_rows + (issue & older_busy)
                                      - (retire & (older_rows != 0)))
            with m.If(older_rows != 0):
                m.d.sync += older_settle.eq(_ACCUMULATOR_SETTLE)
            with m.Elif(older_settle != 0):
                m.d.sync += older_settle.eq(older_settle - 1)
            m.d.sync += older_dones.eq(older_dones + (retire_last & (older_rows != 0))
                                       - (report_matmul & (older_dones != 0)))
        for bank in range(2):
            up = issue & (i_bank == bank)
            down = retire & (head.bank == bank)
            m.d.sync += in_flight[bank].eq(in_flight[bank] + up - down)

        # ---- done ---------------------------------------------------------------------------
        # A check error is set only while no MATMUL is in flight, so any matmul done is younger.
        # A VECTOR's done is set once every older MATMUL has reported (``older_dones``, the
        # older ones at the head of ``matmul_dones``); while it is taken, only those report.
        with m.If(stage_done_valid):
            m.d.comb += [self.done.valid.eq(1), self.done.payload.eq(stage_done)]
            with m.If(self.done.ready):
                m.d.sync += stage_done_valid.eq(0)
        with m.Elif(matmul_dones.r_rdy & (~vector_active | (older_dones != 0))):
            m.d.comb += [self.done.valid.eq(1), self.done.payload.index.eq(matmul_dones.r_data),
                         self.done.payload.error.eq(ErrorCode.NONE),
                         report_matmul.eq(self.done.ready), matmul_dones.r_en.eq(self.done.ready)]

        # Instructions held: none once the unit is idle (a flush drops some without a done).
        taken = self.command.valid & self.command.ready
        reported = self.done.valid & self.done.ready
        m.d.sync += held.eq(Mux(self.idle, 0, held - reported) + taken)

        # ---- the vector unit's ports -----------------------------------------------------------
        wiring.connect(m, wiring.flipped(self.acc_read0), vector.acc_values)
        wiring.connect(m, wiring.flipped(self.acc_read1), vector.acc_params0)
        wiring.connect(m, wiring.flipped(self.acc_read2), vector.acc_params1)
        wiring.connect(m, wiring.flipped(self.spad_write), vector.spad_write)
        wiring.connect(m, wiring.flipped(self.vector_spad_a), vector.spad_a)
        wiring.connect(m, wiring.flipped(self.vector_spad_b), vector.spad_b)

        m.d.comb += [
            self.macs.eq(Mux(array.inputs.valid, rows * cols, 0)),
            self.vector_busy.eq(vector_active & ~vector_waiting),
            self.vector_reads_scratchpad.eq(vector_active & ~vector_waiting
                                            & vector.footprint.reads_scratchpad),
            self.vector_enable.eq(vector.command.valid | vector_active),
            self.idle.eq(weights_fsm.ongoing("IDLE") & pipeline_empty & ~vector_active
                         & ~stage_done_valid & ~w_beat_valid),
        ]
        return m
