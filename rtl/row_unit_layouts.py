"""The stream payloads between the vector unit's sequencer and its row units (softmax, layernorm).

A row unit sees each row (one VECTOR group, ``length`` elements) as a sequence of *beats*, and
sees the whole row ``passes`` times (pass 0, 1, ..., in that order, the same beats with the same
masks each time). A beat carries up to ``lanes`` consecutive elements of the row; ``mask`` marks
the lanes that hold elements (the others hold garbage and must not affect any result). ``last``
marks the last beat of the row in the current pass. The unit may hold ``beats.ready`` low as long
as it needs (for instance for a division between two passes). It produces one ``results`` beat
for every beat of its final pass, in order; only the masked lanes of a result are used.
"""

from amaranth import signed
from amaranth.lib import data

__all__ = ["row_beat_layout", "row_result_layout"]


def row_beat_layout(lanes: int) -> data.StructLayout:
    return data.StructLayout({
        "values": data.ArrayLayout(signed(32), lanes),  # the row's int32 elements
        "gamma": data.ArrayLayout(signed(32), lanes),   # layernorm: G_j of the same elements
        "beta": data.ArrayLayout(signed(32), lanes),    # layernorm: B_j of the same elements
        "mask": lanes,                                   # lanes holding elements of the row
        "pass_index": 2,                                 # 0, 1, 2, ...
        "last": 1,                                       # last beat of the row in this pass
    })


def row_result_layout(lanes: int) -> data.StructLayout:
    return data.StructLayout({
        "values": data.ArrayLayout(signed(8), lanes),
        "error": 1,  # the row's parameters are invalid (the instruction stops with ILLEGAL_INSTRUCTION)
    })
