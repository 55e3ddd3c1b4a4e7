"""Signatures of the SRAM ports shared by the memories and their users."""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ReadPortSignature", "WritePortSignature", "read_port_domains"]


class ReadPortSignature(wiring.Signature):
    """A synchronous SRAM read port, as seen by its user: ``data`` is row ``addr`` one cycle
    after a cycle with ``en`` high (and holds while ``en`` is low)."""

    def __init__(self, *, addr_width: int, row_shape):
        super().__init__({"addr": Out(addr_width), "en": Out(1), "data": In(row_shape)})


class WritePortSignature(wiring.Signature):
    """A synchronous SRAM write port, as seen by its user: row ``addr`` takes ``data`` in the
    lanes set in ``lanes`` at the end of a cycle with ``en`` and ``ready`` both high."""

    def __init__(self, *, addr_width: int, row_shape, lanes: int):
        super().__init__({"addr": Out(addr_width), "en": Out(1), "lanes": Out(lanes),
                          "data": Out(row_shape), "ready": In(1)})


def read_port_domains(read_ports: int, read_domains: tuple[str, ...] | None) -> tuple[str, ...]:
    """The clock domain of each of a memory's ``read_ports`` read ports (default: all ``sync``)."""
    domains = tuple(read_domains) if read_domains is not None else ("sync",) * read_ports
    if len(domains) != read_ports:
        raise ValueError(f"Read domains must name one domain per read port ({read_ports}), "
                         f"not {domains!r}")
    return domains
