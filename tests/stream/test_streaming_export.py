"""The exported streaming step equals the PyTorch step on ONNX Runtime and OpenVINO, at every width."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from streaming_models import HOP, WIDTHS, causal_model, load_real_audio

from kwsbench.errors import ConfigError
from kwsbench.export.streaming import StreamingSession, export_step, export_streaming_checkpoint, state_size
from kwsbench.measure.backends import parity_bound
from kwsbench.models import create_model, model_info
from kwsbench.models.checkpoint import save_checkpoint
from kwsbench.stream.incremental import streaming_model


@pytest.fixture(scope="module")
def real_audio(shared_data) -> torch.Tensor:
    return load_real_audio(shared_data)


def _steps(session: StreamingSession, audio: np.ndarray) -> np.ndarray:
    """``(hops, C)`` logits of ``(1, hops * HOP)`` audio stepped from a reset state."""
    session.reset()
    return np.concatenate(
        [session.step(audio[:, i * HOP : (i + 1) * HOP]) for i in range(audio.shape[1] // HOP)]
    )


@pytest.mark.parametrize("name", WIDTHS)
def test_onnx_step_equals_the_pytorch_step_on_both_runtimes(name, real_audio, tmp_path):
    torch.set_num_threads(1)
    model = streaming_model(causal_model(name), model_info(name).input, hop_samples=HOP)
    path = export_step(model, tmp_path / "step.onnx")
    audio = real_audio.numpy()[:, : 16 * HOP]  # 1.6 s: past the window of every state
    shapes = dict(state_size=state_size(model), hop_samples=HOP)
    expected = _steps(StreamingSession("eager", model=model, **shapes), audio)
    for runtime in ("onnxruntime", "openvino"):
        got = _steps(StreamingSession(runtime, path=path, **shapes), audio)
        # The project's float32 parity bound (1e-3 of the largest logit): runtimes differ from PyTorch only
        # in summation order (~1e-6 of scale), a lost or repeated state frame moves logits by far more.
        np.testing.assert_allclose(got, expected, rtol=0, atol=parity_bound(expected), err_msg=runtime)


def test_export_of_a_causal_checkpoint_writes_a_json_and_refuses_a_standard_one(tmp_path):
    labels = ["yes", "no", "_unknown_", "_silence_"]
    torch.manual_seed(0)
    for padding in ("causal", "same"):
        model = create_model("bcresnet_1", num_classes=4, temporal_padding=padding)
        save_checkpoint(
            tmp_path / f"{padding}.pt",
            model,
            model_name="bcresnet_1",
            options={"temporal_padding": padding},
            labels=labels,
            config={},
        )
    result = export_streaming_checkpoint(tmp_path / "causal.pt", tmp_path / "step.onnx", hop_ms=100)
    meta = json.loads((tmp_path / "step.json").read_text())
    assert (
        meta["labels"] == labels and meta["hop_samples"] == HOP and result["state_size"] == meta["state_size"]
    )
    # keep 400 samples, head (1, 40, 4), the tail's pooled embeddings (32, 1, 100), ... all packed in one
    assert meta["state_size"] == sum(int(np.prod(s)) for s in meta["state_shapes"])
    assert meta["state_shapes"][0] == [400] and meta["state_shapes"][1] == [1, 40, 4]
    assert meta["state_shapes"][-1] == [32, 1, 100]
    with pytest.raises(ConfigError, match="temporal_padding: causal"):
        export_streaming_checkpoint(tmp_path / "same.pt", tmp_path / "no.onnx")
    assert not (tmp_path / "no.onnx").exists()
