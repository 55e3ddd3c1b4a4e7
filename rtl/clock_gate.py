"""Gated clock domains, for simulation speed.

Verilator evaluates a register, and the logic that reads only registers of one clock, only when
that clock has an edge. A block that is idle most of the time (the vector unit during matmuls)
costs nothing in a Verilator model when it runs from a clock that stops while it has no work.
The block holds its state while its clock stops, so a gate that runs whenever the block could
change anything gives exactly the cycle-level behaviour of the free-running clock. (Measured:
gating the vector unit made the ``default`` model about four times faster on a matmul; gating
the array's weight banks, which only change while a weight tile shifts in, gave nothing
measurable.) FPGA builds do not gate (gated clocks do not belong in FPGA fabric): there the
domain is simply ``sync``.
"""

from amaranth import ClockDomain, ClockSignal, Module, ResetSignal, Signal

__all__ = ["add_gated_domain"]


def add_gated_domain(m: Module, name: str, *, enable) -> None:
    """Add the clock domain ``name`` to ``m``: ``clk`` gated by ``enable``.

    - ``enable`` must be high in every cycle in which a register of the domain may change. It
      is latched while ``clk`` is low (on its falling edge), so the gated clock has no glitch;
      it must therefore be settled by the falling edge (it is computed from registers).
    - The domain's reset is the ``sync`` reset registered in the domain, and the clock also runs
      while the ``sync`` reset is high and until that register has seen it end: a reset must last
      at least two cycles.
    """
    m.domains += [ClockDomain(name, local=True),
                  ClockDomain(f"{name}_gate", clk_edge="neg", reset_less=True, local=True)]
    gate = Signal(name=f"{name}_gate_open")
    reset = Signal(name=f"{name}_reset", reset_less=True)
    m.d[f"{name}_gate"] += gate.eq(enable | reset)
    m.d[name] += reset.eq(ResetSignal())
    m.d.comb += [ClockSignal(f"{name}_gate").eq(ClockSignal()),
                 ClockSignal(name).eq(ClockSignal() & (gate | ResetSignal())),
                 ResetSignal(name).eq(reset)]
