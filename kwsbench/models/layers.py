"""Blocks shared by model families: SubSpectral Norm, frequency pooling, conv-norm-activation stacks.

Families build from these instead of copying each other. Every block works on ``(B, C, F, T)`` maps and
says itself how it rewrites for inference and for training (the hooks of ``kwsbench.models.rewrite``);
its fast training twin sits beside it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kwsbench.errors import ModelError
from kwsbench.models.fused import (
    ChannelFrequencyAffine,
    FrequencyReduce,
    band_batch_norm,
    bn_scale_shift,
    is_nhwc,
    through_nchw,
    to_channels_last,
    uses_batch_statistics,
)
from kwsbench.models.rewrite import InferenceContext, TrainingContext, swap_class


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
        self.check_frequencies(f)
        y = self.bn(x.reshape(b, c * self.num_subbands, f // self.num_subbands, t))
        return y.reshape(b, c, f, t)

    def check_frequencies(self, frequencies: int) -> None:
        """Fail with a readable message when ``frequencies`` cannot be cut into equal sub-bands."""
        # Checked at construction for the registry's inputs; this guards other input sizes.
        if frequencies % self.num_subbands:
            raise ModelError(
                f"SubSpectralNorm({self.extra_repr()}) got frequency size {frequencies}, not a multiple of "
                f"{self.num_subbands}; feed the model its declared input (kwsbench models NAME)"
            )

    def as_affine(self, frequencies: int) -> ChannelFrequencyAffine:
        """This norm in eval mode as per-(channel, frequency) constants ``(C, F, 1)`` for ``F = frequencies``."""
        scale, shift = bn_scale_shift(self.bn)  # (C * S,), feature c * S + s
        c, s = self.num_channels, self.num_subbands
        band = frequencies // s

        dtype = self.bn.running_var.dtype if self.bn.running_var is not None else torch.float32

        def per_frequency(v: torch.Tensor) -> torch.Tensor:
            # Constants in the model's own dtype, detached: the graph is for inference, not for autograd.
            return v.detach().view(c, s, 1).expand(c, s, band).reshape(c, frequencies, 1).to(dtype)

        return ChannelFrequencyAffine(per_frequency(scale), per_frequency(shift))

    def for_inference(self, context: InferenceContext) -> nn.Module:
        """One ``Mul`` and one ``Add`` instead of ``Reshape -> BatchNorm -> Reshape``.

        Folding the constants into the frequency-depthwise convolution before it would need per-frequency
        weights; written as shifted slices that measured slower on ONNX Runtime (more nodes).
        """
        shape = context.input_shape(self)
        return self if shape is None else self.as_affine(shape[2])

    def for_training(self, context: TrainingContext) -> nn.Module:
        """Computed on NHWC maps without layout copies (``FastSubSpectralNorm``)."""
        return swap_class(self, SubSpectralNorm, FastSubSpectralNorm)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, num_subbands={self.num_subbands}"


class FastSubSpectralNorm(SubSpectralNorm):
    """``SubSpectralNorm`` computed on its NHWC input without changing layout.

    The reference reshape ``(B, C, F, T) -> (B, C * S, F / S, T)`` is not a view of NHWC memory; in training
    the statistics come from ``band_batch_norm`` on the NHWC array directly. With running statistics (eval)
    the input is copied to NCHW for the batch norm and the output copied back to NHWC, so that later ops
    and the next convolution see one layout.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not is_nhwc(x):
            return super().forward(x)
        self.check_frequencies(x.shape[2])
        if uses_batch_statistics(self.bn):
            return band_batch_norm(self.bn, x, self.num_subbands)
        return through_nchw(super().forward, x)


class FrequencyPool(nn.Module):
    """Collapse the frequency axis: ``(B, C, F, T) -> (B, C, 1, T)`` by average or max."""

    def __init__(self, mode: str = "avg"):
        super().__init__()
        if mode not in ("avg", "max"):
            raise ModelError(f"frequency_pool must be 'avg' or 'max', got {mode!r}")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Adaptive pooling is the reference formulation (and what fvcore counts); the rewrites swap it for
        # an exactly equal reduction (the hooks below).
        if self.mode == "avg":
            return F.adaptive_avg_pool2d(x, (1, None))
        return F.adaptive_max_pool2d(x, (1, None))

    def for_inference(self, context: InferenceContext) -> nn.Module:
        """A plain reduction (ONNX ``ReduceMean`` instead of an ``AveragePool`` with a derived kernel)."""
        return FrequencyReduce(self.mode)

    def for_training(self, context: TrainingContext) -> nn.Module:
        """A plain reduction: adaptive pooling's CPU kernel and backward are generic and slow."""
        return swap_class(self, FrequencyPool, FastFrequencyPool)

    def extra_repr(self) -> str:
        return self.mode


class FastFrequencyPool(FrequencyPool):
    """``FrequencyPool`` as a plain reduction over the frequency axis: ``(B, C, F, T) -> (B, C, 1, T)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "avg":
            # A sum scaled afterwards: the scale touches the small (B, C, 1, T) result, and the sum's
            # backward is a free broadcast, where mean's backward divides a full-size gradient.
            return x.sum(2, keepdim=True).mul_(1.0 / x.shape[2])
        # max(dim) routes the gradient to one arg-max per column, as adaptive max pooling does.
        return x.max(2, keepdim=True).values


class CausalConv2d(nn.Conv2d):
    """``nn.Conv2d`` that pads only the past in time: ``(kernel_t - 1) * dilation_t`` zeros on the left.

    ``padding`` applies to frequency only (its time entry must be 0), so output frame ``t`` reads input
    frames ``t - (kernel_t - 1) * dilation_t .. t`` and never a later one: the model can run frame by frame
    (``kwsbench.stream.incremental``). Same weights, same parameter count as the centred convolution.
    ``(B, C_in, F, T) -> (B, C_out, F', T)``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(self.padding, str) or self.padding[1] != 0 or self.stride[1] != 1:
            raise ModelError(
                f"CausalConv2d pads time itself; got padding={self.padding}, stride={self.stride}: "
                "give frequency padding only, (p, 0), and time stride 1"
            )
        self.causal_padding = (self.kernel_size[1] - 1) * self.dilation[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export() and self.causal_padding:
            # The TorchScript exporter loses the frame count after a Pad, and the frequency pool's
            # output size then is not constant (export refused, a minutes-long dynamo fallback). Centred
            # padding and the last frames cut off compute the same outputs with every shape static.
            p = self.causal_padding
            out = F.conv2d(
                x, self.weight, self.bias, self.stride, (self.padding[0], p), self.dilation, self.groups
            )
            return out[..., :-p]
        return super().forward(F.pad(x, (self.causal_padding, 0)))

    def for_training(self, context: TrainingContext) -> nn.Module:
        """Channels-last inside models that declare it (oneDNN's NHWC kernels, see ``reformulate``)."""
        if context.channels_last and self.padding_mode == "zeros":
            return swap_class(self, CausalConv2d, ChannelsLastCausalConv2d)
        return self

    def extra_repr(self) -> str:
        return super().extra_repr() + f", causal_padding={self.causal_padding}"


class ChannelsLastCausalConv2d(CausalConv2d):
    """``CausalConv2d`` computed on an NHWC copy of its input; the output stays NHWC."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(to_channels_last(x))


TEMPORAL_PADDINGS = ("same", "causal")


def check_temporal_padding(value: str) -> str:
    """``value`` if it names a temporal padding, else a one-line :class:`ModelError`."""
    if value not in TEMPORAL_PADDINGS:
        raise ModelError(f"temporal_padding must be 'same' or 'causal', got {value!r}")
    return value


def temporal_conv(
    in_channels: int,
    out_channels: int,
    kernel_size: tuple[int, int],
    *,
    frequency_padding: int = 0,
    stride: int | Sequence[int] = 1,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    temporal_padding: str = "same",
) -> nn.Conv2d:
    """A bias-free ``F x T`` convolution padded centred in time (``"same"``) or on the past only (``"causal"``).

    ``"same"`` pads ``dilation_t * (kernel_t - 1) // 2`` frames on both sides (odd kernels).
    """
    dilation_t = dilation if isinstance(dilation, int) else dilation[1]
    if check_temporal_padding(temporal_padding) == "causal":
        return CausalConv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            (frequency_padding, 0),
            dilation,
            groups,
            bias=False,
        )
    time_padding = dilation_t * (kernel_size[1] - 1) // 2
    return nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride,
        (frequency_padding, time_padding),
        dilation,
        groups,
        bias=False,
    )


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
    conv: nn.Conv2d | None = None,
) -> nn.Sequential:
    """Bias-free ``Conv2d`` -> optional norm -> optional activation, as one ``nn.Sequential``.

    ``conv``: a convolution built elsewhere (e.g. :func:`temporal_conv`) used instead of the one the
    geometry arguments describe.
    """
    if conv is None:
        conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=False
        )
    layers: list[nn.Module] = [conv]
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

    def __init__(
        self,
        in_channels: int,
        hidden: int,
        num_classes: int,
        freq_kernel: int = 5,
        *,
        temporal_padding: str = "same",
    ):
        super().__init__()
        self.body = nn.Sequential(
            temporal_conv(
                in_channels,
                in_channels,
                (freq_kernel, 5),
                groups=in_channels,
                temporal_padding=temporal_padding,
            ),
            pointwise(in_channels, hidden),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            pointwise(hidden, num_classes, bias=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).flatten(1)

    def frame_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """The per-frame vectors that the global average pool averages: ``(B, C, F, T) -> (B, hidden, 1, T)``.

        ``classify(frame_embeddings(x).mean((2, 3), keepdim=True))`` equals ``forward(x)``; a streaming
        executor averages the last frames instead of a whole clip's.
        """
        return self.body[:4](x)

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """Logits from averaged frame embeddings: ``(B, hidden, 1, 1) -> (B, num_classes)``."""
        return self.body[5](pooled).flatten(1)


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

    def for_training(self, context: TrainingContext) -> nn.Module:
        """Channels-last inside models that declare it (oneDNN's NHWC kernels, see ``reformulate``)."""
        if context.channels_last and self.padding_mode == "zeros":
            return swap_class(self, Conv2dSame, ChannelsLastConv2dSame)
        return self


class ChannelsLastConv2dSame(Conv2dSame):
    """``Conv2dSame`` (TensorFlow "SAME" padding) computed on an NHWC copy of its input; the output stays NHWC."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(to_channels_last(x))
