"""The NPU top level: AXI4-Lite control, an AXI4 master to DRAM, and the decoupled machine.

```
s_axil -> ControlRegisters --start--> FetchUnit --instructions--> dispatch
                                                                 |  load queue  -> LoadUnit
                                                                 |  compute q.  -> ComputeUnit
                                                                 |  store queue -> StoreUnit
m_axi (read)  <- AxiReadArbiter <- DmaReader (fetch), DmaReader (load)
m_axi (write) <- DmaWriter <- StoreUnit
```

- **Dispatch** takes fetched instructions in order: an unknown opcode, set bits above the
  format, or a token flag towards a missing neighbour (or any flag on SYNC/FINISH) is
  ``ILLEGAL_INSTRUCTION``; a fetch bus error is ``BUS_ERROR``. LOAD, MATMUL/VECTOR and STORE go to
  their unit's queue; SYNC waits until every queue and unit is empty; FINISH does the same and
  ends the run. As in the golden machine, instructions dispatched before a faulting one complete
  first. A program that runs out without FINISH ends with ``MISSING_FINISH`` (index = length).
- **Units and tokens**: each unit's queue head starts once the tokens it pops are there (four
  counters: load->compute, compute->load, compute->store, store->compute); its pushes happen when
  it completes. The compute unit takes several instructions at once (pipelined MATMULs, MATMULs
  passing a VECTOR) and reports completions in order, so its pushes wait in a FIFO of
  ``OUTSTANDING`` (the most instructions it holds at once).
- **Errors** from a unit, dispatch or the watchdog (no instruction dispatched or retired and no
  bus beat for WATCHDOG cycles: ``DEADLOCK``, at the oldest waiting instruction) stop the run: the
  first one is kept, every unit, queue and DMA engine is flushed until idle (bursts on the bus are
  completed), then the run ends with the error and its instruction index, and a new START works.
- **Memories**: the scratchpad has three read ports (compute x2, shared by the matmul stages
  and the vector unit, store) and one write port
  shared by the vector unit (first) and the load unit; the accumulator has four read ports
  (vector x3, store), the array's accumulate port and the load unit's write port.
"""

from amaranth import Cat, Module, Mux, ResetInserter, Signal
from amaranth.lib import data, fifo, wiring
from amaranth.lib.wiring import Out

from golden import isa
from golden.config import NpuConfig

from .accumulator import Accumulator
from .axi import Axi4Signature, AxiLiteSignature, connect_flat, flat_members
from .axi_read_arbiter import AxiReadArbiter
from .clock_gate import add_gated_domain
from .compute_unit import INDEX_BITS, OUTSTANDING, ComputeUnit
from .control_registers import ControlRegisters
from .dma_layouts import read_chunk_layout, span_layout, write_chunk_layout
from .dma_reader import DmaReader
from .dma_writer import DmaWriter
from .fetch_unit import FetchUnit
from .isa_layouts import ErrorCode, Opcode, fields_layout, format_layout
from .load_unit import LoadUnit
from .scratchpad import Scratchpad
from .store_unit import StoreUnit
from .stream_register import StreamRegister

__all__ = ["Npu"]

_TOKEN_BITS = 8  # at most 255 tokens waiting in one direction
_MIN_FLUSH_CYCLES = 2


class Npu(wiring.Component):
    """The whole NPU with flat ports: ``s_axil_*`` (AXI4-Lite slave, 12 address bits),
    ``m_axi_*`` (AXI4 master), ``irq``.

    ``gate_vector_clock`` (for simulation; FPGA builds leave it off) runs the vector unit and its
    accumulator and scratchpad read ports from a gated clock (:mod:`rtl.clock_gate`) that runs
    while the compute unit's ``vector_enable`` is high (a VECTOR offered or running). The cycle-
    level behaviour is the same; Verilator then skips the idle unit, most of the design's logic
    in a program without VECTOR instructions.
    """

    def __init__(self, config: NpuConfig, *, gate_vector_clock: bool = False):
        self.config = config
        self.gate_vector_clock = gate_vector_clock
        from golden import registers as regmap
        members = {}
        members.update(flat_members("s_axil", AxiLiteSignature(addr_width=regmap.ADDR_WIDTH).flip()))
        members.update(flat_members("m_axi", Axi4Signature(addr_width=config.axi_addr_width,
                                                            data_width=config.axi_data_width)))
        members["irq"] = Out(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        m.submodules.registers = regs = ControlRegisters(cfg)
        m.submodules.fetch = fetch = FetchUnit(cfg)
        m.submodules.fetch_reader = fetch_reader = DmaReader(cfg)
        m.submodules.load_reader = load_reader = DmaReader(cfg)
        m.submodules.read_arbiter = arbiter = AxiReadArbiter(cfg, clients=2)
        m.submodules.writer = writer = DmaWriter(cfg)
        m.submodules.load = load = LoadUnit(cfg)
        m.submodules.store = store = StoreUnit(cfg)
        vector_domain = "vector" if self.gate_vector_clock else "sync"
        m.submodules.compute = compute = ComputeUnit(cfg, vector_domain=vector_domain)
        # The vector unit's two scratchpad reads share the matmul stages' ports (they are never
        # busy at once), except with the gated clock: then they are ports of their own in the
        # vector domain, so that nothing in the unit reads a register of the free-running clock.
        vector_spad_ports = 2 if self.gate_vector_clock else 0
        m.submodules.scratchpad = spad = Scratchpad(
            cfg, read_ports=3 + vector_spad_ports,
            read_domains=("sync",) * 3 + (vector_domain,) * vector_spad_ports)
        m.submodules.accumulator = acc = Accumulator(
            cfg, read_ports=4, read_domains=(vector_domain,) * 3 + ("sync",))
        if self.gate_vector_clock:
            add_gated_domain(m, "vector", enable=compute.vector_enable)

        # ---- buses ----------------------------------------------------------------------------
        connect_flat(m, owner=self, prefix="s_axil", interface=regs.bus)
        connect_flat(m, owner=self, prefix="m_axi", interface=arbiter.bus)
        connect_flat(m, owner=self, prefix="m_axi", interface=writer.bus)
        m.d.comb += self.irq.eq(regs.irq)
        wiring.connect(m, fetch_reader.bus, arbiter.client0)
        wiring.connect(m, load_reader.bus, arbiter.client1)
        # Register slices (added below, reset by a flush) between the units and their DMA
        # engines: a DMA engine's ``ready`` follows the bus arbiter and its burst queues, a unit's
        # follows its address walk or its write port; each slice keeps one side's logic out of
        # the other's cycle (one cycle more per transfer, the same throughput).
        slices = {
            "fetch_spans": (fetch.spans, fetch_reader.spans, span_layout(cfg)),
            "load_spans": (load.spans, load_reader.spans, span_layout(cfg)),
            "load_chunks": (load_reader.chunks, load.chunks, read_chunk_layout(cfg)),
            "store_spans": (store.spans, writer.spans, span_layout(cfg)),
            "store_chunks": (store.chunks, writer.chunks, write_chunk_layout(cfg)),
        }
        stream_slices = {}
        for name, (source, sink, layout) in slices.items():
            stream_slices[name] = stream_slice = StreamRegister(layout)
            wiring.connect(m, source, stream_slice.inputs)
            wiring.connect(m, stream_slice.outputs, sink)
        wiring.connect(m, fetch_reader.chunks, fetch.chunks)
        wiring.connect(m, writer.done, store.span_done)

        # ---- memories -------------------------------------------------------------------------
        if self.gate_vector_clock:
            wiring.connect(m, compute.spad_read0, spad.read0)
            wiring.connect(m, compute.spad_read1, spad.read1)
            wiring.connect(m, compute.vector_spad_a, spad.read3)
            wiring.connect(m, compute.vector_spad_b, spad.read4)
        else:
            for matmul, vector, port in ((compute.spad_read0, compute.vector_spad_a, spad.read0),
                                         (compute.spad_read1, compute.vector_spad_b, spad.read1)):
                busy = compute.vector_reads_scratchpad
                m.d.comb += [port.addr.eq(Mux(busy, vector.addr, matmul.addr)),
                             port.en.eq(Mux(busy, vector.en, matmul.en)),
                             matmul.data.eq(port.data), vector.data.eq(port.data)]
        wiring.connect(m, store.spad_read, spad.read2)
        wiring.connect(m, compute.acc_read0, acc.read0)
        wiring.connect(m, compute.acc_read1, acc.read1)
        wiring.connect(m, compute.acc_read2, acc.read2)
        wiring.connect(m, store.acc_read, acc.read3)
        wiring.connect(m, compute.accumulate, acc.accumulate)
        wiring.connect(m, load.acc_write, acc.write)
        vector_writes = compute.spad_write.en
        for source, ready in ((compute.spad_write, spad.write.ready),
                              (load.spad_write, spad.write.ready & ~vector_writes)):
            m.d.comb += source.ready.eq(ready)
        chosen = Mux(vector_writes, 1, 0)
        for name in ("addr", "lanes", "data"):
            m.d.comb += getattr(spad.write, name).eq(
                Mux(chosen, getattr(compute.spad_write, name), getattr(load.spad_write, name)))
        m.d.comb += spad.write.en.eq(compute.spad_write.en | load.spad_write.en)

        # ---- run control and faults -------------------------------------------------------------
        running = Signal()
        flushing = Signal()
        flush_cycles = Signal(range(_MIN_FLUSH_CYCLES + 1))
        fault = Signal()
        fault_code = Signal(ErrorCode)
        fault_index = Signal(INDEX_BITS)
        finish = Signal()          # FINISH retired: the run ends without an error
        raise_fault = Signal()
        raise_code = Signal(ErrorCode)
        raise_index = Signal(INDEX_BITS)
        with m.If(raise_fault & ~fault):
            m.d.sync += [fault.eq(1), fault_code.eq(raise_code), fault_index.eq(raise_index)]

        flush = flushing
        for name, stream_slice in stream_slices.items():
            m.submodules[name] = ResetInserter(flush)(stream_slice)
        for unit in (fetch, fetch_reader, load_reader, writer, load, store, compute):
            m.d.comb += unit.flush.eq(flush)
        all_idle = Signal()
        m.d.comb += all_idle.eq(fetch.idle & fetch_reader.idle & load_reader.idle & writer.idle
                                & load.idle & store.idle & compute.idle)

        m.d.comb += [fetch.start.eq(regs.start), fetch.program_addr.eq(regs.program_addr),
                     fetch.program_length.eq(regs.program_length),
                     regs.busy.eq(running)]
        with m.If(regs.start):
            m.d.sync += [running.eq(1), fault.eq(0)]
        with m.If(running & fault & ~flushing):
            m.d.sync += [flushing.eq(1), flush_cycles.eq(_MIN_FLUSH_CYCLES)]
        with m.If(flushing):
            with m.If(flush_cycles != 0):
                m.d.sync += flush_cycles.eq(flush_cycles - 1)
            with m.Elif(all_idle):
                m.d.sync += [flushing.eq(0), running.eq(0)]
                m.d.comb += [regs.finished.eq(1), regs.error.eq(fault_code),
                             regs.error_index.eq(fault_index)]
        with m.If(finish):
            m.d.sync += running.eq(0)
            m.d.comb += [regs.finished.eq(1), regs.error.eq(ErrorCode.NONE)]

        # ---- queues -----------------------------------------------------------------------------
        entry_layout = data.StructLayout({"word": cfg.instruction_width, "index": INDEX_BITS})
        queues = {}
        for name in ("load", "compute", "store"):
            queues[name] = q = fifo.SyncFIFO(width=entry_layout.size, depth=cfg.queue_depth)
            m.submodules[f"{name}_queue"] = q
        heads = {name: Signal(entry_layout, name=f"{name}_head") for name in queues}
        for name, q in queues.items():
            m.d.comb += heads[name].eq(q.r_data)
        header_layout = fields_layout(isa.HEADER)

        def header(entry):
            return header_layout(entry.word[:header_layout.size])

        def fields(entry, opcode):
            layout = format_layout(opcode)
            return layout(entry.word[header_layout.size:header_layout.size + layout.size])

        # ---- tokens -------------------------------------------------------------------------------
        # tokens[(a, b)]: tokens unit a has pushed to unit b and b has not popped yet.
        pairs = [("load", "compute"), ("compute", "load"), ("compute", "store"),
                 ("store", "compute")]
        tokens = {p: Signal(_TOKEN_BITS, name=f"tokens_{p[0]}_to_{p[1]}") for p in pairs}
        pushes = {p: Signal(name=f"push_{p[0]}_to_{p[1]}") for p in pairs}
        pops = {p: Signal(name=f"pop_{p[0]}_to_{p[1]}") for p in pairs}
        for p in pairs:
            m.d.sync += tokens[p].eq(tokens[p] + pushes[p] - pops[p])
        with m.If(regs.start):
            m.d.sync += [tokens[p].eq(0) for p in pairs]
        neighbours = {"load": (None, "compute"), "compute": ("load", "store"),
                      "store": ("compute", None)}

        def can_pop(name, head_header):
            prev, nxt = neighbours[name]
            ok = 1
            if prev is not None:
                ok = ok & (~head_header.pop_prev | (tokens[(prev, name)] != 0))
            if nxt is not None:
                ok = ok & (~head_header.pop_next | (tokens[(nxt, name)] != 0))
            return ok

        def take_tokens(name, head_header):
            prev, nxt = neighbours[name]
            if prev is not None:
                m.d.comb += pops[(prev, name)].eq(head_header.pop_prev)
            if nxt is not None:
                m.d.comb += pops[(nxt, name)].eq(head_header.pop_next)

        def give_tokens(name, push_prev, push_next):
            prev, nxt = neighbours[name]
            if prev is not None:
                m.d.comb += pushes[(name, prev)].eq(push_prev)
            if nxt is not None:
                m.d.comb += pushes[(name, nxt)].eq(push_next)

        # ---- load and store units: one instruction at a time -------------------------------------
        retired = []
        stalled_on_tokens = []
        waiting_index = []   # (valid, index) of instructions that wait, for the watchdog
        for name, unit, opcode in (("load", load, isa.Opcode.LOAD),
                                   ("store", store, isa.Opcode.STORE)):
            q, head = queues[name], heads[name]
            busy = Signal(name=f"{name}_busy")
            sent = Signal(name=f"{name}_sent")
            current = Signal(entry_layout, name=f"{name}_current")
            head_header = header(head)
            start = q.r_rdy & ~busy & can_pop(name, head_header) & ~flush
            stalled_on_tokens.append(q.r_rdy & ~busy & ~can_pop(name, head_header))
            waiting_index.append((q.r_rdy, head.index))
            waiting_index.append((busy, current.index))
            with m.If(start):
                take_tokens(name, head_header)
                m.d.sync += [busy.eq(1), sent.eq(0), current.eq(head)]
            m.d.comb += [q.r_en.eq(start | flush),
                         unit.command.valid.eq(busy & ~sent & ~flush),
                         unit.command.payload.eq(fields(current, opcode)),
                         unit.done.ready.eq(1)]
            with m.If(unit.command.valid & unit.command.ready):
                m.d.sync += sent.eq(1)
            done = unit.done.valid & busy & ~flush
            current_header = header(current)
            with m.If(done):
                m.d.sync += busy.eq(0)
                with m.If(unit.done.payload.error != ErrorCode.NONE):
                    m.d.comb += [raise_fault.eq(1), raise_code.eq(unit.done.payload.error),
                                 raise_index.eq(current.index)]
                with m.Else():
                    give_tokens(name, current_header.push_prev, current_header.push_next)
            retired.append(done & (unit.done.payload.error == ErrorCode.NONE))
            with m.If(flush):
                m.d.sync += busy.eq(0)
            m.d.comb += regs.events[f"busy_{name}"].eq(busy)

        # ---- compute unit: pipelined, completions in order ---------------------------------------
        q, head = queues["compute"], heads["compute"]
        head_header = header(head)
        m.submodules.compute_pushes = push_fifo = fifo.SyncFIFO(width=2, depth=OUTSTANDING)
        compute_start = q.r_rdy & can_pop("compute", head_header) & push_fifo.w_rdy & ~flush
        stalled_on_tokens.append(q.r_rdy & ~can_pop("compute", head_header))
        waiting_index.append((q.r_rdy, head.index))
        m.d.comb += [compute.command.valid.eq(compute_start),
                     compute.command.payload.index.eq(head.index),
                     compute.command.payload.opcode.eq(head_header.opcode),
                     compute.command.payload.fields.eq(head.word[header_layout.size:]),
                     push_fifo.w_data.eq(Cat(head_header.push_prev, head_header.push_next))]
        compute_taken = compute.command.valid & compute.command.ready
        with m.If(compute_taken):
            take_tokens("compute", head_header)
        m.d.comb += [q.r_en.eq(compute_taken | flush), push_fifo.w_en.eq(compute_taken),
                     compute.done.ready.eq(1)]
        compute_done = compute.done.valid & ~flush
        with m.If(compute_done):
            with m.If(compute.done.payload.error != ErrorCode.NONE):
                m.d.comb += [raise_fault.eq(1), raise_code.eq(compute.done.payload.error),
                             raise_index.eq(compute.done.payload.index)]
            with m.Else():
                give_tokens("compute", push_fifo.r_data[0], push_fifo.r_data[1])
        m.d.comb += push_fifo.r_en.eq(compute.done.valid | flush)
        retired.append(compute_done & (compute.done.payload.error == ErrorCode.NONE))
        m.d.comb += [regs.events.busy_compute.eq(~compute.idle),
                     regs.events.busy_vector.eq(compute.vector_busy)]

        # ---- dispatch -------------------------------------------------------------------------------
        incoming = fetch.instructions.payload
        in_header = header_layout(incoming.word[:header_layout.size])
        queues_empty = ~Cat(q.r_rdy for q in queues.values()).any()
        units_busy = Signal()
        m.d.comb += units_busy.eq(~load.idle | ~store.idle | ~compute.idle
                                  | regs.events.busy_load | regs.events.busy_store
                                  | (push_fifo.level != 0))
        drained = Signal()
        m.d.comb += drained.eq(queues_empty & ~units_busy)
        dispatch_index = Signal(INDEX_BITS)
        dispatched_all = Signal()
        m.d.comb += dispatched_all.eq(dispatch_index == regs.program_length)
        with m.If(regs.start):
            m.d.sync += dispatch_index.eq(0)

        legal = Signal()
        reserved_clear = Signal()
        flags = Cat(in_header.pop_prev, in_header.pop_next, in_header.push_prev,
                    in_header.push_next)
        with m.Switch(in_header.opcode):
            for opcode in isa.Opcode:
                with m.Case(int(opcode)):
                    used = header_layout.size + format_layout(opcode).size
                    m.d.comb += reserved_clear.eq(incoming.word[used:] == 0)
                    if opcode == isa.Opcode.LOAD:
                        m.d.comb += legal.eq(~in_header.pop_prev & ~in_header.push_prev)
                    elif opcode == isa.Opcode.STORE:
                        m.d.comb += legal.eq(~in_header.pop_next & ~in_header.push_next)
                    elif opcode in (isa.Opcode.SYNC, isa.Opcode.FINISH):
                        m.d.comb += legal.eq(flags == 0)
                    else:
                        m.d.comb += legal.eq(1)
        target = {"load": in_header.opcode == Opcode.LOAD,
                  "store": in_header.opcode == Opcode.STORE,
                  "compute": (in_header.opcode == Opcode.MATMUL)
                  | (in_header.opcode == Opcode.VECTOR)}
        barrier = (in_header.opcode == Opcode.SYNC) | (in_header.opcode == Opcode.FINISH)
        entry = Signal(entry_layout)
        m.d.comb += [entry.word.eq(incoming.word), entry.index.eq(incoming.index)]
        for q in queues.values():
            m.d.comb += q.w_data.eq(entry)
        dispatched = Signal()
        active = running & ~fault & ~flushing
        with m.If(active & fetch.instructions.valid):
            bad = incoming.error | ~legal | ~reserved_clear
            with m.If(bad):
                with m.If(drained):  # the instructions before it complete first
                    m.d.comb += [raise_fault.eq(1), raise_index.eq(incoming.index),
                                 raise_code.eq(Mux(incoming.error, ErrorCode.BUS_ERROR,
                                                   ErrorCode.ILLEGAL_INSTRUCTION))]
            with m.Elif(barrier):
                with m.If(drained):
                    m.d.comb += [fetch.instructions.ready.eq(1), dispatched.eq(1)]
                    with m.If(in_header.opcode == Opcode.FINISH):
                        m.d.comb += finish.eq(1)
            with m.Else():
                for name, q in queues.items():
                    with m.If(target[name]):
                        m.d.comb += [q.w_en.eq(1), fetch.instructions.ready.eq(q.w_rdy),
                                     dispatched.eq(q.w_rdy)]
        with m.If(dispatched):
            m.d.sync += dispatch_index.eq(dispatch_index + 1)
        with m.If(active & ~fetch.instructions.valid & dispatched_all & drained & fetch.idle):
            m.d.comb += [raise_fault.eq(1), raise_code.eq(ErrorCode.MISSING_FINISH),
                         raise_index.eq(regs.program_length)]
        waiting_index.append((active & fetch.instructions.valid, incoming.index))

        # ---- watchdog ----------------------------------------------------------------------------
        bus_beat = ((self.m_axi_rvalid & self.m_axi_rready) | (self.m_axi_wvalid & self.m_axi_wready)
                    | (self.m_axi_bvalid & self.m_axi_bready))
        progress = dispatched | Cat(*retired).any() | bus_beat | regs.start
        quiet_cycles = Signal(32)
        with m.If(progress | ~active):
            m.d.sync += quiet_cycles.eq(0)
        with m.Else():
            m.d.sync += quiet_cycles.eq(quiet_cycles + 1)
        oldest = dispatch_index
        for step, (valid, index) in enumerate(waiting_index):  # the smallest waiting index
            smaller = Signal(INDEX_BITS, name=f"oldest_{step}")
            m.d.comb += smaller.eq(Mux(valid & (index < oldest), index, oldest))
            oldest = smaller
        with m.If(active & (quiet_cycles >= regs.watchdog_cycles)):
            m.d.comb += [raise_fault.eq(1), raise_code.eq(ErrorCode.DEADLOCK),
                         raise_index.eq(oldest)]

        # ---- performance events -------------------------------------------------------------
        events = regs.events
        beats_read = self.m_axi_rvalid & self.m_axi_rready
        m.d.comb += [
            events.stall_token.eq(Cat(*stalled_on_tokens).any()),
            events.stall_dram.eq((~fetch_reader.idle | ~load_reader.idle | ~writer.idle)
                                 & ~bus_beat),
            events.stall_fetch.eq(active & ~fetch.instructions.valid & ~dispatched_all),
            events.macs.eq(compute.macs),
            events.dram_read_bytes.eq(Mux(beats_read, cfg.axi_data_bytes, 0)),
            events.dram_write_bytes.eq(writer.written_bytes),
            # SYNC and FINISH retire when they are dispatched.
            events.instructions.eq(sum(retired) + (dispatched & barrier)),
        ]
        return m
