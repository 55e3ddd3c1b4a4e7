"""The instruction set as hardware types, built from the tables in ``golden.isa``.

A format layout lists the fields of ``golden.isa.FORMATS`` in table order, least significant
first, which is exactly how ``golden.isa.encode`` packs them; so an instruction word cast to
``instruction_layout(opcode)`` is decoded, and nothing about the encoding is written twice.
The enums of ``golden.isa`` become shaped Amaranth enums of the width of their field.
"""

from amaranth import signed, unsigned
from amaranth.lib import data
from amaranth.lib import enum as hdl_enum

from golden import isa

__all__ = ["ErrorCode", "Opcode", "RequantMode", "VectorFunct", "fields_layout", "format_layout",
           "instruction_layout"]


def _shaped(py_enum: type, width: int) -> type:
    """An Amaranth enum with the members of ``py_enum`` and an ``unsigned(width)`` shape."""
    namespace = hdl_enum.EnumType.__prepare__(py_enum.__name__, (hdl_enum.Enum,), shape=width)
    for member in py_enum:
        namespace[member.name] = member.value
    return hdl_enum.EnumType(py_enum.__name__, (hdl_enum.Enum,), namespace, shape=width)


def _field_width(name: str) -> int:
    for field in isa.HEADER + tuple(f for fields in isa.FORMATS.values() for f in fields):
        if field.name == name:
            return field.width
    raise KeyError(name)


Opcode = _shaped(isa.Opcode, _field_width("opcode"))
VectorFunct = _shaped(isa.VectorFunct, _field_width("funct"))
RequantMode = _shaped(isa.RequantMode, _field_width("mode"))
ErrorCode = _shaped(isa.ErrorCode, max(member.value for member in isa.ErrorCode).bit_length())


def fields_layout(fields) -> data.StructLayout:
    """A struct of ``golden.isa.Field`` s, the first in the least significant bits."""
    return data.StructLayout({field.name: signed(field.width) if field.signed
                              else unsigned(field.width) for field in fields})


def format_layout(opcode: isa.Opcode) -> data.StructLayout:
    """The fields of one opcode, without the header."""
    return fields_layout(isa.FORMATS[isa.Opcode(opcode)])


def instruction_layout(opcode: isa.Opcode) -> data.StructLayout:
    """A whole instruction word of ``opcode``: header, then the format's fields."""
    return fields_layout(isa.HEADER + isa.FORMATS[isa.Opcode(opcode)])
