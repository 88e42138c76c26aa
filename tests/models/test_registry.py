"""Registry-wide tests: every registered model is built, run, differentiated, counted and exported."""

from __future__ import annotations

import warnings

import pytest
import torch

from kwsbench.errors import ModelError
from kwsbench.measure.counts import count_params
from kwsbench.models import create_model, list_models, model_info

ALL = list_models()


def _input(name: str, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(model_info(name).input.shape(batch), generator=g)


def test_registry_holds_every_family():
    families = {model_info(n).family for n in ALL}
    assert {"bcresnet", "bcresnet-table2"} <= families
    assert list_models("bcresnet_*") == [
        "bcresnet_1",
        "bcresnet_1_5",
        "bcresnet_2",
        "bcresnet_3",
        "bcresnet_6",
        "bcresnet_8",
    ]


@pytest.mark.parametrize("name", ALL)
def test_forward_and_backward_at_declared_input(name):
    torch.manual_seed(0)
    model = create_model(name).train()
    x = _input(name)
    logits = model(x)
    assert logits.shape == (2, 12)
    assert torch.isfinite(logits).all()
    logits.logsumexp(dim=1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"


@pytest.mark.parametrize("name", ALL)
def test_eval_mode_is_deterministic(name):
    torch.manual_seed(1)
    a = create_model(name).eval()
    torch.manual_seed(1)
    b = create_model(name).eval()
    x = _input(name)
    with torch.no_grad():
        ya, ya2, yb = a(x), a(x), b(x)
    assert torch.equal(ya, ya2)
    assert torch.equal(ya, yb)
    # Batch independence in eval mode: a sample's logits do not depend on its batch mates. Another batch
    # size may pick other kernels (float32 rounding, ~1e-6 of the logits' scale); a layer that mixes batch
    # mates (BatchNorm left in training mode) moves them by a sizeable part of it.
    with torch.no_grad():
        torch.testing.assert_close(a(x[:1]), ya[:1], rtol=0, atol=1e-3 * float(ya.abs().max()))


@pytest.mark.parametrize("name", ALL)
def test_declared_params_equal_measured(name):
    info = model_info(name)
    params = count_params(create_model(name))
    if info.reference.exact:
        assert params == info.reference.params
    assert info.declared.params, f"{name} declares no parameter count"
    assert abs(params / info.declared.params - 1) <= info.param_tolerance, (
        f"{name}: {params} params vs declared {info.declared.params_stated}"
    )


@pytest.mark.parametrize("name", ALL)
def test_metadata_is_complete(name):
    info = model_info(name)
    assert info.citation and info.family and info.declared.source
    assert info.input.kind in ("logmel", "mfcc")
    # Either the paper's cost figure as stated, or a counting note saying why there is none.
    assert info.declared.macs_counting
    assert info.declared.macs_stated or info.declared.macs is None
    assert info.description


@pytest.mark.parametrize("name", ALL)
def test_exports_with_torch_export_and_torchscript(name):
    model = create_model(name).eval()
    x = _input(name, batch=1)
    with torch.no_grad():
        expected = model(x)
    program = torch.export.export(model, (x,))
    # The exported and traced graphs run the same aten ops, so they agree to float32 rounding of the logits'
    # scale; a dropped or reordered layer would not.
    atol = 1e-4 * float(expected.abs().max())
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), expected, rtol=0, atol=atol)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, x)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), expected, rtol=0, atol=atol)


def test_bcresnet_exact_counts_at_every_width():
    expected = {"1": 9_232, "1_5": 17_154, "2": 27_284, "3": 54_168, "6": 187_812, "8": 321_068}
    for suffix, params in expected.items():
        assert count_params(create_model(f"bcresnet_{suffix}")) == params


def test_any_width_through_an_override():
    # tau = 2.5 -> base int(20) = 20 channels, head 40, stages 20, 30, 40, 50, tail 80.
    model = create_model("bcresnet_1", tau=2.5)
    assert model.channels == [40, 20, 30, 40, 50, 80]
    assert model(torch.randn(1, 1, 40, 101)).shape == (1, 12)


def test_table2_switch_parameter_counts_by_hand():
    base = count_params(create_model("bcresnet_1"))
    # SSN has 2*C*5 affine parameters where BatchNorm has 2*C: 8*C fewer per block,
    # C over the 12 blocks = 2*8 + 2*12 + 4*16 + 4*20 = 184.
    assert base - count_params(create_model("bcresnet_1", use_subspectral_norm=False)) == 8 * 184
    # Removing residual paths or swapping the pooling removes no parameter.
    for option in ({"use_aux_residual": False}, {"use_shortcut": False}, {"frequency_pool": "max"}):
        assert count_params(create_model("bcresnet_1", **option)) == base


def test_ablation_switches_change_the_function():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 40, 101)
    reference = create_model("bcresnet_1").train()
    with torch.no_grad():  # BatchNorm statistics of real batches, so activations do not shrink to nothing
        for _ in range(3):
            reference(torch.randn(8, 1, 40, 101))
    state = reference.eval().state_dict()
    outputs = {}
    for option in ({}, {"use_aux_residual": False}, {"use_shortcut": False}, {"frequency_pool": "max"}):
        model = create_model("bcresnet_1", **option).eval()
        model.load_state_dict(state)  # same weights: any difference comes from the switch
        with torch.no_grad():
            outputs[str(option)] = model(x)
    values = list(outputs.values())
    for i in range(len(values)):
        for j in range(i + 1, len(values)):
            assert (values[i] - values[j]).abs().max() > 1e-4


def test_subband_count_is_checked_against_the_frequency_size():
    with pytest.raises(ModelError, match="num_subbands=3 does not divide"):
        create_model("bcresnet_1", num_subbands=3)
    assert count_params(create_model("bcresnet_1", num_subbands=1)) == 9_232 - 8 * 184


def test_num_classes_sets_the_head():
    assert create_model("bcresnet_1", num_classes=35)(torch.randn(1, 1, 40, 101)).shape == (1, 35)


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ModelError, match="did you mean bcresnet_1"):
        create_model("bcresnet1")


def test_unknown_option_names_the_valid_ones():
    with pytest.raises(ModelError, match="no option 'width_multiplier'.*num_subbands"):
        create_model("bcresnet_1", width_multiplier=2)


def test_wrong_input_shape_fails_with_the_declared_shape():
    with pytest.raises(ModelError, match=r"\(B, 1, 40, T\)"):
        create_model("bcresnet_1")(torch.randn(1, 1, 64, 101))
