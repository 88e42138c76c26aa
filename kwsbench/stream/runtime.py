"""A model on an exact backend, called on fresh input every time: what a streaming scorer needs.

``kwsbench.measure.backends.prepare_backend`` builds a backend around one fixed input (it times the same
call over and over); a stream feeds new windows every hop. This module builds the same runtimes, on the
same exported files, as callables ``run(x: (B, ...) float32) -> (B, C) float32``:

* ``eager``: the module under ``torch.inference_mode`` with the requested threads.
* ``onnxruntime`` / ``openvino``: the module exported to ONNX (``export_onnx``), on ONNX Runtime
  (``ort_session``) or OpenVINO (float32 pinned, as ``kwsbench bench`` runs it).
* ``optimized``: ``prepare_backend("optimized")`` picks the fastest runtime for kwsbench's rewritten graph
  (and checks its parity); the same file and runtime configuration are then opened for fresh inputs.

``compile`` is left out (``backend_names.STREAM_BACKENDS``): inductor compiles for about a minute first.
Every runtime is checked against eager on a probe input before it is used (``parity_bound``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kwsbench.errors import BackendError, ConfigError
from kwsbench.measure.backends import (
    export_onnx,
    openvino_runner,
    ort_runner,
    parity_bound,
    prepare_backend,
)
from kwsbench.measure.latency import torch_threads
from kwsbench.stream.backend_names import STREAM_BACKENDS


@dataclass
class Runtime:
    """``run(x)`` on fresh ``(batch, ...)`` float32 input; ``note`` says what runs it."""

    backend: str
    run: Callable[[np.ndarray], np.ndarray]
    batch: int
    note: str = ""


def check_stream_backend(name: str) -> str:
    """``name`` if a stream can use it, else a one-line :class:`ConfigError`."""
    if name not in STREAM_BACKENDS:
        why = " (compile takes about a minute before the first hop)" if name == "compile" else ""
        raise ConfigError(
            f"--backend {name}: not for streaming{why}; choose from {', '.join(STREAM_BACKENDS)}"
        )
    return name


def _eager(model: nn.Module, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    def run(x: np.ndarray) -> np.ndarray:
        with torch_threads(threads), torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return run


def _optimized(model: nn.Module, example: torch.Tensor, threads: int, workdir: Path, label: str):
    prepared = prepare_backend("optimized", model, example, threads=threads, workdir=workdir, label=label)
    # The note names the runtime configuration the selection picked: "rewritten graph on <choice> (...)".
    choice = prepared.note.split(" on ", 1)[-1].split(" (", 1)[0]
    path = workdir / "optimized.onnx"
    if choice == "openvino-f32":
        run = openvino_runner(path, threads, tuple(example.shape))
    elif choice.startswith("onnxruntime-"):
        level = "extended" if "extended" in choice else "all"
        run = ort_runner(path, threads, level, spinning="nospin" not in choice)
    else:
        raise BackendError(
            f"{label}: optimized picked {choice!r}, which streaming cannot open; use --backend onnxruntime"
        )
    return run, prepared.note


def build_runtime(
    backend: str, model: nn.Module, example: torch.Tensor, *, threads: int = 1, label: str = "model"
) -> Runtime:
    """``backend`` running the eval-mode ``model`` on inputs shaped like ``example`` ``(batch, ...)``.

    The ONNX runtimes have the batch of ``example`` fixed; the result is checked against eager on
    ``example`` to the project's float32 parity bound (a :class:`BackendError` otherwise).
    """
    check_stream_backend(backend)
    model = model.eval()
    note = ""
    with tempfile.TemporaryDirectory(prefix="kwsbench-stream-") as tmp:
        workdir = Path(tmp)
        if backend == "eager":
            run = _eager(model, threads)
        elif backend == "optimized":
            run, note = _optimized(model, example, threads, workdir, label)
        else:
            with torch_threads(threads):
                path = export_onnx(model, example, workdir / "model.onnx", label)
            if backend == "onnxruntime":
                run = ort_runner(path, threads)
            else:
                run = openvino_runner(path, threads, tuple(example.shape))
            note = "graph optimisation level ALL" if backend == "onnxruntime" else "inference precision f32"
    with torch_threads(threads), torch.inference_mode():
        expected = model(example).numpy()
    got = run(np.ascontiguousarray(example.numpy()))
    diff = float(np.abs(got - expected).max())
    if not diff <= parity_bound(expected):
        raise BackendError(
            f"{label} on {backend}: output differs from eager by {diff:.3g}; use --backend eager and report it"
        )
    return Runtime(backend=backend, run=run, batch=int(example.shape[0]), note=note)
