"""The native streaming runtime (hand-written C): equal to the PyTorch step at every width on real speech, its
state per session and zeroed by reset, the modules it does not know refused, and no compiler said in one line."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from streaming_models import HOP, WIDTHS, causal_model, load_real_audio

from kwsbench.errors import BackendError, ConfigError
from kwsbench.export.streaming import StreamingSession, open_step
from kwsbench.models import create_model, model_info
from kwsbench.models.bcresnet import BCResBlock
from kwsbench.stream import native
from kwsbench.stream.hop_cost import format_hop_costs, hop_cost
from kwsbench.stream.incremental import streaming_model
from kwsbench.stream.scorer import StepScorer


@pytest.fixture(scope="module")
def real_audio(shared_data) -> np.ndarray:
    return load_real_audio(shared_data).numpy()


@pytest.fixture(scope="module")
def step():
    torch.set_num_threads(1)
    return streaming_model(causal_model("bcresnet_1"), model_info("bcresnet_1").input, hop_samples=HOP)


def _session(runtime: str, model) -> StreamingSession:
    return StreamingSession(runtime, state_shapes=model.state_shapes, hop_samples=HOP, model=model)


def _feed(session: StreamingSession, audio: np.ndarray) -> np.ndarray:
    """``(hops, C)`` logits of ``(1, hops * HOP)`` audio, stepped from the session's current state."""
    return np.concatenate(
        [session.step(audio[:, i * HOP : (i + 1) * HOP]) for i in range(audio.shape[1] // HOP)]
    )


@pytest.mark.parametrize(("name", "padding"), [*((w, "causal") for w in WIDTHS), ("bcresnet_1", "same")])
def test_native_step_equals_the_pytorch_step(name, padding, real_audio):
    torch.set_num_threads(1)
    model = streaming_model(causal_model(name, padding=padding), model_info(name).input, hop_samples=HOP)
    audio = real_audio[:, : 24 * HOP]  # 2.4 s: past the 1 s window and every delay line
    expected = _feed(_session("eager", model), audio)
    got = _feed(_session("native", model), audio)
    # Both are float32 with different summation orders, an FFT against torch's, and polynomial exp and log
    # (relative errors 2e-7 and about 1 ulp): ~1e-7 of the logits' scale measured; a misplaced weight, a
    # lost or repeated state frame, a wrong bin or padding row moves logits by percent of it.
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * scale)


def test_reset_gives_the_logits_of_a_fresh_session(step, real_audio):
    # 8 hops each: fewer than the 10 of the pooled window, so the first clip still weighs on the second's
    # logits unless reset clears every buffer that carries state.
    first, second = real_audio[:, : 8 * HOP], real_audio[:, 16 * HOP : 24 * HOP]
    fresh = _feed(_session("native", step), second)
    session = _session("native", step)
    _feed(session, first)
    assert not np.allclose(_feed(session, second), fresh, rtol=0, atol=1e-3)  # the state carried over
    session.reset()
    np.testing.assert_array_equal(_feed(session, second), fresh)


def test_sessions_share_no_state(step, real_audio):
    a_audio, b_audio = real_audio[:, : 12 * HOP], real_audio[:, 12 * HOP : 24 * HOP]
    alone = _feed(_session("native", step), a_audio)
    a, b = _session("native", step), _session("native", step)
    interleaved = []
    for i in range(12):
        interleaved.append(a.step(a_audio[:, i * HOP : (i + 1) * HOP]))
        b.step(b_audio[:, i * HOP : (i + 1) * HOP])
    np.testing.assert_array_equal(np.concatenate(interleaved), alone)


def _subclassed(model):
    class Gated(BCResBlock):
        """A block whose forward differs: the native program must not compute BCResBlock's for it."""

        def forward(self, x):
            return super().forward(x) * 0.5

    model = copy.deepcopy(model)
    model.blocks[3].__class__ = Gated
    return model


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: causal_model("bcresnet_1"), None),
        (lambda: _subclassed(causal_model("bcresnet_1")), "does not know Gated"),
        (
            lambda: create_model("bcresnet_1", temporal_padding="causal", broadcast="attention").eval(),
            "does not know BCResBlock",
        ),
        (lambda: causal_model("bcresnet_1", dtype=torch.float64), "float32 models only"),
    ],
)
def test_modules_it_does_not_know_are_refused_in_one_line(build, message):
    model = streaming_model(build(), model_info("bcresnet_1").input, hop_samples=HOP)
    if message is None:
        open_step(model, "native")  # the plain model opens and passes the parity check
        return
    with pytest.raises(ConfigError, match=message) as err:
        open_step(model, "native")
    assert "\n" not in str(err.value) and "--backend openvino" in str(err.value)


@pytest.fixture
def no_compiler(monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    native.library.cache_clear()
    yield
    native.library.cache_clear()  # the next test loads the real library again


def test_no_compiler_is_one_line_and_the_scorer_falls_back_to_openvino(no_compiler, step, tmp_path):
    with pytest.raises(BackendError, match=r"needs a C compiler \(/nonexistent/cc not found\)") as err:
        open_step(step, "native")
    assert "\n" not in str(err.value)
    scorer = StepScorer()  # the bundled model on the default backend, "optimized"
    assert scorer.note.startswith("streaming step on openvino (native unavailable: ")


def test_bench_leaves_native_out_without_a_compiler_and_says_why(no_compiler):
    from kwsbench.measure.protocol import Protocol

    quick = Protocol(warmup=1, iterations=3, min_time_s=0.0)
    cost = hop_cost(
        "bcresnet_1", window_backends=("onnxruntime",), step_runtimes=("native", "openvino"), protocol=quick
    )
    assert set(cost.step_ms) == {"openvino"} and set(cost.window_ms) == {"onnxruntime"}
    assert "not measured: native (the native streaming runtime needs a C compiler" in format_hop_costs([cost])


def test_bench_times_native_both_ways():
    from kwsbench.measure.protocol import Protocol

    quick = Protocol(warmup=1, iterations=3, min_time_s=0.0)
    cost = hop_cost("bcresnet_1", window_backends=("onnxruntime",), step_runtimes=("native",), protocol=quick)
    assert set(cost.window_ms) == {"onnxruntime", "native"} and set(cost.step_ms) == {"native"}
    assert cost.unavailable == {} and all(v > 0 for v in [*cost.window_ms.values(), *cost.step_ms.values()])


def test_an_unwritable_cache_builds_in_a_private_folder(monkeypatch, tmp_path, step, real_audio):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("KWSBENCH_CACHE", str(blocker / "cache"))
    native.library.cache_clear()
    try:
        got = _feed(_session("native", step), real_audio[:, : 4 * HOP])
    finally:
        native.library.cache_clear()
    expected = _feed(_session("eager", step), real_audio[:, : 4 * HOP])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * float(np.abs(expected).max()))


def test_the_default_streaming_scorer_runs_native():
    scorer = StepScorer()
    assert scorer.note.startswith("streaming step on native, ")
