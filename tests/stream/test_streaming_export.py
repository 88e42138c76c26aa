"""The exported streaming step: equal to the PyTorch step on ONNX Runtime and OpenVINO at every width, its state
per session and zeroed by reset, its file described by the JSON beside it, an older format refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from streaming_models import HOP, WIDTHS, causal_model, load_real_audio

from kwsbench.cli import main
from kwsbench.errors import ConfigError
from kwsbench.export.streaming import (
    StreamingSession,
    export_step,
    export_streaming_checkpoint,
    format_streaming_export,
    open_streaming_file,
)
from kwsbench.measure.backends import parity_bound
from kwsbench.models import create_model, model_info
from kwsbench.models.checkpoint import save_checkpoint
from kwsbench.stream.incremental import streaming_model

RUNTIMES = ("onnxruntime", "openvino")


@pytest.fixture(scope="module")
def real_audio(shared_data) -> np.ndarray:
    return load_real_audio(shared_data).numpy()


@pytest.fixture(scope="module")
def step_file(tmp_path_factory):
    """BC-ResNet-1's step and its ONNX file."""
    torch.set_num_threads(1)
    model = streaming_model(causal_model("bcresnet_1"), model_info("bcresnet_1").input, hop_samples=HOP)
    return model, export_step(model, tmp_path_factory.mktemp("step") / "step.onnx")


def _session(runtime: str, model, path=None) -> StreamingSession:
    return StreamingSession(
        runtime, state_shapes=model.state_shapes, hop_samples=HOP, path=path, model=model, threads=1
    )


def _feed(session: StreamingSession, audio: np.ndarray) -> np.ndarray:
    """``(hops, C)`` logits of ``(1, hops * HOP)`` audio, stepped from the session's current state."""
    return np.concatenate(
        [session.step(audio[:, i * HOP : (i + 1) * HOP]) for i in range(audio.shape[1] // HOP)]
    )


# Every width causal, and the standard model streamed with its delay lines (more state tensors, same graph form).
@pytest.mark.parametrize(("name", "padding"), [*((w, "causal") for w in WIDTHS), ("bcresnet_1", "same")])
def test_onnx_step_equals_the_pytorch_step_on_both_runtimes(name, padding, real_audio, tmp_path):
    torch.set_num_threads(1)
    model = streaming_model(causal_model(name, padding=padding), model_info(name).input, hop_samples=HOP)
    path = export_step(model, tmp_path / "step.onnx")
    audio = real_audio[:, : 16 * HOP]  # 1.6 s: past the window of every state
    expected = _feed(_session("eager", model), audio)
    for runtime in RUNTIMES:
        got = _feed(_session(runtime, model, path), audio)
        # The project's float32 parity bound (1e-3 of the largest logit): runtimes differ from PyTorch only
        # in summation order (~1e-6 of scale), a lost or repeated state frame moves logits by far more.
        np.testing.assert_allclose(got, expected, rtol=0, atol=parity_bound(expected), err_msg=runtime)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_reset_gives_the_logits_of_a_fresh_session(runtime, step_file, real_audio):
    model, path = step_file
    # 8 hops each: fewer than the 10 of the pooled window, so the first clip still weighs on the second's
    # logits unless reset clears every state tensor.
    first, second = real_audio[:, : 8 * HOP], real_audio[:, 16 * HOP : 24 * HOP]
    fresh = _feed(_session(runtime, model, path), second)
    session = _session(runtime, model, path)
    _feed(session, first)
    carried = _feed(session, second)
    assert np.abs(carried - fresh).max() > parity_bound(
        fresh
    )  # the state matters, so the check below can fail
    _feed(session, first)
    session.reset()
    # Bit-identical: the same kernels on the same inputs and zero state, one thread, run in the same order.
    np.testing.assert_array_equal(_feed(session, second), fresh)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_two_sessions_on_one_file_keep_their_own_state(runtime, step_file, real_audio):
    model, path = step_file
    streams = real_audio[:, : 12 * HOP], real_audio[:, 16 * HOP : 28 * HOP]
    alone = [_feed(_session(runtime, model, path), audio) for audio in streams]
    sessions = [_session(runtime, model, path) for _ in streams]
    interleaved: list[list[np.ndarray]] = [[], []]
    for i in range(12):  # one hop of each stream in turn
        for k, (session, audio) in enumerate(zip(sessions, streams, strict=True)):
            interleaved[k].append(session.step(audio[:, i * HOP : (i + 1) * HOP]))
    for k in range(2):
        # Bit-identical to the stream run alone: any state shared between the two would change it.
        np.testing.assert_array_equal(np.concatenate(interleaved[k]), alone[k], err_msg=f"stream {k}")


def test_export_writes_a_json_matching_its_file_for_a_causal_and_a_standard_checkpoint(tmp_path):
    import onnx

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
    for padding, lag in (("causal", 320), ("same", 320 + 58 * 160)):  # 20 ms; + BC-ResNet's 58-frame delay
        out = tmp_path / f"{padding}.onnx"
        result = export_streaming_checkpoint(tmp_path / f"{padding}.pt", out, hop_ms=100)
        meta = json.loads(out.with_suffix(".json").read_text())
        assert meta["format"] == "kwsbench-streaming/2" and meta["labels"] == labels
        assert meta["hop_samples"] == HOP and meta["lag_samples"] == lag
        # keep 400 samples, then the head's ring buffer (1 channel, 40 mels, 4 past frames), ..., and the
        # tail's last 100 pooled embeddings (32 channels)
        assert meta["state_shapes"][0] == [400] and meta["state_shapes"][1] == [1, 40, 4]
        assert [32, 1, 100] in meta["state_shapes"]
        graph = onnx.load(str(out)).graph

        def described(values) -> list[tuple[str, list[int]]]:
            return [(v.name, [d.dim_value for d in v.type.tensor_type.shape.dim]) for v in values]

        shapes = [[1, *s] for s in meta["state_shapes"]]
        assert described(graph.input) == [
            ("audio", [1, HOP]),
            *zip(meta["state_inputs"], shapes, strict=True),
        ]
        assert described(graph.output) == [
            ("logits", [1, 4]),
            *zip(meta["state_outputs"], shapes, strict=True),
        ]
        assert f"+ {len(shapes)} state tensors" in format_streaming_export(result)
        for runtime in RUNTIMES:
            session, _ = open_streaming_file(out, runtime)
            assert session.step(np.zeros((1, HOP), dtype=np.float32)).shape == (1, 4)
    # A JSON whose state shapes are not the file's: refused before any step reads the wrong buffers.
    meta["state_shapes"][1] = [1, 40, 5]
    out.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"inputs are not the streaming step's \(\('state_1'") as err:
        open_streaming_file(out, "openvino")
    assert "\n" not in str(err.value)


def test_a_format_1_file_is_refused_on_one_line_saying_to_export_it_again(
    step_file, write_wav, tmp_path, capsys
):
    _, path = step_file
    old = shutil.copy(path, tmp_path / "old.onnx")
    # What kwsbench-streaming/1 wrote beside its file: one packed state.
    (tmp_path / "old.json").write_text(
        json.dumps({"format": "kwsbench-streaming/1", "hop_samples": HOP, "state_size": 48564})
    )
    wav = write_wav(tmp_path / "a.wav", np.zeros(16000, dtype=np.float32))
    assert main(["listen", "--model-file", str(old), "--source", str(wav), "--streaming"]) == 2
    err = capsys.readouterr().err
    assert "'kwsbench-streaming/1'" in err and "export it again with `kwsbench export --streaming`" in err
    assert len(err.strip().splitlines()) == 1
