"""Item 5 of issue 18: on any 1 s window, the streaming detector's scores equal the per-clip model's output on the
same samples, on every backend `listen` can use."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kwsbench.data.cache import as_float32
from kwsbench.data.features import make_frontend
from kwsbench.measure.backends import parity_bound
from kwsbench.measure.latency import torch_threads
from kwsbench.models.checkpoint import load_checkpoint, model_from_checkpoint
from kwsbench.stream.backend_names import STREAM_BACKENDS
from kwsbench.stream.detector import DetectorSettings, StreamingDetector, posteriors
from kwsbench.stream.scorer import CheckpointScorer


@pytest.fixture(scope="module")
def real_stream(word_cache) -> np.ndarray:
    """3.55 s of real audio: 0.3 s of silence, three held-out clips back to back (yes, no, unknown), 0.25 s of silence."""
    waves, labels = word_cache.split("test")
    rows = [int(np.flatnonzero(labels == word_cache.classes.index(c))[0]) for c in ("yes", "no", "_unknown_")]
    return np.concatenate(
        [np.zeros(4_800, np.float32), *as_float32(np.asarray(waves[rows])), np.zeros(4_000, np.float32)]
    )


@pytest.fixture(scope="module")
def per_clip_posteriors(trained_checkpoint, real_stream) -> tuple[np.ndarray, float]:
    """The per-clip model (frontend, then model, eager, one clip per call) on each hop's window, worked out
    from the stream alone: ``(posteriors (hops, C), largest |logit|)``."""
    model, spec = model_from_checkpoint(load_checkpoint(trained_checkpoint))
    per_clip = nn.Sequential(make_frontend(spec), model).eval()
    hop, window = 1_600, 16_000
    padded = np.concatenate([np.zeros(window, np.float32), real_stream])  # silence before the source
    logits = []
    with torch_threads(1), torch.inference_mode():
        for h in range(len(real_stream) // hop):
            # The window of hop h: the `window` samples before sample (h + 1) * hop of the stream.
            clip = padded[(h + 1) * hop : (h + 1) * hop + window]
            logits.append(per_clip(torch.from_numpy(clip)[None]).numpy()[0])
    logits = np.array(logits)
    return posteriors(logits), float(np.abs(logits).max())


@pytest.mark.parametrize("backend", STREAM_BACKENDS)
def test_streaming_scores_equal_the_per_clip_model(
    backend, trained_checkpoint, real_stream, per_clip_posteriors
):
    expected, logit_scale = per_clip_posteriors
    detector = StreamingDetector(
        CheckpointScorer(trained_checkpoint, backend=backend), DetectorSettings(), keep_scores=True
    )
    for begin in range(0, len(real_stream), 1_000):  # chunks that do not line up with hops
        detector.push(real_stream[begin : begin + 1_000])
    got = np.array(detector.scores)
    assert got.shape == expected.shape == (35, 4)  # 56,800 samples: 35 whole hops
    # Tolerance: backends may differ from eager by the project's float32 parity bound on the logits
    # (PARITY_RTOL of their largest magnitude); softmax moves each posterior by at most half the largest
    # logit change (its Jacobian rows sum to 2 p (1 - p) <= 1/2).
    bound = parity_bound(np.array([logit_scale])) / 2
    assert np.abs(got - expected).max() <= bound
    # The windows matter: the model hears the words (a constant output would match anything).
    assert np.ptp(expected, axis=0).max() > 0.5


@pytest.mark.parametrize("with_frontend", [True, False], ids=["log-mel inside", "features"])
def test_an_exported_model_streams_the_per_clip_scores(
    with_frontend, trained_checkpoint, real_stream, per_clip_posteriors, tmp_path
):
    from kwsbench.export import export_checkpoint
    from kwsbench.stream.scorer import ExportedScorer

    expected, logit_scale = per_clip_posteriors
    export_checkpoint(
        trained_checkpoint, tmp_path / "model.onnx", with_frontend=with_frontend, progress=False
    )
    detector = StreamingDetector(
        ExportedScorer(tmp_path / "model.onnx"), DetectorSettings(), keep_scores=True
    )
    detector.push(real_stream)
    got = np.array(detector.scores)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= parity_bound(np.array([logit_scale])) / 2  # as above
