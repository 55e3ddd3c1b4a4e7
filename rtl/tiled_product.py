"""Products wider than one ECP5 MULT18X18D, split into multiplier-sized tiles and summed over
pipeline stages (used by the GELU lane and the softmax unit).

A MULT18X18D multiplies two 18-bit signed operands, so a tile operand is a 17-bit unsigned chunk
of an operand, or the top chunk of a signed operand (at most 18 bits, signed). Every tile product
is registered straight out of its multiplier; an adder tree then sums the tiles with a register
after every level (each adder is one carry chain starting where its two terms overlap: the low
bits of the lower term pass through). The operands must come from registers. A small tile (a
chunk of a few bits, or a constant chunk with few signed digits) may be built from adders
instead, which saves a MULT18X18D for a few dozen LUTs.
"""

from itertools import product
from math import prod

from amaranth import Cat, Const, Mux, Shape, Value

__all__ = ["TILE_BITS", "tiled_product"]

TILE_BITS = 17  # unsigned bits of a tile operand


def _range_shape(low: int, high: int) -> Shape:
    return Shape.cast(range(low, high + 1))


def _extend(value, width: int):
    """``value`` sign- or zero-extended to at least ``width`` bits."""
    if len(value) >= width:
        return value
    if value.shape().signed:
        return Cat(value, value[-1].replicate(width - len(value))).as_signed()
    return Cat(value, Const(0, width - len(value)))


def _chunks(operand):
    """[(chunk, offset, low, high)]: the tile operands of ``operand`` (a Value, or a non-negative
    int) and the range of each. Constant chunks that are zero are left out."""
    if isinstance(operand, int):
        assert operand >= 0
        return [(chunk, offset, chunk, chunk)
                for offset in range(0, max(operand.bit_length(), 1), TILE_BITS)
                if (chunk := operand >> offset & (1 << TILE_BITS) - 1)]
    value = Value.cast(operand)
    shape = value.shape()
    chunks, offset = [], 0
    while True:
        rest = shape.width - offset
        if shape.signed and rest <= TILE_BITS + 1:
            top = value[offset:].as_signed()
            return chunks + [(top, offset, -(1 << (rest - 1)), (1 << (rest - 1)) - 1)]
        if not shape.signed and rest <= TILE_BITS:
            return chunks + [(value[offset:], offset, 0, (1 << rest) - 1)]
        chunks.append((value[offset:offset + TILE_BITS], offset, 0, (1 << TILE_BITS) - 1))
        offset += TILE_BITS


def _signed_digits(constant: int):
    """[(digit, position)]: the canonical signed-digit form of a positive ``constant`` (digits
    +1 and -1, the fewest non-zero ones)."""
    digits, position = [], 0
    while constant:
        if constant & 1:
            digit = 2 - (constant & 3)
            digits.append((digit, position))
            constant -= digit
        constant >>= 1
        position += 1
    return digits


def _factors(constant: int):
    """The factors of a positive ``constant`` to multiply by one after another with the fewest
    adders (each factor by its signed digits, ``len(digits) - 1`` adders)."""
    best = [constant]
    best_cost = len(_signed_digits(constant)) - 1
    for factor in range(3, int(constant ** 0.5) + 1, 2):
        if constant % factor == 0:
            rest = _factors(constant // factor)
            cost = len(_signed_digits(factor)) - 1 + sum(len(_signed_digits(f)) - 1 for f in rest)
            if cost < best_cost:
                best, best_cost = [factor, *rest], cost
    return best


def _add_terms(terms):
    """The sum of ``terms`` [(value, negative)] by a balanced tree of adders."""
    while len(terms) > 1:
        paired = []
        for index in range(0, len(terms), 2):
            if index + 1 == len(terms):
                paired.append(terms[index])
                continue
            (x, x_negative), (y, y_negative) = terms[index], terms[index + 1]
            if x_negative == y_negative:
                paired.append((x + y, x_negative))
            else:
                paired.append((y - x, False) if x_negative else (x - y, False))
        terms = paired
    value, negative = terms[0]
    return -value if negative else value


def _shift_add(a, b):
    """``a * b`` from adders alone: by the factors of a constant operand, each by its signed
    digits, or by the bits of the narrower (unsigned) operand."""
    if isinstance(a, int):
        a, b = b, a
    if isinstance(b, int):
        for factor in _factors(b):
            a = _add_terms([(a << position, digit < 0)
                            for digit, position in _signed_digits(factor)])
        return a
    if len(a) < len(b):
        a, b = b, a
    assert not b.shape().signed
    return _add_terms([(Mux(b[i], a, 0) << i, False) for i in range(len(b))])


def tiled_product(stage, a, b, *, name: str, lut_tiles=()):
    """``a * b`` through registers: (the registered product, the number of register stages).

    ``stage(shape, value, name)`` makes one pipeline register. ``a`` and ``b`` are registered
    Values (or one of them a non-negative int constant). The first stage registers the tile
    products, each further stage one level of the adder tree. ``lut_tiles`` holds the tiles
    (the bit offsets of their ``a`` and ``b`` chunks) built from adders instead of a
    multiplier: a small constant with few signed digits, or a chunk of a few bits.
    """
    tiles = list(product(_chunks(a), _chunks(b)))
    terms = []  # (value, offset, low, high, factor): value * factor in low .. high
    for index, ((va, oa, la, ha), (vb, ob, lb, hb)) in enumerate(tiles):
        corners = (la * lb, la * hb, ha * lb, ha * hb)
        low, high = min(corners), max(corners)
        factor = 1
        if (oa, ob) not in lut_tiles:
            value = va * vb
        elif isinstance(va, int) or isinstance(vb, int):
            # a constant's last factor waits for the first adder level, which then has two
            # carry chains in a row as this stage has (at most three would be too slow)
            constant, variable = (va, vb) if isinstance(va, int) else (vb, va)
            *first, factor = _factors(constant)
            if not first or len(tiles) == 1:
                first, factor = [*first, factor], 1
            value = _shift_add(variable, prod(first))
        else:
            value = _shift_add(va, vb)
        terms.append((stage(_range_shape(low // factor, high // factor), value,
                            f"{name}_p{index}"), oa + ob, low, high, factor))
    stages, level = 1, 0
    while len(terms) > 1:
        terms.sort(key=lambda term: term[1])
        terms = [(_shift_add(value, factor) if factor != 1 else value, offset, low, high)
                 for value, offset, low, high, factor in terms]
        summed = []
        for index in range(0, len(terms), 2):
            if index + 1 == len(terms):
                value, offset, low, high = terms[index]
            else:
                (va, oa, la, ha), (vb, ob, lb, hb) = terms[index], terms[index + 1]
                shift = ob - oa
                va = _extend(va, shift + 1)
                upper = (va >> shift) + vb  # the sum above bit ``shift``; below it ``va`` alone
                value = Cat(va[:shift], upper)
                if upper.shape().signed:
                    value = value.as_signed()
                offset, low, high = oa, la + (lb << shift), ha + (hb << shift)
            summed.append((stage(_range_shape(low, high), value, f"{name}_s{level}_{index // 2}"),
                           offset, low, high, 1))
        terms = summed
        stages += 1
        level += 1
    value, offset, _, _, _ = terms[0]
    if offset:
        value = Cat(Const(0, offset), value)
        if terms[0][2] < 0:
            value = value.as_signed()
    return value, stages
