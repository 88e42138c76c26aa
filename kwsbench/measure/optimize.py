"""kwsbench's exactly equivalent inference graph: a model rewritten for eval-mode speed, same outputs.

``inference_graph(model, input_shape)`` returns a new module (the original is untouched), rewritten in
two walks of ``kwsbench.models.rewrite.rewrite_tree``:

1. Each module of ours replaces itself through its ``for_inference`` hook, knowing the shapes it sees on
   ``input_shape``: SubSpectral Norm, a per-(channel, sub-band) affine in eval, becomes per-(channel,
   frequency) constants (one ``Mul`` and one ``Add`` instead of ``Reshape -> BatchNorm -> Reshape``);
   frequency pooling becomes a plain mean / max reduction; a BC-ResBlock fuses its average over frequency
   into the temporal depthwise convolution after it (one full-height depthwise convolution with the
   weights divided by ``F``: zero padding in time commutes with the average, so this is exact, and it
   removes a reduction per block).
2. PyTorch's layers, which cannot carry hooks, through one table (``_torch_layer``): BatchNorm is folded
   into the neighbouring convolution (``conv -> BN`` always, ``BN -> conv`` when the convolution has no
   padding (a 1x1 conv), because zero padding of a shifted input is not a shift); Dropout is removed;
   adaptive average pooling to 1x1 becomes a plain mean (ONNX ``ReduceMean`` instead of an
   ``AveragePool`` with a derived kernel). Running second, it also folds the BatchNorms that step 1's
   replacements leave next to a convolution.

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

from kwsbench.models.fused import ChannelFrequencyAffine, FrequencyReduce, bn_scale_shift
from kwsbench.models.layers import SubSpectralNorm
from kwsbench.models.rewrite import InferenceContext, rewrite_tree

__all__ = [
    "ChannelFrequencyAffine",
    "FrequencyReduce",
    "GlobalMean",
    "fold_bn_conv",
    "fold_conv_bn",
    "inference_graph",
    "merge_add_chains",
    "ssn_as_affine",
]

_CONV = (nn.Conv1d, nn.Conv2d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)


class GlobalMean(nn.Module):
    """Mean over every axis after the channels, kept as size 1: ``(B, C, *S) -> (B, C, 1, ...)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


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
    scale, shift = bn_scale_shift(bn)
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
    scale, shift = bn_scale_shift(bn)
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
    return ssn.as_affine(frequencies)


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


def _torch_layer(module: nn.Module, _ancestors: tuple[nn.Module, ...]) -> nn.Module:
    """The eval-mode replacement of a PyTorch layer (children already rewritten), else the module itself."""
    if isinstance(module, _DROPOUT):
        return nn.Identity()
    if isinstance(module, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
        size = module.output_size
        if all(s == 1 for s in (size if isinstance(size, tuple) else (size,))):
            return GlobalMean()
    if isinstance(module, nn.Sequential):
        return nn.Sequential(*_fold_sequence(_flatten(module)))
    return module


def _own_form(context: InferenceContext):
    def visit(module: nn.Module, _ancestors: tuple[nn.Module, ...]) -> nn.Module:
        hook = getattr(module, "for_inference", None)
        return module if hook is None else hook(context)

    return visit


def _observe(model: nn.Module, example: torch.Tensor) -> InferenceContext:
    """The input and output shape every module of ``model`` sees on ``example`` (one forward pass)."""
    inputs: dict[int, tuple[int, ...]] = {}
    outputs: dict[int, tuple[int, ...]] = {}

    def record(module: nn.Module, args: tuple, output) -> None:
        if args and isinstance(args[0], torch.Tensor):
            inputs[id(module)] = tuple(args[0].shape)
        if isinstance(output, torch.Tensor):
            outputs[id(module)] = tuple(output.shape)

    hooks = [m.register_forward_hook(record) for m in model.modules()]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return InferenceContext(inputs, outputs)


def inference_graph(model: nn.Module, input_shape: tuple[int, ...]) -> nn.Module:
    """An eval-mode copy of ``model`` rewritten as above; exact for inputs shaped like ``input_shape``.

    The frequency size of each SubSpectral Norm is fixed by ``input_shape`` (its constants are per
    frequency), so the graph is valid for any batch and frame count with that frequency size.
    """
    graph = copy.deepcopy(model).eval()
    dtype = next((p.dtype for p in graph.parameters()), torch.float32)  # a float64 model sees float64
    context = _observe(graph, torch.zeros(input_shape, dtype=dtype))
    graph = rewrite_tree(graph, _own_form(context))
    graph = rewrite_tree(graph, _torch_layer)
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
