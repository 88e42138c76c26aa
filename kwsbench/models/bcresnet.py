"""BC-ResNet (Kim et al., Interspeech 2021) at every width, with the switches of the paper's Table 2.

Structure and channel rule follow the official Qualcomm code so parameter counts match it exactly
(../shared/docs/PAPER.md §1-2). Input: log-mel ``(B, 1, 40, T)``; output: logits ``(B, num_classes)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kwsbench.errors import ModelError
from kwsbench.models.layers import (
    ClassifierTail,
    FrequencyPool,
    check_input,
    check_temporal_padding,
    conv_norm_act,
    pointwise,
    temporal_conv,
)
from kwsbench.models.registry import Declared, DeclaredAccuracy, InputSpec, Reference, register_model
from kwsbench.models.rewrite import InferenceContext, TrainingContext, swap_class

CITATION = (
    'B. Kim, S. Chang, J. Lee, D. Sung, "Broadcasted Residual Learning for Efficient Keyword Spotting", '
    "Interspeech 2021, pp. 4538-4542, arXiv:2106.04140"
)
LOGMEL_40x101 = InputSpec("logmel", 40, 101, note="40 log-mel bins, n_fft 512, 30 ms window, 10 ms hop, 1 s")

# (blocks, frequency stride of the stage's first block, time dilation) for the four stages.
STAGES: tuple[tuple[int, int, int], ...] = ((2, 1, 1), (2, 2, 2), (4, 2, 4), (4, 1, 8))


def bcresnet_channels(tau: float = 1.0, base_channels: int | None = None) -> list[int]:
    """Channel counts ``[head, stage1..4, tail]`` from the official rule: base ``b = int(8 * tau)``."""
    b = base_channels if base_channels is not None else int(8 * tau)
    if b < 1:
        raise ModelError(f"BC-ResNet width tau={tau} gives {b} base channels; use tau >= 0.125")
    return [2 * b, b, int(1.5 * b), 2 * b, int(2.5 * b), 4 * b]


def stage_frequency_sizes(n_mels: int) -> list[int]:
    """Frequency size seen by each stage's blocks after the head and the stage strides."""
    f = (n_mels + 2 * 2 - 5) // 2 + 1  # head: 5x5, padding 2, frequency stride 2
    sizes = []
    for _, stride, _ in STAGES:
        f = (f + 2 - 3) // stride + 1  # 3x1 frequency-depthwise conv, padding 1
        sizes.append(f)
    return sizes


class BCResBlock(nn.Module):
    """``y = ReLU(x + f2(x) + BC(f1(pool_freq(f2(x)))))``; a transition block has no identity ``x``.

    f2: [1x1 conv -> BN -> ReLU if channels change] -> 3x1 frequency-depthwise conv -> SubSpectral Norm.
    f1: 1x3 temporal-depthwise conv (dilated) -> BN -> swish -> 1x1 conv -> Dropout2d.
    ``temporal_padding="causal"`` pads that conv on the past only (``CausalConv2d``).
    ``(B, C_in, F, T) -> (B, C_out, F / freq_stride, T)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        freq_stride: int = 1,
        time_dilation: int = 1,
        use_subspectral_norm: bool = True,
        num_subbands: int = 5,
        use_aux_residual: bool = True,
        use_shortcut: bool = True,
        frequency_pool: str = "avg",
        broadcast: str = "add",
        dropout: float = 0.1,
        temporal_padding: str = "same",
    ):
        super().__init__()
        self.transition = in_channels != out_channels
        self.use_aux_residual = use_aux_residual
        self.use_shortcut = use_shortcut and not self.transition
        self.broadcast = broadcast
        f2: list[nn.Module] = []
        if self.transition:
            f2.append(conv_norm_act(in_channels, out_channels, 1))
        f2.append(
            conv_norm_act(
                out_channels,
                out_channels,
                (3, 1),
                stride=(freq_stride, 1),
                padding=(1, 0),
                groups=out_channels,
                norm="ssn" if use_subspectral_norm else "bn",
                num_subbands=num_subbands,
                activation=None,
            )
        )
        self.f2 = nn.Sequential(*f2)
        self.frequency_pool = frequency_pool
        self.pool = FrequencyPool(frequency_pool)
        self.f1 = nn.Sequential(
            conv_norm_act(
                out_channels,
                out_channels,
                (1, 3),
                activation=nn.SiLU,
                conv=temporal_conv(
                    out_channels,
                    out_channels,
                    (1, 3),
                    dilation=(1, time_dilation),
                    groups=out_channels,
                    temporal_padding=temporal_padding,
                ),
            ),
            pointwise(out_channels, out_channels),
            nn.Dropout2d(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        aux = self.f2(x)
        temporal = self.f1(self.pool(aux))  # (B, C, 1, T), broadcast over frequency in merge
        return self.merge(x, aux, temporal)

    def merge(self, x: torch.Tensor, aux: torch.Tensor, temporal: torch.Tensor) -> torch.Tensor:
        """``ReLU([x +] aux + BC(temporal))`` (or ``aux * sigmoid(temporal)`` for the attention variant)."""
        if self.broadcast == "attention":
            y = aux * torch.sigmoid(temporal)
        elif self.use_aux_residual:
            y = aux + temporal
        else:
            y = temporal.expand_as(aux)
        if self.use_shortcut:
            y = y + x
        return F.relu(y)

    def for_inference(self, context: InferenceContext) -> nn.Module:
        """The frequency average and the temporal depthwise conv after it as one ``F x k`` depthwise conv.

        Zero padding in time (centred or causal) commutes with the average, so the conv with its ``1 x k``
        weights repeated over the ``F`` frequencies and divided by ``F`` is exact; it removes a reduction
        per block, and the BatchNorm after it is then folded into it like any other. A max over frequency does not commute
        with the convolution and stays.
        """
        shape = context.output_shape(self.f2)  # what the pool reads
        if self.frequency_pool != "avg" or shape is None:
            return self
        frequencies = shape[2]
        temporal = self.f1[0][0]  # f1 = [temporal conv -> BN -> swish], 1x1 conv, dropout (see __init__)
        c, _, kf, kt = temporal.weight.shape
        assert kf == 1, "BC-ResBlock's temporal convolution has a 1 x k kernel"
        # type(temporal): a causal conv stays causal (its padding then holds the frequency part only).
        fused = type(temporal)(
            c,
            c,
            (frequencies, kt),
            padding=(0, temporal.padding[1]),
            dilation=(1, temporal.dilation[1]),
            groups=c,
            bias=False,
        )
        fused.weight = nn.Parameter(temporal.weight.detach().expand(c, 1, frequencies, kt) / frequencies)
        self.f1[0][0] = fused
        self.pool = nn.Identity()
        return self

    def for_training(self, context: TrainingContext) -> nn.Module:
        """The same block with its final sum and ReLU in place (``FastBCResBlock``)."""
        return swap_class(self, BCResBlock, FastBCResBlock)


class FastBCResBlock(BCResBlock):
    """``BCResBlock`` whose final sum and ReLU reuse one fresh buffer (``add_``, ``relu_``).

    Each block otherwise allocates and writes two more full-size maps per step; the in-place forms are
    exact and autograd-safe here (an add's backward needs no input, a ReLU's backward its output).
    """

    def merge(self, x: torch.Tensor, aux: torch.Tensor, temporal: torch.Tensor) -> torch.Tensor:
        if self.broadcast != "add" or not self.use_aux_residual:
            return super().merge(x, aux, temporal)  # the expanded view cannot be written in place
        y = aux + temporal
        if self.use_shortcut:
            y.add_(x)
        return y.relu_()


class BCResNet(nn.Module):
    """BC-ResNet-τ: head, four stages of BC-ResBlocks (2, 2, 4, 4), tail. ``(B, 1, n_mels, T) -> (B, classes)``.

    Options are the paper's Table 2 ablations, named as a reader of that table would expect, and
    ``temporal_padding``: ``"same"`` (the paper's centred padding) or ``"causal"``: every convolution with
    temporal extent (the head's 5x5, the blocks' dilated 1x3 depthwise, the tail's 5x5 depthwise) pads only
    the past, so the output at frame ``t`` reads no frame after ``t`` and the model can stream
    (``kwsbench.stream.incremental``). Frequency padding and the parameter count are unchanged.
    """

    # Every forward inside is layout-agnostic: the training rewrite runs its convolutions channels-last.
    channels_last_safe = True

    def __init__(
        self,
        num_classes: int = 12,
        *,
        tau: float = 1.0,
        base_channels: int | None = None,
        n_mels: int = 40,
        use_subspectral_norm: bool = True,
        num_subbands: int = 5,
        use_aux_residual: bool = True,
        use_shortcut: bool = True,
        frequency_pool: str = "avg",
        broadcast: str = "add",
        dropout: float = 0.1,
        temporal_padding: str = "same",
    ):
        super().__init__()
        check_temporal_padding(temporal_padding)
        if broadcast not in ("add", "attention"):
            raise ModelError(f"broadcast must be 'add' or 'attention', got {broadcast!r}")
        if frequency_pool not in ("avg", "max"):
            raise ModelError(f"frequency_pool must be 'avg' or 'max', got {frequency_pool!r}")
        if use_subspectral_norm:
            sizes = stage_frequency_sizes(n_mels)
            bad = [f for f in sizes if num_subbands < 1 or f % num_subbands]
            if bad:
                divisors = [s for s in range(1, min(sizes) + 1) if all(f % s == 0 for f in sizes)]
                raise ModelError(
                    f"num_subbands={num_subbands} does not divide the frequency sizes {sizes} of the four stages "
                    f"(n_mels={n_mels}); choose one of {divisors}"
                )
        self.n_mels = n_mels
        self.temporal_padding = temporal_padding
        c = bcresnet_channels(tau, base_channels)
        self.channels = c
        self.head = conv_norm_act(
            1,
            c[0],
            5,
            conv=temporal_conv(
                1, c[0], (5, 5), frequency_padding=2, stride=(2, 1), temporal_padding=temporal_padding
            ),
        )
        block_options = dict(
            use_subspectral_norm=use_subspectral_norm,
            num_subbands=num_subbands,
            use_aux_residual=use_aux_residual,
            use_shortcut=use_shortcut,
            frequency_pool=frequency_pool,
            broadcast=broadcast,
            dropout=dropout,
            temporal_padding=temporal_padding,
        )
        blocks: list[nn.Module] = []
        for stage, (n_blocks, stride, dilation) in enumerate(STAGES):
            for i in range(n_blocks):
                blocks.append(
                    BCResBlock(
                        c[stage] if i == 0 else c[stage + 1],
                        c[stage + 1],
                        freq_stride=stride if i == 0 else 1,
                        time_dilation=dilation,
                        **block_options,
                    )
                )
        self.blocks = nn.Sequential(*blocks)
        self.tail = ClassifierTail(c[4], c[5], num_classes, temporal_padding=temporal_padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.n_mels)
        return self.tail(self.blocks(self.head(x)))


def _bcresnet_entry(
    tau: str,
    params: int,
    stated: str,
    macs_m: float,
    ref_total: float,
    ref_conv: float,
    v1: float,
    v2: float,
    std: tuple[float, float] | None = None,
):
    accuracy = (
        DeclaredAccuracy("gsc_v1_12", v1, std[0] if std else None, 10 if std else None, "Table 3"),
        DeclaredAccuracy("gsc_v2_12", v2, std[1] if std else None, 10 if std else None, "Table 3"),
    )
    return dict(
        family="bcresnet",
        citation=CITATION,
        input=LOGMEL_40x101,
        declared=Declared(
            source="Kim et al. 2021, Table 3",
            params=round(float(stated.rstrip("k")) * 1000),
            params_stated=stated,
            macs=round(macs_m * 1e6),
            macs_stated=f"{macs_m}M mult",
            macs_counting="fvcore total in eval mode on 1x1x40x101 (BatchNorm, pooling and adds included)",
            accuracy=accuracy,
            configuration=f"BC-ResNet-{tau}, 12 classes, 40 log-mel x 101 frames",
        ),
        reference=Reference(
            params=params,
            macs_total=round(ref_total * 1e6),
            macs_conv=round(ref_conv * 1e6),
            source="official Qualcomm bcresnet code, measured with fvcore (PAPER.md §2)",
            exact=True,
        ),
    )


@register_model(**_bcresnet_entry("1", 9_232, "9.2k", 3.1, 3.11, 2.48, 96.6, 96.9, (0.21, 0.30)))
def bcresnet_1(num_classes: int = 12, *, tau: float = 1.0, **options) -> BCResNet:
    """BC-ResNet-1 (τ = 1); any width through ``tau``."""
    return BCResNet(num_classes, tau=tau, **options)


@register_model(**_bcresnet_entry("1.5", 17_154, "17.2k", 5.5, 5.56, 4.61, 97.2, 97.6))
def bcresnet_1_5(num_classes: int = 12, *, tau: float = 1.5, **options) -> BCResNet:
    """BC-ResNet-1.5."""
    return BCResNet(num_classes, tau=tau, **options)


@register_model(**_bcresnet_entry("2", 27_284, "27.3k", 8.5, 8.59, 7.32, 97.3, 97.8))
def bcresnet_2(num_classes: int = 12, *, tau: float = 2.0, **options) -> BCResNet:
    """BC-ResNet-2."""
    return BCResNet(num_classes, tau=tau, **options)


@register_model(**_bcresnet_entry("3", 54_168, "54.2k", 16.2, 16.42, 14.52, 97.6, 98.2))
def bcresnet_3(num_classes: int = 12, *, tau: float = 3.0, **options) -> BCResNet:
    """BC-ResNet-3."""
    return BCResNet(num_classes, tau=tau, **options)


@register_model(**_bcresnet_entry("6", 187_812, "188k", 53.1, 54.08, 50.28, 97.9, 98.6))
def bcresnet_6(num_classes: int = 12, *, tau: float = 6.0, **options) -> BCResNet:
    """BC-ResNet-6."""
    return BCResNet(num_classes, tau=tau, **options)


@register_model(**_bcresnet_entry("8", 321_068, "321k", 89.1, 90.98, 85.92, 98.0, 98.7))
def bcresnet_8(num_classes: int = 12, *, tau: float = 8.0, **options) -> BCResNet:
    """BC-ResNet-8."""
    return BCResNet(num_classes, tau=tau, **options)
