"""DS-CNN S/M/L: Y. Zhang, N. Suda, L. Lai, V. Chandra, "Hello Edge: Keyword Spotting on Microcontrollers", 2017.

Rebuilt from ARM's ML-KWS-for-MCU ``create_ds_cnn_model`` (../shared/docs/PAPER.md §6): 10 MFCC x 49 frames
laid out time x frequency, a 10x4 conv, depthwise-separable blocks, global average pool, fully connected.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kwsbench.errors import ModelError
from kwsbench.models.layers import Conv2dSame, check_input
from kwsbench.models.registry import Declared, InputSpec, Reference, register_model

CITATION = (
    'Y. Zhang, N. Suda, L. Lai, V. Chandra, "Hello Edge: Keyword Spotting on Microcontrollers", '
    "arXiv:1711.07128, 2017"
)
MFCC_10x49 = InputSpec(
    "mfcc", 10, 49, window_ms=40, hop_ms=20, note="10 MFCC, 40 ms window, 20 ms hop, 1 s (Hello Edge)"
)


def _conv_bn_relu(conv: nn.Conv2d) -> nn.Sequential:
    # The reference's convolutions keep their bias in front of BatchNorm (slim: biases set, no normalizer_fn).
    return nn.Sequential(conv, nn.BatchNorm2d(conv.out_channels), nn.ReLU())


class DSCNN(nn.Module):
    """Depthwise-separable CNN: ``(B, 1, 10, 49) -> (B, num_classes)``.

    Internally time x frequency ``(B, 1, 49, 10)`` as in the reference. First conv ``first_kernel`` (time x
    frequency) with ``first_stride`` -> BN -> ReLU, then one block per entry of ``block_strides``: depthwise 3x3
    -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU; every conv has a bias and TF "SAME" padding. Global average
    pool -> Linear(channels, num_classes).

    The reference's BatchNorm has a shift and no scale (slim's default); PyTorch's affine BatchNorm adds one
    scale per channel and BN layer (+576 / +1,548 / +3,036 parameters for S / M / L).
    """

    # Layout-agnostic forward: channels-last training measured 1.3-1.6x faster per step (S to L).
    channels_last_safe = True

    def __init__(
        self,
        num_classes: int = 12,
        *,
        channels: int = 64,
        first_kernel: tuple[int, int] = (10, 4),
        first_stride: tuple[int, int] = (2, 2),
        block_strides: Sequence[tuple[int, int]] = ((1, 1),) * 4,
        n_mfcc: int = 10,
    ):
        super().__init__()
        if channels < 1 or not block_strides:
            raise ModelError(
                f"DS-CNN needs channels >= 1 and at least one block, got {channels}, {block_strides}"
            )
        self.n_mfcc = n_mfcc
        self.head = _conv_bn_relu(Conv2dSame(1, channels, first_kernel, first_stride))
        blocks: list[nn.Module] = []
        for stride in block_strides:
            blocks += [
                _conv_bn_relu(Conv2dSame(channels, channels, 3, stride, groups=channels)),
                _conv_bn_relu(nn.Conv2d(channels, channels, 1)),
            ]
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.n_mfcc)
        y = self.blocks(self.head(x.transpose(2, 3)))  # (B, 1, T, F): the reference's time x frequency
        return self.classifier(y.mean(dim=(2, 3)))


def _entry(
    size: str, params_k: int, ops_m: float, beta_only: int, affine: int, ref_macs_m: float, layout: str
):
    return dict(
        family="dscnn",
        citation=CITATION,
        input=MFCC_10x49,
        declared=Declared(
            source="Zhang et al. 2017 (Hello Edge), DS-CNN S/M/L of the size-constrained search",
            params=params_k * 1000,
            params_stated=f"~{params_k}k",
            macs=round(ops_m * 1e6 / 2),
            macs_stated=f"{ops_m}M ops",
            macs_counting="ops = 2 x MACs of convolutions and the fully connected layer",
            configuration=f"DS-CNN-{size}: {layout}; 12 classes, 10 MFCC x 49 frames (40 ms / 20 ms)",
            notes=(
                f"Reference BatchNorm is shift-only: {beta_only:,} parameters; kwsbench uses PyTorch affine BN "
                f"({affine:,}). MLPerf Tiny's DS-CNN-S is the affine variant (its 'about 25k' counts BN "
                "running statistics too) with a 30 ms window and dropout 0.2 / 0.4, which this entry omits."
            ),
        ),
        reference=Reference(
            params=affine,
            macs_conv=round(ref_macs_m * 1e6),
            source="ARM ML-KWS-for-MCU create_ds_cnn_model rebuilt in PyTorch with affine BN (PAPER.md §6)",
            exact=True,
        ),
    )


@register_model(**_entry("S", 24, 5.4, 23_180, 23_756, 2.66, "64 channels, conv stride (2,2), 4 blocks"))
def dscnn_s(num_classes: int = 12, **options) -> DSCNN:
    """DS-CNN-S: 64 channels, first conv stride (2, 2), 4 depthwise-separable blocks."""
    return DSCNN(
        num_classes, **{"channels": 64, "first_stride": (2, 2), "block_strides": ((1, 1),) * 4, **options}
    )


@register_model(
    **_entry("M", 140, 19.8, 136_580, 138_128, 9.82, "172 channels, conv stride (2,1), first block stride 2")
)
def dscnn_m(num_classes: int = 12, **options) -> DSCNN:
    """DS-CNN-M: 172 channels, first conv stride (2, 1), 4 blocks, the first with stride (2, 2)."""
    strides = ((2, 2),) + ((1, 1),) * 3
    return DSCNN(
        num_classes, **{"channels": 172, "first_stride": (2, 1), "block_strides": strides, **options}
    )


@register_model(
    **_entry(
        "L", 420, 56.9, 413_736, 416_772, 28.3, "276 channels, conv stride (2,1), 5 blocks, first stride 2"
    )
)
def dscnn_l(num_classes: int = 12, **options) -> DSCNN:
    """DS-CNN-L: 276 channels, first conv stride (2, 1), 5 blocks, the first with stride (2, 2)."""
    strides = ((2, 2),) + ((1, 1),) * 4
    return DSCNN(
        num_classes, **{"channels": 276, "first_stride": (2, 1), "block_strides": strides, **options}
    )
