"""pytest-benchmark suite: latency per model x backend at batch 1, one thread.

Models: ``list_models($KWSBENCH_BENCH_MODELS)`` (default ``bcresnet_*``). Run with
``pytest benchmarks --benchmark-only --benchmark-json=benchmarks/results.json`` (``make bench``); each
entry's ``extra_info`` holds the backend, the note (which runtime ``optimized`` picked) and the max
|difference| to eager.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from kwsbench.measure.backends import prepare_backend
from kwsbench.measure.bench import bench_model
from kwsbench.models import list_models

MODELS = list_models(os.environ.get("KWSBENCH_BENCH_MODELS", "bcresnet_*"))
BACKENDS = ("eager", "onnxruntime", "openvino", "optimized")


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", MODELS)
def test_latency(benchmark, tmp_path, name, backend):
    model, x = bench_model(name, batch=1)
    with torch.inference_mode():
        reference = model(x).numpy()
        prepared = prepare_backend(backend, model, x, threads=1, workdir=tmp_path, label=name)
        benchmark.extra_info.update(
            backend=backend,
            model=name,
            note=prepared.note,
            max_abs_diff=float(np.abs(prepared.output - reference).max()),
        )
        benchmark.pedantic(prepared.run, warmup_rounds=20, rounds=200, iterations=1)
