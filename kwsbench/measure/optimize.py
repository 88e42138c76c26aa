"""kwsbench's exactly equivalent inference graph: a model rewritten for eval-mode speed, same outputs.

``inference_graph(model, input_shape)`` returns a new module (the original is untouched) where

* BatchNorm is folded into the neighbouring convolution: ``conv -> BN`` always, ``BN -> conv`` when the
  convolution has no padding (a 1x1 conv), because zero padding of a shifted input is not a shift;
* SubSpectral Norm, a per-(channel, sub-band) affine in eval, becomes constants: a per-(channel,
  frequency) scale and shift (one ``Mul`` and one ``Add`` instead of ``Reshape -> BatchNorm -> Reshape``).
  Folding them into the frequency-depthwise convolution before it needs per-frequency weights; written
  as shifted slices that measured slower on ONNX Runtime (more nodes), so the affine stays separate;
* Dropout is removed, and adaptive average / max pooling to one frequency row (or to 1x1) becomes a
  plain mean / max reduction (ONNX ``ReduceMean`` instead of an ``AveragePool`` with a derived kernel);
* in a BC-ResBlock, the average over frequency and the temporal depthwise convolution after it (and so
  its BatchNorm) become one full-height depthwise convolution with the weights divided by ``F``: zero
  padding in time commutes with the average, so this is exact, and it removes a reduction per block.

On the exported ONNX graph, :func:`merge_add_chains` turns chains of ``Add`` (BC-ResNet's
``aux + temporal + x``) into one ``Sum`` node: fewer nodes, less per-node dispatch at batch 1.

Nothing is approximated: the rewritten graph computes the same function up to float rounding (the parity
tests hold it to 1e-4 absolute against eager). Which runtime then runs it fastest is measured per model
in :mod:`kwsbench.measure.backends`.
"""

from __future__ import annotations

import copy

import onnx
import torch
from torch import nn

from kwsbench.models.bcresnet import BCResBlock
from kwsbench.models.layers import FrequencyPool, SubSpectralNorm

_CONV = (nn.Conv1d, nn.Conv2d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)


class ChannelFrequencyAffine(nn.Module):
    """``y = x * scale + shift`` with constants shaped ``(C, F, 1)``: an eval-mode SubSpectral Norm.

    ``(B, C, F, T) -> (B, C, F, T)``.
    """

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x, self.scale)


class FrequencyReduce(nn.Module):
    """Mean or max over the frequency axis: ``(B, C, F, T) -> (B, C, 1, T)``."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "avg":
            return x.mean(dim=2, keepdim=True)
        return x.amax(dim=2, keepdim=True)


class GlobalMean(nn.Module):
    """Mean over every axis after the channels, kept as size 1: ``(B, C, *S) -> (B, C, 1, ...)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


def _bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """The eval-mode BatchNorm as ``x * scale + shift`` per channel, ``(C,)`` each."""
    assert bn.running_mean is not None and bn.running_var is not None, "BatchNorm without running stats"
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    return scale, shift


def _conv_with(conv: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
    fused = copy.deepcopy(conv)
    fused.weight = nn.Parameter(weight.to(conv.weight.dtype), requires_grad=False)
    fused.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
    return fused


def _conv_bias(conv: nn.Module) -> torch.Tensor:
    return (
        conv.bias.double() if conv.bias is not None else torch.zeros(conv.out_channels, dtype=torch.float64)
    )


def fold_conv_bn(conv: nn.Module, bn: nn.Module) -> nn.Module:
    """``conv -> BN`` as one convolution: output channel ``o`` scaled by ``s[o]``, bias ``b*s + t``."""
    scale, shift = _bn_scale_shift(bn)
    view = (-1,) + (1,) * (conv.weight.dim() - 1)
    return _conv_with(conv, conv.weight.double() * scale.view(view), _conv_bias(conv) * scale + shift)


def _can_fold_bn_into(conv: nn.Module) -> bool:
    # With zero padding the padded border would see the BN shift in the fused form but zeros in the original.
    no_padding = (
        all(p == 0 for p in conv.padding) if not isinstance(conv.padding, str) else conv.padding == "valid"
    )
    return no_padding and (conv.groups == 1 or conv.groups == conv.in_channels == conv.out_channels)


def fold_bn_conv(bn: nn.Module, conv: nn.Module) -> nn.Module:
    """``BN -> conv`` (no padding) as one convolution: input channel ``i`` scaled by ``s[i]``."""
    scale, shift = _bn_scale_shift(bn)
    w = conv.weight.double()
    if conv.groups == 1:
        weight = w * scale.view((1, -1) + (1,) * (w.dim() - 2))
        bias = _conv_bias(conv) + (w.sum(dim=tuple(range(2, w.dim()))) @ shift)
    else:  # depthwise: input channel i feeds output channel i only
        weight = w * scale.view((-1,) + (1,) * (w.dim() - 1))
        bias = _conv_bias(conv) + w.flatten(1).sum(1) * shift
    return _conv_with(conv, weight, bias)


def ssn_as_affine(ssn: SubSpectralNorm, frequencies: int) -> ChannelFrequencyAffine:
    """An eval-mode SubSpectral Norm as per-(channel, frequency) constants ``(C, F, 1)``."""
    scale, shift = _bn_scale_shift(ssn.bn)  # (C * S,), feature c * S + s
    c, s = ssn.num_channels, ssn.num_subbands
    band = frequencies // s

    def per_frequency(v: torch.Tensor) -> torch.Tensor:
        return v.view(c, s, 1).expand(c, s, band).reshape(c, frequencies, 1).float()

    return ChannelFrequencyAffine(per_frequency(scale), per_frequency(shift))


def _fold_pair(a: nn.Module, b: nn.Module) -> nn.Module | None:
    if isinstance(a, _CONV) and isinstance(b, _BN):
        return fold_conv_bn(a, b)
    # Exact classes only: a subclass (e.g. a TF-"SAME" conv) may pad inside its own forward.
    if isinstance(a, _BN) and type(b) in _CONV and _can_fold_bn_into(b):
        return fold_bn_conv(a, b)
    return None


def _flatten(seq: nn.Sequential) -> list[nn.Module]:
    out: list[nn.Module] = []
    for m in seq:
        out.extend(_flatten(m) if isinstance(m, nn.Sequential) else [m])
    return out


def _fold_sequence(mods: list[nn.Module]) -> list[nn.Module]:
    out: list[nn.Module] = []
    for m in mods:
        if isinstance(m, nn.Identity):
            continue
        fused = _fold_pair(out[-1], m) if out else None
        if fused is not None:
            out[-1] = fused
        else:
            out.append(m)
    return out


def fuse_pool_into_temporal_conv(block: BCResBlock, frequencies: int) -> None:
    """In place: ``mean over F -> 1 x k temporal depthwise conv`` becomes one ``F x k`` depthwise conv."""
    if not isinstance(block.pool, FrequencyPool) or block.pool.mode != "avg":
        return  # max over frequency does not commute with the convolution
    temporal = block.f1[0][0]
    c, _, kf, kt = temporal.weight.shape
    assert kf == 1, "BC-ResBlock's temporal convolution has a 1 x k kernel"
    fused = nn.Conv2d(
        c,
        c,
        (frequencies, kt),
        padding=(0, temporal.padding[1]),
        dilation=(1, temporal.dilation[1]),
        groups=c,
        bias=False,
    )
    fused.weight = nn.Parameter(temporal.weight.detach().expand(c, 1, frequencies, kt) / frequencies)
    block.f1[0][0] = fused
    block.pool = nn.Identity()


def _replace(module: nn.Module, freq_of: dict[int, int]) -> nn.Module:
    """The eval-mode replacement of one module (children already rewritten)."""
    if isinstance(module, _DROPOUT):
        return nn.Identity()
    if isinstance(module, SubSpectralNorm) and id(module) in freq_of:
        return ssn_as_affine(module, freq_of[id(module)])
    if isinstance(module, FrequencyPool):
        return FrequencyReduce(module.mode)
    if isinstance(module, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
        size = module.output_size
        if all(s == 1 for s in (size if isinstance(size, tuple) else (size,))):
            return GlobalMean()
    if isinstance(module, nn.Sequential):
        return nn.Sequential(*_fold_sequence(_flatten(module)))
    return module


def _rewrite(module: nn.Module, freq_of: dict[int, int]) -> nn.Module:
    if isinstance(module, BCResBlock) and id(module.pool) in freq_of:
        fuse_pool_into_temporal_conv(module, freq_of[id(module.pool)])
    for name, child in list(module.named_children()):
        setattr(module, name, _rewrite(child, freq_of))
    return _replace(module, freq_of)


def _ssn_frequencies(model: nn.Module, example: torch.Tensor) -> dict[int, int]:
    """The frequency size each SubSpectralNorm and FrequencyPool sees on ``example`` (one forward pass)."""
    sizes: dict[int, int] = {}
    hooks = [
        m.register_forward_pre_hook(lambda mod, args: sizes.__setitem__(id(mod), args[0].shape[2]))
        for m in model.modules()
        if isinstance(m, (SubSpectralNorm, FrequencyPool))
    ]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return sizes


def inference_graph(model: nn.Module, input_shape: tuple[int, ...]) -> nn.Module:
    """An eval-mode copy of ``model`` rewritten as above; exact for inputs shaped like ``input_shape``.

    The frequency size of each SubSpectral Norm is fixed by ``input_shape`` (its constants are per
    frequency), so the graph is valid for any batch and frame count with that frequency size.
    """
    graph = copy.deepcopy(model).eval()
    freq_of = _ssn_frequencies(graph, torch.zeros(input_shape))
    graph = _rewrite(graph, freq_of)
    for p in graph.parameters():
        p.requires_grad_(False)
    return graph


def merge_add_chains(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite ``Add(Add(a, b), c)`` chains as one ``Sum(a, b, c)`` (ONNX ``Sum`` broadcasts like ``Add``).

    An inner ``Add``/``Sum`` is absorbed only when its one use is another ``Add``/``Sum``. Returns a new model.
    """
    model = copy.deepcopy(model)
    graph = model.graph
    summing = ("Add", "Sum")
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}
    # ONNX Sum takes floating-point tensors only; integer Adds (shape arithmetic) stay as they are.
    inferred = onnx.shape_inference.infer_shapes(model).graph
    floating = {
        v.name
        for v in [*inferred.value_info, *inferred.output, *inferred.input]
        if v.type.tensor_type.elem_type in _FLOAT_TYPES
    }
    floating |= {t.name for t in inferred.initializer if t.data_type in _FLOAT_TYPES}
    mergeable = {id(n) for n in graph.node if n.op_type in summing and n.output[0] in floating}
    absorbed = {
        node.output[0]
        for node in graph.node
        if id(node) in mergeable
        and node.output[0] not in graph_outputs
        and len(consumers.get(node.output[0], [])) == 1
        and id(consumers[node.output[0]][0]) in mergeable
    }
    terms: dict[str, list[str]] = {}  # absorbed output -> the terms it adds up
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:  # ONNX stores nodes in topological order, so terms are known when needed
        if id(node) not in mergeable:
            nodes.append(node)
            continue
        inputs = [t for name in node.input for t in terms.get(name, [name])]
        if node.output[0] in absorbed:
            terms[node.output[0]] = inputs
        elif len(inputs) == len(node.input):
            nodes.append(node)
        else:
            nodes.append(onnx.helper.make_node("Sum", inputs, list(node.output), name=node.name))
    del graph.node[:]
    graph.node.extend(nodes)
    return model
