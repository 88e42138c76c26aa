"""Every registered model on ONNX Runtime, OpenVINO and the optimized path gives eager's outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kwsbench.errors import ConfigError
from kwsbench.measure.backends import BACKENDS, check_backends, export_onnx, ort_node_profile, prepare_backend
from kwsbench.measure.bench import bench_model
from kwsbench.measure.latency import torch_threads
from kwsbench.models import list_models

ATOL = 1e-4


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One model build, eager output and ONNX export per model name, shared by the backends' tests."""
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            workdir = tmp_path_factory.mktemp(name)
            with torch_threads(1):
                model, x = bench_model(name, batch=2)
                with torch.no_grad():
                    reference = model(x).numpy()
                path = export_onnx(model, x, workdir / "model.onnx", name)
            cache[name] = (model, x, reference, path, workdir)
        return cache[name]

    return get


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "optimized"])
@pytest.mark.parametrize("name", list_models())
def test_backend_matches_eager(exported, name, backend):
    model, x, reference, path, workdir = exported(name)
    prepared = prepare_backend(backend, model, x, threads=1, workdir=workdir, onnx_path=path, label=name)
    assert prepared.output.shape == reference.shape == (2, 12)
    diff = float(np.abs(prepared.output - reference).max())
    assert diff <= ATOL, f"{name} on {backend}: max |diff| {diff}"
    np.testing.assert_allclose(
        np.asarray(prepared.run()), prepared.output, atol=1e-6
    )  # runs again, same result


def test_optimized_records_its_runtime_and_honours_batch(exported, tmp_path):
    model, _, _, _, _ = exported("bcresnet_1")
    x = torch.randn(3, 1, 40, 101)
    prepared = prepare_backend("optimized", model, x, threads=1, workdir=tmp_path)
    assert prepared.output.shape == (3, 12)
    assert "rewritten graph on" in prepared.note
    with torch.no_grad():
        np.testing.assert_allclose(prepared.output, model(x).numpy(), atol=ATOL)


def test_openvino_bf16_runs_in_reduced_precision_or_says_so(exported):
    model, x, reference, path, workdir = exported("bcresnet_1")
    prepared = prepare_backend("openvino-bf16", model, x, threads=1, workdir=workdir, onnx_path=path)
    assert prepared.note.startswith("inference precision ")
    assert np.abs(prepared.output - reference).max() < 0.5  # bf16 keeps ~3 significant digits


def test_compile_matches_eager(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval()
    x = torch.randn(1, 1, 8, 8)
    prepared = prepare_backend("compile", net, x, threads=1, workdir=tmp_path)
    with torch.no_grad():
        np.testing.assert_allclose(prepared.output, net(x).numpy(), atol=ATOL)


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
    _, x, _, path, _ = exported("bcresnet_1")
    rows = ort_node_profile(path, x.numpy(), runs=5, top=5)
    assert len(rows) == 5 and rows[0]["median_us"] >= rows[-1]["median_us"] >= 0
    assert {r["op"] for r in rows} <= {"Conv", "Add", "Relu", "Mul", "Sigmoid", "QuickGelu", "AveragePool", "Reshape",
        "BatchNormalization", "ReorderInput", "ReorderOutput", "GlobalAveragePool", "Flatten", "ReduceMean", "FusedConv", "Sum"}  # fmt: skip
