r"""Verilog generation for any component and configuration, cached.

The cache key is a hash of the component's class, its construction arguments (the configuration
among them) and the source of ``rtl/`` and ``golden/`` (the RTL is built from the golden tables and
constants: configuration, ISA, register map, the integer operations' constants); an unchanged
design is never regenerated, and any change to either regenerates it.

Yosys' Verilog wakes every ``always @*`` block at time 0 through a dummy register that each one
reads (``reg \$auto$verilog_backend...$1 = 0``), relying on the initialiser to make an event.
Icarus Verilog makes none, so a combinational block whose inputs never change (for example one
reading only registers that keep their initial value) stays X there, while Verilator computes it.
:func:`wake_combinational_logic_at_time_zero` adds, for Icarus only (```ifdef __ICARUS__``), the
event Yosys meant; synthesis and Verilator see the text unchanged.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from .toolchain import cache_dir

__all__ = ["design_hash", "generate_verilog", "wake_combinational_logic_at_time_zero"]

_ROOT = Path(__file__).resolve().parent.parent


def _source_files() -> list[Path]:
    """What a design's text depends on: the RTL, the golden package it is built from and this
    generator."""
    return (sorted((_ROOT / "rtl").rglob("*.py")) + sorted((_ROOT / "golden").glob("*.py"))
            + [Path(__file__).resolve()])


_TIME_ZERO_TRIGGER = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+) +"
                                r"= 0;$", re.MULTILINE)


def wake_combinational_logic_at_time_zero(text: str) -> str:
    """``text`` with an Icarus-only ``initial`` that changes each module's time-0 trigger (after
    every process has started: ``#0``), so that all ``always @*`` blocks run once at time 0."""
    def add_event(match: re.Match) -> str:
        indent, name = match.group(1), match.group(2)
        return (f"{match.group(0)}\n`ifdef __ICARUS__\n{indent}initial #0 {name} = 1'h1;\n`endif")

    return _TIME_ZERO_TRIGGER.sub(add_event, text)


def design_hash(*parts: object) -> str:
    """A short hash of ``parts`` (reprs) and the sources the RTL is built from."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(repr(part).encode())
        digest.update(b"\0")
    for path in _source_files():
        digest.update(path.relative_to(_ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def generate_verilog(factory: Callable[[], object], *, name: str, key: object,
                     directory: Path | None = None) -> Path:
    """The Verilog file of ``factory()`` with top module ``name``, generated once per key.

    ``key`` must capture every argument that ``factory`` passes to the component (for example
    ``(config, "SystolicArray")``).
    """
    from amaranth.back import verilog

    directory = Path(directory or cache_dir() / "verilog")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{design_hash(name, key)}.v"
    if path.exists():
        return path
    text = wake_combinational_logic_at_time_zero(
        verilog.convert(factory(), name=name, emit_src=False))
    with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp") as handle:
        handle.write(text)
    os.replace(handle.name, path)  # atomic: parallel test runs never see half a file
    return path
