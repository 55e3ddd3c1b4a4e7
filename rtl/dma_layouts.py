"""The stream payloads between the DMA engines (AXI side) and their users (fetch, load, store).

A user asks for a *span*: ``length`` consecutive DRAM bytes from byte address ``addr`` (any
alignment, 1 byte or more). The engines turn spans into AXI4 INCR bursts (at most 256 beats,
never crossing a 4 KiB boundary) and move the span's bytes as *chunks*: chunk k holds span bytes
k * B .. k * B + B - 1 (B = the bus width in bytes) in its low bytes, byte 0 first; the last
chunk of a span may be partial (``count`` bytes) and has ``last`` set. So users never see the
bus alignment: the engines realign.
"""

from amaranth.lib import data

from golden.config import NpuConfig

__all__ = ["span_layout", "read_chunk_layout", "write_chunk_layout", "span_done_layout"]

#: Widest span in bytes (a 2D DMA row of up to 1023 elements of up to 1 KiB each).
SPAN_LENGTH_BITS = 24


def span_layout(config: NpuConfig) -> data.StructLayout:
    return data.StructLayout({"addr": config.axi_addr_width, "length": SPAN_LENGTH_BITS})


def read_chunk_layout(config: NpuConfig) -> data.StructLayout:
    """A chunk of a span read from DRAM. ``error``: an AXI read of the span's bytes answered
    SLVERR or DECERR (the data is then meaningless; the span still ends with ``last``)."""
    return data.StructLayout({
        "data": config.axi_data_width,
        "count": range(config.axi_data_bytes + 1),  # valid bytes, from byte 0 (B except at the end)
        "last": 1,
        "error": 1,
    })


def write_chunk_layout(config: NpuConfig) -> data.StructLayout:
    """A chunk of a span to write; the writer knows the span's length, so no count or last."""
    return data.StructLayout({"data": config.axi_data_width})


def span_done_layout() -> data.StructLayout:
    """One per written span, once every write response of it has arrived."""
    return data.StructLayout({"error": 1})
