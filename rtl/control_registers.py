"""The AXI4-Lite control/status registers of the NPU, decoded from ``golden.registers``.

The register map (offsets, fields, reset values, counters) is ``golden.registers.REGISTERS``;
this block gives the registers of that table their behaviour (a read-only register it does not
name is a constant, its reset value: ID, VERSION, the configuration) and refuses to build if the
table has a writable register it does not know, so no offset or field position is written here.

Bus behaviour (an AXI4-Lite slave, one transaction per direction at a time):

- write address and write data are taken in either order or in the same cycle, each held until
  the other arrives; the register is written in the following cycle and the response stays
  valid until ``bready``; a read is independent of writes and answered one cycle after its
  address, held until ``rready``;
- byte strobes apply to every writable bit; the low two address bits are ignored;
- an offset not in the table answers ``SLVERR`` (reads return 0, writes change nothing); writes
  to read-only registers and bits are ignored and answered ``OKAY``.

Run control: a write of 1 to CTRL.START while neither ``busy`` nor the previous ``start`` pulse
is high gives a one-cycle ``start`` pulse and, in the same clock edge, clears DONE, the error,
ERROR_INDEX and every counter, and copies PROGRAM_ADDR, PROGRAM_LENGTH and WATCHDOG to the
``program_addr``, ``program_length`` and ``watchdog_cycles`` outputs, which then hold still for
the whole run (the driver may prepare the next run's values meanwhile). ``busy`` must be high
from the cycle after ``start`` until the run ends. ``finished`` (a pulse, with ``error`` and
``error_index``) sets DONE and records the error; it wins over a CLEAR in the same cycle.
``irq`` is IRQ_ENABLE and DONE.

Counters: while ``busy``, CYCLES counts cycles and every other counter adds its ``events``
field (``golden.registers.COUNTERS`` names the fields and their largest per-cycle values).
Reading a counter's LO register latches its HI word for the next read of HI.
"""

from amaranth import Array, C, Cat, Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from golden import registers as regmap
from golden.config import NpuConfig

from .axi import AxiLiteSignature, AxiResp
from .isa_layouts import ErrorCode

__all__ = ["ControlRegisters", "events_layout"]

#: The read multiplexer selects within groups of 2 ** _GROUP_BITS words, then the group.
_GROUP_BITS = 2


def events_layout(config: NpuConfig) -> data.StructLayout:
    """Per-cycle increments of the performance counters, one field per counter event, each
    wide enough for the counter's largest increment."""
    return data.StructLayout({
        counter.event: unsigned(counter.max_increment(config).bit_length())
        for counter in regmap.COUNTERS if counter.event is not None})


class ControlRegisters(wiring.Component):
    """The CSR block: an AXI4-Lite slave holding control, status, configuration and
    performance-counter registers (see the module docstring for the protocol)."""

    def __init__(self, config: NpuConfig):
        if not isinstance(config, NpuConfig):
            self._MustUse__silence = True  # never elaborated: no "created but never used" warning
            raise TypeError(f"Config must be an NpuConfig, not {config!r}")
        self.config = config

        def reset(name):
            return regmap.reset_value(regmap.register(name), config)

        super().__init__({
            "bus": In(AxiLiteSignature(addr_width=regmap.ADDR_WIDTH)),
            "start": Out(1),
            "program_addr": Out(32, init=reset("PROGRAM_ADDR")),
            "program_length": Out(32, init=reset("PROGRAM_LENGTH")),
            "watchdog_cycles": Out(32, init=reset("WATCHDOG")),
            "irq": Out(1),
            "busy": In(1),
            "finished": In(1),
            "error": In(ErrorCode),
            "error_index": In(32),
            "events": In(events_layout(config)),
        })

    def elaborate(self, platform):
        m = Module()
        config = self.config
        bus = self.bus

        def reset(name):
            return regmap.reset_value(regmap.register(name), config)

        def bit(register_name, field_name):
            return regmap.field(register_name, field_name).lsb

        # State --------------------------------------------------------------------------------
        stored = {name: Signal(32, init=reset(name), name=name.lower())
                  for name in ("PROGRAM_ADDR", "PROGRAM_LENGTH", "WATCHDOG")}
        irq_enable = Signal(init=regmap.field("CTRL", "IRQ_ENABLE").reset)
        done = Signal()
        error = Signal(ErrorCode)
        error_index = Signal(32)
        counters = {c.name: Signal(64, name=f"count_{c.name.lower()}") for c in regmap.COUNTERS}
        high_latches = {c.name: Signal(32, name=f"hi_{c.name.lower()}") for c in regmap.COUNTERS}
        outputs = {"PROGRAM_ADDR": self.program_addr, "PROGRAM_LENGTH": self.program_length,
                   "WATCHDOG": self.watchdog_cycles}

        m.d.comb += self.irq.eq(irq_enable & done)

        # Read values and write actions, per register of the table ------------------------------
        status = Signal(32)
        error_field = regmap.field("STATUS", "ERROR")
        m.d.comb += [status[bit("STATUS", "BUSY")].eq(self.busy),
                     status[bit("STATUS", "DONE")].eq(done),
                     status[error_field.lsb:error_field.lsb + error_field.width].eq(error)]
        ctrl = Signal(32)
        m.d.comb += ctrl[bit("CTRL", "IRQ_ENABLE")].eq(irq_enable)
        read_value = {"CTRL": ctrl, "STATUS": status, "ERROR_INDEX": error_index, **stored}
        read_latch = {}  # register name -> (latch, value) updated by reading it
        for counter in regmap.COUNTERS:
            read_value[counter.name + "_LO"] = counters[counter.name][:32]
            read_value[counter.name + "_HI"] = high_latches[counter.name]
            read_latch[counter.name + "_LO"] = (high_latches[counter.name],
                                                counters[counter.name][32:])
        for reg in regmap.REGISTERS:
            if reg.name not in read_value:
                if any(access != regmap.Access.RO
                       for access in (reg.access, *(f.access for f in reg.fields))):
                    raise ValueError(f"Register {reg.name} of golden.registers has no "
                                     f"implementation in ControlRegisters")
                read_value[reg.name] = regmap.reset_value(reg, config)  # a constant

        # Write channel ------------------------------------------------------------------------
        aw_full, w_full = Signal(), Signal()
        aw_addr = Signal(regmap.ADDR_WIDTH)
        w_data, w_strb = Signal(32), Signal(4)
        m.d.comb += [bus.awready.eq(~aw_full), bus.wready.eq(~w_full)]
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += [aw_full.eq(1), aw_addr.eq(bus.awaddr)]
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += [w_full.eq(1), w_data.eq(bus.wdata), w_strb.eq(bus.wstrb)]
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += bus.bvalid.eq(0)

        strobe_mask = Signal(32)
        m.d.comb += strobe_mask.eq(Cat(strobe.replicate(8) for strobe in w_strb))
        written = w_data & strobe_mask

        do_write = Signal()
        m.d.comb += do_write.eq(aw_full & w_full & ~bus.bvalid)
        start_request, clear_request = Signal(), Signal()
        with m.If(do_write):
            m.d.sync += [aw_full.eq(0), w_full.eq(0), bus.bvalid.eq(1),
                         bus.bresp.eq(AxiResp.OKAY)]
            with m.Switch(aw_addr[2:]):
                for reg in regmap.REGISTERS:
                    with m.Case(reg.offset >> 2):
                        if reg.name in stored:
                            old = stored[reg.name]
                            m.d.sync += old.eq((old & ~strobe_mask) | written)
                        elif reg.name == "CTRL":
                            irq_bit = bit("CTRL", "IRQ_ENABLE")
                            with m.If(strobe_mask[irq_bit]):
                                m.d.sync += irq_enable.eq(w_data[irq_bit])
                            m.d.comb += [start_request.eq(written[bit("CTRL", "START")]),
                                         clear_request.eq(written[bit("CTRL", "CLEAR")])]
                with m.Default():
                    m.d.sync += bus.bresp.eq(AxiResp.SLVERR)

        # Read channel -------------------------------------------------------------------------
        m.d.comb += bus.arready.eq(~bus.rvalid)
        with m.If(bus.rvalid & bus.rready):
            m.d.sync += bus.rvalid.eq(0)
        # The read data is a tree of multiplexers on the word address: within each group of
        # 2 ** _GROUP_BITS words an Array (0 where there is no register), then the group; an
        # offset not in the table reads 0 and answers SLVERR.
        word = bus.araddr[2:]
        by_word = {reg.offset >> 2: reg for reg in regmap.REGISTERS}
        groups = sorted({w >> _GROUP_BITS for w in by_word})
        group_words = []
        for group in groups:
            base = group << _GROUP_BITS
            group_words.append(Array(
                Value.cast(read_value[by_word[w].name]) if w in by_word else C(0, 32)
                for w in range(base, base + (1 << _GROUP_BITS)))[word[:_GROUP_BITS]])
        read_data = Signal(32)
        with m.Switch(word[_GROUP_BITS:]):
            for group, group_word in zip(groups, group_words, strict=True):
                with m.Case(group):
                    m.d.comb += read_data.eq(group_word)

        def word_set(names):  # whether the word address is one of these registers'
            return C(sum(1 << (regmap.register(name).offset >> 2) for name in names),
                     1 << len(word)).bit_select(word, 1)

        known = word_set(reg.name for reg in regmap.REGISTERS)
        stale_counter = self.start & word_set(read_latch)   # see Counters below
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += [bus.rvalid.eq(1), bus.rdata.eq(Mux(stale_counter, 0, read_data)),
                         bus.rresp.eq(Mux(known, AxiResp.OKAY, AxiResp.SLVERR))]
            with m.Switch(word):
                for name, (latch, value) in read_latch.items():
                    with m.Case(regmap.register(name).offset >> 2):
                        m.d.sync += latch.eq(Mux(self.start, 0, value))

        # Run control --------------------------------------------------------------------------
        start_accepted = Signal()
        m.d.comb += start_accepted.eq(start_request & ~self.busy & ~self.start)
        m.d.sync += self.start.eq(start_accepted)
        with m.If(start_accepted | clear_request):
            m.d.sync += [done.eq(0), error.eq(ErrorCode.NONE), error_index.eq(0)]
        with m.If(start_accepted):
            m.d.sync += [port.eq(stored[name]) for name, port in outputs.items()]
        with m.If(self.finished):
            m.d.sync += [done.eq(1), error.eq(self.error), error_index.eq(self.error_index)]

        # Counters -----------------------------------------------------------------------------
        # A counter is cleared in the cycle of the ``start`` pulse, one clock edge after the start
        # is accepted (so that a flip-flop, not the write decoding, drives the clear of every
        # counter bit); in that cycle it reads as 0 (LO, and the HI latched by reading LO), as if
        # cleared at that edge. ``busy`` is low in that cycle; its increment is kept anyway.
        for counter in regmap.COUNTERS:
            count = counters[counter.name]
            increment = 1 if counter.event is None else getattr(self.events, counter.event)
            with m.If(self.start):
                m.d.sync += count.eq(Mux(self.busy, increment, 0))
            with m.Elif(self.busy):
                m.d.sync += count.eq(count + increment)

        return m
