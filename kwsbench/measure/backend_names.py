"""The runtimes `kwsbench bench` can time, by name: torch-free, so the command line lists them in its help."""

from __future__ import annotations

# name -> what it runs; kwsbench.measure.backends builds each one.
BACKENDS: dict[str, str] = {
    "eager": "the PyTorch module under inference_mode",
    "compile": "torch.compile (inductor, freezing)",
    "onnxruntime": "ONNX export on ONNX Runtime (CPU, optimisation level ALL)",
    "openvino": "ONNX export on OpenVINO, float32 pinned",
    "openvino-bf16": "ONNX export on OpenVINO in bfloat16 (reported, not held to float32 parity)",
    "optimized": "kwsbench's exactly equivalent inference graph on the fastest runtime for it",
}
# Backends held to float32 parity with eager; bf16 outputs are reported, not held to it.
EXACT_BACKENDS = frozenset({"eager", "compile", "onnxruntime", "openvino", "optimized"})
