"""The ``residual="int32"`` precision option: residual sums and layernorm inputs at accumulator
precision instead of the int8 the ONNX graph quantises them to.

Real transformers carry outlier channels in the residual stream (one dimension 100x larger than
the rest). With per-tensor int8 activations, the int8 residual sum then has a scale set by the
outlier and every other channel is left with a step or two; onnxruntime's own int8 result loses
the same. The hardware's layernorm reads int32 accumulator rows, so nothing forces that
rounding: this pass replaces every ``Add`` whose only consumer is a ``LayerNorm`` by one
:class:`~sw.graph.ResidualLayerNorm` that sums its operands in the accumulator and normalises
the int32 sum.

The sum is exact. An int8 operand enters through an identity weight tile times an integer
``m`` (1..127), so the operands' scales must have integer ratios to a common unit:

- the network input (the first residual) is quantised by the host a second time, to int32 at
  ``unit = s_other / 127``, and the other operand enters with ``m = 127``;
- for two int8 operands, the one produced by a projection is requantised to a scale
  ``s' = s_y * m_y / m_f >= s_f`` (the smallest such ratio with both multipliers in 1..127),
  so ``sum = (s_y / m_f) * (m_y * f + m_f * y)``.
"""

from __future__ import annotations

import numpy as np

from .graph import Add, Conv, LayerNorm, Network, Quantization, ResidualLayerNorm, WideTensor, layer_tensors

__all__ = ["RESIDUAL_MODES", "keep_residuals_int32"]

RESIDUAL_MODES = ("int8", "int32")
_MAX_MULTIPLIER = 127


def _ratio(scale_f: float, scale_y: float) -> tuple[int, int]:
    """(m_f, m_y) in 1..127 with s_y * m_y / m_f >= s_f, as close to s_f as possible."""
    best = None
    for m_f in range(1, _MAX_MULTIPLIER + 1):
        m_y = int(np.ceil(scale_f * m_f / scale_y - 1e-12))
        if 1 <= m_y <= _MAX_MULTIPLIER:
            candidate = scale_y * m_y / m_f
            if best is None or candidate < best[0]:
                best = (candidate, m_f, m_y)
    if best is None:
        raise ValueError(f"no integer ratio up to {_MAX_MULTIPLIER} covers residual operand "
                         f"scales {scale_f:g} and {scale_y:g}")
    return best[1], best[2]


def keep_residuals_int32(network: Network) -> Network:
    """Fuse every Add -> LayerNorm pair of ``network`` at int32 precision (in place: the
    projections feeding them get new output scales); returns the network."""
    layers = list(network.layers)
    consumers: dict[int, list] = {}
    for layer in layers:
        for tensor in layer_tensors(layer)[:-1]:
            consumers.setdefault(id(tensor), []).append(layer)
    producers = {id(layer.output): layer for layer in layers}
    residual_input = None
    result = []
    skip = set()
    for layer in layers:
        if id(layer) in skip:
            continue
        users = consumers.get(id(layer.output), [])
        if not (isinstance(layer, Add) and len(users) == 1 and isinstance(users[0], LayerNorm)
                and layer.output is not network.output and layer.clip == (-128, 127)):
            result.append(layer)
            continue
        norm = users[0]
        a, b = layer.a, layer.b
        if network.input in (a, b):
            other = b if a is network.input else a
            unit = float(other.quant.scale) / _MAX_MULTIPLIER
            if residual_input is None:
                residual_input = WideTensor(f"{network.input.name}_int32", network.input.shape,
                                            unit)
            elif residual_input.scale != unit:
                raise ValueError(f"{layer.name}: the network input feeds two residual sums")
            terms, wide = [(other, _MAX_MULTIPLIER)], residual_input
        else:
            f, y = (a, b) if _rescalable(a, producers, consumers) else (b, a)
            m_f, m_y = _ratio(float(f.quant.scale), float(y.quant.scale))
            unit = float(y.quant.scale) / m_f
            if _rescalable(f, producers, consumers):
                _rescale(producers[id(f)], float(y.quant.scale) * m_y / m_f)
            else:  # keep f's scale: the ratio is then the closest one, not exact
                m_y = max(1, min(_MAX_MULTIPLIER, round(float(f.quant.scale) / unit)))
            terms, wide = [(f, m_y), (y, m_f)], None
        result.append(ResidualLayerNorm(f"{layer.name}+{norm.name}", terms, wide, norm.output,
                                        norm.gamma, norm.beta, norm.epsilon, unit))
        skip.add(id(norm))
    network.layers, network.residual_input = result, residual_input
    return network


def _rescalable(tensor, producers, consumers) -> bool:
    producer = producers.get(id(tensor))
    return isinstance(producer, Conv) and len(consumers.get(id(tensor), [])) == 1 \
        and not producer.output.channel_major


def _rescale(conv: Conv, scale: float):
    """Give the projection's output a new (coarser or equal) scale, same zero point."""
    old = conv.output.quant
    conv.output.quant = Quantization(np.float32(scale), old.zero_point, old.dtype)
    factor = float(old.scale) / float(conv.output.quant.scale)
    conv.real_multiplier = conv.real_multiplier * factor
    conv.scale = conv.real_multiplier.astype(np.float32)
