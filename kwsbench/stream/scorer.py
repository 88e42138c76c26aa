"""What scores a window of audio: a checkpoint (log-mel and model in one graph) or an exported model.

A scorer takes ``(B, window_samples)`` float32 windows at ``sample_rate`` and returns ``(B, C)`` logits
over ``labels``; the detector turns them into posteriors. ``load_scorer`` builds one from the command
line's ``--checkpoint`` / ``--model-file`` (neither: the bundled BC-ResNet-1, ``kwsbench.checkpoints``).

An *incremental* scorer (``StepScorer``, ``--streaming``) takes the hops themselves instead:
``score_hops((m, hop_samples))`` scores ``m`` consecutive hops of one stream in order, carrying the
streaming BC-ResNet's state from each to the next (``reset()`` starts a stream); the detector feeds it
hops when its ``incremental`` attribute is true.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from torch import nn

from kwsbench.data.records import CLIP_SAMPLES, SAMPLE_RATE
from kwsbench.errors import BackendError, ConfigError
from kwsbench.stream.backend_names import STREAM_BACKENDS
from kwsbench.stream.runtime import Runtime, build_runtime


class Scorer(Protocol):
    """Scores windows: ``score((B, window_samples) float32) -> (B, len(labels)) float32 logits``."""

    labels: list[str]
    sample_rate: int
    window_samples: int
    name: str
    source: str
    note: str

    def score(self, windows: np.ndarray) -> np.ndarray: ...


def _in_batches(run, windows: np.ndarray, batch: int, classes: int) -> np.ndarray:
    """``run`` over ``windows`` in fixed batches of ``batch``, the last one zero-padded: ``(N, classes)``."""
    count = windows.shape[0]
    if count == batch:
        return run(np.ascontiguousarray(windows, dtype=np.float32))
    out = np.empty((count, classes), dtype=np.float32)
    block = np.zeros((batch, windows.shape[1]), dtype=np.float32)
    for begin in range(0, count, batch):
        part = windows[begin : begin + batch]
        block[: len(part)] = part
        block[len(part) :] = 0.0
        out[begin : begin + len(part)] = run(block)[: len(part)]
    return out


@dataclass
class CheckpointScorer:
    """A kwsbench checkpoint: its log-mel frontend and model as one graph on a stream backend.

    ``batch`` windows per call (1 for ``listen``, more for ``stream-eval``); ``threads`` intra-op threads.
    """

    checkpoint: str | os.PathLike
    backend: str = STREAM_BACKENDS[0]
    threads: int = 1
    batch: int = 1
    labels: list[str] = field(init=False)
    sample_rate: int = field(init=False, default=SAMPLE_RATE)
    window_samples: int = field(init=False, default=CLIP_SAMPLES)
    name: str = field(init=False)
    source: str = field(init=False)
    note: str = field(init=False, default="")
    model: nn.Module = field(init=False, repr=False)
    runtime: Runtime = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from kwsbench.data.features import make_frontend
        from kwsbench.measure.bench import seeded_input
        from kwsbench.models.checkpoint import load_checkpoint, model_from_checkpoint

        if self.batch < 1 or self.threads < 1:
            raise ConfigError(f"batch={self.batch} and threads={self.threads} must both be at least 1")
        ckpt = load_checkpoint(self.checkpoint)
        model, spec = model_from_checkpoint(ckpt, str(self.checkpoint))
        self.labels = list(ckpt["labels"])
        self.name = str(ckpt["model"])
        self.source = str(self.checkpoint)
        # Raw audio in, logits out: the frontend is part of the graph every backend runs.
        self.model = nn.Sequential(make_frontend(spec, clip_samples=self.window_samples), model).eval()
        # A probe at speech-like scale (std 0.1) for the parity check against eager.
        example = seeded_input((self.batch, self.window_samples)) * 0.1
        self.runtime = build_runtime(
            self.backend, self.model, example, threads=self.threads, label=f"{self.name} ({self.checkpoint})"
        )
        self.note = f"{self.backend}" + (f": {self.runtime.note}" if self.runtime.note else "")

    def score(self, windows: np.ndarray) -> np.ndarray:
        """``(B, window_samples)`` float32 -> ``(B, C)`` float32 logits."""
        return _in_batches(self.runtime.run, windows, self.batch, len(self.labels))


@dataclass
class ExportedScorer:
    """A model written by ``kwsbench export``, on ONNX Runtime through ``kwsbench.export.load_exported``.

    An export with its frontend takes the windows as they are; one without gets them as log-mel features
    computed by ``make_frontend`` from the export's input spec first.
    """

    model_file: str | os.PathLike
    threads: int = 1
    labels: list[str] = field(init=False)
    sample_rate: int = field(init=False)
    window_samples: int = field(init=False)
    name: str = field(init=False)
    source: str = field(init=False)
    note: str = field(init=False)

    def __post_init__(self) -> None:
        from kwsbench.export import load_exported

        self._exported = load_exported(self.model_file, threads=self.threads)
        self._frontend = None
        if not self._exported.takes_waveform:
            from kwsbench.data.features import make_frontend

            self._frontend = make_frontend(
                self._exported.input_spec, clip_samples=self._exported.clip_samples
            )
        self.labels = list(self._exported.labels)
        self.sample_rate = int(self._exported.sample_rate)
        self.window_samples = int(self._exported.clip_samples)
        self.name = str(self._exported.meta.get("model", Path(self.model_file).stem))
        self.source = str(self.model_file)
        inside = "log-mel inside" if self._frontend is None else "log-mel in PyTorch"
        self.note = f"exported model on onnxruntime ({inside}{', int8' if self._exported.int8 else ''})"

    def score(self, windows: np.ndarray) -> np.ndarray:
        """``(B, window_samples)`` float32 -> ``(B, C)`` float32 logits."""
        if self._frontend is None:
            return self._exported.run(windows)
        import torch

        with torch.inference_mode():
            features = self._frontend(torch.from_numpy(np.ascontiguousarray(windows))).numpy()
        return self._exported.run(features)


# The step runtime each --backend runs a streaming step on: "optimized" is the fastest one measured for the
# step (`kwsbench bench --streaming`, BC-ResNet-1, AMD EPYC, 1 thread: native 0.04 ms a hop, OpenVINO 0.15,
# ONNX Runtime 0.23). Native needs a C compiler and runs a checkpoint, not an exported file: without one
# "optimized" falls back to OpenVINO and says so.
STEP_RUNTIME_OF_BACKEND = {
    "optimized": "native",
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
    "eager": "eager",
}


@dataclass
class StepScorer:
    """A BC-ResNet checkpoint (or its ``export --streaming`` file) streamed incrementally, one hop per step.

    ``score_hops((m, hop_samples)) -> (m, C)`` logits of ``m`` consecutive hops; ``reset()`` starts a new stream.
    ``lag_samples``: how long before its hop's end the window a step scores ends (the frontend's look-ahead,
    20 ms; a standard model's delay on top, 580 ms for BC-ResNet); the detector dates detections by it.
    Neither file given: the bundled BC-ResNet-1, streamed with that delay.
    """

    checkpoint: str | os.PathLike | None = None
    model_file: str | os.PathLike | None = None
    backend: str = STREAM_BACKENDS[0]
    threads: int = 1
    hop_ms: float = 100.0
    incremental: bool = field(init=False, default=True)
    labels: list[str] = field(init=False)
    sample_rate: int = field(init=False, default=SAMPLE_RATE)
    window_samples: int = field(init=False, default=CLIP_SAMPLES)
    hop_samples: int = field(init=False)
    lag_samples: int = field(init=False)
    name: str = field(init=False)
    source: str = field(init=False)
    note: str = field(init=False)

    def __post_init__(self) -> None:
        from kwsbench.checkpoints import bundled_checkpoint
        from kwsbench.export.streaming import open_step, open_streaming_file
        from kwsbench.stream.incremental import load_streaming_checkpoint

        runtime = STEP_RUNTIME_OF_BACKEND[self.backend]
        fallback = ""
        if self.model_file is not None:
            runtime = "openvino" if runtime == "native" else runtime
            self.session, meta = open_streaming_file(self.model_file, runtime, threads=self.threads)
            self.labels, self.name, self.source = (
                list(meta["labels"]),
                str(meta["model"]),
                str(self.model_file),
            )
            self.lag_samples = int(meta["lag_samples"])
        else:
            checkpoint = self.checkpoint if self.checkpoint is not None else bundled_checkpoint()
            model, ckpt = load_streaming_checkpoint(checkpoint, hop_ms=self.hop_ms)
            try:
                self.session = open_step(model, runtime, threads=self.threads)
            except BackendError as err:
                if self.backend != "optimized":
                    raise
                # The error's advice ("use --backend openvino") is what happens here: keep only its cause.
                fallback, runtime = f" (native unavailable: {str(err).split(';')[0]})", "openvino"
                self.session = open_step(model, runtime, threads=self.threads)
            self.labels, self.name, self.source = (list(ckpt["labels"]), str(ckpt["model"]), str(checkpoint))
            self.lag_samples = model.lag_samples
        self.hop_samples = self.session.hop_samples
        lag_ms = 1000 * self.lag_samples / self.sample_rate
        self.note = f"streaming step on {runtime}{fallback}, scores the window ending {lag_ms:g} ms before each hop's end"

    def reset(self) -> None:
        """A new stream: the state of one preceded by silence."""
        self.session.reset()

    def score_hops(self, hops: np.ndarray) -> np.ndarray:
        """``(m, hop_samples)`` float32 consecutive hops -> ``(m, C)`` float32 logits, state carried on."""
        return np.concatenate([self.session.step(hops[i : i + 1]) for i in range(hops.shape[0])])

    def score(self, windows: np.ndarray) -> np.ndarray:
        raise ConfigError("a streaming scorer takes hops, not windows; feed it through the detector")


def load_scorer(
    checkpoint: str | os.PathLike | None = None,
    model_file: str | os.PathLike | None = None,
    *,
    backend: str | None = None,
    threads: int = 1,
    batch: int = 1,
    streaming: bool = False,
    hop_ms: float = 100.0,
) -> Scorer:
    """The scorer the options name: ``--checkpoint``, ``--model-file``, or the bundled BC-ResNet-1.

    ``streaming``: a :class:`StepScorer` (a BC-ResNet checkpoint, a file of ``kwsbench export --streaming``,
    or neither: the bundled BC-ResNet-1 with its delay).
    """
    if checkpoint is not None and model_file is not None:
        raise ConfigError("--checkpoint and --model-file both given; pass one model")
    if streaming:
        return StepScorer(
            checkpoint, model_file, backend=backend or STREAM_BACKENDS[0], threads=threads, hop_ms=hop_ms
        )
    if model_file is not None:
        if backend is not None:
            raise ConfigError("--backend applies to --checkpoint; an exported model runs on its own runtime")
        return ExportedScorer(model_file, threads=threads)
    if checkpoint is None:
        from kwsbench.checkpoints import bundled_checkpoint

        checkpoint = bundled_checkpoint()
    return CheckpointScorer(checkpoint, backend=backend or STREAM_BACKENDS[0], threads=threads, batch=batch)
