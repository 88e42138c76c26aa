"""Family-specific checks of the baseline models (DS-CNN, Res8/15, TC-ResNet, MatchboxNet, KWT).

Registry-wide checks (forward/backward, declared tolerance) live in the registry tests; these pin the
structural details a rebuild can get wrong while still producing logits of the right shape.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kwsbench.errors import ModelError
from kwsbench.models import create_model, model_info
from kwsbench.models.layers import Conv2dSame, tf_same_padding
from kwsbench.models.resnet_kws import res_dilations

# Trainable parameters of the reference rebuilds, copied by hand from PAPER.md §6 (12 classes).
PAPER_COUNTS = {
    "dscnn_s": 23_756,
    "dscnn_m": 138_128,
    "dscnn_l": 416_772,
    "res8": 110_307,
    "res8_narrow": 19_905,
    "res15": 237_882,
    "res15_narrow": 42_648,
    "tcresnet8": 65_168,
    "tcresnet8_1_5": 144_264,
    "tcresnet14": 135_856,
    "tcresnet14_1_5": 303_000,
    "matchboxnet_3x1x64": 74_892,
    "matchboxnet_3x2x64": 90_444,
    "kwt_1": 607_308,
    "kwt_2": 2_394_252,
    "kwt_3": 5_360_844,
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def output_shapes(model: nn.Module, modules: list[nn.Module], x: torch.Tensor) -> list[tuple[int, ...]]:
    """Output shapes of ``modules`` during one forward pass of ``model`` on ``x``."""
    shapes: list[tuple[int, ...]] = []
    handles = [m.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape))) for m in modules]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return shapes


def declared_input(name: str, batch: int = 2) -> torch.Tensor:
    return torch.randn(model_info(name).input.shape(batch))


@pytest.mark.parametrize("name", sorted(PAPER_COUNTS))
def test_exact_reference_count(name):
    info = model_info(name)
    assert info.reference.exact and info.reference.params == PAPER_COUNTS[name]
    assert n_params(create_model(name)) == PAPER_COUNTS[name]


# --- TF "SAME" padding (DS-CNN, TC-ResNet) ---------------------------------------------------------------


@pytest.mark.parametrize(
    "size, kernel, stride, expected",
    [
        (98, 9, 2, (3, 4)),
        (49, 9, 2, (4, 4)),
        (49, 10, 2, (4, 5)),
        (10, 4, 1, (1, 2)),
        (10, 4, 2, (1, 1)),
        (98, 1, 2, (0, 0)),
    ],
)
def test_tf_same_padding_puts_the_odd_pixel_after(size, kernel, stride, expected):
    assert tf_same_padding(size, kernel, stride) == expected


def test_conv2d_same_pads_after_like_tensorflow():
    conv = Conv2dSame(1, 1, (1, 2), bias=False)
    nn.init.ones_(conv.weight)
    y = conv(torch.arange(4.0).reshape(1, 1, 1, 4))
    # out[i] = x[i] + x[i + 1], the missing x[4] being TF's trailing zero (PyTorch padding=1 would give 5 outputs).
    assert y.flatten().tolist() == [1.0, 3.0, 5.0, 3.0]


# --- DS-CNN ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, head, first_block",
    [
        ("dscnn_s", (64, 25, 5), (64, 25, 5)),
        ("dscnn_m", (172, 25, 10), (172, 13, 5)),
        ("dscnn_l", (276, 25, 10), (276, 13, 5)),
    ],
)
def test_dscnn_maps_are_time_by_frequency_with_same_padding(name, head, first_block):
    model = create_model(name)
    shapes = output_shapes(model, [model.head, model.blocks[0]], declared_input(name, 1))
    assert shapes == [(1, *head), (1, *first_block)]


@pytest.mark.parametrize("name, beta_only", [("dscnn_s", 23_180), ("dscnn_m", 136_580), ("dscnn_l", 413_736)])
def test_dscnn_without_bn_scales_has_the_reference_count(name, beta_only):
    model = create_model(name)
    scales = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert n_params(model) - scales == beta_only


# --- Res8 / Res15 ------------------------------------------------------------------------------------------


def test_res15_dilation_schedule():
    expected = [1, 1, 1, 2, 2, 2, 4, 4, 4, 8, 8, 8, 16]
    assert res_dilations(13, dilated=True) == expected
    model = create_model("res15")
    assert [c.dilation[0] for c in model.convs] == expected
    assert [c.padding[0] for c in model.convs] == expected  # keeps the 101 x 40 map at every layer


@pytest.mark.parametrize("name, size", [("res8", (25, 13)), ("res15", (101, 40))])
def test_res_nets_pool_only_res8_and_have_plain_bn(name, size):
    model = create_model(name)
    (shape,) = output_shapes(model, [model.norms[-1]], declared_input(name, 1))
    assert shape[2:] == size  # (time, frequency) after honk's (4, 3) pool for Res8 only
    assert all(not n.affine for n in model.norms)


def test_res8_shortcut_is_added_after_even_layers():
    # With the even layers' weights zeroed, layer 2 outputs ReLU(0) + shortcut, so norm 2 must see the conv0 map.
    model = create_model("res8", pool=None).eval()
    for conv in model.convs[1::2]:
        nn.init.zeros_(conv.weight)
    x = declared_input("res8", 1)
    seen = {}
    model.norms[1].register_forward_hook(lambda _m, inp, _o: seen.setdefault("in", inp[0]))
    with torch.no_grad():
        model(x)
        conv0 = torch.relu(model.conv0(x.transpose(2, 3)))
    assert conv0.shape == (1, 45, 101, 40)
    # float32 defaults (rtol 1.3e-6, atol 1e-5): one convolution twice, maybe through another kernel for
    # another memory layout (~1e-7 relative apart); the wrong layer's map would differ by O(1).
    torch.testing.assert_close(seen["in"], conv0)


# --- TC-ResNet ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, downsample, lengths",
    [
        ("tcresnet8", [True, True, True], [49, 25, 13]),
        ("tcresnet14", [True, False, True, False, True, False], [49, 49, 25, 25, 13, 13]),
    ],
)
def test_tcresnet_stride_and_shortcuts(name, downsample, lengths):
    model = create_model(name)
    assert [b.downsample for b in model.blocks] == downsample
    for block in model.blocks:
        if block.downsample:
            conv = block.shortcut[0][0]
            assert conv.kernel_size == (1, 1) and conv.stride == (1, 2)
        else:
            assert isinstance(block.shortcut, nn.Identity)
    shapes = output_shapes(model, list(model.blocks), declared_input(name, 1))
    assert [s[-1] for s in shapes] == lengths  # TF SAME: 98 -> 49 -> 25 -> 13 frames


def test_tcresnet_1_5_truncates_channels_and_has_no_bias():
    model = create_model("tcresnet14_1_5")
    assert [b.body[0][0].out_channels for b in model.blocks] == [36, 36, 48, 48, 72, 72]
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))


# --- MatchboxNet -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, kernels, repeats",
    [
        ("matchboxnet_3x1x64", [13, 15, 17], 1),
        ("matchboxnet_3x2x64", [13, 15, 17], 2),
        ("matchboxnet_6x2x64", [13, 15, 17, 19, 21, 23], 2),
    ],
)
def test_matchboxnet_blocks_subblocks_and_bn_eps(name, kernels, repeats):
    model = create_model(name)
    depthwise = [
        [m.kernel_size[0] for m in block.body.modules() if isinstance(m, nn.Conv1d) and m.groups > 1]
        for block in model.blocks
    ]
    assert depthwise == [[k] * repeats for k in kernels]
    assert all(m.eps == 1e-3 for m in model.modules() if isinstance(m, nn.BatchNorm1d))


@pytest.mark.parametrize(
    "name, classes, count",
    [
        ("matchboxnet_3x1x64", 30, 77_214),
        ("matchboxnet_3x1x64", 35, 77_859),
        ("matchboxnet_3x2x64", 30, 92_766),
        ("matchboxnet_3x2x64", 35, 93_411),
        ("matchboxnet_6x2x64", 35, 139_491),
    ],
)
def test_matchboxnet_counts_with_the_papers_heads(name, classes, count):
    assert n_params(create_model(name, num_classes=classes)) == count


def test_matchboxnet_6x2x64_is_marked_approximate():
    info = model_info("matchboxnet_6x2x64")
    assert not info.reference.exact and "pproximate" in info.declared.notes


# --- KWT ---------------------------------------------------------------------------------------------------


def test_kwt_classifies_the_class_token_of_post_norm_blocks():
    model = create_model("kwt_1").eval()
    seen = {}
    model.blocks.register_forward_hook(lambda _m, _i, out: seen.setdefault("blocks", out))
    model.classifier.register_forward_hook(lambda _m, inp, _o: seen.setdefault("head", inp[0]))
    with torch.no_grad():
        model(declared_input("kwt_1"))
    assert seen["blocks"].shape == (2, 99, 64)  # class token + one token per frame
    torch.testing.assert_close(seen["head"], seen["blocks"][:, 0], rtol=0, atol=0)
    # Post-norm: every token leaving the encoder is layer-normalised (fresh LayerNorm: weight 1, bias 0).
    # Means of 64 normalised float32 values round at ~1e-7 (1e-5: 80 eps32); an un-normalised token's
    # mean is O(0.1). The variance is s2 / (s2 + 1e-6) by LayerNorm's eps, 1 - 1e-6 here (pre-norm s2 ~ 1),
    # plus rounding ~1e-7; 1e-3 also admits tokens of s2 down to 1e-3, and a missing norm moves it by O(1).
    torch.testing.assert_close(seen["blocks"].mean(-1), torch.zeros(2, 99), atol=1e-5, rtol=0)
    torch.testing.assert_close(seen["blocks"].var(-1, unbiased=False), torch.ones(2, 99), atol=1e-3, rtol=0)


def test_kwt_structure_counts():
    model = create_model("kwt_1")
    block = model.blocks[0]
    assert block.attention.qkv.bias is None and block.attention.out.bias is not None
    assert block.norm1.eps == 1e-6 and model.position.shape == (1, 99, 64)
    assert len(model.blocks) == 12


def test_kwt_rejects_a_frame_count_its_position_embedding_does_not_fit():
    with pytest.raises(ModelError, match="98 frames"):
        create_model("kwt_1")(torch.randn(1, 1, 40, 101))
