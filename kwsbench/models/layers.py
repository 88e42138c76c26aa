"""Blocks shared by model families: SubSpectral Norm, frequency pooling, conv-norm-activation stacks.

Families build from these instead of copying each other. Every block works on ``(B, C, F, T)`` maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kwsbench.errors import ModelError


class SubSpectralNorm(nn.Module):
    """BatchNorm with separate statistics and affine parameters per (channel, frequency sub-band).

    Chang et al., "SubSpectral Normalization for Neural Audio Data Processing", ICASSP 2021. The frequency
    axis is cut into ``num_subbands`` equal contiguous bands; a ``(B, C, F, T)`` map is viewed as
    ``(B, C * S, F / S, T)`` (channel ``c``, band ``s`` becomes feature ``c * S + s``) and batch-normalised.
    Affine parameters: ``2 * C * S``.
    """

    def __init__(self, num_channels: int, num_subbands: int = 5, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        if num_subbands < 1:
            raise ModelError(f"num_subbands must be at least 1, got {num_subbands}")
        self.num_channels = num_channels
        self.num_subbands = num_subbands
        self.bn = nn.BatchNorm2d(num_channels * num_subbands, eps=eps, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, f, t = x.shape
        # Checked at construction for the registry's inputs; this guards other input sizes.
        assert f % self.num_subbands == 0, (
            f"frequency size {f} not divisible by {self.num_subbands} sub-bands"
        )
        y = self.bn(x.reshape(b, c * self.num_subbands, f // self.num_subbands, t))
        return y.reshape(b, c, f, t)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, num_subbands={self.num_subbands}"


class FrequencyPool(nn.Module):
    """Collapse the frequency axis: ``(B, C, F, T) -> (B, C, 1, T)`` by average or max."""

    def __init__(self, mode: str = "avg"):
        super().__init__()
        if mode not in ("avg", "max"):
            raise ModelError(f"frequency_pool must be 'avg' or 'max', got {mode!r}")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Adaptive pooling is the reference formulation (and what fvcore counts); the fast training path
        # swaps it for an exactly equal mean (kwsbench.models.reformulate).
        if self.mode == "avg":
            return F.adaptive_avg_pool2d(x, (1, None))
        return F.adaptive_max_pool2d(x, (1, None))

    def extra_repr(self) -> str:
        return self.mode


def make_norm(kind: str, channels: int, num_subbands: int = 5) -> nn.Module:
    """``"bn"`` -> BatchNorm2d, ``"ssn"`` -> SubSpectralNorm, ``"bn_plain"`` -> BatchNorm without affine."""
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "ssn":
        return SubSpectralNorm(channels, num_subbands)
    if kind == "bn_plain":
        return nn.BatchNorm2d(channels, affine=False)
    raise ModelError(f"unknown normalisation {kind!r}; use 'bn', 'ssn' or 'bn_plain'")


def conv_norm_act(
    in_channels: int,
    out_channels: int,
    kernel_size: int | Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    norm: str | None = "bn",
    num_subbands: int = 5,
    activation: type[nn.Module] | None = nn.ReLU,
) -> nn.Sequential:
    """Bias-free ``Conv2d`` -> optional norm -> optional activation, as one ``nn.Sequential``."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=False)
    ]
    if norm is not None:
        layers.append(make_norm(norm, out_channels, num_subbands))
    if activation is not None:
        layers.append(activation())
    return nn.Sequential(*layers)


def pointwise(in_channels: int, out_channels: int, bias: bool = False) -> nn.Conv2d:
    """A 1x1 convolution."""
    return nn.Conv2d(in_channels, out_channels, 1, bias=bias)


class DepthwiseSeparableResBlock(nn.Module):
    """Residual depthwise-separable block of Table 2's ResNet-1D / ResNet-2D comparison nets.

    ``[1x1 conv -> BN -> ReLU when channels change] -> depthwise k_f x k_t (time-dilated) -> norm -> swish
    -> 1x1 conv -> Dropout2d``, plus the identity when the channel count is kept, then ReLU. It is
    BC-ResNet's block with the broadcast split removed, so the comparison isolates the broadcast idea.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int],
        *,
        freq_stride: int = 1,
        time_dilation: int = 1,
        norm: str = "bn",
        num_subbands: int = 5,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.transition = in_channels != out_channels
        kf, kt = kernel_size
        layers: list[nn.Module] = []
        if self.transition:
            layers.append(conv_norm_act(in_channels, out_channels, 1))
        layers += [
            conv_norm_act(
                out_channels,
                out_channels,
                kernel_size,
                stride=(freq_stride, 1),
                padding=((kf - 1) // 2, time_dilation * (kt - 1) // 2),
                dilation=(1, time_dilation),
                groups=out_channels,
                norm=norm,
                num_subbands=num_subbands,
                activation=nn.SiLU,
            ),
            pointwise(out_channels, out_channels),
            nn.Dropout2d(dropout),
        ]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if not self.transition:
            y = y + x
        return F.relu(y)


class ClassifierTail(nn.Module):
    """BC-ResNet's tail, shared by its Table 2 relatives.

    Depthwise ``k_f x 5`` conv with no frequency padding (collapses the last 5 bands to 1) -> 1x1 conv ->
    BN -> ReLU -> global average pool -> 1x1 conv with bias -> ``(B, num_classes)``.
    """

    def __init__(self, in_channels: int, hidden: int, num_classes: int, freq_kernel: int = 5):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(
                in_channels, in_channels, (freq_kernel, 5), padding=(0, 2), groups=in_channels, bias=False
            ),
            pointwise(in_channels, hidden),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            pointwise(hidden, num_classes, bias=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).flatten(1)


def check_input(x: torch.Tensor, n_features: int) -> None:
    """Fail early with a readable message when features do not have the shape ``(B, 1, n_features, T)``."""
    if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] != n_features:
        raise ModelError(
            f"expected features shaped (B, 1, {n_features}, T), got {tuple(x.shape)}; "
            "use the model's declared input (kwsbench models NAME)"
        )


def tf_same_padding(size: int, kernel: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow ``padding="SAME"`` along one axis: ``(before, after)`` so that ``out = ceil(size / stride)``.

    TF puts the odd pixel after (``after = before + 1``), which PyTorch's symmetric ``padding`` cannot express.
    """
    # Ceiling division written without negative floor division: exported to ONNX, `//` on traced ints
    # becomes an integer Div that truncates, which turns -(-a // b) into a floor and shifts the padding.
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding (asymmetric when the total is odd), for TF-born baselines.

    ``(B, C_in, H, W) -> (B, C_out, ceil(H / s_h), ceil(W / s_w))``; the constructor's ``padding`` is ignored.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        top, bottom = tf_same_padding(x.shape[-2], kh, sh, dh)
        left, right = tf_same_padding(x.shape[-1], kw, sw, dw)
        return super().forward(F.pad(x, (left, right, top, bottom)))
