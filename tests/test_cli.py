import json
import re
import subprocess
import sys

import pytest

from sw.cli import main


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "npu info" in out and "npu demo" in out


def test_info_prints_the_configuration(capsys):
    assert main(["info", "--config", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "4 x 4 = 16 int8 MACs/cycle" in out
    assert "1024 rows x 4 B = 4 KiB" in out


def test_info_json_has_config_fields_and_derived_figures(capsys):
    assert main(["info", "--config", "small", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["name"] == "small"
    assert (figures["rows"], figures["cols"], figures["pes"]) == (8, 8, 64)
    assert figures["instruction_formats_bits"]["VECTOR"] <= figures["instruction_width"]


def test_unknown_config_is_one_clear_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["info", "--config", "huge"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'huge'" in capsys.readouterr().err


def test_demo_classifies_digits_like_onnxruntime(capsys):
    assert main(["demo", "--config", "tiny", "--backend", "golden", "--images", "50"]) == 0
    out = capsys.readouterr().out
    assert "outputs identical to onnxruntime: 50 of 50 images (bit-exact)" in out
    npu, ort = (float(v) for v in re.findall(r"NPU ([0-9.]+)%, onnxruntime ([0-9.]+)%", out)[0])
    assert npu == ort > 85


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "sw.cli", "info", "--json"], capture_output=True,
                            text=True, check=True)
    assert json.loads(result.stdout)["name"] == "default"


def test_verilog_is_one_lint_clean_file_that_icarus_elaborates(tmp_path):
    """`npu verilog` writes a self-contained file with top module `npu` and flat AXI ports;
    Verilator lints it with only the documented suppressions and Icarus Verilog elaborates it."""
    import shutil

    from sim.cocotb_runner import VERILATOR_WARNINGS
    from sim.toolchain import verilator_env

    out = tmp_path / "npu.v"
    assert main(["verilog", "--config", "tiny", "-o", str(out)]) == 0
    text = out.read_text()
    assert "module npu(" in text
    for port in ("m_axi_arvalid", "m_axi_wstrb", "s_axil_awaddr", "s_axil_rdata", "irq"):
        assert port in text, port
    lint = subprocess.run(["verilator", "--lint-only", "-Wall", "--top-module", "npu",
                           *(f"-Wno-{w}" for w in VERILATOR_WARNINGS), str(out)],
                          env=verilator_env(), capture_output=True, text=True)
    assert lint.returncode == 0, lint.stderr[-3000:]
    iverilog = shutil.which("iverilog")
    assert iverilog, "iverilog is missing: `make` installs it"
    elaborate = subprocess.run([iverilog, "-g2012", "-s", "npu", "-o", str(tmp_path / "npu.vvp"),
                                str(out)], capture_output=True, text=True)
    assert elaborate.returncode == 0, elaborate.stderr[-3000:]
