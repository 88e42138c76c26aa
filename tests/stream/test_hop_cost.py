"""`kwsbench bench --streaming`: both costs for every backend, their ratio, and the refusals."""

from __future__ import annotations

import json

import pytest

from kwsbench.cli import main
from kwsbench.measure.protocol import Protocol
from kwsbench.stream.hop_cost import HopCost, format_hop_costs, hop_cost


def test_ratio_is_best_window_over_best_step():
    cost = HopCost("bcresnet_1", 100.0, {"optimized": 0.4, "eager": 3.0}, {"openvino": 0.1, "eager": 2.0})
    assert cost.best_window == ("optimized", 0.4) and cost.best_step == ("openvino", 0.1)
    assert cost.speedup == pytest.approx(4.0)
    assert cost.to_dict()["speedup"] == pytest.approx(4.0)


def test_times_every_backend_of_both_paths_and_prints_them():
    # A short protocol: this checks what is timed and printed, not the figures (tests never assert a time).
    cost = hop_cost(
        "bcresnet_1",
        window_backends=("onnxruntime", "eager"),
        step_runtimes=("openvino", "eager"),
        protocol=Protocol(warmup=1, iterations=3, min_time_s=0.0),
    )
    assert set(cost.window_ms) == {"onnxruntime", "eager"} and set(cost.step_ms) == {"openvino", "eager"}
    assert all(v > 0 for v in [*cost.window_ms.values(), *cost.step_ms.values()])
    text = format_hop_costs([cost])
    assert "re-run 1 s window: onnxruntime" in text and "streaming step:    openvino" in text
    assert f"{cost.speedup:.1f}x cheaper" in text and cost.protocol["timed"] == "frontend+model"


def test_the_standard_model_is_timed_with_its_delay_lines(capsys):
    quick = ["--iterations", "3", "--warmup", "1", "--json"]
    assert main(["bench", "bcresnet_1", "--streaming", "--temporal-padding", "same", *quick]) == 0
    (cost,) = json.loads(capsys.readouterr().out)
    assert cost["temporal_padding"] == "same" and cost["speedup"] > 0
    assert "standard, streamed with its delay" in format_hop_costs([HopCost(**{
        k: v for k, v in cost.items() if k not in ("best_window", "best_step", "speedup")
    })])  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "dscnn_s", "--streaming"], "dscnn_s: only BC-ResNet streams"),
        (
            ["bench", "bcresnet_1", "--streaming", "--backend", "eager"],
            "--backend does not apply to --streaming",
        ),
        (["bench", "bcresnet_1", "--temporal-padding", "same"], "--temporal-padding applies to --streaming"),
    ],
)
def test_refusals_are_one_line_with_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
