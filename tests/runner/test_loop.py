"""The training loop's pieces: the paper's schedule, SpecAugment by width, and the shared fast formulation."""

from __future__ import annotations

import math

import pytest
import torch

from kwsbench.models import create_model
from kwsbench.models.reformulate import for_training
from kwsbench.runner.config import Recipe, TrialConfig
from kwsbench.runner.loop import learning_rate, spec_augment_for
from kwsbench.specs import DatasetSpec


def test_schedule_warms_up_linearly_then_anneals_to_zero():
    recipe = Recipe(epochs=10, warmup_epochs=5, lr=0.1)
    steps = 7  # per epoch
    rates = [learning_rate(s, steps, recipe) for s in range(70)]
    assert rates[0] == pytest.approx(0.1 / 35) and rates[34] == pytest.approx(0.1)  # 5 epochs x 7 steps
    assert all(a < b for a, b in zip(rates[:35], rates[1:35], strict=False))
    assert rates[35] == pytest.approx(0.1)  # cosine starts at the peak ...
    assert rates[35 + 35 // 2] == pytest.approx(0.05 * (1 + math.cos(math.pi * 17 / 35)))
    assert rates[69] == pytest.approx(0.05 * (1 + math.cos(math.pi * 34 / 35)))  # ... and ends near zero
    assert all(b <= a for a, b in zip(rates[35:], rates[36:], strict=False))


def _trial(model: str, **options) -> TrialConfig:
    return TrialConfig("t", model, options, Recipe(), DatasetSpec.create("folder", "/tmp"), 0)


@pytest.mark.parametrize(("model", "options", "freq"), [
    ("bcresnet_1", {}, None),  # tau = 1: the paper trains without SpecAugment
    ("bcresnet_3", {}, 5),
    ("bcresnet_1", {"tau": 8.0}, 7),
    ("dscnn_s", {}, None),  # other families: off under "auto"
])  # fmt: skip
def test_spec_augment_follows_the_width(model, options, freq):
    augment = spec_augment_for(_trial(model, **options))
    assert (augment.freq_mask_param if augment is not None else None) == freq


def test_the_straightforward_model_sees_every_update_of_the_fast_one():
    """The loop trains ``for_training(model)`` and evaluates and saves ``model``: they must share all state."""
    torch.manual_seed(0)
    model = create_model("bcresnet_1").train()
    fast = for_training(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(fast.parameters(), lr=0.1)
    fast(torch.randn(8, 1, 40, 101)).logsumexp(1).sum().backward()
    optimizer.step()
    after = model.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before)  # weights, running stats, counters
    assert all(torch.equal(fast.state_dict()[k], after[k]) for k in after)
