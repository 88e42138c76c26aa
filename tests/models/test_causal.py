"""BC-ResNet with ``temporal_padding="causal"``: same parameters, no look-ahead, and both rewrites still exact."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from kwsbench.errors import ModelError
from kwsbench.measure.optimize import inference_graph
from kwsbench.models import create_model, list_models
from kwsbench.models.layers import CausalConv2d, ChannelsLastCausalConv2d
from kwsbench.models.reformulate import for_training

WIDTHS = list_models("bcresnet_*")


def _trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with non-trivial BatchNorm statistics (fresh ones are the identity and hide folding slips)."""
    generator = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)
    return model.eval()


def _frames(model, x: torch.Tensor) -> torch.Tensor:
    """The per-frame embeddings the tail averages: ``(B, 1, 40, T) -> (B, hidden, 1, T)``."""
    return model.tail.frame_embeddings(model.blocks(model.head(x)))


@pytest.mark.parametrize("name", WIDTHS)
def test_causal_keeps_the_parameter_count_and_names(name):
    same, causal = create_model(name), create_model(name, temporal_padding="causal")
    assert sum(p.numel() for p in causal.parameters()) == sum(p.numel() for p in same.parameters())
    assert list(causal.state_dict()) == list(same.state_dict())
    # head 5x5, 12 blocks' 1x3 and the tail's 5x5: every convolution with temporal extent
    assert sum(isinstance(m, CausalConv2d) for m in causal.modules()) == 14
    assert not any(isinstance(m, CausalConv2d) for m in same.modules())


@pytest.mark.parametrize("name", ["bcresnet_1", "bcresnet_8"])
def test_output_at_a_frame_does_not_depend_on_later_frames(name):
    torch.manual_seed(0)
    causal = _trained_like(create_model(name, temporal_padding="causal"))
    same = copy.deepcopy(causal)
    for a, b in zip(same.modules(), causal.modules(), strict=True):  # the same weights, centred padding
        if isinstance(b, CausalConv2d):
            a.__class__ = torch.nn.Conv2d
            a.padding = (a.padding[0], b.causal_padding // 2)
    x = torch.randn(1, 1, 40, 60)
    t = 35
    future = x.clone()
    future[..., t + 1 :] += torch.randn_like(future[..., t + 1 :])
    with torch.no_grad():
        before, after = _frames(causal, x), _frames(causal, future)
        assert torch.equal(before[..., : t + 1], after[..., : t + 1])
        assert not torch.equal(before[..., t + 1 :], after[..., t + 1 :])
        # The centred model with the same weights does look ahead (the check above can fail).
        assert not torch.allclose(_frames(same, x)[..., : t + 1], _frames(same, future)[..., : t + 1])


@pytest.mark.parametrize("name", ["bcresnet_1", "bcresnet_3"])
def test_inference_graph_stays_causal_and_exact(name):
    torch.manual_seed(0)
    model = _trained_like(create_model(name, temporal_padding="causal").double())
    graph = inference_graph(model, (1, 1, 40, 101))
    # 12 fused pool+conv of the blocks, the head and the tail stay causal convolutions
    assert sum(isinstance(m, CausalConv2d) for m in graph.modules()) == 14
    x = torch.randn(2, 1, 40, 101, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
        # float64: the rewritten graph sums the same products in another order, a few float64 ulps of
        # the output (2.2e-16 relative); 64 ulps still catches a padding slip (which moves it by percents).
        atol = 64 * torch.finfo(torch.float64).eps * expected.abs().max().item()
        torch.testing.assert_close(graph(x), expected, rtol=0, atol=atol)


def test_training_reformulation_is_exact_and_channels_last():
    torch.manual_seed(0)
    reference = create_model("bcresnet_1", temporal_padding="causal").double().train()
    source = copy.deepcopy(reference)
    fast = for_training(source)
    assert sum(isinstance(m, ChannelsLastCausalConv2d) for m in fast.modules()) == 14
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(4, 1, 40, 101, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 12, (4,), generator=generator)
    losses = []
    for model in (reference, fast):
        torch.manual_seed(1)  # the same Dropout2d masks in both formulations
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        losses.append(loss.detach())
    # float64 as in test_reformulate: two summation orders differ by ~1e-11 relative; a wrong pad by percents
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-5)
    for (key, a), (_, b) in zip(reference.named_parameters(), source.named_parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-5, msg=key)


def test_unknown_temporal_padding_is_one_line():
    with pytest.raises(ModelError, match="temporal_padding must be 'same' or 'causal', got 'left'") as err:
        create_model("bcresnet_1", temporal_padding="left")
    assert "\n" not in str(err.value)
