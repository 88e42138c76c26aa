"""for_training(model) computes the registered model's function: same loss, gradients, statistics and keys."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from calibrated import calibrate, float64_output, parity_atol
from torch import nn

from kwsbench.models import create_model, list_models, model_info
from kwsbench.models.layers import Conv2dSame, FrequencyPool, SubSpectralNorm
from kwsbench.models.reformulate import (
    ChannelsLastConv2d,
    ChannelsLastConv2dSame,
    FastFrequencyPool,
    FastSubSpectralNorm,
    SmallChannelBatchNorm2d,
    for_training,
    to_channels_last,
)


def _pair(name: str, dtype: torch.dtype) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(reference, copy of it, for_training(copy)) with equal weights in ``dtype``."""
    torch.manual_seed(0)
    reference = create_model(name).to(dtype).train()
    source = copy.deepcopy(reference)
    return reference, source, for_training(source)


def _step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # Same generator state before each forward: Dropout2d draws the same masks in both formulations,
    # because the reformulation leaves Dropout2d (and the order of the draws) unchanged.
    torch.manual_seed(1)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss.detach()


@pytest.mark.parametrize("name", list_models())
def test_same_loss_gradients_statistics_and_keys(name):
    # float64 so that rounding (1e-16) cannot move a pre-activation across ReLU's kink: in float32 the two
    # formulations differ by ~1e-6 (other summation orders), and one such flip changes a weight gradient
    # by percents while both formulations are correct.
    reference, source, fast = _pair(name, torch.float64)
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(model_info(name).input.shape(4), generator=generator, dtype=torch.float64)
    y = torch.randint(0, 12, (4,), generator=generator)
    # 1e-5 in float64: the two summation orders differ by at most 6e-11 relative (float64 rounding, any CPU);
    # a wrong formula (a band, a statistic, a merge) moves a loss or gradient by percents.
    torch.testing.assert_close(_step(fast, x, y), _step(reference, x, y), rtol=1e-5, atol=1e-5)
    for (key, a), (_, b) in zip(reference.named_parameters(), source.named_parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-5, msg=f"{name} gradient {key}")
    for (key, a), (_, b) in zip(reference.named_buffers(), source.named_buffers(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5, msg=f"{name} buffer {key}")
    assert list(fast.state_dict()) == list(reference.state_dict())
    reference.eval()
    fast.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(x), reference(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "name", ["bcresnet_1", "resnet2d_w1_ssn", "table2_freq_maxpool", "dscnn_s", "res8_narrow"]
)
def test_float32_loss_and_eval_outputs(name):
    # The float32 kernels the fast path is for (oneDNN NHWC convolutions); loss and outputs are continuous
    # in the rounding, unlike the gradients (see the float64 test).
    reference, source, fast = _pair(name, torch.float32)
    shape = model_info(name).input.shape(8)
    calibrate(reference, shape, seed=0)  # logits that depend on every layer
    source.load_state_dict(reference.state_dict())  # copied in place, into the tensors fast shares
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    y = torch.arange(8) % 12
    reference.train()
    fast.train()
    # A cross-entropy of about 2.5 after a few hundred float32 operations: two summation orders differ by
    # ~1e-7 relative; 1e-5 (80 eps32) leaves room for any CPU's kernels, a wrong formula moves it by percents.
    torch.testing.assert_close(_step(fast, x, y), _step(reference, x, y), rtol=1e-5, atol=0)
    reference.eval()
    fast.eval()
    with torch.no_grad():
        diff = (fast(x).double() - float64_output(reference, x)).abs().max().item()
    assert diff <= parity_atol(
        reference, x
    )  # float32 against the float64 model; reason in tests/calibrated.py


def test_rewrites_bcresnet_and_leaves_the_reference_alone():
    reference = create_model("bcresnet_1")
    fast = for_training(reference)
    kinds = {type(m) for m in fast.modules()}
    assert {ChannelsLastConv2d, FastFrequencyPool, FastSubSpectralNorm, SmallChannelBatchNorm2d} <= kinds
    assert nn.Conv2d not in kinds and nn.AdaptiveAvgPool2d not in kinds and nn.BatchNorm2d not in kinds
    # The reference keeps the straightforward modules that fvcore counts and exporters trace.
    reference_kinds = {type(m) for m in reference.modules()}
    assert {nn.Conv2d, FrequencyPool, SubSpectralNorm, nn.AdaptiveAvgPool2d} <= reference_kinds
    assert not reference_kinds & {
        ChannelsLastConv2d,
        ChannelsLastConv2dSame,
        FastFrequencyPool,
        FastSubSpectralNorm,
        SmallChannelBatchNorm2d,
    }


def _norm_step(norm: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Two training steps (running statistics move twice), then one eval forward; output and gradients."""
    x = x.clone().requires_grad_()
    for _ in range(2):
        y = norm.train()(x)
    y.backward(grad)
    params = [p.grad for p in norm.parameters()]
    return (y, x.grad, *params, *norm.buffers(), norm.eval()(x))


@pytest.mark.parametrize(
    ("reference", "fast_class"),
    [
        (lambda: nn.BatchNorm2d(12), SmallChannelBatchNorm2d),
        (lambda: nn.BatchNorm2d(20, affine=False, momentum=None), SmallChannelBatchNorm2d),  # cumulative
        (lambda: SubSpectralNorm(8, 5), FastSubSpectralNorm),
        (lambda: SubSpectralNorm(16, 2), FastSubSpectralNorm),
    ],
    ids=["bn12", "bn20-plain-cumulative", "ssn8x5", "ssn16x2"],
)
def test_nhwc_norms_match_the_reference_forward_backward_and_statistics(reference, fast_class):
    torch.manual_seed(0)
    ref = reference().double()
    for p in ref.parameters():
        torch.nn.init.uniform_(p, 0.5, 1.5)
    fast = copy.deepcopy(ref)
    fast.__class__ = fast_class
    channels = next(m for m in ref.modules() if isinstance(m, nn.BatchNorm2d)).num_features
    channels //= getattr(ref, "num_subbands", 1)
    x = to_channels_last(torch.randn(4, channels, 10, 21, dtype=torch.float64) * 3 + 1)
    grad = to_channels_last(torch.randn(4, channels, 10, 21, dtype=torch.float64))
    expected = _norm_step(ref, x, grad)
    got = _norm_step(fast, x, grad)
    assert got[0].is_contiguous(memory_format=torch.channels_last)
    assert got[1].is_contiguous(memory_format=torch.channels_last)
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        # float64 statistics of 840 values per channel round at ~1e-14; a wrong statistic is off by 1e-3.
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_shares_parameters_and_buffers():
    reference = create_model("bcresnet_1").train()
    fast = for_training(reference)
    for a, b in zip(reference.parameters(), fast.parameters(), strict=True):
        assert a is b
    before = reference.head[1].running_mean.clone()
    optimizer = torch.optim.SGD(fast.parameters(), lr=0.1)
    F.cross_entropy(fast(torch.randn(2, 1, 40, 101)), torch.tensor([0, 1])).backward()
    weight = reference.head[0].weight.clone()
    optimizer.step()
    # An optimiser over the fast model trains the reference's tensors, running statistics included.
    assert not torch.equal(reference.head[0].weight, weight)
    assert not torch.equal(reference.head[1].running_mean, before)


@pytest.mark.parametrize("name", ["dscnn_s", "res8_narrow"])
def test_baselines_with_2d_convolutions_compute_them_channels_last(name):
    kinds = {type(m) for m in for_training(create_model(name)).modules()}
    assert not kinds & {nn.Conv2d, Conv2dSame}
    assert kinds & {ChannelsLastConv2d, ChannelsLastConv2dSame}


def test_maps_stay_channels_last_through_the_blocks():
    fast = for_training(create_model("bcresnet_1")).train()
    out = fast.blocks(fast.head(torch.randn(2, 1, 40, 101)))
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_to_channels_last_gives_nhwc_strides_for_one_channel():
    x = torch.randn(2, 1, 4, 5)
    y = to_channels_last(x)
    assert y.stride() == (20, 1, 5, 1)
    assert torch.equal(y, x)
