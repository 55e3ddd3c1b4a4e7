"""Arithmetic building blocks shared by the vector unit's lanes (plain functions, no state)."""

from amaranth import Cat, Const, Module, Mux, Signal

__all__ = ["leading_zeros", "round_half_even"]


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
