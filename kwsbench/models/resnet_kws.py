"""Res8, Res15 and their narrow variants: R. Tang, J. Lin, "Deep Residual Learning for Small-Footprint Keyword
Spotting", ICASSP 2018.

Rebuilt from castorini/honk's ``SpeechResModel`` (../shared/docs/PAPER.md §6): 40 MFCC x 101 frames laid out
time x frequency, plain 3x3 convolutions with BatchNorm that has no affine parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kwsbench.errors import ModelError
from kwsbench.models.layers import check_input, make_norm
from kwsbench.models.registry import Declared, DeclaredAccuracy, InputSpec, Reference, register_model

CITATION = (
    'R. Tang, J. Lin, "Deep Residual Learning for Small-Footprint Keyword Spotting", ICASSP 2018, '
    "pp. 5484-5488, arXiv:1710.10361"
)
MFCC_40x101 = InputSpec("mfcc", 40, 101, note="40 MFCC, 30 ms window (n_fft 480), 10 ms hop, 1 s (honk)")


def res_dilations(num_layers: int, dilated: bool) -> list[int]:
    """Dilation of layers ``1..L``: ``2 ** floor((i - 1) / 3)`` for Res15 (1,1,1,2,2,2,4,...), else all 1."""
    return [2 ** (i // 3) if dilated else 1 for i in range(num_layers)]


class ResKWS(nn.Module):
    """Tang & Lin's residual net: ``(B, 1, 40, T) -> (B, num_classes)``.

    conv0 3x3 -> ReLU [-> ``pool`` average pool on (time, frequency)]; then ``num_layers`` layers of
    3x3 conv (dilated for Res15) -> ReLU, the running shortcut added after every even layer, each layer
    followed by BatchNorm without affine parameters (an odd last layer, Res15's 13th, gets no shortcut); mean over time and frequency -> Linear(C, classes).
    All convolutions are bias-free and zero-padded to keep the map size.
    """

    # Layout-agnostic forward: channels-last training measured 1.2-1.3x faster per step.
    channels_last_safe = True

    def __init__(
        self,
        num_classes: int = 12,
        *,
        channels: int = 45,
        num_layers: int = 6,
        dilated: bool = False,
        pool: tuple[int, int] | None = (4, 3),
        n_mfcc: int = 40,
    ):
        super().__init__()
        if num_layers < 1 or channels < 1:
            raise ModelError(f"Res nets need num_layers >= 1 and channels >= 1, got {num_layers}, {channels}")
        self.n_mfcc = n_mfcc
        self.conv0 = nn.Conv2d(1, channels, 3, padding=1, bias=False)
        self.pool = nn.AvgPool2d(pool) if pool else nn.Identity()
        self.convs = nn.ModuleList(
            nn.Conv2d(channels, channels, 3, padding=d, dilation=d, bias=False)
            for d in res_dilations(num_layers, dilated)
        )
        self.norms = nn.ModuleList(make_norm("bn_plain", channels) for _ in range(num_layers))
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.n_mfcc)
        x = x.transpose(2, 3)  # (B, 1, T, F): honk's layout, so the (4, 3) pool spans 4 frames x 3 MFCC
        x = shortcut = self.pool(F.relu(self.conv0(x)))
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True), start=1):
            x = F.relu(conv(x))
            if i % 2 == 0:
                x = shortcut = x + shortcut
            x = norm(x)
        return self.classifier(x.mean(dim=(2, 3)))


def _entry(
    name: str,
    params: int,
    stated: str,
    mults_m: float,
    ref_macs_m: float,
    config: str,
    accuracy: tuple[DeclaredAccuracy, ...] = (),
):
    return dict(
        family="resnet_kws",
        citation=CITATION,
        input=MFCC_40x101,
        declared=Declared(
            source="Tang & Lin 2018, model comparison table (params, mults)",
            params=round(float(stated.rstrip("k")) * 1000),
            params_stated=stated,
            macs=round(mults_m * 1e6),
            macs_stated=f"{mults_m}M mults",
            macs_counting=(
                "multiplies of the convolutions counted on unpadded (H-2) x (W-2) outputs; the reference code "
                f"pads, so fvcore counts {ref_macs_m}M conv/linear MACs as run"
            ),
            accuracy=accuracy,
            configuration=f"{name}: {config}; 12 classes, 40 MFCC x 101 frames",
            notes="BatchNorm without affine parameters as in honk; affine BN would add 2 x C per layer.",
        ),
        reference=Reference(
            params=params,
            macs_conv=round(ref_macs_m * 1e6),
            source="castorini/honk SpeechResModel rebuilt in PyTorch (PAPER.md §6)",
            exact=True,
        ),
    )


_RES8 = "6 layers, 45 channels, 4x3 average pool after conv0"
_RES15 = "13 layers, 45 channels, dilation 2^floor((i-1)/3), no pool"


@register_model(**_entry("Res8", 110_307, "110k", 30, 37.2, _RES8))
def res8(num_classes: int = 12, **options) -> ResKWS:
    """Res8: 6 layers of 45 channels after a 4x3 average pool."""
    return ResKWS(
        num_classes, **{"channels": 45, "num_layers": 6, "dilated": False, "pool": (4, 3), **options}
    )


@register_model(**_entry("Res8-narrow", 19_905, "19.9k", 5.65, 7.0, _RES8.replace("45", "19")))
def res8_narrow(num_classes: int = 12, **options) -> ResKWS:
    """Res8-narrow: Res8 with 19 channels."""
    return ResKWS(
        num_classes, **{"channels": 19, "num_layers": 6, "dilated": False, "pool": (4, 3), **options}
    )


@register_model(
    **_entry(
        "Res15",
        237_882,
        "238k",
        894,
        959,
        _RES15,
        (DeclaredAccuracy("gsc_v1_12", 95.8, source="Kim et al. 2021, Table 3"),),
    )
)
def res15(num_classes: int = 12, **options) -> ResKWS:
    """Res15: 13 dilated layers of 45 channels, full resolution."""
    return ResKWS(num_classes, **{"channels": 45, "num_layers": 13, "dilated": True, "pool": None, **options})


@register_model(**_entry("Res15-narrow", 42_648, "42.6k", 160, 171, _RES15.replace("45", "19")))
def res15_narrow(num_classes: int = 12, **options) -> ResKWS:
    """Res15-narrow: Res15 with 19 channels."""
    return ResKWS(num_classes, **{"channels": 19, "num_layers": 13, "dilated": True, "pool": None, **options})
