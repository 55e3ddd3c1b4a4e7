"""Arithmetic building blocks shared by the vector unit's lanes (plain functions, no state)."""

from amaranth import Cat, Const, Module, Mux, Signal

__all__ = ["add_constant_as_logic", "fits_signed", "in_range", "leading_zeros", "multiplier_parts",
           "round_half_even", "shift_right_rounding_bits"]


def leading_zeros(m: Module, value) -> Signal:
    """The number of leading zeros of ``value`` (its width when zero), as a log-depth tree."""
    width = len(value)
    padded = 2
    while padded <= width:  # at least one pad bit, a one below the value: the count stops there
        padded *= 2
    bits = Cat(Const((1 << (padded - width)) - 1, padded - width), value)

    def tree(v):
        """(count, all zero) of a power-of-two number of bits."""
        if len(v) == 2:
            return ~v[1], ~v[1] & ~v[0]
        half = len(v) // 2
        count_high, zero_high = tree(v[half:])
        count_low, zero_low = tree(v[:half])
        return Mux(zero_high, Cat(count_low, Const(1, 1)), Cat(count_high, Const(0, 1))), \
            zero_high & zero_low

    count = Signal(range(width + 1))
    m.d.comb += count.eq(tree(bits)[0])
    return count


def round_half_even(kept, guard, sticky):
    """1 when a value truncated to ``kept`` must round up (nearest, ties to even)."""
    return guard & (sticky | kept[0])


def fits_signed(value, width: int):
    """1 when the signed ``value`` lies in -2^(width-1)..2^(width-1)-1: its bits from
    ``width - 1`` up all copy the sign (logic only, no carry chain)."""
    top = value[width - 1:]
    return top.all() | ~top.any()


def in_range(value, low: int, high: int):
    """1 when ``low <= value <= high`` for a signed ``value``: the bits above the range's own
    width must copy the sign; only that narrow width is compared."""
    width = max((-low - 1).bit_length() if low < 0 else 0, high.bit_length()) + 1
    narrow = value[0:width].as_signed()
    result = fits_signed(value, width)
    if low > -(1 << (width - 1)):
        result = result & (narrow >= low)
    if high < (1 << (width - 1)) - 1:
        result = result & (narrow <= high)
    return result


def shift_right_rounding_bits(value, amount):
    """``(whole, guard, sticky)``: ``whole`` = floor(value / 2^amount) (``value``'s width and
    signedness), ``guard`` its first bit below (bit ``amount - 1`` of ``value``; 0 when
    ``amount`` is 0) and ``sticky`` whether any bit below the guard bit is set."""
    width = len(value)
    extended = Cat(Const(0, 1), value)
    if value.shape().signed:
        extended = extended.as_signed()
    shifted = extended >> amount
    ones = Const((1 << (width + 1)) - 1, width + 1)
    below_guard = (~(ones << amount))[1:width + 1]  # bit i: i + 1 < amount
    whole = shifted[1:width + 1]
    return (whole.as_signed() if value.shape().signed else whole), shifted[0], \
        (value & below_guard).any()


def multiplier_parts(value, *, port: int = 18):
    """``value`` as ``[(offset, part)]`` whose weighted sum it is, each part fitting a ``port``-bit
    signed multiplier input (ECP5 MULT18X18D: 18): unsigned ``port - 1``-bit parts from the
    bottom, the top part keeping ``value``'s signedness. Multiply two such lists part by part
    (one multiplier each) to build a wide product from registered partial products."""
    signed_value = value.shape().signed
    chunk = port - 1
    parts, offset = [], 0
    while len(value) - offset > (port if signed_value else chunk):
        parts.append((offset, value[offset:offset + chunk]))
        offset += chunk
    top = value[offset:]
    parts.append((offset, top.as_signed() if signed_value else top))
    return parts


def add_constant_as_logic(value, constant: int):
    """``value + constant`` for an unsigned ``value`` (one bit wider than it) as a ripple of
    gates rather than an adder: yosys maps an adder to a carry chain, whose entry and exit cost
    more than a few LUT levels when ``value`` is narrow."""
    assert 0 <= constant < 1 << len(value)
    bits, carry = [], Const(0, 1)
    for index in range(len(value)):
        bit = value[index]
        if constant >> index & 1:
            bits.append(~(bit ^ carry))
            carry = bit | carry
        else:
            bits.append(bit ^ carry)
            carry = bit & carry
    return Cat(*bits, carry)
