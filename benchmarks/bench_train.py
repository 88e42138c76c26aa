"""Training-step speed of BC-ResNet-1 at batch 100 on 2 threads: straightforward vs reformulated model.

Run: ``pytest benchmarks/bench_train.py --benchmark-group-by=param:batch``. The two formulations compute the
same function (tests/models/test_reformulate.py); ``kwsbench.measure.train_speed`` states the protocol.
"""

from __future__ import annotations

import pytest
import torch

from kwsbench.measure.train_speed import training_inputs, training_step
from kwsbench.models import create_model
from kwsbench.models.reformulate import for_training

THREADS = 2


@pytest.fixture
def two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("batch", [100])
@pytest.mark.parametrize("formulation", ["eager", "fast"])
def test_bcresnet_1_training_step(benchmark, two_threads, formulation, batch):
    torch.manual_seed(0)
    model = create_model("bcresnet_1").train()
    if formulation == "fast":
        model = for_training(model)
    step = training_step(model, *training_inputs("bcresnet_1", batch, seed=0))
    benchmark.extra_info.update(model="bcresnet_1", batch=batch, threads=THREADS, formulation=formulation)
    benchmark.pedantic(step, warmup_rounds=3, rounds=15, iterations=1)
