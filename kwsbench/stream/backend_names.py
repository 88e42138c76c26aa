"""The backends a stream can run on, by name: torch-free, so the command line lists them in its help."""

from __future__ import annotations

# The exact backends (kwsbench.measure.backend_names.EXACT_BACKENDS) a stream can feed fresh windows,
# fastest first; the first is the default. compile is left out: inductor takes about a minute to compile
# before the first hop is heard.
STREAM_BACKENDS: tuple[str, ...] = ("optimized", "onnxruntime", "openvino", "eager")
