"""The streaming BC-ResNet's step function as ONNX, its state as inputs and outputs, and the session that runs it.

The graph (:class:`kwsbench.stream.incremental.StreamingBCResNet`, log-mel inside, DFT as matrix products)
takes ``audio`` ``(1, hop_samples)`` and one input per state tensor, ``state_0 .. state_{n-1}`` (shapes
``(1, *model.state_shapes[i])``), and returns ``logits`` ``(1, C)`` and ``next_state_0 .. next_state_{n-1}``;
a caller feeds ``next_state_i`` back as ``state_i`` and starts a stream with zeros. The JSON beside the file
lists the names and shapes in order. :class:`StreamingSession` runs it on ONNX Runtime or OpenVINO (float32
pinned); ``eager`` runs the PyTorch step itself and ``native`` the same step as one call into hand-written C
(:mod:`kwsbench.stream.native`; it needs the model, not the ONNX file).

Why one tensor per state, kept inside the runtime: a 100 ms step of BC-ResNet-1 is a few hundred small
nodes, so fixed per-node and per-call costs dominate it. Packing the state into one input costs a Split, two
Reshapes per state tensor and a Concat in the graph, and a copy of the whole state through Python each step.
Here OpenVINO makes each (``state_i``, ``next_state_i``) pair an infer-request variable
(``openvino.passes.MakeStateful``), so no state crosses Python; ONNX Runtime has no stateful form, so the
state buffers are bound once in two ``io_binding``s used alternately (one reads set A and writes set B, the
other the reverse) and no step binds or copies state. Median us per BC-ResNet-1 step, one thread, AMD EPYC:
OpenVINO 165 packed, 154 packed and made stateful, 144 per state and stateful (the lead, quiet machine);
side by side in one process on a shared 2-core machine, packed against this form: OpenVINO 163 -> 145,
ONNX Runtime 255 -> 226 (BC-ResNet-3: 230 -> 192 and 439 -> 395; BC-ResNet-8: 479 -> 380 and 945 -> 875).

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kwsbench.atomic import write_atomically, write_json_atomically
from kwsbench.errors import BackendError, ConfigError
from kwsbench.stream.incremental import StreamingBCResNet, StreamingExecutor

STREAMING_FORMAT = "kwsbench-streaming/2"
STREAMING_RUNTIMES = ("eager", "onnxruntime", "openvino", "native")
PARITY_HOPS = 24  # 2.4 s at a 100 ms hop: past the 1 s window, so every state has wrapped


def state_names(count: int) -> tuple[list[str], list[str]]:
    """The ONNX names of ``count`` state tensors: ``(["state_0", ...], ["next_state_0", ...])``."""
    return [f"state_{i}" for i in range(count)], [f"next_state_{i}" for i in range(count)]


def export_step(model: StreamingBCResNet, path: str | os.PathLike, label: str = "model") -> Path:
    """``model``'s step at batch 1 as ONNX at ``path`` (``Add`` chains merged into ``Sum``), atomically.

    Inputs ``audio`` ``(1, hop)`` and ``state_i`` ``(1, *model.state_shapes[i])``; outputs ``logits`` and
    ``next_state_i`` of the same shapes.
    """
    import onnx

    from kwsbench.measure.optimize import merge_add_chains

    inputs, outputs = state_names(len(model.state_shapes))
    example = (torch.zeros(1, model.hop_samples), *model.initial_state(1))
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                example,
                buffer,
                dynamo=False,
                input_names=["audio", *inputs],
                output_names=["logits", *outputs],
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

    ``runtime``: ``eager`` or ``native`` (``model`` required), ``onnxruntime`` or ``openvino`` (``path`` of an exported
    step whose state tensors have ``state_shapes``, each without its batch axis of 1, in order; a file
    whose inputs differ is refused). ``threads``: intra-op threads. Sessions share nothing: each holds
    its own state (OpenVINO: its own infer request's variables).
    """

    def __init__(
        self,
        runtime: str,
        *,
        state_shapes: Sequence[Sequence[int]],
        hop_samples: int,
        path: str | os.PathLike | None = None,
        model: StreamingBCResNet | None = None,
        threads: int = 1,
    ):
        if runtime not in STREAMING_RUNTIMES:
            raise ConfigError(f"streaming runtime {runtime!r}: choose from {', '.join(STREAMING_RUNTIMES)}")
        self.runtime, self.hop_samples, self.threads = runtime, hop_samples, threads
        self.audio = np.zeros((1, hop_samples), dtype=np.float32)
        shapes = [(1, *map(int, shape)) for shape in state_shapes]
        self._inputs, self._outputs = state_names(len(shapes))
        self._expected = [("audio", self.audio.shape), *zip(self._inputs, shapes, strict=True)]
        if runtime == "eager":
            if model is None:
                raise ConfigError("the eager streaming runtime needs the PyTorch step; pass model")
            self._executor = StreamingExecutor(model)
            self._run = self._eager
        elif runtime == "native":
            from kwsbench.stream.native import NativeStep

            if model is None:
                raise ConfigError("the native streaming runtime compiles the PyTorch step; pass model")
            self._native = NativeStep(model)
            self._run = self._native.step
        elif runtime == "onnxruntime":
            self._open_onnxruntime(Path(path), shapes)
            self._run = self._onnxruntime
        else:
            self._open_openvino(Path(path))
            self._run = self._openvino
        self.reset()

    def _check_inputs(self, path: Path, found: list[tuple[str, tuple[int, ...]]]) -> None:
        """Refuse a file whose inputs are not ``audio`` then ``state_i`` with the shapes this session was given."""
        found = [(name, tuple(shape)) for name, shape in found]
        if found != self._expected:
            first = next(
                (f"{f} where {e} is expected" for f, e in zip(found, self._expected, strict=False) if f != e),
                f"{len(found)} inputs where {len(self._expected)} are expected",
            )
            raise ConfigError(
                f"{path}: its inputs are not the streaming step's ({first}); "
                "export it again with `kwsbench export --streaming`"
            )

    def _open_onnxruntime(self, path: Path, shapes: list[tuple[int, ...]]) -> None:
        import onnxruntime as ort

        from kwsbench.measure.backends import ort_session

        self._session = ort_session(path, self.threads)
        self._check_inputs(path, [(i.name, i.shape) for i in self._session.get_inputs()])
        logits_shape = self._session.get_outputs()[0].shape
        self.logits = np.zeros(logits_shape, dtype=np.float32)

        def bound(array: np.ndarray):
            # On the CPU an OrtValue made from an array reads and writes that array's memory.
            return ort.OrtValue.ortvalue_from_numpy(array)

        # Two sets of state buffers and two bindings used alternately: binding k reads set k and writes set
        # 1 - k, so a step neither binds nor copies state (the next step reads what this one wrote).
        self._state = [[np.zeros(shape, dtype=np.float32) for shape in shapes] for _ in range(2)]
        audio, logits = bound(self.audio), bound(self.logits)
        values = [[bound(a) for a in buffers] for buffers in self._state]
        self._bindings = []
        for k in range(2):
            binding = self._session.io_binding()
            binding.bind_ortvalue_input("audio", audio)
            binding.bind_ortvalue_output("logits", logits)
            for name, out, read, written in zip(
                self._inputs, self._outputs, values[k], values[1 - k], strict=True
            ):
                binding.bind_ortvalue_input(name, read)
                binding.bind_ortvalue_output(out, written)
            self._bindings.append(binding)
        self._turn = 0

    def _open_openvino(self, path: Path) -> None:
        import openvino as ov
        import openvino.passes

        from kwsbench.measure.backends import openvino_request

        model = ov.Core().read_model(str(path))
        self._check_inputs(path, [(p.get_any_name(), tuple(p.get_shape())) for p in model.inputs])
        # Each (state_i, next_state_i) pair becomes an OpenVINO variable (ReadValue/Assign) that lives in the
        # infer request, starts at zeros and is zeroed by reset_state(): no state crosses Python.
        manager = openvino.passes.Manager()
        manager.register_pass(
            openvino.passes.MakeStateful(dict(zip(self._inputs, self._outputs, strict=True)))
        )
        manager.run_passes(model)
        self._request = openvino_request(model, self.threads)
        self.logits = np.zeros(tuple(model.output("logits").get_shape()), dtype=np.float32)
        # Input and output bound once over our own arrays: a step copies into and out of them.
        self._request.set_tensor("audio", ov.Tensor(self.audio, shared_memory=True))
        self._request.set_tensor("logits", ov.Tensor(self.logits, shared_memory=True))

    def reset(self) -> None:
        """Back to the state of a stream preceded by silence."""
        if self.runtime == "eager":
            self._executor.reset()
        elif self.runtime == "native":
            self._native.reset()
        elif self.runtime == "onnxruntime":
            for buffers in self._state:
                for array in buffers:
                    array[...] = 0.0
            self._turn = 0
        else:
            self._request.reset_state()

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
        self._session.run_with_iobinding(self._bindings[self._turn])
        self._turn ^= 1
        return self.logits.copy()

    def _openvino(self, audio: np.ndarray) -> np.ndarray:
        np.copyto(self.audio, audio)
        self._request.infer()
        return self.logits.copy()


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
    if runtime == "native":
        session = StreamingSession("native", model=model, **shapes)
        check_parity(session, model, label="streaming step on native")
        return session
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
    return dict(state_shapes=model.state_shapes, hop_samples=model.hop_samples)


def export_streaming_checkpoint(
    checkpoint: str | os.PathLike, out: str | os.PathLike, *, hop_ms: float = 100.0
) -> dict[str, Any]:
    """A BC-ResNet checkpoint's streaming step as ONNX at ``out`` with a JSON beside it; returns that JSON.

    A standard model's step scores the window ending ``lag_samples`` before each hop's end (its delay,
    :func:`kwsbench.stream.incremental.delay_compensated`), a causal one's 20 ms before (the frontend's).
    """
    from kwsbench.export.exported import file_sha256, sidecar_path
    from kwsbench.stream.incremental import load_streaming_checkpoint

    model, ckpt = load_streaming_checkpoint(checkpoint, hop_ms=hop_ms)
    inputs, outputs = state_names(len(model.state_shapes))
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
        "lag_samples": model.lag_samples,
        # In the order of the ONNX file's inputs after ``audio`` and outputs after ``logits``; each shape
        # without its batch axis of 1.
        "state_inputs": inputs,
        "state_outputs": outputs,
        "state_shapes": [list(s) for s in model.state_shapes],
        "parity_max_abs_diff": diff,
        "parity_hops": PARITY_HOPS,
        "sha256": file_sha256(out),
    }
    write_json_atomically(sidecar_path(out), meta)
    return {"onnx": str(out), "json": str(sidecar_path(out)), **meta}


def format_streaming_export(result: dict[str, Any]) -> str:
    """The lines ``kwsbench export --streaming`` prints: the files, the step's shapes and the parity figure."""
    floats = sum(math.prod(shape) for shape in result["state_shapes"])
    return "\n".join(
        [
            f"wrote {result['onnx']} and {Path(result['json']).name}: streaming step of {result['model']}, "
            f"audio (1, {result['hop_samples']}) + {len(result['state_inputs'])} state tensors "
            f"({floats} floats) -> logits + the next state",
            f"parity: max |ONNX Runtime - PyTorch step| = {result['parity_max_abs_diff']:.3g} over "
            f"{result['parity_hops']} hops",
        ]
    )


def open_streaming_file(
    path: str | os.PathLike, runtime: str, *, threads: int = 1
) -> tuple[StreamingSession, dict[str, Any]]:
    """A file of ``kwsbench export --streaming`` on ``runtime`` (not eager), and the JSON beside it."""
    import json

    from kwsbench.export.exported import file_sha256, sidecar_path

    path = Path(path)
    try:
        meta = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"{path}: no readable JSON beside it ({type(err).__name__}); export it again"
        ) from None
    found = meta.get("format") if isinstance(meta, dict) else None
    if found != STREAMING_FORMAT:
        again = "export it again with `kwsbench export --streaming`"
        raise ConfigError(
            f"{path}: a streaming export of format {found!r}, this kwsbench reads {STREAMING_FORMAT}; {again}"
            if isinstance(found, str) and found.startswith("kwsbench-streaming/")
            else f"{path}: not a streaming export (format {found!r}); write one with "
            "`kwsbench export --streaming`, or drop --streaming"
        )
    if runtime in ("eager", "native"):
        raise ConfigError(
            f"{path}: an exported step runs on onnxruntime or openvino; pick --backend one of them"
        )
    if meta.get("sha256") != file_sha256(path):
        raise ConfigError(
            f"{path}: the JSON beside it was written for another file; export it again with "
            "`kwsbench export --streaming`"
        )
    session = StreamingSession(
        runtime,
        path=path,
        state_shapes=meta["state_shapes"],
        hop_samples=meta["hop_samples"],
        threads=threads,
    )
    return session, meta
