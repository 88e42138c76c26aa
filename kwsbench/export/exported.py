"""An exported model as its consumers see it: the ONNX file, the JSON beside it and an ONNX Runtime session.

``load_exported`` is the one way ``listen``, ``stream-eval`` and ``evaluate`` open a ``kwsbench export``: it
refuses a file without its JSON (or with a JSON of another format, or one written for another ONNX file) on
one line, and returns an :class:`ExportedModel` whose ``run`` maps inputs to logits on ONNX Runtime or OpenVINO.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kwsbench.errors import ConfigError, ModelError
from kwsbench.specs import InputSpec

EXPORT_FORMAT = "kwsbench-export/1"
# What the JSON beside the ONNX file must hold (see kwsbench.export.onnx for how each is filled).
SIDECAR_KEYS = ("format", "onnx_sha256", "labels", "input", "input_spec", "model", "source", "versions")
INPUT_KINDS = ("waveform", "features")
# The CPU runtimes an exported file runs on. An int8 (QDQ) file runs as int8 on both: ONNX Runtime fuses the
# Quantize/Dequantize pairs into integer kernels, OpenVINO's low-precision transformations do the same.
EXPORT_RUNTIMES = ("onnxruntime", "openvino")
_RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}


def sidecar_path(onnx_path: str | os.PathLike) -> Path:
    """The JSON that describes an exported ONNX file: the same name with ``.json``."""
    return Path(onnx_path).with_suffix(".json")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ExportedModel:
    """An exported model ready to run on a CPU runtime (``runtime``: one of ``EXPORT_RUNTIMES``).

    ``run(x)`` takes ``(B, clip_samples)`` float32 audio at ``sample_rate`` when ``takes_waveform`` (the
    log-mel frontend is inside the graph), else features ``(B, 1, n_features, frames)`` as
    ``kwsbench.data.features.make_frontend(input_spec)`` computes them; it returns logits
    ``(B, len(labels))``. The graph itself has batch 1 (see ``kwsbench.export.onnx``); ``run`` feeds it
    row by row.
    """

    path: Path
    meta: dict[str, Any]
    threads: int = 1
    runtime: str = EXPORT_RUNTIMES[0]
    _run_one: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        from kwsbench.measure.backends import openvino_runner, ort_runner

        if self.runtime not in EXPORT_RUNTIMES:
            raise ConfigError(
                f"runtime {self.runtime!r}: an exported model runs on one of {', '.join(EXPORT_RUNTIMES)}"
            )
        try:
            if self.runtime == "onnxruntime":
                self._run_one = ort_runner(self.path, self.threads)
            else:
                self._run_one = openvino_runner(self.path, self.threads, self.input_shape)
        except Exception as err:  # noqa: BLE001 - each runtime raises its own exception types
            first = (str(err).strip().splitlines() or [""])[0][:200]
            raise ModelError(
                f"{self.path}: {_RUNTIME_NAMES[self.runtime]} cannot load it ({first}); write it again with `kwsbench export`"
            ) from None

    @property
    def labels(self) -> list[str]:
        return list(self.meta["labels"])

    @property
    def takes_waveform(self) -> bool:
        return self.meta["input"]["kind"] == "waveform"

    @property
    def sample_rate(self) -> int:
        return int(self.meta["input"]["sample_rate"])

    @property
    def clip_samples(self) -> int:
        return int(self.meta["input"]["clip_samples"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The graph's input shape, batch first: ``(1, clip_samples)`` or ``(1, 1, n_features, frames)``."""
        return tuple(self.meta["input"]["shape"])

    @property
    def input_spec(self) -> InputSpec:
        """The features the model part takes (what ``make_frontend`` rebuilds the frontend from)."""
        return InputSpec(**self.meta["input_spec"])

    @property
    def int8(self) -> bool:
        return bool(self.meta.get("int8"))

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits ``(B, num_classes)`` float32 for ``x`` shaped ``(B, *input_shape[1:])`` (or one item
        without the batch axis)."""
        x = np.asarray(x, dtype=np.float32)
        item = self.input_shape[1:]
        if x.shape == item:
            x = x[None]
        if x.shape[1:] != item:
            what = "16 kHz audio" if self.takes_waveform else "log-mel features"
            raise ConfigError(
                f"{self.path.name}: input of shape {x.shape}; pass {what} shaped "
                f"(B, {', '.join(map(str, item))}) as this model was exported for"
            )
        if len(x) == 0:
            return np.zeros((0, len(self.meta["labels"])), dtype=np.float32)
        x = np.ascontiguousarray(x)
        return np.concatenate([self._run_one(x[i : i + 1]) for i in range(len(x))])


def _read_sidecar(onnx_path: Path) -> dict[str, Any]:
    side = sidecar_path(onnx_path)
    fix = f"export the checkpoint with `kwsbench export --checkpoint FILE --out {onnx_path}`"
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{onnx_path}: no {side.name} beside it, so not a kwsbench export; {fix}") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ModelError(f"{side}: cannot be read as JSON ({err}); {fix}") from None
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        if isinstance(found, str) and found.startswith("kwsbench-streaming/"):
            fix = "it is a streaming step (`export --streaming`): run it with --streaming"
        raise ModelError(f"{side}: not a {EXPORT_FORMAT} description (found {found!r}); {fix}")
    missing = [k for k in SIDECAR_KEYS if k not in meta]
    if missing:
        raise ModelError(f"{side}: lacks {missing[0]!r}, so it was not written by kwsbench; {fix}")
    if meta["input"].get("kind") not in INPUT_KINDS:
        raise ModelError(
            f"{side}: input kind {meta['input'].get('kind')!r} is not one of {INPUT_KINDS}; {fix}"
        )
    if file_sha256(onnx_path) != meta["onnx_sha256"]:
        raise ModelError(
            f"{onnx_path}: does not match {side.name} (SHA-256 differs: an interrupted or edited export); {fix}"
        )
    return meta


def load_exported(
    path: str | os.PathLike, *, threads: int = 1, runtime: str = EXPORT_RUNTIMES[0]
) -> ExportedModel:
    """Open a ``kwsbench export`` (``model.onnx`` with ``model.json`` beside it) on ``runtime`` with ``threads``
    CPU threads.

    Anything else (a missing file, an ONNX file without its JSON, a JSON of another format or written for
    other bytes) is a one-line :class:`ModelError` naming the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such exported model; write one with `kwsbench export`")
    return ExportedModel(path, _read_sidecar(path), threads=threads, runtime=runtime)
