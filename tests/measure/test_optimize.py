"""The optimized inference graph: hand-checked folds, the Add->Sum pass, and parity for every model."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from calibrated import calibrated_model, float32_error, float64_output, parity_atol
from onnx import TensorProto, helper
from torch import nn

from kwsbench.measure.latency import torch_threads
from kwsbench.measure.optimize import (
    ChannelFrequencyAffine,
    fold_bn_conv,
    fold_conv_bn,
    inference_graph,
    merge_add_chains,
    ssn_as_affine,
)
from kwsbench.models import list_models, model_info
from kwsbench.models.layers import SubSpectralNorm

EPS32 = torch.finfo(torch.float32).eps


@pytest.fixture(autouse=True)
def one_thread():
    # Two cores shared by several test processes: more threads only oversubscribe them.
    with torch_threads(1):
        yield


def _bn(channels: int, mean, var, weight, bias, eps=0.0) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, eps=eps).eval()
    bn.running_mean.copy_(torch.tensor(mean))
    bn.running_var.copy_(torch.tensor(var))
    bn.weight.data.copy_(torch.tensor(weight))
    bn.bias.data.copy_(torch.tensor(bias))
    return bn


def test_conv_bn_fold_by_hand():
    conv = nn.Conv2d(1, 1, 1, bias=False)
    conv.weight.data.fill_(2.0)
    # BN: (y - 1) / sqrt(4) * 3 + 5 with y = 2x  ->  3x + 3.5
    fused = fold_conv_bn(conv, _bn(1, [1.0], [4.0], [3.0], [5.0]))
    assert fused.weight.item() == pytest.approx(3.0)
    assert fused.bias.item() == pytest.approx(3.5)


def test_bn_conv_fold_by_hand_and_padding_guard():
    bn = _bn(2, [1.0, 0.0], [1.0, 4.0], [1.0, 1.0], [0.0, 1.0])  # x0 - 1, x1 / 2 + 1
    conv = nn.Conv2d(2, 1, 1, bias=True)
    conv.weight.data = torch.tensor([[[[1.0]], [[10.0]]]])
    conv.bias.data.fill_(0.5)
    fused = fold_bn_conv(bn, conv)
    # 1 * (x0 - 1) + 10 * (x1 / 2 + 1) + 0.5 = x0 + 5 x1 + 9.5
    assert fused.weight.flatten().tolist() == pytest.approx([1.0, 5.0])
    assert fused.bias.item() == pytest.approx(9.5)
    padded = nn.Sequential(bn, nn.Conv2d(2, 2, 3, padding=1))
    assert isinstance(inference_graph(padded, (1, 2, 4, 4))[0], nn.BatchNorm2d)  # not folded: padding


def test_ssn_constants_follow_the_subbands():
    ssn = SubSpectralNorm(2, num_subbands=2).eval()
    ssn.bn.running_mean.copy_(torch.tensor([0.0, 1.0, 2.0, 3.0]))  # feature c * S + s
    affine = ssn_as_affine(ssn, frequencies=4)
    assert isinstance(affine, ChannelFrequencyAffine)
    # channel 1, frequencies 0-1 are band 0 (feature 2), 2-3 band 1 (feature 3); scale 1/sqrt(1 + eps)
    scale = 1 / (1 + ssn.bn.eps) ** 0.5
    assert affine.shift[1, :, 0].tolist() == pytest.approx([-2 * scale, -2 * scale, -3 * scale, -3 * scale])
    x = torch.randn(3, 2, 4, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        exact = copy.deepcopy(ssn).double()(x.double())
        # One multiply-add of float32 constants (each rounded once): at most 2 eps32 of its terms' sizes.
        terms = (x * affine.scale).abs() + affine.shift.abs()
        assert torch.all((affine(x).double() - exact).abs() <= 2 * EPS32 * terms)


def test_bcresnet_graph_has_no_normalisation_or_dropout_left():
    model, x = calibrated_model("bcresnet_1", batch=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        output = model(x)
    graph = inference_graph(model, model_info("bcresnet_1").input.shape(1))
    kinds = {type(m) for m in graph.modules()}
    assert not kinds & {nn.BatchNorm2d, SubSpectralNorm, nn.Dropout2d}
    assert ChannelFrequencyAffine in kinds
    # The original is untouched: same modules, every parameter and statistic bit for bit, same output.
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()) and not model.training
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
    with torch.no_grad():
        assert torch.equal(model(x), output)


@pytest.mark.parametrize("name", list_models())
def test_inference_graph_is_exact_in_float64(name):
    # Built from the float64 model the rewrite must be exact up to float64 rounding, and up to the only
    # float32 step in it (SubSpectral Norm's constants, which ssn_as_affine stores in float32): fewer
    # roundings than a float32 evaluation makes, so eager float32's measured error bounds the difference.
    # A 1e-3 error in one folded constant moves these logits by 5e-5 to 4e-3: 40x to 3000x this bound.
    model, x = calibrated_model(name, batch=2)
    exact = float64_output(model, x)
    with torch.no_grad():
        graph = inference_graph(copy.deepcopy(model).double(), tuple(x.shape))
        diff = (graph(x.double()) - exact).abs().max().item()
    bound = float32_error(model, x)
    assert diff <= bound, f"{name}: float64 graph off the float64 model by {diff:.3g} > {bound:.3g}"


@pytest.mark.parametrize("name", list_models())
def test_inference_graph_matches_eager(name):
    model, x = calibrated_model(name, batch=2)
    exact = float64_output(model, x)
    with torch.no_grad():
        graph = inference_graph(model, tuple(x.shape))
        diff = (graph(x).double() - exact).abs().max().item()
    atol = parity_atol(model, x)  # its reason: tests/calibrated.py
    assert (exact[0] - exact[1]).abs().max() > 100 * atol  # the logits depend on the input, not only biases
    assert diff <= atol, f"{name}: max |diff| {diff:.3g} > {atol:.3g} to the float64 model"


def _tiny_add_model(extra_use: bool) -> onnx.ModelProto:
    vec = helper.make_tensor_value_info
    nodes = [
        helper.make_node("Add", ["a", "b"], ["ab"]),
        helper.make_node("Add", ["ab", "c"], ["abc"]),
        helper.make_node("Relu", ["abc"], ["y"]),
    ]
    outputs = [vec("y", TensorProto.FLOAT, [2, 3])]
    if extra_use:
        nodes.append(helper.make_node("Neg", ["ab"], ["z"]))
        outputs.append(vec("z", TensorProto.FLOAT, [2, 3]))
    inputs = [
        vec("a", TensorProto.FLOAT, [2, 3]),
        vec("b", TensorProto.FLOAT, [1, 3]),
        vec("c", TensorProto.FLOAT, [2, 1]),
    ]
    return helper.make_model(
        helper.make_graph(nodes, "g", inputs, outputs), opset_imports=[helper.make_opsetid("", 17)]
    )


def test_add_chain_becomes_one_broadcasting_sum():
    merged = merge_add_chains(_tiny_add_model(extra_use=False))
    onnx.checker.check_model(merged)
    assert [n.op_type for n in merged.graph.node] == ["Sum", "Relu"]
    assert list(merged.graph.node[0].input) == ["a", "b", "c"]
    feed = {
        "a": np.full((2, 3), -1, np.float32),
        "b": np.array([[0, 1, 2]], np.float32),
        "c": np.array([[0], [1]], np.float32),
    }
    (y,) = ort.InferenceSession(merged.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, feed
    )
    np.testing.assert_array_equal(y, [[0, 0, 1], [0, 1, 2]])


def test_add_with_another_use_is_kept():
    merged = merge_add_chains(_tiny_add_model(extra_use=True))
    assert [n.op_type for n in merged.graph.node] == ["Add", "Add", "Relu", "Neg"]


def test_frequency_pool_is_fused_into_the_temporal_convolution():
    model, x = calibrated_model("bcresnet_1", batch=3)
    with torch.no_grad():
        graph = inference_graph(model, (1, 1, 40, 101))
    kernels = [block.f1[0].kernel_size for block in graph.blocks]
    # Each block's temporal conv now spans the whole frequency axis of its stage: 20, 20, 10, 10, 5 x 8.
    assert [k[0] for k in kernels] == [20, 20, 10, 10] + [5] * 8
    assert all(isinstance(block.pool, torch.nn.Identity) for block in graph.blocks)
    with torch.no_grad():
        diff = (graph(x).double() - float64_output(model, x)).abs().max().item()
    assert diff <= parity_atol(model, x)
