"""pytest-benchmark suite: one 100 ms streaming hop of each causal BC-ResNet per step runtime, batch 1, one thread.

Models: ``list_models($KWSBENCH_BENCH_MODELS)`` (default ``bcresnet_*``). ``test_native_window`` is the native
kernel re-running the whole 1 s window (its 101 frames in one call), the figure a hop is compared with;
``kwsbench bench --streaming`` prints both sides with every window backend.
"""

from __future__ import annotations

import os

import pytest
import torch

from kwsbench.export.streaming import open_step, parity_audio
from kwsbench.models import create_model, list_models, model_info
from kwsbench.stream.incremental import streaming_model

MODELS = list_models(os.environ.get("KWSBENCH_BENCH_MODELS", "bcresnet_*"))
RUNTIMES = ("native", "openvino", "onnxruntime")
HOP = 1600


def _step(name: str, hop_samples: int):
    torch.manual_seed(0)
    model = create_model(name, temporal_padding="causal").eval()
    return streaming_model(model, model_info(name).input, hop_samples=hop_samples)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name", MODELS)
def test_streaming_step(benchmark, name, runtime):
    session = open_step(_step(name, HOP), runtime, threads=1)
    benchmark.extra_info.update(model=name, runtime=runtime, hop_samples=HOP)
    benchmark.pedantic(session.step, args=(parity_audio(1, HOP)[0],), warmup_rounds=20, rounds=200)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", MODELS)
def test_native_window(benchmark, name):
    frame_hop = _step(name, HOP).frontend.log_mel.hop_length
    frames = model_info(name).input.frames * frame_hop  # samples that make the window's frames
    session = open_step(_step(name, frames), "native", threads=1)
    benchmark.extra_info.update(model=name, runtime="native", hop_samples=frames)
    benchmark.pedantic(session.step, args=(parity_audio(1, frames)[0],), warmup_rounds=5, rounds=50)
