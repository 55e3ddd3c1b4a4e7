import numpy as np
import pytest

from golden import isa
from golden.isa import FORMATS, HEADER, Instruction, Opcode, decode, encode


def random_instruction(rng: np.random.Generator, opcode: Opcode) -> Instruction:
    fields = {}
    for field in HEADER[1:] + FORMATS[opcode]:
        fields[field.name] = int(rng.integers(field.minimum, field.maximum, endpoint=True))
    return Instruction(opcode, **fields)


def test_every_format_fits_the_instruction_width():
    for opcode, fields in FORMATS.items():
        names = [f.name for f in HEADER + fields]
        assert len(names) == len(set(names)), f"duplicate field in {opcode.name}"
        assert sum(f.width for f in HEADER + fields) <= isa.INSTRUCTION_BITS <= 256


def test_opcode_zero_is_illegal():
    with pytest.raises(isa.DecodeError, match="Opcode must be one of"):
        decode(0)
    with pytest.raises(isa.DecodeError, match="not 15"):
        decode(15)


@pytest.mark.parametrize("opcode", list(Opcode))
def test_encode_decode_round_trip(opcode):
    rng = np.random.default_rng(int(opcode))
    for _ in range(200):
        instruction = random_instruction(rng, opcode)
        word = encode(instruction)
        assert 0 <= word < 1 << isa.INSTRUCTION_BITS
        assert decode(word) == instruction


def test_fields_are_packed_lsb_first_in_table_order():
    # opcode in bits 0..3, pop_prev bit 4, ..., push_next bit 7, then the first format field.
    word = encode(Instruction(Opcode.LOAD, push_next=1, mem=1))
    assert word == Opcode.LOAD | 1 << 7 | 1 << 8
    word = encode(Instruction(Opcode.VECTOR, funct=isa.VectorFunct.GELU))
    assert word == Opcode.VECTOR | isa.VectorFunct.GELU << 8


def test_signed_fields_round_trip_negative_values():
    instruction = Instruction(Opcode.LOAD, pad_value=-128)
    assert decode(encode(instruction)).pad_value == -128
    instruction = Instruction(Opcode.VECTOR, out_zp=-1, clip_lo=-128, clip_hi=127)
    decoded = decode(encode(instruction))
    assert (decoded.out_zp, decoded.clip_lo, decoded.clip_hi) == (-1, -128, 127)


def test_bits_above_the_format_must_be_zero():
    word = encode(Instruction(Opcode.SYNC)) | 1 << 100
    with pytest.raises(isa.DecodeError, match="must be zero"):
        decode(word)


def test_bad_fields_are_rejected():
    with pytest.raises(ValueError, match="Field 'rows' of LOAD must be between 0 and 1023, not 1024"):
        Instruction(Opcode.LOAD, rows=1024)
    with pytest.raises(ValueError, match="Field 'pad_value' of LOAD must be between -128 and 127"):
        Instruction(Opcode.LOAD, pad_value=200)
    with pytest.raises(ValueError, match="Field must be one of .* for MATMUL, not 'rows'"):
        Instruction(Opcode.MATMUL, rows=3)
    with pytest.raises(TypeError, match="Field 'rows' of LOAD must be an integer"):
        Instruction(Opcode.LOAD, rows=2.5)
    with pytest.raises(ValueError, match="Opcode must be one of"):
        Instruction(9)
    with pytest.raises(AttributeError, match="MATMUL has no field 'rows'"):
        _ = Instruction(Opcode.MATMUL).rows
    with pytest.raises(TypeError, match="Word must be a non-negative integer"):
        decode(-1)


def test_program_bytes_round_trip():
    rng = np.random.default_rng(7)
    program = [random_instruction(rng, op) for op in Opcode for _ in range(3)]
    data = isa.encode_program(program, instruction_bytes=32)
    assert len(data) == 32 * len(program)
    assert [decode(w) for w in isa.decode_program(data, instruction_bytes=32)] == program
    with pytest.raises(ValueError, match="multiple of 32 bytes, not 577"):
        isa.decode_program(data + b"\0", instruction_bytes=32)
    with pytest.raises(TypeError, match="Instruction 1 must be an Instruction"):
        isa.encode_program([program[0], 5], instruction_bytes=32)


def test_every_opcode_has_a_unit_or_is_a_barrier():
    assert isa.unit_of(Opcode.LOAD) == isa.Unit.LOAD
    assert isa.unit_of(Opcode.STORE) == isa.Unit.STORE
    assert isa.unit_of(Opcode.MATMUL) == isa.unit_of(Opcode.VECTOR) == isa.Unit.COMPUTE
    assert isa.unit_of(Opcode.SYNC) is None and isa.unit_of(Opcode.FINISH) is None
