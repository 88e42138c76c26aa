"""Where a figure was measured: CPU model and its vector flags, thread count and runtime versions."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

# The flags that decide which kernels the runtimes pick (AVX-512 and its bf16 / VNNI / AMX extensions).
CPU_FLAGS_OF_INTEREST = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)
PACKAGES = ("kwsbench", "torch", "onnx", "onnxruntime", "openvino", "numpy")


def cpu_info() -> tuple[str, list[str]]:
    """This CPU's model name and all its flags (``/proc/cpuinfo``; the platform's name and none elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), []
    model, flags = "", []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = value.split()
    return model or platform.machine(), flags


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def collect_provenance(threads: int) -> dict:
    """A JSON-ready description of the machine and software a measurement ran on."""
    model, flags = cpu_info()
    present = set(flags)
    return {
        "cpu": model,
        "cpu_flags": [f for f in CPU_FLAGS_OF_INTEREST if f in present],
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in PACKAGES},
    }
