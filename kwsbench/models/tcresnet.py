"""TC-ResNet8/14 and their x1.5 widths: S. Choi, S. Seo, B. Shin, H. Byun, M. Kersner, B. Kim, D. Kim, S. Ha,
"Temporal Convolution for Real-time Keyword Spotting on Mobile Devices", Interspeech 2019.

Rebuilt from hyperconnect/TC-ResNet (../shared/docs/PAPER.md §6): the 40 MFCC are the channels of 1-D
convolutions over time (written as ``1 x k`` 2-D convolutions on a height-1 map, as the TF reference does).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kwsbench.errors import ModelError
from kwsbench.models.layers import Conv2dSame, check_input
from kwsbench.models.registry import Declared, DeclaredAccuracy, InputSpec, Reference, register_model

CITATION = (
    'S. Choi, S. Seo, B. Shin, H. Byun, M. Kersner, B. Kim, D. Kim, S. Ha, "Temporal Convolution for Real-time '
    'Keyword Spotting on Mobile Devices", Interspeech 2019, pp. 3372-3376, arXiv:1904.03814'
)
MFCC_40x98 = InputSpec(
    "mfcc", 40, 98, note="40 MFCC, 30 ms window, 10 ms hop, no centring: 98 frames per 1 s"
)

TCRESNET8_CHANNELS = (16, 24, 32, 48)
TCRESNET14_CHANNELS = (16, 24, 24, 32, 32, 48, 48)


def _temporal_conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Sequential:
    # TF "SAME": the stride-2 k9 conv on 98 frames pads 3 before and 4 after, which symmetric padding cannot do.
    return nn.Sequential(
        Conv2dSame(in_channels, out_channels, (1, kernel), (1, stride), bias=False),
        nn.BatchNorm2d(out_channels),
    )


class TCResBlock(nn.Module):
    """``ReLU(conv_k BN ReLU conv_k BN (x) + shortcut(x))`` on ``(B, C_in, 1, T) -> (B, C_out, 1, T / s)``.

    When the channels change the first conv has stride 2 and the shortcut is a stride-2 1x1 conv -> BN ->
    ReLU; otherwise stride 1 and the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 9):
        super().__init__()
        self.downsample = in_channels != out_channels
        stride = 2 if self.downsample else 1
        self.body = nn.Sequential(
            _temporal_conv_bn(in_channels, out_channels, kernel, stride),
            nn.ReLU(),
            _temporal_conv_bn(out_channels, out_channels, kernel),
        )
        self.shortcut = (
            nn.Sequential(_temporal_conv_bn(in_channels, out_channels, 1, stride), nn.ReLU())
            if self.downsample
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class TCResNet(nn.Module):
    """TC-ResNet: ``(B, 1, 40, T) -> (B, num_classes)``.

    MFCC as channels ``(B, 40, 1, T)``; conv0 k3 -> BN -> ReLU to ``channels[0]``; one ``TCResBlock`` per
    further entry of ``channels`` (k9); global average pool -> dropout -> bias-free 1x1 conv to the classes.
    ``width`` multiplies every channel count and truncates (TC-ResNet-1.5: 24 | 36, 48, 72).
    """

    # Layout-agnostic, but its (1 x T) maps measured no gain from channels-last training: kept NCHW.
    channels_last_safe = False

    def __init__(
        self,
        num_classes: int = 12,
        *,
        channels: Sequence[int] = TCRESNET8_CHANNELS,
        width: float = 1.0,
        kernel: int = 9,
        dropout: float = 0.5,
        n_mfcc: int = 40,
    ):
        super().__init__()
        c = [int(n * width) for n in channels]
        if len(c) < 2 or min(c) < 1:
            raise ModelError(f"TC-ResNet needs >= 2 channel counts >= 1 after width {width}, got {c}")
        self.n_mfcc = n_mfcc
        self.head = nn.Sequential(_temporal_conv_bn(n_mfcc, c[0], 3), nn.ReLU())
        self.blocks = nn.Sequential(*(TCResBlock(a, b, kernel) for a, b in zip(c[:-1], c[1:], strict=True)))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(c[-1], num_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.n_mfcc)
        y = self.blocks(self.head(x.transpose(1, 2)))  # (B, 40, 1, T): MFCC become channels
        y = self.dropout(y.mean(dim=(2, 3), keepdim=True))
        return self.classifier(y).flatten(1)


def _entry(
    name: str,
    params: int,
    params_k: int,
    flops_m: float,
    ref_macs_m: float,
    config: str,
    accuracy: tuple[DeclaredAccuracy, ...] = (),
    notes: str = "",
):
    return dict(
        family="tcresnet",
        citation=CITATION,
        input=MFCC_40x98,
        declared=Declared(
            source="Choi et al. 2019, results table (params, FLOPs)",
            params=params_k * 1000,
            params_stated=f"{params_k}k",
            macs=round(flops_m * 1e6 / 2),
            macs_stated=f"{flops_m}M FLOPs",
            macs_counting="FLOPs = 2 x MACs of the convolutions",
            accuracy=accuracy,
            configuration=f"{name}: {config}; 12 classes, 40 MFCC x 98 frames",
            notes=(
                "The declared parameters include BatchNorm running statistics and an auxiliary two-output head "
                f"of the reference code; the trainable count is {params:,}.{notes}"
            ),
        ),
        reference=Reference(
            params=params,
            macs_conv=round(ref_macs_m * 1e6),
            source="hyperconnect/TC-ResNet rebuilt in PyTorch, trainable parameters (PAPER.md §6)",
            exact=True,
        ),
    )


@register_model(**_entry("TC-ResNet8", 65_168, 66, 3.0, 1.52, "channels 16 | 24, 32, 48"))
def tcresnet8(num_classes: int = 12, **options) -> TCResNet:
    """TC-ResNet8: conv0 to 16 channels, 3 blocks to 24, 32, 48."""
    return TCResNet(num_classes, **{"channels": TCRESNET8_CHANNELS, "width": 1.0, **options})


@register_model(**_entry("TC-ResNet8-1.5", 144_264, 145, 6.6, 3.28, "channels 24 | 36, 48, 72"))
def tcresnet8_1_5(num_classes: int = 12, **options) -> TCResNet:
    """TC-ResNet8-1.5: TC-ResNet8 with every channel count x 1.5."""
    return TCResNet(num_classes, **{"channels": TCRESNET8_CHANNELS, "width": 1.5, **options})


@register_model(**_entry("TC-ResNet14", 135_856, 137, 6.1, 3.03, "channels 16 | 24, 24, 32, 32, 48, 48"))
def tcresnet14(num_classes: int = 12, **options) -> TCResNet:
    """TC-ResNet14: conv0 to 16 channels, 6 blocks to 24, 24, 32, 32, 48, 48."""
    return TCResNet(num_classes, **{"channels": TCRESNET14_CHANNELS, "width": 1.0, **options})


@register_model(
    **_entry(
        "TC-ResNet14-1.5",
        303_000,
        305,
        13.4,
        6.68,
        "channels 24 | 36, 36, 48, 48, 72, 72",
        accuracy=(DeclaredAccuracy("gsc_v1_12", 96.6, source="Kim et al. 2021, Table 3"),),
        notes=" BC-ResNet's Table 3 quotes this model at 6.7M mult: that is MACs, half the paper's FLOPs.",
    )
)
def tcresnet14_1_5(num_classes: int = 12, **options) -> TCResNet:
    """TC-ResNet14-1.5: TC-ResNet14 with every channel count x 1.5."""
    return TCResNet(num_classes, **{"channels": TCRESNET14_CHANNELS, "width": 1.5, **options})
