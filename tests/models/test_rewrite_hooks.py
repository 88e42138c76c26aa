"""Blocks own their rewrites: a block defined here, unknown to the library, is rewritten by both rewriters."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from kwsbench.errors import ModelError
from kwsbench.measure.optimize import inference_graph
from kwsbench.models import create_model
from kwsbench.models.layers import FastSubSpectralNorm, SubSpectralNorm
from kwsbench.models.reformulate import ChannelsLastConv2d, for_training, to_channels_last
from kwsbench.models.rewrite import InferenceContext, TrainingContext, rewrite_tree, share_module

F_BINS, FRAMES = 6, 7


class PoolThenConv(nn.Module):
    """Mean over frequency -> 1x1 conv -> BatchNorm: ``(B, C, F, T) -> (B, C, 1, T)``.

    Its hooks mirror BC-ResBlock's: for inference the mean moves into a full-height convolution and the
    BatchNorm stays for the generic fold; for training it has a twin computing the mean as a scaled sum.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.mean(2, keepdim=True))

    def for_inference(self, context: InferenceContext) -> nn.Module:
        frequencies = context.input_shape(self)[2]
        conv = self.body[0]
        c = conv.out_channels
        full = nn.Conv2d(c, c, (frequencies, 1), bias=False)
        full.weight = nn.Parameter(conv.weight.detach().expand(c, c, frequencies, 1) / frequencies)
        return nn.Sequential(full, self.body[1])  # conv -> BN: the rewriter's own table folds it

    def for_training(self, context: TrainingContext) -> nn.Module:
        return share_module(self, FastPoolThenConv)


class FastPoolThenConv(PoolThenConv):
    """``PoolThenConv`` with the mean written as a sum and a scale."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.sum(2, keepdim=True) / x.shape[2])


class ToyNet(nn.Module):
    """3x3 conv -> ReLU -> ``PoolThenConv`` -> flatten: ``(B, 1, F, T) -> (B, C * T)``; no layout declared."""

    def __init__(self, channels: int = 4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.ReLU())
        self.block = PoolThenConv(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.stem(x)).flatten(1)


class ChannelsLastToyNet(ToyNet):
    """``ToyNet`` declaring that everything inside it accepts any memory layout."""

    channels_last_safe = True


def _trained(model: nn.Module) -> nn.Module:
    """``model`` in float64 with non-trivial BatchNorm statistics and affine parameters, in eval mode."""
    torch.manual_seed(0)
    model = model.double().train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 1, F_BINS, FRAMES, dtype=torch.float64) * 2 + 1)
        for p in model.parameters():
            p.add_(torch.rand_like(p))
    return model.eval()


def _input(batch: int = 3) -> torch.Tensor:
    return torch.randn(
        batch, 1, F_BINS, FRAMES, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )


def _tolerance(reference: torch.Tensor) -> float:
    # float64 throughout: the rewritten forms sum the same products in another order, a few float64
    # ulps (2.2e-16 relative) of the output's magnitude; 64 ulps leaves room and still catches any slip.
    return 64 * torch.finfo(torch.float64).eps * reference.abs().max().item()


def test_inference_graph_uses_the_block_hook_then_folds_what_it_returns():
    model = _trained(ToyNet())
    graph = inference_graph(model, (1, 1, F_BINS, FRAMES))
    kinds = [type(m) for m in graph.modules()]
    assert PoolThenConv not in kinds and nn.BatchNorm2d not in kinds  # hook applied, its BN folded
    fused = graph.block[0]
    assert fused.kernel_size == (F_BINS, 1) and fused.bias is not None
    x = _input()
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(graph(x), expected, rtol=0, atol=_tolerance(expected))
    assert isinstance(model.block, PoolThenConv)  # the original is untouched


@pytest.mark.parametrize("declared", [False, True], ids=["undeclared", "channels-last-safe"])
def test_for_training_uses_the_block_hook_and_the_layout_declaration(declared):
    model = _trained(ChannelsLastToyNet() if declared else ToyNet()).train()
    reference = copy.deepcopy(model)
    fast = for_training(model)
    assert type(fast.block) is FastPoolThenConv and type(model.block) is PoolThenConv
    assert all(a is b for a, b in zip(model.parameters(), fast.parameters(), strict=True))
    convs = {type(m) for m in fast.modules() if isinstance(m, nn.Conv2d)}
    assert convs == ({ChannelsLastConv2d} if declared else {nn.Conv2d})
    x = to_channels_last(_input()) if declared else _input()
    stem = fast.stem(x)
    # Undeclared, the maps stay NCHW; declared, the convolution hands NHWC maps on.
    assert stem.is_contiguous(memory_format=torch.channels_last) == declared
    assert stem.is_contiguous() != declared
    expected = reference(x)
    got = fast(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=_tolerance(expected))
    # A random weighting: the plain sum of a training-mode BatchNorm's output is constant, its gradient 0.
    weights = torch.randn(expected.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    (got * weights).sum().backward()
    (expected * weights).sum().backward()
    for (key, a), b in zip(reference.named_parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=_tolerance(a.grad), msg=key)


def test_declaration_reaches_modules_of_ours_inside_it():
    # A TF-"SAME" conv carries its own training hook: inside a declared model it turns channels-last too.
    fast = for_training(create_model("dscnn_s"))
    assert type(fast.head[0]).__name__ == "ChannelsLastConv2dSame"
    tc = for_training(create_model("tcresnet8"))  # declares channels_last_safe = False: stays NCHW
    assert {type(m).__name__ for m in tc.modules()} >= {"Conv2dSame"}
    assert not any(type(m).__name__.startswith("ChannelsLast") for m in tc.modules())


def test_rewrite_tree_visits_children_first_and_shares_without_touching_the_original():
    shared_relu = nn.ReLU()
    tree = nn.Sequential(nn.Sequential(nn.Linear(2, 2), shared_relu), shared_relu)
    order: list[str] = []

    def visit(node: nn.Module, ancestors: tuple[nn.Module, ...]) -> nn.Module:
        order.append(f"{type(node).__name__}@{len(ancestors)}")
        return nn.Tanh() if isinstance(node, nn.ReLU) else node

    new = rewrite_tree(tree, visit, share=True)
    # Bottom-up, and the ReLU registered twice is rewritten once, its replacement registered in both places.
    assert order == ["Linear@2", "ReLU@2", "Sequential@1", "Sequential@0"]
    assert isinstance(new[1], nn.Tanh) and new[1] is new[0][1]
    assert new is not tree and new[0] is not tree[0] and new[0][0].weight is tree[0][0].weight
    assert tree[1] is shared_relu and tree[0][1] is shared_relu  # the original keeps its modules

    in_place = rewrite_tree(tree, visit)
    assert in_place is tree and isinstance(tree[1], nn.Tanh)


@pytest.mark.parametrize("norm_class", [SubSpectralNorm, FastSubSpectralNorm])
def test_subspectral_norm_rejects_a_frequency_size_it_cannot_split(norm_class):
    norm = SubSpectralNorm(4, num_subbands=5)
    norm.__class__ = norm_class
    x = to_channels_last(torch.randn(2, 4, 12, 3))  # the fast form's own path needs NHWC
    with pytest.raises(ModelError, match="frequency size 12, not a multiple of 5") as error:
        norm(x)
    assert "\n" not in str(error.value)


def test_inference_graph_rejects_batch_norm_without_running_statistics():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2, track_running_stats=False))
    with pytest.raises(ModelError, match="track_running_stats=True") as error:
        inference_graph(model, (1, 1, 3, 3))
    assert "\n" not in str(error.value)
