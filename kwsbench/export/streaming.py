"""The streaming BC-ResNet's step function as ONNX, its state as inputs and outputs, and the session that runs it.

The graph (:class:`kwsbench.stream.incremental.StreamingBCResNet`, log-mel inside, DFT as matrix products)
takes ``audio`` ``(1, hop_samples)`` and ``state`` ``(1, state_size)`` and returns ``logits`` ``(1, C)`` and
``next_state`` ``(1, state_size)``; a caller feeds ``next_state`` back as ``state`` and starts a stream with
zeros. The state is every state tensor of the step flattened and concatenated in order (the JSON beside the
file lists their shapes): one input instead of 16 measured 0.21 against 0.33 ms a hop for BC-ResNet-1 on
OpenVINO, whose per-input cost outweighs the step's work. :class:`StreamingSession` runs it on ONNX
Runtime or OpenVINO (float32 pinned); ``eager`` runs the PyTorch step itself.

Parity: an export is refused (nothing written) when ONNX Runtime's logits over ``PARITY_HOPS`` steps of
seeded speech-scale noise differ from the PyTorch step's by more than
:func:`kwsbench.measure.backends.parity_bound`.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kwsbench.atomic import write_atomically, write_json_atomically
from kwsbench.errors import BackendError, ConfigError
from kwsbench.stream.incremental import StreamingBCResNet, StreamingExecutor

STREAMING_FORMAT = "kwsbench-streaming/1"
STREAMING_RUNTIMES = ("eager", "onnxruntime", "openvino")
PARITY_HOPS = 24  # 2.4 s at a 100 ms hop: past the 1 s window, so every state has wrapped


class PackedStep(nn.Module):
    """``model``'s step with its state as one flat tensor: ``(audio (1, hop), state (1, S)) -> (logits, next_state)``."""

    def __init__(self, model: StreamingBCResNet):
        super().__init__()
        self.model = model
        self.sizes = [math.prod(shape) for shape in model.state_shapes]

    def forward(self, audio: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        parts = state.split(self.sizes, dim=1)
        unpacked = [p.reshape(1, *shape) for p, shape in zip(parts, self.model.state_shapes, strict=True)]
        logits, *after = self.model(audio, *unpacked)
        return logits, torch.cat([a.reshape(1, -1) for a in after], dim=1)


def state_size(model: StreamingBCResNet) -> int:
    """Floats in the packed state of ``model`` (every state tensor at batch 1)."""
    return sum(math.prod(shape) for shape in model.state_shapes)


def export_step(model: StreamingBCResNet, path: str | os.PathLike, label: str = "model") -> Path:
    """``model``'s packed step at batch 1 as ONNX at ``path`` (``Add`` chains merged into ``Sum``), atomically."""
    import onnx

    from kwsbench.measure.optimize import merge_add_chains

    example = (torch.zeros(1, model.hop_samples), torch.zeros(1, state_size(model)))
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                PackedStep(model),
                example,
                buffer,
                dynamo=False,
                input_names=["audio", "state"],
                output_names=["logits", "next_state"],
            )
    except Exception as err:  # noqa: BLE001 - the exporter raises many kinds; the first line is kept
        raise BackendError(
            f"{label}: streaming ONNX export failed ({str(err).splitlines()[0][:160]})"
        ) from None
    graph = merge_add_chains(onnx.load_from_string(buffer.getvalue()))
    write_atomically(path, lambda f: f.write(graph.SerializeToString()))
    return Path(path)


class StreamingSession:
    """A streaming step on a runtime, with its state: ``step((1, hop) float32) -> (1, C) logits``; ``reset()``.

    ``runtime``: ``eager`` (``model`` required), ``onnxruntime`` or ``openvino`` (``path`` of an exported
    step whose packed state has ``state_size`` floats). ``threads``: intra-op threads.
    """

    def __init__(
        self,
        runtime: str,
        *,
        state_size: int,
        hop_samples: int,
        path: str | os.PathLike | None = None,
        model: StreamingBCResNet | None = None,
        threads: int = 1,
    ):
        if runtime not in STREAMING_RUNTIMES:
            raise ConfigError(f"streaming runtime {runtime!r}: choose from {', '.join(STREAMING_RUNTIMES)}")
        self.runtime, self.hop_samples, self.threads = runtime, hop_samples, threads
        self.state = np.zeros((1, state_size), dtype=np.float32)
        self.audio = np.zeros((1, hop_samples), dtype=np.float32)
        if runtime == "eager":
            if model is None:
                raise ConfigError("the eager streaming runtime needs the PyTorch step; pass model")
            self._executor = StreamingExecutor(model)
            self._run = self._eager
        elif runtime == "onnxruntime":
            from kwsbench.measure.backends import ort_session

            self._session = ort_session(Path(path), threads)
            self._run = self._onnxruntime
        else:
            import openvino as ov

            from kwsbench.measure.backends import openvino_request

            self._request = openvino_request(Path(path), threads)
            # Inputs bound once over our own arrays: each step copies into them, no tensor is wrapped anew.
            self._request.set_tensor("audio", ov.Tensor(self.audio, shared_memory=True))
            self._request.set_tensor("state", ov.Tensor(self.state, shared_memory=True))
            self._run = self._openvino
        self.reset()

    def reset(self) -> None:
        """Back to the state of a stream preceded by silence."""
        self.state[:] = 0.0
        if self.runtime == "eager":
            self._executor.reset()

    def step(self, audio: np.ndarray) -> np.ndarray:
        """The logits of the window ending with this hop of ``(1, hop_samples)`` float32 samples: ``(1, C)``."""
        if audio.shape != (1, self.hop_samples):
            raise ConfigError(f"a step takes (1, {self.hop_samples}) samples, got {tuple(audio.shape)}")
        return self._run(audio)

    def _eager(self, audio: np.ndarray) -> np.ndarray:
        with _threads(self.threads):
            return self._executor.step(
                torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
            ).numpy()

    def _onnxruntime(self, audio: np.ndarray) -> np.ndarray:
        np.copyto(self.audio, audio)
        logits, after = self._session.run(None, {"audio": self.audio, "state": self.state})
        np.copyto(self.state, after)
        return logits

    def _openvino(self, audio: np.ndarray) -> np.ndarray:
        np.copyto(self.audio, audio)
        self._request.infer()
        np.copyto(self.state, self._request.get_tensor("next_state").data)
        return self._request.get_tensor("logits").data.copy()


def _threads(threads: int):
    from kwsbench.measure.latency import torch_threads

    return torch_threads(threads)


def parity_audio(hops: int, hop_samples: int, seed: int = 0) -> np.ndarray:
    """Seeded noise at speech scale (std 0.1), ``(hops, 1, hop_samples)`` float32: the parity probe."""
    generator = np.random.default_rng(seed)
    return (generator.standard_normal((hops, 1, hop_samples)) * 0.1).astype(np.float32)


def run_steps(session: StreamingSession, audio: np.ndarray) -> np.ndarray:
    """``session`` reset, then stepped through ``(hops, 1, hop)`` audio: ``(hops, C)`` logits."""
    session.reset()
    return np.concatenate([session.step(chunk) for chunk in audio])


def open_step(
    model: StreamingBCResNet, runtime: str, *, threads: int = 1, workdir: str | os.PathLike | None = None
) -> StreamingSession:
    """``model``'s step on ``runtime``, exported to a temporary file (or into ``workdir``) and parity-checked."""
    shapes = dict(_shapes(model), threads=threads)
    if runtime == "eager":
        return StreamingSession("eager", model=model, **shapes)
    with tempfile.TemporaryDirectory(prefix="kwsbench-step-") as tmp:
        path = export_step(model, Path(workdir or tmp) / "step.onnx")
        session = StreamingSession(runtime, path=path, **shapes)
    check_parity(session, model, label=f"streaming step on {runtime}")
    return session


def check_parity(session: StreamingSession, model: StreamingBCResNet, *, label: str) -> float:
    """The largest |logit difference| to the PyTorch step over ``PARITY_HOPS`` steps; too large: BackendError."""
    from kwsbench.measure.backends import parity_bound

    audio = parity_audio(PARITY_HOPS, model.hop_samples)
    expected = run_steps(StreamingSession("eager", model=model, **_shapes(model)), audio)
    got = run_steps(session, audio)
    session.reset()
    diff = float(np.abs(got - expected).max())
    if not diff <= parity_bound(expected):
        raise BackendError(
            f"{label}: logits differ from PyTorch by {diff:.3g}; use the eager runtime and report it"
        )
    return diff


def _shapes(model: StreamingBCResNet) -> dict[str, Any]:
    return dict(state_size=state_size(model), hop_samples=model.hop_samples)


def export_streaming_checkpoint(
    checkpoint: str | os.PathLike, out: str | os.PathLike, *, hop_ms: float = 100.0
) -> dict[str, Any]:
    """A causal checkpoint's streaming step as ONNX at ``out`` with a JSON beside it; returns that JSON."""
    from kwsbench.export.exported import file_sha256, sidecar_path
    from kwsbench.stream.incremental import load_streaming_checkpoint

    model, ckpt = load_streaming_checkpoint(checkpoint, hop_ms=hop_ms)
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="kwsbench-step-", dir=out.parent) as tmp:
        path = export_step(model, Path(tmp) / "step.onnx", label=str(checkpoint))
        diff = check_parity(
            StreamingSession("onnxruntime", path=path, **_shapes(model)), model, label=str(out)
        )
        os.replace(path, out)
    meta = {
        "format": STREAMING_FORMAT,
        "model": ckpt["model"],
        "options": ckpt["options"],
        "labels": list(ckpt["labels"]),
        "sample_rate": 16000,
        "hop_samples": model.hop_samples,
        "state_size": state_size(model),
        "state_shapes": [list(s) for s in model.state_shapes],
        "parity_max_abs_diff": diff,
        "parity_hops": PARITY_HOPS,
        "sha256": file_sha256(out),
    }
    write_json_atomically(sidecar_path(out), meta)
    return {"onnx": str(out), "json": str(sidecar_path(out)), **meta}


def format_streaming_export(result: dict[str, Any]) -> str:
    """The lines ``kwsbench export --streaming`` prints: the files, the step's shapes and the parity figure."""
    return "\n".join(
        [
            f"wrote {result['onnx']} and {Path(result['json']).name}: streaming step of {result['model']}, "
            f"audio (1, {result['hop_samples']}) + state (1, {result['state_size']}) -> logits + next_state",
            f"parity: max |ONNX Runtime - PyTorch step| = {result['parity_max_abs_diff']:.3g} over "
            f"{result['parity_hops']} hops",
        ]
    )


def open_streaming_file(
    path: str | os.PathLike, runtime: str, *, threads: int = 1
) -> tuple[StreamingSession, dict[str, Any]]:
    """A file of ``kwsbench export --streaming`` on ``runtime`` (not eager), and the JSON beside it."""
    import json

    from kwsbench.export.exported import sidecar_path

    path = Path(path)
    try:
        meta = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"{path}: no readable JSON beside it ({type(err).__name__}); export it again"
        ) from None
    if meta.get("format") != STREAMING_FORMAT:
        raise ConfigError(
            f"{path}: not a streaming export (format {meta.get('format')!r}); write one with "
            "`kwsbench export --streaming`, or drop --streaming"
        )
    if runtime == "eager":
        raise ConfigError(
            f"{path}: an exported step runs on onnxruntime or openvino; pick --backend one of them"
        )
    session = StreamingSession(
        runtime, path=path, state_size=meta["state_size"], hop_samples=meta["hop_samples"], threads=threads
    )
    return session, meta
