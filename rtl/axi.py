"""AXI4 and AXI4-Lite bus signatures, and flat port names for the top level.

Every signature describes a bus as its master sees it (``Out`` = driven by the master); a slave
port is ``In(signature)``. Member names are the AXI signal names in lower case (``awvalid``,
``rdata``, ...), the names cocotbext-axi looks for. :class:`Axi4ReadSignature` and
:class:`Axi4WriteSignature` are the two halves of :class:`Axi4Signature` (same names and
widths), for masters that only read or only write.

Amaranth names the members of a nested interface ``bus__awvalid``. A top level whose ports
must be called ``m_axi_awvalid`` (the usual convention, and what FPGA tools and cocotbext-axi's
default separator expect) declares flat members with :func:`flat_members` and wires them to an
inner interface with :func:`connect_flat`.
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Axi4Signature", "Axi4ReadSignature", "Axi4WriteSignature", "AxiLiteSignature",
           "AxiResp", "AxiBurst", "flat_members", "connect_flat"]


class AxiResp:
    """Values of the ``bresp``/``rresp`` fields."""

    OKAY = 0
    EXOKAY = 1
    SLVERR = 2
    DECERR = 3


class AxiBurst:
    """Values of the ``awburst``/``arburst`` fields."""

    FIXED = 0
    INCR = 1
    WRAP = 2


def _check_width(name: str, value, *, allowed=None, low=None, high=None):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if allowed is not None and value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}, not {value!r}")
    if low is not None and not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, not {value!r}")


def _check_axi4_widths(addr_width, data_width, id_width):
    _check_width("Address width", addr_width, low=12, high=64)
    _check_width("Data width", data_width, allowed=(8, 16, 32, 64, 128, 256, 512, 1024))
    _check_width("ID width", id_width, low=1, high=32)


def _write_members(addr_width: int, data_width: int, id_width: int) -> dict:
    return {
        "awid": Out(id_width), "awaddr": Out(addr_width), "awlen": Out(8), "awsize": Out(3),
        "awburst": Out(2), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1),
        "wvalid": Out(1), "wready": In(1),
        "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
    }


def _read_members(addr_width: int, data_width: int, id_width: int) -> dict:
    return {
        "arid": Out(id_width), "araddr": Out(addr_width), "arlen": Out(8), "arsize": Out(3),
        "arburst": Out(2), "arvalid": Out(1), "arready": In(1),
        "rid": In(id_width), "rdata": In(data_width), "rresp": In(2), "rlast": In(1),
        "rvalid": In(1), "rready": Out(1),
    }


class _Axi4Base(wiring.Signature):
    """Shared parameters, comparison and repr of the AXI4 signatures (full bus and halves)."""

    def __init__(self, members: dict, *, addr_width: int, data_width: int, id_width: int):
        self.addr_width, self.data_width, self.id_width = addr_width, data_width, id_width
        super().__init__(members)

    def __eq__(self, other):
        return (type(other) is type(self) and
                (self.addr_width, self.data_width, self.id_width) ==
                (other.addr_width, other.data_width, other.id_width))

    def __hash__(self):
        return hash((type(self), self.addr_width, self.data_width, self.id_width))

    def __repr__(self):
        return (f"{type(self).__name__}(addr_width={self.addr_width}, "
                f"data_width={self.data_width}, id_width={self.id_width})")


class Axi4Signature(_Axi4Base):
    """A full AXI4 bus (five channels, bursts, IDs) as seen by its master.

    Carries the signals cocotbext-axi's ``AxiRam`` requires plus ``wstrb``, ``bresp`` and
    ``rresp``; the optional lock/cache/prot/qos/region/user signals are left out (a slave
    that has them ties them to their defaults).
    """

    def __init__(self, *, addr_width: int, data_width: int, id_width: int = 1):
        _check_axi4_widths(addr_width, data_width, id_width)
        super().__init__(_write_members(addr_width, data_width, id_width) |
                         _read_members(addr_width, data_width, id_width),
                         addr_width=addr_width, data_width=data_width, id_width=id_width)


class Axi4ReadSignature(_Axi4Base):
    """The read half of :class:`Axi4Signature` (AR and R channels, the same member names and
    widths), for a master that only reads. cocotbext-axi's ``AxiRamRead`` drives it."""

    def __init__(self, *, addr_width: int, data_width: int, id_width: int = 1):
        _check_axi4_widths(addr_width, data_width, id_width)
        super().__init__(_read_members(addr_width, data_width, id_width),
                         addr_width=addr_width, data_width=data_width, id_width=id_width)


class Axi4WriteSignature(_Axi4Base):
    """The write half of :class:`Axi4Signature` (AW, W and B channels, the same member names
    and widths), for a master that only writes. cocotbext-axi's ``AxiRamWrite`` drives it.

    A top level with one full AXI4 port wires a read half and a write half to it with two
    calls of :func:`connect_flat` (each wires only the members of its interface)."""

    def __init__(self, *, addr_width: int, data_width: int, id_width: int = 1):
        _check_axi4_widths(addr_width, data_width, id_width)
        super().__init__(_write_members(addr_width, data_width, id_width),
                         addr_width=addr_width, data_width=data_width, id_width=id_width)


class AxiLiteSignature(wiring.Signature):
    """An AXI4-Lite bus (single beats, no IDs) as seen by its master."""

    def __init__(self, *, addr_width: int, data_width: int = 32):
        _check_width("Address width", addr_width, low=2, high=64)
        _check_width("Data width", data_width, allowed=(32, 64))
        self.addr_width, self.data_width = addr_width, data_width
        super().__init__({
            "awaddr": Out(addr_width), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wvalid": Out(1),
            "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_width), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
            "rdata": In(data_width), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })

    def __eq__(self, other):
        return (type(other) is AxiLiteSignature and
                (self.addr_width, self.data_width) == (other.addr_width, other.data_width))

    def __hash__(self):
        return hash((AxiLiteSignature, self.addr_width, self.data_width))

    def __repr__(self):
        return f"AxiLiteSignature(addr_width={self.addr_width}, data_width={self.data_width})"


def flat_members(prefix: str, signature: wiring.Signature) -> dict:
    """The members of ``signature`` as flat members named ``{prefix}_{name}``, for a
    component's signature dict.

    Directions are those of ``signature`` as given: pass ``Axi4Signature(...)`` for a master
    port, ``AxiLiteSignature(...).flip()`` for a slave port.

    >>> sorted(flat_members("s_axil", AxiLiteSignature(addr_width=12).flip()))[:2]
    ['s_axil_araddr', 's_axil_arprot']
    """
    if not isinstance(prefix, str) or not prefix.isidentifier():
        raise ValueError(f"Prefix must be a Python identifier, not {prefix!r}")
    members = {}
    for path, member in signature.members.flatten():
        if member.is_signature:
            continue  # only the ports themselves; nested signatures are listed by flatten()
        members[prefix + "_" + "_".join(map(str, path))] = member
    return members


def connect_flat(m, *, owner, prefix: str, interface):
    """Drive, in ``m.d.comb``, between the flat members ``{prefix}_*`` of ``owner`` (made by
    :func:`flat_members`) and ``interface`` (an inner port with the same members), each member
    in the direction ``interface`` gives it: a member that ``interface`` drives (``Out`` in its
    signature) drives the flat port, and the flat port drives every other member.

    Raises ``ValueError`` when ``owner`` lacks a member or has it with the other direction.
    """
    owner_members = owner.signature.members
    for path, member in interface.signature.members.flatten():
        if member.is_signature:
            continue
        name = prefix + "_" + "_".join(map(str, path))
        if name not in owner_members or owner_members[name].flow != member.flow:
            raise ValueError(f"Member {name!r} of the owner must exist with flow "
                             f"{member.flow.name}, to match {path!r} of the interface")
        flat = getattr(owner, name)
        inner = interface
        for part in path:
            inner = getattr(inner, part) if isinstance(part, str) else inner[part]
        if member.flow == wiring.Out:
            m.d.comb += flat.eq(inner)
        else:
            m.d.comb += inner.eq(flat)
