"""Lowering of a :class:`sw.graph.Network` to NPU programs, one program per layer.

Every layer is cut into *steps* (an output tile for one group of output channels). A step is
loads (load unit), compute (compute unit) and stores (store unit); :func:`pipeline` chains the
steps with dependency tokens so that the loads of step s + 1 and the store of step s - 1 run
while step s computes. Every on-chip buffer a step uses comes in two copies, picked by the step's
parity, so the units never wait for each other except when one is simply slower.

Convolution (DESIGN section 2, docs/isa.md): no host im2col. For an output tile, the input tile
(with its halo) is loaded once per channel chunk of ``rows`` channels by a padded, strided LOAD
(the padding value is the input zero point, so the folded bias stays exact at the borders). Then
each kernel tap and channel chunk is one MATMUL that walks the tile's output pixels with the
convolution stride, the first one overwriting the accumulator rows and the others accumulating,
and one VECTOR REQUANT adds the bias to the int32 sums and turns them into the output codes with
the fused ReLU clip. (In ``fixed`` requantisation mode, whose REQUANT takes no bias, a LOAD puts
the bias row into every accumulator row first and every MATMUL accumulates on top of it; that
load competes with the array for the accumulator's write port.) The first step of a layer
loads and computes chunk by chunk, so the array starts on the first input chunk (the prologue is
the only part of the layer nothing overlaps). Grouped and depthwise convolutions use the same
path: their weights are expanded to a dense block-diagonal kernel and weight tiles that are zero
by construction are skipped, so a depthwise layer runs one diagonal weight tile per channel chunk.
A dense layer is a 1x1 convolution over the rows of its input; average pooling is a depthwise
convolution with a kernel of ones. A layer with few input channels (an RGB stem) packs its kernel
taps into lanes instead (:meth:`_Lowering.conv_tap_packed`).

Activations that fit stay in the scratchpad between layers (:func:`plan_on_chip`,
:class:`OnChipLayout`): the writer requantises straight into a padded layout its readers walk
like a loaded input tile, so neither a STORE nor a LOAD moves them.

The compiled model lays out its DRAM image (constants, activations, programs) from offset 0;
:meth:`CompiledModel.load` places it at the address the device allocates and relocates the
programs' DRAM addresses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from golden import quant
from golden.config import NpuConfig
from golden.isa import Instruction, Memory, Opcode, RequantMode, VectorFunct, encode_program
from golden.machine import parameter_rows

from .graph import (
    Add,
    Attention,
    Conv,
    Gelu,
    Layer,
    LayerNorm,
    MaxPool,
    Network,
    ResidualLayerNorm,
    Tensor,
    layer_tensors,
)

__all__ = ["REQUANT_MODES", "CompileError", "Step", "pipeline", "DramImage", "OnChipLayout",
           "plan_on_chip", "CompiledLayer", "CompiledModel", "compile_network", "layer_bounds"]

REQUANT_MODES = ("fp32", "fixed")
MAX_COUNT = 1023          # 10-bit counts (LOAD rows/cols, walk counts)
MAX_PAD = 15              # 4-bit LOAD padding
ALIGNMENT = 64
FILL_ROWS = 512           # rows an on-chip activation's border fill LOAD covers at least
#: An activation with borders stays on chip only if its writer computes at least this many
#: times as long (its MACs over the array's PEs) as the fill takes (about a cycle a row): a
#: writer whose loads are the bottleneck (max pooling, depthwise) would be slowed down more
#: than its readers gain (measured: a max pooling on digits, 44,465 -> 60,415 cycles).
FILL_COST = 4


class CompileError(ValueError):
    """A layer the compiler cannot map onto this configuration (says which and why)."""


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# Pipelining -------------------------------------------------------------------------------------

@dataclass
class Step:
    loads: list[Instruction] = field(default_factory=list)
    computes: list[Instruction] = field(default_factory=list)
    stores: list[Instruction] = field(default_factory=list)
    #: Whose buffers the loads overwrite: the step that many steps earlier (its compute must
    #: finish first; 2 is double buffering), or None for buffers no earlier step reads.
    reuses: int | None = 2


def _flag(instructions: list[Instruction], index: int, **flags: int):
    instructions[index] = instructions[index].replace(
        **{name: getattr(instructions[index], name) | value for name, value in flags.items()})


def pipeline(steps: list[Step]) -> list[Instruction]:
    """The steps as one program with double-buffering tokens, ending with FINISH.

    Every step has computes; a step with stores is an *output step* (the last compute
    instruction of an output step writes the buffer its stores read). Output buffers of output
    step v are reused by output step v + 2. Tokens:

    - the loads of step u wait for compute to finish step ``u - reuses`` and tell compute when
      done; compute of a step with loads waits for them;
    - compute tells the load unit when it has finished a step whose buffers later loads reuse;
      the last compute of output step v first waits for the store of output step v - 2, and
      tells the store unit when done;
    - the stores of output step v wait for compute and tell it (if v + 2 exists) when done.

    Program order is L0 L1 C0 S0 L2 C1 S1 ...: the loads of the next step with loads are
    queued before this step computes (spread over the steps in between when there are several).
    """
    count = len(steps)
    outputs = sum(1 for step in steps if step.stores)
    waited_for = []  # the step each popping LOAD waits for, in program order
    v = 0
    for u, step in enumerate(steps):
        if not step.computes:
            raise AssertionError("every step needs a compute instruction")
        if step.loads:
            earlier = u - step.reuses if step.reuses is not None else -1
            _flag(step.loads, 0, pop_next=int(earlier >= 0))
            if earlier >= 0:
                waited_for.append(earlier)
            _flag(step.loads, -1, push_next=1)
            _flag(step.computes, 0, pop_prev=1)
        if step.stores:
            _flag(step.computes, -1, pop_next=int(v >= 2), push_next=1)
            _flag(step.stores, 0, pop_prev=1)
            _flag(step.stores, -1, push_prev=int(v + 2 < outputs))
            v += 1
    if waited_for != sorted(set(waited_for)):
        raise AssertionError(f"loads must wait for steps in order, not {waited_for}")
    for earlier in waited_for:
        _flag(steps[earlier].computes, -1, push_prev=1)
    # The loads of each step with loads are queued over the steps since the previous one, in
    # even parts: units take instructions in program order from queues of queue_depth, so a
    # long run of LOADs waiting for a token would hold back the computes behind it.
    # They start after the compute their first LOAD waits for: queued before it, behind that
    # LOAD, they would fill the load queue and stop fetch before that compute (a deadlock).
    queued_before: list[list[Instruction]] = [[] for _ in range(count)]
    loading = [u for u in range(count) if steps[u].loads]
    queued_before[0] += steps[0].loads
    for previous, u in zip(loading, loading[1:], strict=False):
        reuses = steps[u].reuses
        first = previous if reuses is None else min(max(previous, u - reuses + 1), u - 1)
        loads, parts = steps[u].loads, u - first
        for i in range(parts):
            queued_before[first + i] += loads[len(loads) * i // parts:
                                              len(loads) * (i + 1) // parts]
    program: list[Instruction] = []
    for u in range(count):
        program += queued_before[u] + steps[u].computes + steps[u].stores
    program.append(Instruction(Opcode.FINISH))
    return program


def _load_contiguous_rows(*, mem: Memory, sram_addr: int, dram_addr: int, rows: int,
                          row_bytes: int, elem_len: int) -> list[Instruction]:
    """LOADs of ``rows`` consecutive SRAM rows from consecutive DRAM rows of ``row_bytes``."""
    loads = []
    for first in range(0, rows, MAX_COUNT):
        count = min(MAX_COUNT, rows - first)
        loads.append(Instruction(Opcode.LOAD, mem=mem, sram_addr=sram_addr + first,
                                 dram_addr=dram_addr + first * row_bytes, rows=1, cols=count,
                                 elem_len=elem_len, dram_elem_stride=row_bytes))
    return loads


def _first_step_by_chunk(step: Step, *, chunks: list[int], tap_rows: int, row_bytes: int,
                         weight_block: tuple[int, int], input_loads: dict[int, Instruction],
                         param_loads: list[Instruction]) -> list[Step]:
    """A convolution's first step as one step per input chunk in ``chunks``: chunk i's input
    tile LOAD, its weight tiles (``tap_rows`` rows of the first resident block, which lies at
    SRAM row / DRAM byte ``weight_block``, chunk-major) and its MATMULs. The first sub-step also
    loads the parameters; the last also loads the other input chunks and keeps the REQUANT and
    the stores. ``step`` is the unsplit step (its MATMULs in chunk order, one per tap, then the
    REQUANT)."""
    sram_row, dram_byte = weight_block
    matmuls = [ins for ins in step.computes if ins.opcode == Opcode.MATMUL]
    per_chunk = len(matmuls) // len(chunks)
    sub_steps = []
    for i, k in enumerate(chunks):
        sub = Step()
        sub.loads += [input_loads[k]]
        sub.loads += _load_contiguous_rows(
            mem=Memory.SCRATCHPAD, sram_addr=sram_row + i * tap_rows,
            dram_addr=dram_byte + i * tap_rows * row_bytes, rows=tap_rows, row_bytes=row_bytes,
            elem_len=row_bytes)
        if i == 0:
            sub.loads += param_loads
        sub.computes = matmuls[i * per_chunk:(i + 1) * per_chunk]
        sub_steps.append(sub)
    last = sub_steps[-1]
    last.loads += [load for k, load in input_loads.items() if k not in chunks]
    last.computes += step.computes[len(matmuls):]
    last.stores = step.stores
    return sub_steps


# DRAM image -------------------------------------------------------------------------------------

class DramImage:
    """Constants and regions laid out from offset 0 (relocated when loaded)."""

    def __init__(self):
        self.size = 0
        self.segments: list[tuple[int, bytes]] = []

    def region(self, size: int) -> int:
        offset = _ceil_div(self.size, ALIGNMENT) * ALIGNMENT
        self.size = offset + max(1, size)
        return offset

    def constant(self, data: np.ndarray | bytes) -> int:
        data = data if isinstance(data, bytes) else np.ascontiguousarray(data).tobytes()
        offset = self.region(len(data))
        self.segments.append((offset, data))
        return offset


# Activations kept on chip ---------------------------------------------------------------------

@dataclass(frozen=True)
class OnChipLayout:
    """Where an activation kept on chip lies in the scratchpad, laid out for its readers.

    Channel group ``g`` (channels ``g * rows`` onwards, one scratchpad row per pixel) of image
    ``i`` is a plane of ``(pad_top + h + pad_bottom) x (pad_left + w + pad_right)`` rows, planes
    image-major from ``base``. The border rows hold ``pad_value`` (the zero point for a
    convolution, -128 for max pooling), so a reader with at most these pads walks the plane
    directly, like the padded input tile a LOAD would have made. Lanes past the tensor's
    channels in the last group are not written: a convolution's weights there are zero.
    """

    base: int
    n: int
    h: int
    w: int
    groups: int
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    pad_value: int
    #: The layers (indices) from the one that writes it to the last one that reads it.
    live: range = range(0)

    @property
    def pitch(self) -> int:
        """Rows from one pixel to the one below it."""
        return self.pads[1] + self.w + self.pads[3]

    @property
    def plane_rows(self) -> int:
        return (self.pads[0] + self.h + self.pads[2]) * self.pitch

    @property
    def rows(self) -> int:
        return self.groups * self.n * self.plane_rows

    @property
    def flat(self) -> bool:
        """Whether each group's pixels of all images are consecutive rows (no borders, and one
        group or one image), as a pixelwise layer walks them."""
        return not any(self.pads) and (self.groups == 1 or self.n == 1)

    def plane(self, *, group: int, image: int) -> int:
        """Planes are image-major: a layer writes them in this order, so one LOAD can fill the
        borders of the next few planes it writes."""
        return image * self.groups + group

    def row(self, *, group: int, image: int, y: int, x: int) -> int:
        """The row of pixel (y, x) (negative or past the edge: a border row)."""
        return (self.base + self.plane(group=group, image=image) * self.plane_rows
                + (self.pads[0] + y) * self.pitch + self.pads[1] + x)

    def fill(self, first: int, count: int, *, dram_addr: int, lanes: int) -> Instruction:
        """The LOAD that writes ``pad_value`` (a broadcast of the ``lanes`` bytes at
        ``dram_addr``) into every row of planes ``first .. first + count - 1``, before the
        first write into them: their borders, and the insides the writer then overwrites.
        Filling only the borders would take a LOAD per pixel row, about 30 cycles each."""
        return Instruction(Opcode.LOAD, mem=Memory.SCRATCHPAD,
                           sram_addr=self.base + first * self.plane_rows, dram_addr=dram_addr,
                           rows=count * (self.pads[0] + self.h + self.pads[2]), cols=self.pitch,
                           elem_len=lanes)


def _reads(layer: Layer) -> list:
    return layer_tensors(layer)[:-1]


def plan_on_chip(network: Network, config: NpuConfig, *, walks_scratchpad,
                 excluded: frozenset = frozenset()) -> dict[int, OnChipLayout]:
    """Which activations stay in the scratchpad between layers, and where (by tensor id).

    An activation stays on chip when the layer writing it and every layer reading it walk the
    scratchpad for it (``walks_scratchpad(layer, on_chip)``: per-tap convolutions and max
    pooling), every layer in between does too (they keep their buffers below it), it is not the
    network's input or output or viewed by another tensor, its readers agree on the border
    value, filling its borders (if it has any) is cheap next to its writer's computing
    (``FILL_COST``), and while it lives the activations on chip take at most half the scratchpad
    (the layers keep the other half for weights and buffers). Placed from the top of the
    scratchpad down; ``excluded`` tensors stay in DRAM.
    """
    layers = network.layers
    viewed = {id(t.base.storage) for t in network.tensors if getattr(t, "base", None)}
    producer = {id(layer_tensors(layer)[-1]): i for i, layer in enumerate(layers)}
    placed: dict[int, OnChipLayout] = {}
    depth = config.scratchpad_depth
    for tensor in network.tensors:
        key = id(tensor)
        if (not isinstance(tensor, Tensor) or key in excluded or tensor is network.input
                or tensor is network.output or key in viewed or tensor.base is not None
                or tensor.channel_major or key not in producer):
            continue
        first = producer[key]
        readers = [i for i, layer in enumerate(layers) if any(t is tensor for t in _reads(layer))]
        if not readers:
            continue
        last = max(readers)
        on_chip = placed | {key: None}
        if not all(walks_scratchpad(layers[i], on_chip) for i in range(first, last + 1)):
            continue
        pad_values = {quant.INT8_MIN if isinstance(layers[i], MaxPool)
                      else tensor.quant.stored_zero_point
                      for i in readers if any(layers[i].pads)}
        if len(pad_values) > 1:
            continue
        pads = tuple(max(layers[i].pads[side] for i in readers) for side in range(4))
        n, h, w, channels = tensor.shape
        if max(h, w) > MAX_COUNT or max(pads) > MAX_PAD:
            continue  # its planes could not be filled by one LOAD each
        layout = OnChipLayout(base=0, n=n, h=h, w=w, groups=_ceil_div(channels, config.rows),
                              pads=pads, pad_value=pad_values.pop() if pad_values else 0,
                              live=range(first, last + 1))
        writer = layers[first]
        if any(pads) and FILL_COST * layout.rows > _ceil_div(writer.macs, config.pes):
            continue  # the writer's load unit would spend longer filling the borders
        live = [other for other in placed.values()
                if other.live.start <= last and first < other.live.stop]
        base = depth - layout.rows  # the highest free place
        for other in sorted(live, key=lambda other: -other.base):
            if base < other.base + other.rows and other.base < base + layout.rows:
                base = other.base - layout.rows
        if base < depth // 2:
            continue
        placed[key] = dataclasses.replace(layout, base=base)
    return placed


# Per-layer lowering -----------------------------------------------------------------------------

@dataclass(frozen=True)
class _TileGeometry:
    """Where an output tile's input window lies and how it is padded."""

    first: int    # first valid input index
    count: int    # valid input positions
    pad_before: int
    pad_after: int

    @property
    def padded(self) -> int:
        return self.pad_before + self.count + self.pad_after


def _window(out_first: int, out_count: int, *, stride: int, kernel: int, pad: int,
            size: int) -> _TileGeometry:
    start = out_first * stride - pad
    end = (out_first + out_count - 1) * stride - pad + kernel
    first, last = max(0, start), min(size, end)
    return _TileGeometry(first=first, count=last - first, pad_before=first - start,
                         pad_after=end - last)


def _tile_load(*, sram_addr: int, dram_addr: int, ygeo: _TileGeometry, xgeo: _TileGeometry,
               elem_len: int, row_stride: int, elem_stride: int, pad_value: int) -> Instruction:
    """The padded LOAD of one channel chunk of an input tile (NHWC in DRAM)."""
    return Instruction(Opcode.LOAD, mem=Memory.SCRATCHPAD, sram_addr=sram_addr,
                       dram_addr=dram_addr, rows=ygeo.count, cols=xgeo.count, elem_len=elem_len,
                       dram_row_stride=row_stride, dram_elem_stride=elem_stride,
                       pad_top=ygeo.pad_before, pad_bottom=ygeo.pad_after,
                       pad_left=xgeo.pad_before, pad_right=xgeo.pad_after, pad_value=pad_value)


def _balanced(total: int, maximum: int) -> int:
    return _ceil_div(total, _ceil_div(total, maximum))


def _spans(total: int, size: int) -> list[tuple[int, int]]:
    return [(first, min(size, total - first)) for first in range(0, total, size)]


def tap_packing_gains(config: NpuConfig, layer: Conv, mode: str) -> bool:
    """Whether packing ``layer``'s kernel taps into the K dimension (few input channels, e.g. an
    RGB stem) needs fewer MATMULs per output tile than one per tap, with weights resident. It
    adds the bias in REQUANT, so it needs the fp32 mode."""
    r, c = config.rows, config.cols
    kh, kw = layer.kernel
    cin, cout = layer.input.shape[3], layer.output.shape[3]
    k_tiles = _ceil_div(kh * kw * cin, r)
    return (mode == "fp32" and layer.groups == 1 and cin < r and k_tiles < kh * kw
            and not layer.output.channel_major
            and k_tiles * _ceil_div(cout, c) * c + 2 * k_tiles + 2 <= config.scratchpad_depth
            and MAX_PAD >= max(layer.pads))


def dram_column_padding(network: Network, config: NpuConfig, mode: str
                        ) -> dict[int, tuple[int, int]]:
    """Zero-point columns stored left and right of the network input (by storage id): the host
    writes the input, so when every layer reading it packs its taps, its rows are stored
    padded for them and no packed LOAD reaches past the side of the image."""
    x = network.input
    if any(t.storage is x and t is not x for t in network.tensors):
        return {}
    readers = [layer for layer in network.layers if x in layer_tensors(layer)[:-1]]
    if not readers or not all(isinstance(layer, Conv) and tap_packing_gains(config, layer, mode)
                              for layer in readers):
        return {}
    pads = (max(layer.pads[1] for layer in readers), max(layer.pads[3] for layer in readers))
    return {id(x): pads} if any(pads) else {}


class _Lowering:
    def __init__(self, config: NpuConfig, image: DramImage, addresses: dict[int, int], mode: str,
                 dram_padding: dict[int, tuple[int, int]]):
        self.config = config
        self.image = image
        self.addresses = addresses
        self.dram_padding = dram_padding  # tensor storage -> zero-point columns (left, right)
        self.mode = mode
        self.plan: dict = {}  # how the last layer was cut: tile, K-part, weights resident
        self.mask_offsets: dict[str, int] = {}  # attention layer -> its mask bias in DRAM
        self.on_chip: dict[int, OnChipLayout] = {}  # activations kept in the scratchpad
        #: Scratchpad rows the layer being lowered may use (those above hold activations).
        self.scratchpad_rows = config.scratchpad_depth

    def address(self, tensor: Tensor) -> int:
        return self.addresses[id(tensor)]

    def packs_taps(self, layer: Conv, on_chip: dict | None = None) -> bool:
        """Whether ``layer`` is lowered by :meth:`conv_tap_packed`: it gains from it, its input
        is in DRAM (not ``on_chip``) and the columns its padding adds left and right of the
        image are there too (or there are none)."""
        _, pl, _, pr = layer.pads
        left, right = self.dram_padding.get(id(layer.input.storage), (0, 0))
        on_chip = self.on_chip if on_chip is None else on_chip
        return (tap_packing_gains(self.config, layer, self.mode) and pl <= left and pr <= right
                and id(layer.input) not in on_chip)

    def walks_scratchpad(self, layer: Layer, on_chip: dict) -> bool:
        """Whether ``layer``'s lowering can read and write activations kept on chip and keeps
        its own buffers below them (:func:`plan_on_chip`)."""
        if isinstance(layer, Conv):
            return not layer.output.channel_major and not self.packs_taps(layer, on_chip)
        return isinstance(layer, MaxPool)

    def fill_before_first_write(self, step: Step, layout: OnChipLayout | None, *, group: int,
                                image: int, filled: set):
        """Adds to ``step`` (which writes into plane (``group``, ``image``) of ``layout``, an
        activation kept on chip) the LOAD that fills the plane's borders first, unless an
        earlier step did: with it the following planes, up to about ``FILL_ROWS`` rows, so
        that the LOAD's fixed cost is shared."""
        if layout is None or not any(layout.pads):
            return
        first = layout.plane(group=group, image=image)
        if first in filled:
            return
        height = layout.pads[0] + layout.h + layout.pads[2]
        count = max(1, min(MAX_COUNT // height, _ceil_div(FILL_ROWS, layout.plane_rows),
                           layout.groups * layout.n - first))
        count = next(i for i in range(1, count + 1) if i == count or first + i in filled)
        filled.update(range(first, first + count))
        if not step.loads:
            step.reuses = None  # the planes are no earlier step's buffers
        constant = self.image.constant(np.full(self.config.rows, layout.pad_value, np.int8))
        # First: the step's accumulator LOADs (parameters) wait for a gap in the array's
        # writes, which comes only at the end of the step before; nothing should queue behind.
        step.loads.insert(0, layout.fill(first, count, dram_addr=constant,
                                         lanes=self.config.rows))

    # Convolution ------------------------------------------------------------------------------
    def conv(self, layer: Conv) -> list[Step]:
        cfg = self.config
        r, c = cfg.rows, cfg.cols
        if c > r:
            raise CompileError(f"{layer.name}: the compiler needs cols <= rows, not "
                               f"{cfg.rows}x{cfg.cols}")
        n, h, w, cin = layer.input.shape
        _, oh, ow, cout = layer.output.shape
        kh, kw = layer.kernel
        (sh, sw), (pt, pl, pb, pr) = layer.stride, layer.pads
        src, dst = self.on_chip.get(id(layer.input)), self.on_chip.get(id(layer.output))
        depth = self.scratchpad_rows
        if ((kh, kw, sh, sw, pt, pl, pb, pr) == (1, 1, 1, 1, 0, 0, 0, 0)
                and all(layout.flat for layout in (src, dst) if layout)):
            n, h, w, oh, ow = 1, 1, n * h * w, 1, n * h * w  # pixelwise: one long row
        if max(layer.pads) > MAX_PAD:
            raise CompileError(f"{layer.name}: padding above {MAX_PAD} is not supported, "
                               f"not {layer.pads}")

        # Weights: dense block-diagonal (O, I, KH, KW); per n-tile, the k-chunks it needs.
        groups = layer.groups
        per_group_in, per_group_out = cin // groups, cout // groups
        dense = np.zeros((cout, cin, kh, kw), np.int8)
        for g in range(groups):
            dense[g * per_group_out:(g + 1) * per_group_out,
                  g * per_group_in:(g + 1) * per_group_in] = \
                layer.weights[g * per_group_out:(g + 1) * per_group_out]
        k_chunks, n_tiles = _ceil_div(cin, r), _ceil_div(cout, c)
        taps = [(ky, kx) for ky in range(kh) for kx in range(kw)]
        needed = []
        for j in range(n_tiles):
            out_groups = {o // per_group_out for o in range(j * c, min(cout, (j + 1) * c))}
            needed.append([k for k in range(k_chunks) if out_groups & {
                i // per_group_in for i in range(k * r, min(cin, (k + 1) * r))}])
        # REQUANT adds the bias itself in fp32 mode (scale section, then bias section); in fixed
        # mode the bias row is loaded into the accumulator rows first.
        fused_bias = self.mode == "fp32"

        # Plan: chunks per K-part, weights resident or streamed, the largest output tile.
        total_weight_rows = sum(len(ks) for ks in needed) * len(taps) * c
        resident = total_weight_rows <= depth // 2
        most_chunks = max(len(ks) for ks in needed)

        def fits(part: int, th: int, tw: int) -> bool:
            parts = _ceil_div(most_chunks, part)
            weights = total_weight_rows if resident else 2 * part * len(taps) * c
            x_chunks = k_chunks if parts == 1 else part
            hp, wp = (th - 1) * sh + kh, (tw - 1) * sw + kw
            scratch = (weights + (0 if src else 2 * x_chunks * hp * wp)
                       + (0 if dst else 2 * th * tw))
            acc = 2 * th * tw + 2 * n_tiles
            return scratch <= depth and acc <= cfg.accumulator_depth

        def largest_tile(part: int) -> tuple[int, int] | None:
            tw = min(ow, MAX_COUNT)
            while tw > 1 and not fits(part, 1, tw):
                tw = _ceil_div(tw, 2)
            if not fits(part, 1, tw):
                return None
            tw = _balanced(ow, tw)
            th = 1
            while th < min(oh, MAX_COUNT) and fits(part, th + 1, tw):
                th += 1
            return _balanced(oh, th), tw

        plan = None
        for part in sorted({_ceil_div(most_chunks, p) for p in range(1, most_chunks + 1)},
                           reverse=True):
            tile = largest_tile(part)
            if tile and (plan is None or tile[0] * tile[1] >= min(oh * ow, 4 * c)):
                plan = (part, *tile)
                if tile[0] * tile[1] >= min(oh * ow, 4 * c):
                    break
            if resident:
                break
        if plan is None:
            raise CompileError(
                f"{layer.name}: even a one-pixel tile does not fit the {cfg.name} SRAMs "
                f"({cin} input channels, {kh}x{kw} kernel); use a larger configuration")
        part, th, tw = plan
        self.plan = dict(tile=(th, tw), k_chunks_per_part=part, k_chunks=k_chunks,
                         n_tiles=n_tiles, weights_resident=resident,
                         input_on_chip=src is not None, output_on_chip=dst is not None)
        k_parts = [[ks[i:i + part] for i in range(0, len(ks), part)] for ks in needed]
        reload_input = max(len(parts) for parts in k_parts) > 1

        # Constants: weight tiles per (n-tile, K-part); bias and parameters per n-tile.
        weight_blocks = {}
        for j in range(n_tiles):
            for p, ks in enumerate(k_parts[j]):
                tiles = [(tap, k) for k in ks for tap in taps]
                packed = np.zeros((len(tiles), c, r), np.int8)
                for t, ((ky, kx), k) in enumerate(tiles):
                    block = dense[j * c:(j + 1) * c, k * r:(k + 1) * r, ky, kx]
                    packed[t, :block.shape[0], :block.shape[1]] = block
                weight_blocks[j, p] = (tiles, self.image.constant(packed), len(tiles) * c)
        bias = quant.fold_zero_point(layer.bias, layer.weights, layer.input.quant.stored_zero_point)
        # REQUANT parameters, all loaded once by the first step (:meth:`requant_parameters`);
        # fixed mode also loads a bias row into every output row of each tile.
        params, params_load = self.requant_parameters(layer, n_tiles=n_tiles)
        bias_rows = [] if fused_bias else [
            self.image.constant(parameter_rows(cfg, bias[j * c:(j + 1) * c]).astype(np.int32))
            for j in range(n_tiles)]

        # On-chip layout (two of each buffer).
        hp_max, wp_max = (th - 1) * sh + kh, (tw - 1) * sw + kw
        weight_region = total_weight_rows if resident else 2 * part * len(taps) * c
        x_size = 0 if src else (part if reload_input else k_chunks) * hp_max * wp_max
        x_buffers = (weight_region, weight_region + x_size)
        out_buffers = (weight_region + 2 * x_size, weight_region + 2 * x_size + th * tw)
        acc_buffers = (0, th * tw)
        param_base = 2 * th * tw  # n-tile j's parameters: param_base + 2 * j
        resident_rows = {}
        if resident:
            row = 0
            for key, (_, _, rows_) in weight_blocks.items():
                resident_rows[key] = row
                row += rows_

        x_addr = None if src else self.address(layer.input)
        y_addr = None if dst else self.address(layer.output)
        x_zp = layer.input.quant.stored_zero_point
        steps: list[Step] = []
        resident_loaded: set[tuple[int, int]] = set()
        filled: set[int] = set()  # planes of dst whose borders are filled
        outputs = tiles_done = 0
        for image_index in range(n):
            for oy0, rows in _spans(oh, th):
                ygeo = _window(oy0, rows, stride=sh, kernel=kh, pad=pt, size=h)
                for ox0, cols in _spans(ow, tw):
                    xgeo = _window(ox0, cols, stride=sw, kernel=kw, pad=pl, size=w)
                    chunk_rows = ygeo.padded * xgeo.padded

                    if not src:
                        pixel = x_addr + ((image_index * h + ygeo.first) * w + xgeo.first) * cin
                    tile_x_buf = x_buffers[tiles_done % 2]
                    for j in range(n_tiles):
                        acc_buf, prm = acc_buffers[outputs % 2], param_base + 2 * j
                        for p, ks in enumerate(k_parts[j]):
                            u = len(steps)
                            weight_loads = {}  # a resident weight block, by the first step using it
                            if resident and (j, p) not in resident_loaded:
                                resident_loaded.add((j, p))
                                _, offset, count = weight_blocks[j, p]
                                weight_loads[j, p] = _load_contiguous_rows(
                                    mem=Memory.SCRATCHPAD, sram_addr=resident_rows[j, p],
                                    dram_addr=offset, rows=count, row_bytes=r, elem_len=r)
                            input_loads = {}  # input chunk -> its tile LOAD
                            if reload_input:
                                x_buf = x_buffers[u % 2]
                                chunk_slot = {k: i for i, k in enumerate(ks)}
                            else:
                                x_buf = tile_x_buf
                                chunk_slot = {k: k for k in range(k_chunks)}
                            if not src and (reload_input or j == 0):
                                for k in (ks if reload_input else range(k_chunks)):
                                    input_loads[k] = _tile_load(
                                        sram_addr=x_buf + chunk_slot[k] * chunk_rows,
                                        dram_addr=pixel + k * r, ygeo=ygeo, xgeo=xgeo,
                                        elem_len=min(r, cin - k * r), row_stride=w * cin,
                                        elem_stride=cin, pad_value=x_zp)
                            step = Step()
                            for loads in weight_loads.values():
                                step.loads += loads
                            step.loads += input_loads.values()
                            tiles, offset, count = weight_blocks[j, p]
                            if resident:
                                w_base = resident_rows[j, p]
                            else:
                                w_base = (u % 2) * part * len(taps) * c
                                step.loads += _load_contiguous_rows(
                                    mem=Memory.SCRATCHPAD, sram_addr=w_base, dram_addr=offset,
                                    rows=count, row_bytes=r, elem_len=r)
                            param_loads = []
                            if u == 0:
                                param_loads.append(params_load.replace(sram_addr=param_base))
                            if p == 0 and not fused_bias:
                                param_loads.append(Instruction(  # the bias row into every output row
                                    Opcode.LOAD, mem=Memory.ACCUMULATOR, sram_addr=acc_buf,
                                    dram_addr=bias_rows[j], rows=rows, cols=cols, elem_len=c))
                            step.loads += param_loads
                            for t, ((ky, kx), k) in enumerate(tiles):
                                overwrite = fused_bias and p == 0 and t == 0
                                if src:  # the whole padded image is on chip
                                    x_row, pitch = src.row(
                                        group=k, image=image_index, y=oy0 * sh - pt + ky,
                                        x=ox0 * sw - pl + kx), src.pitch
                                else:
                                    x_row = (x_buf + chunk_slot[k] * chunk_rows
                                             + ky * xgeo.padded + kx)
                                    pitch = xgeo.padded
                                step.computes.append(Instruction(
                                    Opcode.MATMUL, accumulate=int(not overwrite), load_weights=1,
                                    weight_addr=w_base + t * c, outer_count=rows,
                                    inner_count=cols, input_addr=x_row,
                                    input_outer_stride=sh * pitch, input_inner_stride=sw,
                                    acc_addr=acc_buf, acc_outer_stride=cols, acc_inner_stride=1))
                            if p == len(k_parts[j]) - 1 and dst:  # into the next layer's input
                                step.computes.append(self._requant(
                                    acc_buf=acc_buf, rows=rows, cols=cols,
                                    out_buf=dst.row(group=j * c // r, image=image_index, y=oy0,
                                                    x=ox0),
                                    out_pitch=dst.pitch, out_lane=j * c % r,
                                    channels=min(c, cout - j * c), param_addr=prm,
                                    output=layer.output, clip=layer.clip, bias=fused_bias))
                            elif p == len(k_parts[j]) - 1:
                                out_buf = out_buffers[outputs % 2]
                                channels = min(c, cout - j * c)
                                step.computes.append(self._requant(
                                    acc_buf=acc_buf, out_buf=out_buf, rows=rows, cols=cols,
                                    channels=channels, param_addr=prm, output=layer.output,
                                    clip=layer.clip, bias=fused_bias))
                                step.stores.append(Instruction(
                                    Opcode.STORE, mem=Memory.SCRATCHPAD, sram_addr=out_buf,
                                    dram_addr=y_addr + ((image_index * oh + oy0) * ow + ox0) * cout
                                    + j * c, rows=rows, cols=cols, elem_len=channels,
                                    dram_row_stride=ow * cout, dram_elem_stride=cout))
                            if u == 0 and resident and len(ks) > 1 and not src:
                                # The prologue, which nothing overlaps: start the array on the
                                # first input chunk instead of after the whole input tile.
                                steps += _first_step_by_chunk(
                                    step, chunks=ks, tap_rows=len(taps) * c, row_bytes=r,
                                    weight_block=(resident_rows[j, p], offset),
                                    input_loads=input_loads, param_loads=param_loads)
                            else:
                                steps.append(step)
                            if p == len(k_parts[j]) - 1:
                                self.fill_before_first_write(steps[-1], dst, group=j * c // r,
                                                             image=image_index, filled=filled)
                        outputs += 1
                    tiles_done += 1
        return steps

    def conv_tap_packed(self, layer: Conv) -> list[Step]:
        """A convolution with few input channels (an RGB stem): its kernel taps packed into the
        K dimension. Output pixel p's receptive field, ``kh`` segments of ``kw * cin``
        contiguous NHWC bytes (one per kernel row), is laid out back to back over ``K`` tiles of
        ``rows`` lanes; a piece of a segment that falls into one K tile is one LOAD per output
        tile (``lane_offset``, ``merge``; elements overlap when the stride is below the kernel).
        Rows above or below the image are padding elements; columns left or right of it must
        be in DRAM (:func:`dram_column_padding`). Each (K tile, output-channel tile) is one
        MATMUL over the output tile, so a 7x7 stem on 3 channels takes 10 MATMULs per 16
        output channels instead of 49. Weights and parameters stay resident; every output
        tile holds all its output-channel groups in the accumulator and is computed K tile by K
        tile as its pieces arrive, except the last two K tiles: those go n-tile by n-tile, each
        n-tile's REQUANT right after its last MATMUL, so that consecutive REQUANTs are two
        MATMULs apart. The compute unit runs the MATMULs after a REQUANT while the REQUANT waits
        for its rows and runs, but a VECTOR waits for the previous one, and a REQUANT takes
        about as long as a MATMUL over the same tile: one MATMUL between them would leave the
        array idle while the next REQUANT waits."""
        cfg = self.config
        r, c = cfg.rows, cfg.cols
        n, h, w, cin = layer.input.shape
        _, oh, ow, cout = layer.output.shape
        kh, kw = layer.kernel
        (sh, sw), (pt, pl, _, _) = layer.stride, layer.pads
        segment = kw * cin
        k_tiles, n_tiles = _ceil_div(kh * segment, r), _ceil_div(cout, c)
        pieces = []  # (K tile, first lane, kernel row, first byte of the segment, length)
        for ky in range(kh):
            byte = 0
            while byte < segment:
                t, lane = divmod(ky * segment + byte, r)
                length = min(segment - byte, r - lane)
                pieces.append((t, lane, ky, byte, length))
                byte += length

        # Constants: weights K-tile-major ((t, j) -> c rows of r lanes), parameters per n-tile.
        flat = np.zeros((n_tiles * c, k_tiles * r), np.int8)
        flat[:cout, :kh * segment] = layer.weights.transpose(0, 2, 3, 1).reshape(cout, -1)
        packed = flat.reshape(n_tiles, c, k_tiles, r).transpose(2, 0, 1, 3)
        weight_offset = self.image.constant(packed)
        params, params_load = self.requant_parameters(layer, n_tiles=n_tiles)
        param_rows = params.shape[0] // n_tiles

        # Tiles of rows x cols output pixels, each accumulating all its n-tiles at once (so
        # that it computes K tile by K tile as the pieces arrive): two of everything.
        weight_rows = k_tiles * n_tiles * c
        most = min((cfg.scratchpad_depth - weight_rows) // (2 * k_tiles + 2),
                   (cfg.accumulator_depth - len(params)) // (2 * n_tiles))
        tw = _balanced(ow, min(ow, MAX_COUNT, most))
        th = _balanced(oh, min(oh, MAX_COUNT, most // tw))
        pixels = th * tw
        self.plan = dict(tile=(th, tw), k_tiles=k_tiles, n_tiles=n_tiles, tap_packed=True,
                         weights_resident=True)
        x_slots = (weight_rows, weight_rows + k_tiles * pixels)
        out_slots = (weight_rows + 2 * k_tiles * pixels, weight_rows + (2 * k_tiles + 1) * pixels)
        acc_slots = (0, n_tiles * pixels)
        param_base = 2 * n_tiles * pixels

        left, right = self.dram_padding.get(id(layer.input.storage), (0, 0))
        padded_w = left + w + right
        x_addr, y_addr = self.address(layer.input), self.address(layer.output)
        x_zp = layer.input.quant.stored_zero_point
        zero_points = None  # a row of x_zp bytes, for pieces that lie wholly in the padding

        def piece_load(piece, *, slot: int, image: int, oy0: int, rows: int, ox0: int,
                        cols: int) -> Instruction:
            nonlocal zero_points
            t, lane, ky, byte, length = piece
            first = [oy for oy in range(oy0, oy0 + rows) if 0 <= oy * sh - pt + ky < h]
            where = dict(mem=Memory.SCRATCHPAD, sram_addr=slot + t * rows * cols,
                         elem_len=length, lane_offset=lane, merge=int(lane > 0))
            if not first:
                if zero_points is None:
                    zero_points = self.image.constant(np.full(r, x_zp, np.int8))
                return Instruction(Opcode.LOAD, dram_addr=zero_points, rows=rows, cols=cols,
                                   **where)
            iy, valid = first[0] * sh - pt + ky, len(first)
            return Instruction(
                Opcode.LOAD, dram_addr=x_addr + ((image * h + iy) * padded_w
                                                 + ox0 * sw - pl + left) * cin + byte,
                rows=valid, cols=cols, dram_row_stride=sh * padded_w * cin,
                dram_elem_stride=sw * cin, pad_top=first[0] - oy0,
                pad_bottom=oy0 + rows - first[0] - valid, pad_value=x_zp, **where)

        def k_tile_step(k_tiles_here: list[int], *, k: int, slot: int, image: int, oy0: int,
                        rows: int, ox0: int, cols: int) -> Step:
            """A step with the loads of these K tiles of output tile ``k`` (in the first one
            also their resident weights and the parameters), no computes yet."""
            step = Step(loads=[piece_load(piece, slot=slot, image=image, oy0=oy0, rows=rows,
                                          ox0=ox0, cols=cols)
                               for t in k_tiles_here for piece in pieces if piece[0] == t],
                        reuses=len(steps) - last_step[k - 2] if 0 in k_tiles_here and k >= 2
                        else None)
            if k == 0:
                step.loads[:0] = [load for t in k_tiles_here for load in _load_contiguous_rows(
                    mem=Memory.SCRATCHPAD, sram_addr=t * n_tiles * c,
                    dram_addr=weight_offset + t * n_tiles * c * r, rows=n_tiles * c,
                    row_bytes=r, elem_len=r)]
                if 0 in k_tiles_here:
                    step.loads.append(params_load.replace(sram_addr=param_base))
            return step

        def matmul(t: int, j: int, *, slot: int, acc: int, rows: int, cols: int) -> Instruction:
            return Instruction(
                Opcode.MATMUL, accumulate=int(t > 0), load_weights=1,
                weight_addr=(t * n_tiles + j) * c, outer_count=rows, inner_count=cols,
                input_addr=slot + t * rows * cols, input_outer_stride=cols,
                input_inner_stride=1, acc_addr=acc, acc_outer_stride=cols, acc_inner_stride=1)

        steps: list[Step] = []
        last_step: list[int] = []  # per output tile
        outputs = 0
        tiles = [(image, oy0, rows, ox0, cols) for image in range(n)
                 for oy0, rows in _spans(oh, th) for ox0, cols in _spans(ow, tw)]
        # The first tile's first row and the last tile's last row are tiles of their own: the
        # array starts after a short first load, and the last REQUANT and STORE are short.
        image, oy0, rows, ox0, cols = tiles[0]
        if rows > 1:
            tiles[:1] = [(image, oy0, 1, ox0, cols), (image, oy0 + 1, rows - 1, ox0, cols)]
        image, oy0, rows, ox0, cols = tiles[-1]
        if rows > 1:
            tiles[-1:] = [(image, oy0, rows - 1, ox0, cols), (image, oy0 + rows - 1, 1, ox0, cols)]
        tail = list(range(max(0, k_tiles - 2), k_tiles))  # the K tiles done n-tile by n-tile
        for k, (image, oy0, rows, ox0, cols) in enumerate(tiles):
            slot = x_slots[k % 2]
            accs = [acc_slots[k % 2] + j * rows * cols for j in range(n_tiles)]
            where = dict(k=k, slot=slot, image=image, oy0=oy0, rows=rows, ox0=ox0, cols=cols)
            shape = dict(slot=slot, rows=rows, cols=cols)
            for t in range(k_tiles - len(tail)):
                step = k_tile_step([t], **where)
                step.computes = [matmul(t, j, acc=accs[j], **shape) for j in range(n_tiles)]
                steps.append(step)
            step = k_tile_step(tail, **where)
            for j in range(n_tiles):  # an output step per n-tile
                out_buf, channels = out_slots[outputs % 2], min(c, cout - j * c)
                outputs += 1
                step.computes += [matmul(t, j, acc=accs[j], **shape) for t in tail]
                step.computes.append(self._requant(
                    acc_buf=accs[j], out_buf=out_buf, rows=rows, cols=cols,
                    channels=channels, param_addr=param_base + j * param_rows,
                    output=layer.output, clip=layer.clip, bias=True))
                step.stores.append(Instruction(
                    Opcode.STORE, mem=Memory.SCRATCHPAD, sram_addr=out_buf,
                    dram_addr=y_addr + ((image * oh + oy0) * ow + ox0) * cout + j * c,
                    rows=rows, cols=cols, elem_len=channels, dram_row_stride=ow * cout,
                    dram_elem_stride=cout))
                steps.append(step)
                step = Step(reuses=None)
            last_step.append(len(steps) - 1)
        return steps

    @property
    def requant_mode(self) -> RequantMode:
        return RequantMode.FP32 if self.mode == "fp32" else RequantMode.FIXED

    def requant_sections(self, scale: np.ndarray, real: np.ndarray) -> list[np.ndarray]:
        """REQUANT parameter sections for per-element ``scale`` (float32, fp32 mode) or
        ``real`` multipliers (float64, turned into multipliers and shifts in fixed mode)."""
        if self.mode == "fp32":
            return [np.asarray(scale, np.float32)]
        pairs = [quant.quantize_multiplier(float(m)) for m in real]
        return [np.array([p[0] for p in pairs], np.int32), np.array([p[1] for p in pairs], np.int32)]

    def requant_parameters(self, layer: Conv, *, n_tiles: int) -> tuple[np.ndarray, Instruction]:
        """The REQUANT parameters of every group of ``cols`` output channels, two accumulator
        rows each (fp32: scales, then biases with the input zero point folded in; fixed:
        multipliers, shifts), as a DRAM constant, and the one LOAD that puts them into the
        accumulator (the caller sets ``sram_addr``). A layer loads them once: a LOAD into the
        accumulator waits for a gap in the array's writes, so one per step would hold back the
        next step."""
        cfg, c = self.config, self.config.cols
        bias = quant.fold_zero_point(layer.bias, layer.weights, layer.input.quant.stored_zero_point)
        sections = []
        for j in range(n_tiles):
            channels = slice(j * c, (j + 1) * c)
            scale = self.requant_sections(layer.scale[channels], layer.real_multiplier[channels])
            sections.append(parameter_rows(cfg, *scale, *([bias[channels]]
                                                          if self.mode == "fp32" else [])))
        params = np.concatenate(sections).astype(np.int32)
        load = Instruction(Opcode.LOAD, mem=Memory.ACCUMULATOR,
                           dram_addr=self.image.constant(params), rows=1, cols=len(params),
                           elem_len=c, dram_elem_stride=4 * c)
        return params, load

    def _requant(self, *, acc_buf, out_buf, rows, cols, channels, param_addr, output, clip,
                 bias=False, out_pitch=None, out_lane=0):
        return Instruction(
            Opcode.VECTOR, funct=VectorFunct.REQUANT, mode=self.requant_mode, bias=int(bias),
            outer_count=rows,
            inner_count=cols, a_addr=acc_buf, a_outer_stride=cols, a_inner_stride=1,
            out_addr=out_buf, out_outer_stride=out_pitch or cols, out_inner_stride=1,
            out_lane=out_lane, length=channels,
            param_addr=param_addr, out_zp=output.quant.stored_zero_point,
            clip_lo=clip[0], clip_hi=clip[1])

    # Max pooling -------------------------------------------------------------------------------
    def max_pool(self, layer: MaxPool) -> list[Step]:
        cfg = self.config
        r = cfg.rows
        n, h, w, channels = layer.input.shape
        _, oh, ow, _ = layer.output.shape
        (kh, kw), (sh, sw), (pt, pl, _, _) = layer.kernel, layer.stride, layer.pads
        if max(layer.pads) > MAX_PAD:
            raise CompileError(f"{layer.name}: padding above {MAX_PAD} is not supported")
        src, dst = self.on_chip.get(id(layer.input)), self.on_chip.get(id(layer.output))

        def fits(th: int, tw: int) -> bool:
            x_rows = 0 if src else 2 * ((th - 1) * sh + kh) * ((tw - 1) * sw + kw)
            return x_rows + (0 if dst else 2 * th * tw) <= self.scratchpad_rows

        tw = min(ow, MAX_COUNT)
        while tw > 1 and not fits(1, tw):
            tw = _ceil_div(tw, 2)
        tw = _balanced(ow, tw)
        th = 1
        while th < min(oh, MAX_COUNT) and fits(th + 1, tw):
            th += 1
        th = _balanced(oh, th)
        self.plan = dict(tile=(th, tw), input_on_chip=src is not None,
                         output_on_chip=dst is not None)
        x_size = 0 if src else ((th - 1) * sh + kh) * ((tw - 1) * sw + kw)
        x_buffers, out_buffers = (0, x_size), (2 * x_size, 2 * x_size + th * tw)
        x_addr = None if src else self.address(layer.input)
        y_addr = None if dst else self.address(layer.output)
        taps = [(ky, kx) for ky in range(kh) for kx in range(kw)]
        steps = []
        filled: set[int] = set()  # planes of dst whose borders are filled
        for image_index in range(n):
            for oy0, rows in _spans(oh, th):
                ygeo = _window(oy0, rows, stride=sh, kernel=kh, pad=pt, size=h)
                for ox0, cols in _spans(ow, tw):
                    xgeo = _window(ox0, cols, stride=sw, kernel=kw, pad=pl, size=w)
                    for c0, lanes in _spans(channels, r):
                        s = len(steps)
                        step = Step()
                        if src:  # the whole padded image is on chip
                            tap_addr = {(ky, kx): src.row(group=c0 // r, image=image_index,
                                                          y=oy0 * sh - pt + ky,
                                                          x=ox0 * sw - pl + kx)
                                        for ky, kx in taps}
                            pitch = src.pitch
                        else:
                            x_buf = x_buffers[s % 2]
                            step.loads.append(_tile_load(
                                sram_addr=x_buf,
                                dram_addr=x_addr + ((image_index * h + ygeo.first) * w
                                                    + xgeo.first) * channels + c0,
                                ygeo=ygeo, xgeo=xgeo, elem_len=lanes, row_stride=w * channels,
                                elem_stride=channels, pad_value=quant.INT8_MIN))
                            tap_addr = {tap: x_buf + tap[0] * xgeo.padded + tap[1]
                                        for tap in taps}
                            pitch = xgeo.padded
                        if dst:
                            out_buf = dst.row(group=c0 // r, image=image_index, y=oy0, x=ox0)
                            out_pitch = dst.pitch
                        else:
                            out_buf, out_pitch = out_buffers[s % 2], cols

                        walk = dict(outer_count=rows, inner_count=cols, length=lanes,
                                    out_addr=out_buf, out_outer_stride=out_pitch,
                                    out_inner_stride=1,
                                    a_outer_stride=sh * pitch, a_inner_stride=sw,
                                    b_outer_stride=sh * pitch, b_inner_stride=sw,
                                    clip_lo=quant.INT8_MIN, clip_hi=quant.INT8_MAX)
                        second = taps[1] if len(taps) > 1 else taps[0]
                        step.computes.append(Instruction(
                            Opcode.VECTOR, funct=VectorFunct.MAX, a_addr=tap_addr[taps[0]],
                            b_addr=tap_addr[second], **walk))
                        for tap in taps[2:]:  # out = max(out, tap)
                            step.computes.append(Instruction(
                                Opcode.VECTOR, funct=VectorFunct.MAX, **{
                                    **walk, "a_addr": out_buf, "a_outer_stride": out_pitch,
                                    "a_inner_stride": 1, "b_addr": tap_addr[tap]}))
                        if not dst:
                            step.stores.append(Instruction(
                                Opcode.STORE, mem=Memory.SCRATCHPAD, sram_addr=out_buf,
                                dram_addr=y_addr + ((image_index * oh + oy0) * ow + ox0)
                                * channels + c0, rows=rows, cols=cols, elem_len=lanes,
                                dram_row_stride=ow * channels, dram_elem_stride=channels))
                        self.fill_before_first_write(step, dst, group=c0 // r, image=image_index,
                                                     filled=filled)
                        steps.append(step)
        return steps

    # Elementwise add ----------------------------------------------------------------------------
    def add(self, layer: Add) -> list[Step]:
        cfg = self.config
        r = cfg.rows
        if layer.a.shape != layer.b.shape or layer.a.shape != layer.output.shape:
            raise CompileError(f"{layer.name}: Add needs operands of the same shape (no "
                               f"broadcasting), not {layer.a.onnx_shape} and {layer.b.onnx_shape}")
        qa, qb, qc = layer.a.quant, layer.b.quant, layer.output.quant
        if self.mode == "fp32":
            sa, sb, f = quant.add_fp32_params(
                a_scale=qa.scale, a_zero_point=qa.zero_point, b_scale=qb.scale,
                b_zero_point=qb.zero_point, c_scale=qc.scale, c_zero_point=qc.zero_point)
            words = np.array([sa, sb, f], np.float32)
            flags = dict(mode=RequantMode.FP32, a_unsigned=int(qa.unsigned),
                         b_unsigned=int(qb.unsigned), out_unsigned=int(qc.unsigned))
        else:
            p = quant.add_fixed_params(a_scale=qa.scale, b_scale=qb.scale, c_scale=qc.scale)
            words = np.array([qa.stored_zero_point, qb.stored_zero_point, p["left_shift"],
                              p["a_multiplier"], p["a_shift"], p["b_multiplier"], p["b_shift"],
                              p["out_multiplier"], p["out_shift"]], np.int32)
            flags = dict(mode=RequantMode.FIXED, out_zp=qc.stored_zero_point)
        params = parameter_rows(cfg, words)
        params_offset = self.image.constant(params.astype(np.int32))
        elements = layer.output.size
        total_rows = _ceil_div(elements, r)
        tile = _balanced(total_rows, min(MAX_COUNT, cfg.scratchpad_depth // 6))
        a_addr, b_addr, y_addr = (self.address(t) for t in (layer.a, layer.b, layer.output))
        steps = []
        for first, rows in _spans(total_rows, tile):
            s = len(steps)
            base = (s % 2) * 3 * tile
            a_buf, b_buf, out_buf = base, base + tile, base + 2 * tile
            step = Step()
            if s == 0:
                step.loads.append(Instruction(
                    Opcode.LOAD, mem=Memory.ACCUMULATOR, sram_addr=0, dram_addr=params_offset,
                    rows=1, cols=params.shape[0], elem_len=cfg.cols,
                    dram_elem_stride=4 * cfg.cols))
            full = min(rows, (elements - first * r) // r)
            partial = elements - (first + full) * r if full < rows else 0
            for buf, addr in ((a_buf, a_addr), (b_buf, b_addr)):
                if full:
                    step.loads += _load_contiguous_rows(
                        mem=Memory.SCRATCHPAD, sram_addr=buf, dram_addr=addr + first * r,
                        rows=full, row_bytes=r, elem_len=r)
                if partial:
                    step.loads.append(Instruction(
                        Opcode.LOAD, mem=Memory.SCRATCHPAD, sram_addr=buf + full,
                        dram_addr=addr + (first + full) * r, rows=1, cols=1, elem_len=partial))
            step.computes.append(Instruction(
                Opcode.VECTOR, funct=VectorFunct.ADD, outer_count=1, inner_count=rows,
                a_addr=a_buf, a_inner_stride=1, b_addr=b_buf, b_inner_stride=1,
                out_addr=out_buf, out_inner_stride=1, length=r, param_addr=0,
                clip_lo=layer.clip[0], clip_hi=layer.clip[1], **flags))
            if full:
                step.stores.append(Instruction(
                    Opcode.STORE, mem=Memory.SCRATCHPAD, sram_addr=out_buf,
                    dram_addr=y_addr + first * r, rows=1, cols=full, elem_len=r,
                    dram_elem_stride=r))
            if partial:
                step.stores.append(Instruction(
                    Opcode.STORE, mem=Memory.SCRATCHPAD, sram_addr=out_buf + full,
                    dram_addr=y_addr + (first + full) * r, rows=1, cols=1, elem_len=partial))
            steps.append(step)
        return steps

    def lower(self, layer: Layer) -> list[Instruction]:
        from . import transformer_lowering as transformer

        self.plan = {}
        if isinstance(layer, Conv) and layer.output.channel_major:
            steps = transformer.linear_channel_major(self, layer)
        elif isinstance(layer, Conv) and self.packs_taps(layer):
            steps = self.conv_tap_packed(layer)
        elif isinstance(layer, Conv):
            steps = self.conv(layer)
        elif isinstance(layer, Attention):
            steps = transformer.attention(self, layer)
        elif isinstance(layer, (LayerNorm, ResidualLayerNorm, Gelu)):
            steps = transformer.row_op(self, layer)
        elif isinstance(layer, MaxPool):
            steps = self.max_pool(layer)
        elif isinstance(layer, Add):
            steps = self.add(layer)
        else:
            raise CompileError(f"No lowering for layer {layer!r}")
        self.plan["steps"] = len(steps)
        return pipeline(steps)


# Bounds (DESIGN section 6) ----------------------------------------------------------------------

def layer_bounds(config: NpuConfig, layer: Layer) -> dict[str, int]:
    """Compute floor, bandwidth floor and (for convolutions) SCALE-Sim's naive
    weight-stationary cycles; ``bound_cycles`` is the larger of the two floors."""
    r, c = config.rows, config.cols
    compute = _ceil_div(layer.macs, config.pes) if layer.macs else 0
    moved = sum(tensor.nbytes for tensor in layer_tensors(layer))
    if isinstance(layer, Conv):
        moved += layer.weights.size + 4 * layer.bias.size
    bandwidth = _ceil_div(moved, config.axi_data_bytes)
    bounds = {"compute_floor_cycles": compute, "bandwidth_floor_cycles": bandwidth,
              "bound_cycles": max(compute, bandwidth)}
    if isinstance(layer, Conv):
        n, oh, ow, cout = layer.output.shape
        groups = layer.groups
        k = layer.weights[0].size
        m = n * oh * ow
        bounds["naive_cycles"] = groups * _ceil_div(k, r) * _ceil_div(cout // groups, c) \
            * (2 * r + c + m - 2)
    return bounds


# Compiled model ---------------------------------------------------------------------------------

@dataclass
class CompiledLayer:
    name: str
    op: str
    layer: Layer
    instructions: list[Instruction]
    program_offset: int
    bounds: dict[str, int]
    plan: dict

    @property
    def macs(self) -> int:
        return self.layer.macs


@dataclass
class CompiledModel:
    config: NpuConfig
    network: Network
    mode: str
    image: DramImage
    addresses: dict[int, int]
    layers: list[CompiledLayer]
    #: Attention layer name -> DRAM offset of its additive mask (int32, per image and key).
    mask_offsets: dict[str, int] = field(default_factory=dict)
    #: Zero-point columns stored left and right of each row of the input (tap-packed readers).
    input_padding: tuple[int, int] = (0, 0)
    #: Activations kept in the scratchpad between layers (by tensor name), and where.
    on_chip: dict[str, OnChipLayout] = field(default_factory=dict)

    def address(self, tensor: Tensor) -> int:
        return self.addresses[id(tensor)]

    def input_bytes(self, codes: np.ndarray) -> bytes:
        """The network input's DRAM bytes for quantised ``codes`` (ONNX layout)."""
        x = self.network.input
        stored = x.to_storage(codes)
        if any(self.input_padding):
            stored = np.pad(stored, ((0, 0), (0, 0), self.input_padding, (0, 0)),
                            constant_values=x.quant.stored_zero_point)
        return stored.tobytes()

    def host_segments(self, host_values: dict[str, np.ndarray], *, batch: int
                      ) -> list[tuple[int, bytes]]:
        """What the host writes before the first layer, as (offset, bytes): the attention
        masks from the host part of the graph (``Network.host_model``) in accumulator steps."""
        from .transformer_lowering import mask_bias

        segments = []
        for compiled in self.layers:
            layer = compiled.layer
            if isinstance(layer, Attention) and layer.mask is not None:
                bias = mask_bias(layer, host_values[layer.mask], batch=batch,
                                 cols=self.config.cols)
                segments.append((self.mask_offsets[layer.name], bias.tobytes()))
        return segments

    def relocated(self, base: int) -> list[tuple[int, bytes]]:
        """The DRAM image as (address, bytes) segments, programs included, placed at ``base``."""
        segments = [(base + offset, data) for offset, data in self.image.segments]
        for compiled in self.layers:
            moved = [ins.replace(dram_addr=ins.dram_addr + base)
                     if ins.opcode in (Opcode.LOAD, Opcode.STORE) else ins
                     for ins in compiled.instructions]
            segments.append((base + compiled.program_offset,
                             encode_program(moved, instruction_bytes=self.config.instruction_bytes)))
        return segments


def compile_network(network: Network, config: NpuConfig, *, requant: str = "fp32",
                    chain: bool = True) -> CompiledModel:
    """Every layer of ``network`` as one NPU program, with the DRAM image they use. With
    ``chain``, activations that fit stay in the scratchpad from layer to layer
    (:func:`plan_on_chip`); the others, and all with ``chain=False``, go through DRAM."""
    if requant not in REQUANT_MODES:
        raise ValueError(f"Requant mode must be one of {REQUANT_MODES}, not {requant!r}")
    dram_padding = dram_column_padding(network, config, requant)
    excluded: set[int] = set()
    while True:
        image = DramImage()
        lowering = _Lowering(config, image, {}, requant, dram_padding)
        on_chip = plan_on_chip(network, config, walks_scratchpad=lowering.walks_scratchpad,
                               excluded=frozenset(excluded)) if chain else {}
        lowering.on_chip = on_chip
        for tensor in network.tensors:
            if id(tensor) in on_chip:
                continue
            if id(tensor.storage) not in lowering.addresses:
                n, h, w, c = tensor.shape
                left, right = dram_padding.get(id(tensor), (0, 0))
                lowering.addresses[id(tensor.storage)] = image.region(
                    tensor.nbytes + n * h * (left + right) * c)
            lowering.addresses[id(tensor)] = lowering.addresses[id(tensor.storage)]
        layers = []
        try:
            for index, layer in enumerate(network.layers):
                live = [key for key, layout in on_chip.items() if index in layout.live]
                lowering.scratchpad_rows = min((on_chip[key].base for key in live),
                                               default=config.scratchpad_depth)
                try:
                    instructions = lowering.lower(layer)
                except CompileError:
                    if not live:
                        raise
                    excluded.update(live)  # this layer needs the whole scratchpad: spill
                    raise _Retry from None
                program_offset = image.region(len(instructions) * config.instruction_bytes)
                layers.append(CompiledLayer(name=layer.name, op=layer.op, layer=layer,
                                            instructions=instructions,
                                            program_offset=program_offset,
                                            bounds=layer_bounds(config, layer),
                                            plan=lowering.plan))
        except _Retry:
            continue
        return CompiledModel(config=config, network=network, mode=requant, image=image,
                             addresses=lowering.addresses, layers=layers,
                             mask_offsets=lowering.mask_offsets,
                             input_padding=dram_padding.get(id(network.input), (0, 0)),
                             on_chip={tensor.name: on_chip[id(tensor)] for tensor in network.tensors
                                      if id(tensor) in on_chip})


class _Retry(Exception):
    """Compile again, with the activations that crowded a layer out of the scratchpad in DRAM."""
