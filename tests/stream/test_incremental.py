"""The incremental streaming BC-ResNet equals its whole-sequence definition on real audio, at every width."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from streaming_models import HOP, WIDTHS, causal_model, load_real_audio

from kwsbench.errors import ConfigError
from kwsbench.models import create_model, model_info
from kwsbench.stream.incremental import (
    StreamingExecutor,
    keep_samples,
    streaming_model,
    whole_sequence_logits,
)


@pytest.fixture(scope="module")
def real_audio(shared_data: Path) -> torch.Tensor:
    return load_real_audio(shared_data)


def stream(executor: StreamingExecutor, audio: torch.Tensor) -> torch.Tensor:
    """Step through ``audio`` ``(B, L)`` one hop at a time: ``(B, hops, C)``."""
    hops = audio.shape[1] // HOP
    return torch.stack([executor.step(audio[:, i * HOP : (i + 1) * HOP]) for i in range(hops)], dim=1)


@pytest.mark.parametrize("name", WIDTHS)
def test_step_by_step_equals_the_whole_sequence_on_real_audio(name, real_audio):
    torch.set_num_threads(1)
    model = causal_model(name)
    spec = model_info(name).input
    expected = whole_sequence_logits(model, spec, real_audio, hop_samples=HOP)
    got = stream(StreamingExecutor(streaming_model(model, spec, hop_samples=HOP)), real_audio)
    # float32 both ways; they differ only in summation order (convolution windows cut at the hop, BatchNorm
    # folded into the weights, FFTs over 10 frames instead of 320), each op rounding at 6e-8 relative. Over
    # ~30 layers that stays below ~1e-6 of the logits' scale (measured 2e-7); 1e-5 of the scale still
    # fails for any state slip (a frame lost or repeated moves a logit by a sizeable part of its scale).
    scale = expected.abs().max().item()
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * scale)


def test_exact_in_float64_and_the_state_matters(real_audio):
    # In float64 the only difference left is summation order at 1e-16: equality to 1e-12 of the scale
    # shows the streaming algorithm computes exactly the definition, not an approximation of it.
    name, spec = "bcresnet_1", model_info("bcresnet_1").input
    model = causal_model(name, dtype=torch.float64)
    audio = real_audio.double()
    expected = whole_sequence_logits(model, spec, audio, hop_samples=HOP)
    executor = StreamingExecutor(streaming_model(model, spec, hop_samples=HOP), dtype=torch.float64)
    got = stream(executor, audio)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12 * expected.abs().max().item())
    # reset() starts a new stream: the same audio gives the same scores again; without it, the state of the
    # first pass changes the scores of the second (the check above cannot pass with a stateless step).
    executor.reset()
    torch.testing.assert_close(stream(executor, audio), got, rtol=0, atol=0)
    assert not torch.allclose(stream(executor, audio), got)


def test_frontend_keeps_whole_frames_centred_like_the_per_clip_frontend():
    # 480-sample window, 160-sample hop: a hop of 10 frames needs 400 samples before it (by hand: the
    # first new frame is centred 11 frames before the hop's end, and reads 240 samples before its centre).
    assert keep_samples(480, 160) == 11 * 160 + 240 - 1600
    assert keep_samples(400, 160) == 360  # 25 ms window: 200 + 160, centred on multiples of 160


def test_refuses_a_model_that_looks_ahead_and_a_partial_frame():
    spec = model_info("bcresnet_1").input
    with pytest.raises(ConfigError, match="temporal_padding: causal"):
        streaming_model(create_model("bcresnet_1"), spec, hop_samples=HOP)
    with pytest.raises(ConfigError, match="not a whole number of 160-sample frames"):
        streaming_model(causal_model("bcresnet_1"), spec, hop_samples=1000)
