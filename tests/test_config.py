import dataclasses

import pytest

from golden.config import PRESETS, NpuConfig, get_config
from golden.isa import INSTRUCTION_BITS


def test_presets_have_the_documented_array_sizes():
    assert (PRESETS["tiny"].rows, PRESETS["tiny"].cols) == (4, 4)
    assert (PRESETS["small"].rows, PRESETS["small"].cols) == (8, 8)
    assert (PRESETS["default"].rows, PRESETS["default"].cols) == (16, 16)
    for name, config in PRESETS.items():
        assert config.name == name
        assert get_config(name) is config


def test_derived_quantities():
    config = NpuConfig(rows=4, cols=8, scratchpad_depth=256, accumulator_depth=64, axi_data_width=64)
    assert config.pes == 32
    assert config.scratchpad_row_bytes == 4
    assert config.accumulator_row_bytes == 32
    assert config.scratchpad_bytes == 1024
    assert config.accumulator_bytes == 64 * 32
    assert config.axi_data_bytes == 8
    assert config.instruction_bytes == 32
    assert config.scratchpad_addr_width == 8
    assert config.accumulator_addr_width == 6


def test_vector_lanes_default_to_the_narrower_array_side():
    assert NpuConfig(rows=4, cols=8).vector_lanes == 4
    assert NpuConfig(rows=16, cols=4).vector_lanes == 4
    assert NpuConfig(rows=8, cols=8, vector_lanes=2).vector_lanes == 2
    assert get_config("small").vector_lanes == 1


def test_non_square_arrays_are_valid():
    assert NpuConfig(rows=4, cols=8).pes == 32
    assert NpuConfig(rows=16, cols=4).pes == 64


def test_configuration_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["tiny"].rows = 8


@pytest.mark.parametrize("changes, message", [
    (dict(rows=0), "Rows must be a positive integer, not 0"),
    (dict(cols=-4), "Cols must be a positive integer, not -4"),
    (dict(rows=6), "Rows must be a power of two, not 6"),
    (dict(cols=2.0), "Cols must be a positive integer, not 2.0"),
    (dict(rows=512), "Rows must be between 2 and 256, not 512"),
    (dict(scratchpad_depth=1000), "Scratchpad depth must be a power of two, not 1000"),
    (dict(scratchpad_depth=16), "Scratchpad depth must be at least rows \\+ cols = 32"),
    (dict(accumulator_depth=8), "Accumulator depth must be at least rows = 16"),
    (dict(axi_data_width=48), "Axi data width must be one of 32, 64, 128, 256, 512, not 48"),
    (dict(axi_addr_width=40), "Axi addr width must be between 16 and 32, not 40"),
    (dict(instruction_width=128), f"Instruction width must be at least {INSTRUCTION_BITS}"),
    (dict(vector_max_length=100), "Vector max length must be a multiple of cols \\(16\\)"),
    (dict(queue_depth=3), "Queue depth must be a power of two, not 3"),
    (dict(vector_lanes=0), "Vector lanes must be a positive integer, not 0"),
    (dict(vector_lanes=12), "Vector lanes must be a power of two, not 12"),
    (dict(vector_lanes=32), "Vector lanes must be at most min\\(rows, cols\\) = 16, not 32"),
    (dict(name=""), "Name must be a non-empty string"),
])
def test_invalid_values_are_rejected_naming_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        PRESETS["default"].replace(**changes)


def test_unknown_preset_is_rejected():
    with pytest.raises(ValueError, match="Config must be one of tiny, small, default, not 'huge'"):
        get_config("huge")


def test_as_dict_is_json_friendly():
    import json

    figures = json.loads(json.dumps(PRESETS["small"].as_dict()))
    assert figures["pes"] == 64 and figures["rows"] == 8
