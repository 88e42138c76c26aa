"""Every registered model on ONNX Runtime, OpenVINO and the optimized path gives eager's outputs."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from calibrated import calibrate, calibrated_model, float64_output, parity_atol
from torch import nn

from kwsbench.errors import ConfigError
from kwsbench.measure.backends import BACKENDS, check_backends, export_onnx, ort_node_profile, prepare_backend
from kwsbench.measure.latency import torch_threads
from kwsbench.measure.optimize import inference_graph
from kwsbench.models import list_models


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


@dataclass
class Case:
    """One calibrated model, its input ``(2, ...)``, float64 output, float32 tolerance and ONNX export."""

    model: nn.Module
    x: torch.Tensor
    exact: np.ndarray
    atol: float
    path: Path
    workdir: Path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One calibrated model, exact output, tolerance and ONNX export per model name, shared by the tests."""
    cache: dict[str, Case] = {}

    def get(name: str) -> Case:
        if name not in cache:
            workdir = tmp_path_factory.mktemp(name)
            with torch_threads(1):
                model, x = calibrated_model(name, batch=2)
                exact = float64_output(model, x).numpy()
                path = export_onnx(model, x, workdir / "model.onnx", name)
                cache[name] = Case(model, x, exact, parity_atol(model, x), path, workdir)
        return cache[name]

    return get


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "optimized"])
@pytest.mark.parametrize("name", list_models())
def test_backend_matches_eager(exported, name, backend):
    case = exported(name)
    prepared = prepare_backend(
        backend, case.model, case.x, threads=1, workdir=case.workdir, onnx_path=case.path, label=name
    )
    assert prepared.output.shape == case.exact.shape == (2, 12)
    # The tolerance is far below what the input changes: the calibrated logits depend on every layer.
    assert np.abs(case.exact[0] - case.exact[1]).max() > 100 * case.atol
    if backend == "openvino":
        assert prepared.note == "inference precision f32"  # pinned: bf16 would be chosen on bf16 CPUs
    diff = float(np.abs(prepared.output - case.exact).max())
    assert diff <= case.atol, f"{name} on {backend}: max |diff| {diff:.3g} > {case.atol:.3g} to float64"
    # The same session on the same input, one thread: the same kernels in the same order.
    np.testing.assert_array_equal(np.asarray(prepared.run()), prepared.output)


def test_optimized_records_its_runtime_and_honours_batch(exported, tmp_path):
    model = exported("bcresnet_1").model
    x = torch.randn(3, 1, 40, 101, generator=torch.Generator().manual_seed(5))
    prepared = prepare_backend("optimized", model, x, threads=1, workdir=tmp_path)
    assert prepared.output.shape == (3, 12)
    assert "rewritten graph on" in prepared.note
    np.testing.assert_allclose(
        prepared.output, float64_output(model, x).numpy(), atol=parity_atol(model, x), rtol=0
    )


def bf16_reference(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """The folded model (BatchNorm in the convolutions, as OpenVINO runs it) in float64, with every
    convolution / linear layer's weights and inputs rounded to bfloat16: what a bf16 runtime computes with
    exact float32 accumulation."""

    def to_bf16(t: torch.Tensor) -> torch.Tensor:
        return t.to(torch.bfloat16).double()

    with torch.no_grad():
        graph = inference_graph(copy.deepcopy(model).double(), tuple(x.shape))
        for module in graph.modules():
            if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
                module.weight.copy_(to_bf16(module.weight))
                module.register_forward_pre_hook(lambda _, args: tuple(to_bf16(a) for a in args))
        return graph(x.double()).numpy()


def test_openvino_bf16_runs_in_reduced_precision_or_says_so(exported):
    case = exported("bcresnet_1")
    prepared = prepare_backend(
        "openvino-bf16", case.model, case.x, threads=1, workdir=case.workdir, onnx_path=case.path
    )
    diff = float(np.abs(prepared.output - case.exact).max())
    if prepared.note == "inference precision f32":  # a CPU without bf16: OpenVINO says so and runs f32
        assert diff <= case.atol
        return
    assert prepared.note == "inference precision bf16"
    # Really bf16: its unit roundoff is 2^16 times float32's, so its error is far beyond the float32 bound
    # (100x is a floor, not an estimate), and of the order of the bf16 reference's own error. 4x: OpenVINO
    # also rounds the activations between its fused element-wise ops, a few roundings more per layer than
    # the reference's two (0.8-1.9x the reference over seven model families on an AMD EPYC).
    reference_error = float(np.abs(bf16_reference(case.model, case.x) - case.exact).max())
    print(
        f"openvino bf16: max |diff| {diff:.3g}, bf16 reference's {reference_error:.3g}, f32 bound {case.atol:.3g}"
    )
    assert 100 * case.atol < diff <= 4 * reference_error


def test_compile_matches_eager(tmp_path):
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 3))
    calibrate(net, (8, 1, 8, 8), seed=0)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    prepared = prepare_backend("compile", net, x, threads=1, workdir=tmp_path)
    exact = float64_output(net, x).numpy()
    np.testing.assert_allclose(prepared.output, exact, atol=parity_atol(net, x), rtol=0)


def test_backend_names_are_checked():
    assert check_backends(["eager", "onnxruntime", "eager"]) == ["eager", "onnxruntime"]
    with pytest.raises(ConfigError, match="unknown backend 'tensorrt'; choose from eager") as err:
        check_backends(["eager", "tensorrt"])
    assert "\n" not in str(err.value)
    assert set(BACKENDS) >= {"eager", "compile", "onnxruntime", "openvino", "openvino-bf16", "optimized"}


def test_export_failure_names_the_model(tmp_path):
    class Unexportable(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.eigvals(x).real  # complex eigenvalues: no ONNX operator for them

    from kwsbench.errors import BackendError

    with pytest.raises(BackendError, match="odd: ONNX export failed"):
        export_onnx(Unexportable(), torch.randn(3, 3), Path(tmp_path) / "m.onnx", "odd")


def test_node_profile_lists_the_graph_nodes(exported):
    case = exported("bcresnet_1")
    rows = ort_node_profile(case.path, case.x.numpy(), runs=5, top=5)
    assert len(rows) == 5 and rows[0]["median_us"] >= rows[-1]["median_us"] >= 0
    assert {r["op"] for r in rows} <= {"Conv", "Add", "Relu", "Mul", "Sigmoid", "QuickGelu", "AveragePool", "Reshape",
        "BatchNormalization", "ReorderInput", "ReorderOutput", "GlobalAveragePool", "Flatten", "ReduceMean", "FusedConv", "Sum"}  # fmt: skip
