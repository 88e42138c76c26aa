"""`kwsbench bench`: JSON fields, the table, the frontend graph and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kwsbench.cli import main
from kwsbench.measure.backends import export_onnx, prepare_backend
from kwsbench.measure.bench import bench_model, format_bench, run_bench
from kwsbench.measure.latency import torch_threads

FIELDS = {
    "name", "backend", "threads", "batch", "median_ms", "p90_ms", "iqr_ms", "max_abs_diff",
    "ratio_to_eager", "status", "protocol", "provenance",
}  # fmt: skip


def test_bench_json_fields(capsys, tmp_path):
    argv = ["bench", "bcresnet_1", "--backend", "eager", "--backend", "onnxruntime", "--json"]
    assert main(argv + ["--iterations", "5", "--warmup", "1"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["backend"]) for r in records] == [
        ("bcresnet_1", "eager"),
        ("bcresnet_1", "onnxruntime"),
    ]
    for r in records:
        assert FIELDS <= set(r)
        assert r["status"] == "ok" and r["threads"] == 1 and r["batch"] == 1
        assert r["n"] >= 5 and 0 < r["median_ms"] <= r["p90_ms"] and r["iqr_ms"] >= 0
        assert r["protocol"]["iterations"] == 5 and r["protocol"]["timed"] == "model"
        assert r["provenance"]["versions"]["onnxruntime"]
    eager, ort = records
    assert ort["ratio_to_eager"] == pytest.approx(ort["median_ms"] / eager["median_ms"])
    # max_abs_diff is ONNX Runtime's output against eager's on the protocol's model and input: the same
    # computation done here gives the same number, bit for bit (one thread, same graph, same kernels).
    model, x = bench_model("bcresnet_1", batch=1)
    with torch_threads(1), torch.inference_mode():
        reference = model(x).numpy()
        path = export_onnx(model, x, tmp_path / "model.onnx", "bcresnet_1")
        prepared = prepare_backend("onnxruntime", model, x, threads=1, workdir=tmp_path, onnx_path=path)
    assert ort["max_abs_diff"] == float(np.abs(prepared.output - reference).max())


def test_bad_backend_is_a_one_line_error(capsys):
    assert main(["bench", "bcresnet_1", "--backend", "tensorrt"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown backend 'tensorrt'" in err and "optimized" in err


def test_pattern_matching_nothing_is_a_one_line_error(capsys):
    assert main(["bench", "nosuchnet*"]) == 2
    assert "no registered model matches 'nosuchnet*'" in capsys.readouterr().err


def test_frontend_graph_takes_raw_audio_and_table_has_provenance():
    report = run_bench(
        "bcresnet_1", ["eager", "onnxruntime", "optimized"], batch=2, frontend=True, iterations=3, warmup=1
    )
    statuses = {r.backend: r.status for r in report.records}
    assert statuses == {"eager": "ok", "onnxruntime": "ok", "optimized": "ok"}
    assert all(r.timed == "frontend+model" and r.batch == 2 for r in report.records)
    table = format_bench(report)
    assert report.provenance["cpu"] in table and "torch" in table
    assert table.count("bcresnet_1 ") == 3
