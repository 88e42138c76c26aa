"""The models of BC-ResNet's Table 2: its ablations and the ResNet-1D / ResNet-2D comparison nets.

ResNet-1D and ResNet-2D keep BC-ResNet's skeleton (head, stages of 2/2/4/4 blocks, dilations, tail) and
replace each BC-ResBlock by a depthwise-separable residual block (``layers.DepthwiseSeparableResBlock``).
ResNet-1D treats the 40 mel bins as channels of a time series (so its head is a 1-D convolution and it
has no frequency axis to stride); ResNet-2D uses 3x3 depthwise kernels with BC-ResNet's frequency strides.
The paper gives no code for them; these constructions reproduce its parameter counts (27.3k, 7.9k, 9.4k).
"""

from __future__ import annotations

import torch
from torch import nn

from kwsbench.errors import ModelError
from kwsbench.models.bcresnet import CITATION, STAGES, BCResNet, LOGMEL_40x101, bcresnet_channels
from kwsbench.models.layers import ClassifierTail, DepthwiseSeparableResBlock, check_input, conv_norm_act
from kwsbench.models.registry import Declared, DeclaredAccuracy, register_model


class ResNetDS(nn.Module):
    """Table 2's depthwise-separable ResNet: ``(B, 1, n_mels, T) -> (B, num_classes)``.

    ``dims=1``: the mel bins are channels; head ``1 x 5`` conv over time, blocks with ``1 x 3`` kernels.
    ``dims=2``: BC-ResNet's 5x5 head with frequency stride 2, blocks with ``3 x 3`` kernels.
    """

    # Every forward inside is layout-agnostic: the training rewrite runs its convolutions channels-last.
    channels_last_safe = True

    def __init__(
        self,
        num_classes: int = 12,
        *,
        dims: int = 2,
        width: float = 1.0,
        n_mels: int = 40,
        use_subspectral_norm: bool = False,
        num_subbands: int = 5,
        dropout: float = 0.1,
    ):
        super().__init__()
        if dims not in (1, 2):
            raise ModelError(
                f"dims must be 1 (mel bins as channels) or 2 (BC-ResNet's skeleton), got {dims!r}"
            )
        self.dims = dims
        self.n_mels = n_mels
        c = bcresnet_channels(width)
        if dims == 1:
            self.head = conv_norm_act(n_mels, c[0], (1, 5), padding=(0, 2))
        else:
            self.head = conv_norm_act(1, c[0], 5, stride=(2, 1), padding=2)
        kernel = (1, 3) if dims == 1 else (3, 3)
        blocks: list[nn.Module] = []
        for stage, (n_blocks, stride, dilation) in enumerate(STAGES):
            for i in range(n_blocks):
                blocks.append(
                    DepthwiseSeparableResBlock(
                        c[stage] if i == 0 else c[stage + 1],
                        c[stage + 1],
                        kernel,
                        freq_stride=stride if (i == 0 and dims == 2) else 1,
                        time_dilation=dilation,
                        norm="ssn" if use_subspectral_norm else "bn",
                        num_subbands=num_subbands,
                        dropout=dropout,
                    )
                )
        self.blocks = nn.Sequential(*blocks)
        self.tail = ClassifierTail(c[4], c[5], num_classes, freq_kernel=1 if dims == 1 else 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.n_mels)
        if self.dims == 1:
            x = x.transpose(1, 2)  # (B, n_mels, 1, T): mel bins become channels
        return self.tail(self.blocks(self.head(x)))


def _table2(
    params_k: float,
    mult_m: float,
    v1: tuple[float, float],
    v2: tuple[float, float],
    variant: str,
    notes: str = "",
    tolerance: float = 0.01,
):
    return dict(
        family="bcresnet-table2",
        citation=CITATION,
        input=LOGMEL_40x101,
        declared=Declared(
            source="Kim et al. 2021, Table 2",
            params=round(params_k * 1000),
            params_stated=f"{params_k}k",
            macs=round(mult_m * 1e6),
            macs_stated=f"{mult_m}M mult",
            macs_counting="fvcore total in eval mode on 1x1x40x101 (as Table 3)",
            accuracy=(
                DeclaredAccuracy("gsc_v1_12", v1[0], v1[1], 5, "Table 2"),
                DeclaredAccuracy("gsc_v2_12", v2[0], v2[1], 5, "Table 2"),
            ),
            configuration=f"{variant}; 12 classes, 40 log-mel x 101 frames",
            notes=notes,
        ),
        # Table 2 rounds to 0.1k; a rebuild within 1 % of it is the same model up to that rounding.
        param_tolerance=tolerance,
    )


@register_model(**_table2(9.2, 3.1, (96.0, 0.14), (96.2, 0.24), "BC-ResNet-Attn: sigmoid(f1) multiplies f2"))
def table2_attention(num_classes: int = 12, **options) -> BCResNet:
    """BC-ResNet-1 whose broadcast term gates the 2-D residual (``broadcast="attention"``)."""
    return BCResNet(num_classes, **{"broadcast": "attention", **options})


@register_model(
    **_table2(9.2, 3.1, (96.2, 0.20), (96.5, 0.10), "BC-ResNet-1 without the auxiliary 2-D residual")
)
def table2_no_aux_residual(num_classes: int = 12, **options) -> BCResNet:
    """BC-ResNet-1 with ``use_aux_residual=False``."""
    return BCResNet(num_classes, **{"use_aux_residual": False, **options})


@register_model(**_table2(9.2, 3.1, (96.4, 0.34), (96.8, 0.18), "BC-ResNet-1 without the identity shortcut"))
def table2_no_shortcut(num_classes: int = 12, **options) -> BCResNet:
    """BC-ResNet-1 with ``use_shortcut=False``."""
    return BCResNet(num_classes, **{"use_shortcut": False, **options})


@register_model(**_table2(7.8, 3.1, (96.1, 0.11), (96.5, 0.12), "BC-ResNet-1 with BatchNorm instead of SSN"))
def table2_no_ssn(num_classes: int = 12, **options) -> BCResNet:
    """BC-ResNet-1 with ``use_subspectral_norm=False``."""
    return BCResNet(num_classes, **{"use_subspectral_norm": False, **options})


@register_model(
    **_table2(9.1, 3.7, (96.2, 0.26), (96.7, 0.12), "BC-ResNet without SSN at width 1.125 (base 9 channels)")
)
def table2_no_ssn_w1_125(num_classes: int = 12, **options) -> BCResNet:
    """BC-ResNet-1.125 without SSN: BatchNorm at (almost) the parameter count of BC-ResNet-1."""
    return BCResNet(num_classes, **{"tau": 1.125, "use_subspectral_norm": False, **options})


@register_model(
    **_table2(
        7.9,
        3.1,
        (95.4, 0.29),
        (95.7, 0.32),
        "BC-ResNet-1 without 2-D residual and without SSN",
        notes="Dropping the 2-D residual removes no parameter, so this model has the 7,760 of 'without SSN' "
        "(Table 2: 7.8k); Table 2's 7.9k for it is 1.8 % higher, apparently a rounding slip in the paper.",
        tolerance=0.02,
    )
)
def table2_no_aux_residual_no_ssn(num_classes: int = 12, **options) -> BCResNet:
    """BC-ResNet-1 with neither the auxiliary 2-D residual nor SSN."""
    return BCResNet(num_classes, **{"use_aux_residual": False, "use_subspectral_norm": False, **options})


@register_model(**_table2(9.2, 3.1, (96.3, 0.25), (96.8, 0.11), "BC-ResNet-1 with frequency max-pooling"))
def table2_freq_maxpool(num_classes: int = 12, **options) -> BCResNet:
    """BC-ResNet-1 with ``frequency_pool="max"``."""
    return BCResNet(num_classes, **{"frequency_pool": "max", **options})


_NO_CODE = (
    "The paper gives no code for this net; kwsbench's construction reproduces Table 2's parameter count, "
    "but fvcore counts {ours} MACs in total against the paper's {theirs}: the paper's exact block layout "
    "(where it puts norms and activations) is not recoverable from the counts."
)


@register_model(
    **_table2(
        27.3,
        3.2,
        (95.0, 0.25),
        (95.7, 0.46),
        "ResNet-1D, width 2, 1x3 depthwise-separable",
        notes=_NO_CODE.format(ours="2.69M", theirs="3.2M"),
    )
)
def resnet1d_w2(num_classes: int = 12, *, width: float = 2.0, **options) -> ResNetDS:
    """Table 2's ResNet-1D (w = 2): mel bins as channels, 1x3 depthwise-separable residual blocks."""
    return ResNetDS(num_classes, dims=1, width=width, **options)


@register_model(
    **_table2(7.9, 5.9, (94.8, 0.42), (94.9, 0.32), "ResNet-2D, width 1, 3x3 depthwise-separable, BN")
)
def resnet2d_w1(num_classes: int = 12, *, width: float = 1.0, **options) -> ResNetDS:
    """Table 2's ResNet-2D (w = 1) with BatchNorm."""
    return ResNetDS(num_classes, dims=2, width=width, **options)


@register_model(
    **_table2(
        9.4,
        5.9,
        (95.5, 0.22),
        (95.6, 0.24),
        "ResNet-2D, width 1, with SubSpectral Norm",
        notes=_NO_CODE.format(ours="5.24M", theirs="5.9M"),
    )
)
def resnet2d_w1_ssn(num_classes: int = 12, *, width: float = 1.0, **options) -> ResNetDS:
    """Table 2's ResNet-2D (w = 1) with SubSpectral Norm."""
    return ResNetDS(num_classes, dims=2, width=width, **{"use_subspectral_norm": True, **options})
