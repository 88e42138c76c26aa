"""Runtimes a model can be timed on; each turns an eval-mode module into a zero-argument run function.

* ``eager``: the module itself under ``torch.inference_mode``.
* ``compile``: ``torch.compile`` (inductor) with ``freezing`` (weights folded as constants), compiled
  on the first call with the requested thread count, because inductor fixes its OpenMP threads then.
* ``onnxruntime``: the module exported to ONNX, one ``InferenceSession`` (CPU, ``intra_op_num_threads``
  = threads, one inter-op thread, sequential execution, graph optimisation level ALL).
* ``openvino`` / ``openvino-bf16``: the same ONNX file compiled by OpenVINO for the CPU with
  ``INFERENCE_PRECISION_HINT`` pinned to ``f32`` (OpenVINO picks bf16 by itself on CPUs with AVX-512
  bf16, which changes the outputs) or set to ``bf16`` on request, ``INFERENCE_NUM_THREADS`` = threads
  and ``PERFORMANCE_HINT`` LATENCY.
* ``optimized``: kwsbench's exactly equivalent inference graph (:mod:`kwsbench.measure.optimize`)
  exported to ONNX and run on whichever runtime configuration measures fastest for that model; the
  choice is recorded in the note.

The ONNX export uses the TorchScript exporter (``dynamo=False``, well under a second per model) and falls
back to the dynamo exporter when that fails.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kwsbench.errors import BackendError, ConfigError
from kwsbench.measure.backend_names import BACKENDS, EXACT_BACKENDS  # noqa: F401  (re-exported)
from kwsbench.measure.latency import measure_latency, torch_threads
from kwsbench.measure.protocol import Protocol

log = logging.getLogger(__name__)

# A float32 backend's largest |output - eager output| may be this fraction of the largest |eager output|:
# runtimes differ from eager only in summation order (about 1e-6 of the output's scale here), while a wrong
# graph (a mis-folded constant, a missing layer) moves the logits by a sizeable part of their scale. bf16
# outputs are reported, not held to it.
PARITY_RTOL = 1e-3


def parity_bound(reference: np.ndarray) -> float:
    """The largest float32 parity error accepted against ``reference`` (scale-relative, see PARITY_RTOL)."""
    return PARITY_RTOL * max(float(np.abs(reference).max()), np.finfo(np.float32).tiny)


# The short timing each `optimized` candidate runtime gets before the fastest is chosen.
_SELECTION_PROTOCOL = Protocol(warmup=10, iterations=30, min_time_s=0.05, max_iterations=200)


@dataclass
class Prepared:
    """A backend ready to time: ``run()`` does one inference on the bound input.

    ``output`` is the ``(B, num_classes)`` result of one call (for parity); ``note`` says what was built.
    """

    backend: str
    run: Callable[[], Any]
    output: np.ndarray
    note: str = ""


def check_backends(names: list[str] | tuple[str, ...]) -> list[str]:
    """The backend names, validated; an unknown one is a one-line :class:`ConfigError`."""
    bad = [n for n in names if n not in BACKENDS]
    if bad:
        raise ConfigError(f"unknown backend {bad[0]!r}; choose from {', '.join(BACKENDS)}")
    if not names:
        raise ConfigError(f"no backend given; choose from {', '.join(BACKENDS)}")
    return list(dict.fromkeys(names))


def _numpy(out: Any) -> np.ndarray:
    if isinstance(out, torch.Tensor):
        return out.detach().float().numpy().copy()
    return np.array(out, dtype=np.float32)


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, label: str = "model") -> Path:
    """Export ``model`` on ``example`` (its exact shape) to ``path``; :class:`BackendError` when no exporter can."""
    errors = []
    for dynamo in (False, True):
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model, (example,), str(path), dynamo=dynamo, input_names=["x"], output_names=["y"]
                )
            return path
        except Exception as err:  # noqa: BLE001 - both exporters raise many kinds; the message is kept
            errors.append(f"{'dynamo' if dynamo else 'torchscript'}: {str(err).splitlines()[0][:160]}")
    raise BackendError(f"{label}: ONNX export failed ({'; '.join(errors)})")


def ort_session(path: Path, threads: int, level: str = "all", spinning: bool = True):
    """An ONNX Runtime CPU session: ``threads`` intra-op threads, one inter-op, sequential execution."""
    import onnxruntime as ort

    levels = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = levels[level]
    so.log_severity_level = 3
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_runner(path: Path, threads: int, level: str = "all", spinning: bool = True):
    """``run(x) -> logits`` over an ONNX Runtime session on fresh float32 input (x changes every call)."""
    session = ort_session(path, threads, level, spinning)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def openvino_config(threads: int, precision: str = "f32") -> dict[str, Any]:
    """The OpenVINO CPU compile settings every kwsbench model gets: ``threads`` threads, one stream, latency
    hint, inference precision ``precision`` (pinned to f32 by default: OpenVINO would pick bf16 on AVX-512
    bf16 CPUs)."""
    return {
        "INFERENCE_PRECISION_HINT": precision,
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
    }


def openvino_request(model: Path | Any, threads: int):
    """An OpenVINO CPU infer request, float32 pinned (:func:`openvino_config`), for the ONNX file at
    ``model`` or for an ``openvino.Model`` already read (and transformed, e.g. made stateful)."""
    import openvino as ov

    core = ov.Core()
    if not isinstance(model, ov.Model):
        model = core.read_model(str(model))
    return core.compile_model(model, "CPU", openvino_config(threads)).create_infer_request()


def openvino_runner(path: Path, threads: int, shape: tuple[int, ...]):
    """``run(x) -> logits`` on OpenVINO's CPU plugin for inputs of the fixed ``shape``, float32 pinned
    (OpenVINO would pick bf16 on AVX-512 bf16 CPUs; an int8 QDQ graph still runs its integer kernels)."""
    import openvino as ov

    request = openvino_request(path, threads)
    # One input tensor over our own buffer, bound once: a copy into it and infer() measured 0.42 ms for
    # BC-ResNet-1 with log-mel, against 0.55 ms for infer([x]), which wraps a new tensor every call.
    buffer = np.zeros(shape, dtype=np.float32)
    request.set_input_tensor(ov.Tensor(buffer, shared_memory=True))

    def run(x: np.ndarray) -> np.ndarray:
        np.copyto(buffer, x)
        request.infer()
        return request.get_output_tensor(0).data.copy()

    return run


def _ort_run(
    path: Path, x: np.ndarray, threads: int, *, level: str = "all", bound: bool = False, spinning=True
):
    sess = ort_session(path, threads, level, spinning)
    name = sess.get_inputs()[0].name
    if not bound:
        return lambda: sess.run(None, {name: x})[0]
    # I/O binding skips the per-call feed dictionary and output list handling.
    binding = sess.io_binding()
    binding.bind_cpu_input(name, x)
    binding.bind_output(sess.get_outputs()[0].name, "cpu")

    def run():
        sess.run_with_iobinding(binding)
        return binding.get_outputs()[0].numpy()

    return run


def _openvino_run(path: Path, x: np.ndarray, threads: int, precision: str):
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", openvino_config(threads, precision))
    request = compiled.create_infer_request()
    request.set_input_tensor(ov.Tensor(x))

    def run():
        request.infer()
        return request.get_output_tensor(0).data

    precision_used = compiled.get_property("INFERENCE_PRECISION_HINT")  # an openvino Type, e.g. f32
    return run, getattr(precision_used, "get_type_name", lambda: str(precision_used))()


def _compile_run(model: nn.Module, example: torch.Tensor, threads: int):
    import torch._inductor.config as inductor_config

    compiled = torch.compile(model, backend="inductor")
    with torch_threads(threads), torch.inference_mode(), inductor_config.patch(freezing=True):
        compiled(example)  # compiles here, under the thread count and freezing it will be timed with
    return lambda: compiled(example)


def _fastest(candidates: dict[str, Callable[[], Any]], threads: int) -> tuple[str, Callable[[], Any], str]:
    timed = {
        label: measure_latency(run, threads=threads, protocol=_SELECTION_PROTOCOL).median_ms
        for label, run in candidates.items()
    }
    best = min(timed, key=timed.get)
    summary = ", ".join(f"{k} {v:.3f}" for k, v in sorted(timed.items(), key=lambda kv: kv[1]))
    return best, candidates[best], summary


def _optimized_run(model: nn.Module, example: torch.Tensor, threads: int, workdir: Path, label: str):
    import onnx

    from kwsbench.measure.optimize import inference_graph, merge_add_chains

    graph = inference_graph(model, tuple(example.shape))
    path = export_onnx(graph, example, workdir / "optimized.onnx", label)
    onnx.save(merge_add_chains(onnx.load(str(path))), str(path))
    x = example.numpy()
    candidates = {
        "onnxruntime-all": _ort_run(path, x, threads, level="all", bound=True),
        "onnxruntime-extended": _ort_run(path, x, threads, level="extended", bound=True),
        "openvino-f32": _openvino_run(path, x, threads, "f32")[0],
    }
    if threads > 1:
        candidates["onnxruntime-all-nospin"] = _ort_run(
            path, x, threads, level="all", bound=True, spinning=False
        )
    # A runtime that does not reproduce the rewritten graph is never picked, however fast it is.
    with torch.inference_mode():
        expected = _numpy(graph(example))
    diffs = {label: float(np.abs(_numpy(run()) - expected).max()) for label, run in candidates.items()}
    candidates = {label: run for label, run in candidates.items() if diffs[label] <= parity_bound(expected)}
    if not candidates:
        raise BackendError(
            f"{label}: no runtime reproduces the rewritten graph (max |diff| {min(diffs.values()):.3g}); "
            "check the model's ONNX export"
        )
    best, run, summary = _fastest(candidates, threads)
    return run, f"rewritten graph on {best} (selection medians ms: {summary})"


def prepare_backend(
    backend: str,
    model: nn.Module,
    example: torch.Tensor,
    *,
    threads: int,
    workdir: Path,
    onnx_path: Path | None = None,
    label: str = "model",
) -> Prepared:
    """Build ``backend`` for the eval-mode ``model`` on the fixed input ``example`` ``(B, ...)``.

    ``onnx_path`` reuses an export of this very model and input shape (the onnxruntime and openvino
    backends share one); otherwise the model is exported into ``workdir``. Failures to build raise
    :class:`BackendError` naming the model (``label``) and the backend.
    """
    check_backends([backend])
    model = model.eval()
    note = ""
    with torch_threads(threads):
        if backend == "eager":
            run = lambda: model(example)  # noqa: E731
        elif backend == "compile":
            run = _compile_run(model, example, threads)
            note = "torch.compile inductor, freezing"
        elif backend == "optimized":
            run, note = _optimized_run(model, example, threads, workdir, label)
        else:
            path = onnx_path or export_onnx(model, example, workdir / "model.onnx", label)
            x = example.numpy()
            if backend == "onnxruntime":
                run = _ort_run(path, x, threads)
                note = "graph optimisation level ALL"
            else:
                run, precision = _openvino_run(
                    path, x, threads, "bf16" if backend == "openvino-bf16" else "f32"
                )
                note = f"inference precision {precision}"
        with torch.inference_mode():
            output = _numpy(run())
    return Prepared(backend=backend, run=run, output=output, note=note)


def ort_node_profile(
    path: Path, x: np.ndarray, threads: int = 1, runs: int = 200, top: int = 15
) -> list[dict]:
    """ONNX Runtime's per-node cost of a model: the ``top`` nodes by median kernel time over ``runs`` calls.

    Uses ``SessionOptions.enable_profiling`` (graph optimisation level ALL, as timed); each row has the
    node name, its operator and the median microseconds per call. Profiling inflates small kernels, so
    compare rows with each other, not with latency figures.
    """
    import json

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(path).with_suffix("")) + "_profile"
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(runs):
        sess.run(None, feed)
    events = json.loads(Path(sess.end_profiling()).read_text())
    times: dict[tuple[str, str], list[float]] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            times.setdefault((e["name"][: -len("_kernel_time")], e["args"]["op_name"]), []).append(e["dur"])
    rows = [{"node": n, "op": op, "median_us": float(np.median(d))} for (n, op), d in times.items()]
    return sorted(rows, key=lambda r: -r["median_us"])[:top]
