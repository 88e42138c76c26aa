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
    model_delay_frames,
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


def test_refuses_another_family_and_a_partial_frame():
    spec = model_info("bcresnet_1").input
    with pytest.raises(ConfigError, match="only BC-ResNet models stream"):
        streaming_model(create_model("dscnn_s"), model_info("dscnn_s").input, hop_samples=HOP)
    with pytest.raises(ConfigError, match="not a whole number of 160-sample frames"):
        streaming_model(causal_model("bcresnet_1"), spec, hop_samples=1000)


# A standard model streams D = 58 frames late; hop i's window then ends D frames before its newest frame
# (i + 1) * 10 - 1 and is exact once all its T = 101 frames lie D or more frames into the stream (see
# incremental's docstring): (i + 1) * 10 - 1 - D - (T - 1) >= D, i.e. from hop 21 of the 32.
FIRST_EXACT_HOP = 21


@pytest.mark.parametrize("name", WIDTHS)
def test_a_standard_model_streams_late_and_equals_the_whole_sequence(name, real_audio):
    torch.set_num_threads(1)
    model = causal_model(name, padding="same")
    spec = model_info(name).input
    step = streaming_model(model, spec, hop_samples=HOP)
    assert step.delay_frames == model_delay_frames(model) == 58 and step.lag_samples == 320 + 58 * 160
    expected = whole_sequence_logits(model, spec, real_audio, hop_samples=HOP)[:, FIRST_EXACT_HOP:]
    got = stream(StreamingExecutor(step), real_audio)[:, FIRST_EXACT_HOP:]
    # The causal test's bound and reason; the delay lines only copy frames.
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * expected.abs().max().item())


def test_a_standard_model_is_exact_in_float64_once_its_window_is_inside_the_stream(real_audio):
    spec = model_info("bcresnet_1").input
    model = causal_model("bcresnet_1", dtype=torch.float64, padding="same")
    audio = real_audio.double()
    expected = whole_sequence_logits(model, spec, audio, hop_samples=HOP)
    executor = StreamingExecutor(streaming_model(model, spec, hop_samples=HOP), dtype=torch.float64)
    got = stream(executor, audio)
    scale = expected.abs().max().item()
    exact = slice(FIRST_EXACT_HOP, None)
    torch.testing.assert_close(got[:, exact], expected[:, exact], rtol=0, atol=1e-12 * scale)
    # Before that, the delay lines' initial zeros stand where the centred model pads one layer later: the
    # first hops differ by far more than rounding (so the bound above is not vacuous).
    assert (got[:, :5] - expected[:, :5]).abs().max() > 1e-6 * scale


def test_a_block_the_delay_does_not_know_is_refused():
    from kwsbench.models.bcresnet import BCResBlock

    class Doubled(BCResBlock):  # a forward the delayed block does not reproduce
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    model = causal_model("bcresnet_1", padding="same")
    model.blocks[3].__class__ = Doubled
    with pytest.raises(ConfigError, match="does not reproduce the centred model"):
        streaming_model(model, model_info("bcresnet_1").input, hop_samples=HOP)
