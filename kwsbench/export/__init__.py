"""Export: a checkpoint as an ONNX model (log-mel frontend inside on request, int8 on request) with a JSON
beside it and a parity check against PyTorch, and the loader every consumer runs such a file through.

``export_checkpoint`` (:mod:`kwsbench.export.onnx`) writes; ``load_exported`` (:mod:`kwsbench.export.exported`)
reads. The writer is imported on first use, so that consumers of an export do not pay for the exporter.
"""

from __future__ import annotations

from typing import Any

from kwsbench.export.exported import EXPORT_FORMAT, ExportedModel, load_exported

__all__ = ["EXPORT_FORMAT", "ExportResult", "ExportedModel", "export_checkpoint", "load_exported"]


def __getattr__(name: str) -> Any:
    if name in ("ExportResult", "export_checkpoint"):
        from kwsbench.export import onnx

        return getattr(onnx, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
