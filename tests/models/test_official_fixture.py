"""BC-ResNet against the official implementation's own outputs, at every width: structure beyond counts.

``<shared>/fixtures/official_bcresnet/`` holds, per width, the official model's state_dict (calibrated,
untrained weights under which every layer moves the logits), an input batch and the official logits in eval
mode and with batch statistics (dropout off). kwsbench's model loads the weights by order and shape and must
reproduce both outputs to float32 rounding: a stage dilation 8 -> 4 moves them by about 0.2, a wrong stride,
padding, sub-band split, pooling or merge order by as much.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from calibrated import parity_atol
from torch import nn

from kwsbench.models import create_model
from kwsbench.settings import shared_data_dir

WIDTHS = {
    "bcresnet_1": 1.0,
    "bcresnet_1_5": 1.5,
    "bcresnet_2": 2.0,
    "bcresnet_3": 3.0,
    "bcresnet_6": 6.0,
    "bcresnet_8": 8.0,
}
TENSORS_PER_MODEL = 195  # parameters and buffers of the official model, at every width


@pytest.fixture(scope="session")
def official_fixtures() -> Path:
    """``<shared>/fixtures/official_bcresnet`` beside the data folder; missing fails the test, never skips."""
    path = shared_data_dir().parent / "fixtures" / "official_bcresnet"
    if not all((path / f"{name}.pt").is_file() for name in WIDTHS):
        pytest.fail(
            f"official BC-ResNet fixtures not found in {path}: set KWSBENCH_SHARED_DATA to <shared>/data "
            "where <shared>/fixtures/official_bcresnet/ holds bcresnet_{1,1_5,2,3,6,8}.pt",
            pytrace=False,
        )
    return path


def load_official(path: Path, name: str) -> tuple[nn.Module, dict]:
    """kwsbench's ``name`` carrying the official weights, mapped by order and shape, and the fixture."""
    fixture = torch.load(path / f"{name}.pt", weights_only=True)
    model = create_model(name)
    ours, theirs = model.state_dict(), fixture["state_dict"]
    assert len(theirs) == len(ours) == TENSORS_PER_MODEL
    mismatched = [
        (a, tuple(x.shape), b, tuple(y.shape))
        for (a, x), (b, y) in zip(ours.items(), theirs.items(), strict=True)
        if x.shape != y.shape
    ]
    assert not mismatched, f"{name}: tensors that do not map by order and shape: {mismatched[:3]}"
    model.load_state_dict(dict(zip(ours, theirs.values(), strict=True)))
    return model, fixture


def batch_statistics(model: nn.Module) -> nn.Module:
    """Train mode (BatchNorm and SubSpectral Norm normalise with the batch's statistics), dropout off."""
    model.train()
    for module in model.modules():
        if isinstance(module, (nn.Dropout, nn.Dropout2d)):
            module.eval()
    return model


@pytest.mark.parametrize("name", WIDTHS)
def test_reproduces_the_official_logits_in_eval_mode(official_fixtures, name):
    model, fixture = load_official(official_fixtures, name)
    assert fixture["tau"] == WIDTHS[name] and fixture["input"].shape == (4, 1, 40, 101)
    model.eval()
    x, expected = fixture["input"], fixture["logits_eval"]
    with torch.no_grad():
        ours = model(x)
    # The official logits are another float32 evaluation of the same function (another CPU, other kernels):
    # the runtime parity bound of tests/calibrated.py, from our own measured float32 error.
    atol = parity_atol(model, x)
    diff = (ours - expected).abs().max().item()
    print(f"{name} eval: max |diff| {diff:.2e} to the official logits, bound {atol:.2e}")
    assert (expected[0] - expected[1]).abs().max() > 100 * atol  # logits that depend on the input
    assert diff <= atol


@pytest.mark.parametrize("name", WIDTHS)
def test_reproduces_the_official_logits_with_batch_statistics(official_fixtures, name):
    model, fixture = load_official(official_fixtures, name)
    x, expected = fixture["input"], fixture["logits_batch_stats"]
    exact_model = batch_statistics(copy.deepcopy(model).double())
    ours = batch_statistics(model)(x)
    with torch.no_grad():
        exact = exact_model(x.double())
    # Batch statistics have no folded form: 16x our own measured float32 error (at least one float32 step
    # of the logits), for the reason tests/calibrated.py's parity_atol gives: another CPU's summation order.
    own = (ours.detach().double() - exact).abs().max().item()
    atol = 16 * max(own, torch.finfo(torch.float32).eps * exact.abs().max().item())
    diff = (ours.detach() - expected).abs().max().item()
    print(f"{name} batch statistics: max |diff| {diff:.2e} to the official logits, bound {atol:.2e}")
    assert (expected - fixture["logits_eval"]).abs().max() > 100 * atol  # the two modes really differ
    assert diff <= atol
    # In this mode gradients reach every parameter (the fixtures give logits only, so no more than that).
    ours.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
