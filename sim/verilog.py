"""Verilog generation for any component and configuration, cached.

The cache key is a hash of the component's class, its construction arguments (the configuration
among them) and the source of ``rtl/`` and ``golden/`` (the RTL is built from the golden tables and
constants: configuration, ISA, register map, the integer operations' constants); an unchanged
design is never regenerated, and any change to either regenerates it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .toolchain import cache_dir

__all__ = ["design_hash", "generate_verilog"]

_ROOT = Path(__file__).resolve().parent.parent


def _source_files() -> list[Path]:
    """What a design depends on: the RTL and the golden package it is built from."""
    return sorted((_ROOT / "rtl").rglob("*.py")) + sorted((_ROOT / "golden").glob("*.py"))


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
    text = verilog.convert(factory(), name=name, emit_src=False)
    with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp") as handle:
        handle.write(text)
    os.replace(handle.name, path)  # atomic: parallel test runs never see half a file
    return path
