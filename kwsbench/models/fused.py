"""Layers and kernels that only rewritten models compute with: eval-mode constant forms and NHWC training kernels.

The blocks' rewrite hooks (:mod:`kwsbench.models.rewrite`) return these: ``ChannelFrequencyAffine`` and
``FrequencyReduce`` in the inference graph (:mod:`kwsbench.measure.optimize`), the layout helpers and
``band_batch_norm`` in the training reformulation (:mod:`kwsbench.models.reformulate`). Nothing here is
part of a registered model's straightforward formulation, and nothing here imports a model family.
"""

from __future__ import annotations

import torch
from torch import nn

from kwsbench.errors import ModelError

# --- inference: eval-mode constants -------------------------------------------------------------------


def bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """The eval-mode BatchNorm as ``x * scale + shift`` per channel, ``(C,)`` each, in float64."""
    if bn.running_mean is None or bn.running_var is None:
        # Without running statistics eval mode normalises with the batch's own: there are no constants.
        raise ModelError(
            f"{bn} has no running statistics, so its eval output is not a constant affine; "
            "build it with track_running_stats=True to use the inference graph"
        )
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    return scale, shift


class ChannelFrequencyAffine(nn.Module):
    """``y = x * scale + shift`` with constants shaped ``(C, F, 1)``: an eval-mode SubSpectral Norm.

    ``(B, C, F, T) -> (B, C, F, T)``.
    """

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x, self.scale)


class FrequencyReduce(nn.Module):
    """Mean or max over the frequency axis: ``(B, C, F, T) -> (B, C, 1, T)``."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "avg":
            return x.mean(dim=2, keepdim=True)
        return x.amax(dim=2, keepdim=True)


# --- training: NHWC memory layout ---------------------------------------------------------------------


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` with NHWC strides, also when ``C == 1``.

    With one channel NCHW and NHWC are the same memory and ``contiguous(channels_last)`` keeps the NCHW
    strides, which makes oneDNN pick NCHW for the convolution's output; explicit NHWC strides avoid that.
    """
    y = x.contiguous(memory_format=torch.channels_last)
    if y.shape[1] == 1 and y.stride(1) != 1:
        b, c, h, w = y.shape
        y = y.as_strided(y.shape, (h * w, 1, w, 1))
    return y


class _Relayout(torch.autograd.Function):
    """A copy into ``layout`` whose backward copies the gradient back into the input's layout.

    ``x.contiguous(...)`` alone passes the gradient through in whatever layout it arrives, so a layer that
    computes in NCHW inside an NHWC network would hand NCHW gradients to the convolution before it, whose
    backward then takes oneDNN's slow mixed-layout path (measured 15x slower for a 1x1 conv).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
        ctx.back = (
            torch.channels_last
            if x.is_contiguous(memory_format=torch.channels_last)
            else torch.contiguous_format
        )
        return x.contiguous(memory_format=layout)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.contiguous(memory_format=ctx.back), None


def relayout(x: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    """``x`` in memory ``layout``; its gradient returns in ``x``'s own layout (see ``_Relayout``)."""
    if x.is_contiguous(memory_format=layout):
        return x
    return _Relayout.apply(x, layout)


def is_nhwc(x: torch.Tensor) -> bool:
    """Whether ``x`` is a ``(B, C, H, W)`` map with ``C > 1`` in NHWC memory (one channel is both layouts)."""
    return x.dim() == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last)


def through_nchw(forward, x: torch.Tensor) -> torch.Tensor:
    """``forward`` (a norm with running statistics) on an NCHW copy of NHWC ``x``; the result back in NHWC."""
    return relayout(forward(relayout(x, torch.contiguous_format)), torch.channels_last)


def uses_batch_statistics(bn: nn.BatchNorm2d) -> bool:
    """Whether ``bn`` normalises with the batch's statistics (training, or no running statistics kept)."""
    return bn.training or bn.running_mean is None


class _BandBatchNorm(torch.autograd.Function):
    """Training-mode batch norm of an NHWC map with statistics per (frequency band, channel), layout unchanged.

    ``x`` ``(B, C, F, T)`` in NHWC memory is the contiguous array ``(B, S, F / S * T, C)``: per-(band,
    channel) sums are an outer-dimension sum (vectorised across all of a row) followed by a small one, and
    normalising is one elementwise pass whose constants are expanded to a full ``(S, F / S * T, C)`` row, so
    the loop runs over whole rows instead of C-long pieces. ``S = 1`` is a plain batch norm. Measured on
    BC-ResNet-1's shapes at batch 100, 2 threads, forward + backward: 1.5-2.4x faster for SubSpectralNorm
    than a batch norm between two layout copies, 1.4-1.9x faster than ``nn.BatchNorm2d`` on an NCHW copy
    for 8, 12 and 20 channels; PyTorch's own NHWC kernel stays faster when C is a multiple of 16.

    Weight index ``c * S + s`` as in ``SubSpectralNorm``. Variance in two passes (centred), biased for
    normalising; returns ``(y, mean, var)`` with ``(S, C)`` statistics for the running averages.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, bands: int, eps: float):
        b, c, f, t = x.shape
        rows = (f // bands) * t
        grouped = x.permute(0, 2, 3, 1).reshape(b, bands, rows, c)  # a view of NHWC memory
        n = b * rows
        mean = grouped.sum(0).sum(1).div_(n)  # (S, C)
        centred = grouped - _expand(mean, rows)
        var = (centred * centred).sum(0).sum(1).div_(n)
        rstd = (var + eps).rsqrt_()
        scale = rstd if weight is None else weight.view(c, bands).t() * rstd
        # Written through a view into a fresh NHWC tensor: returning the view itself would forbid the
        # in-place ReLU that follows in some blocks (autograd cannot rebase a custom Function's views).
        y = torch.empty_like(x, memory_format=torch.channels_last)
        y_grouped = y.permute(0, 2, 3, 1).view(centred.shape)
        if bias is None:
            torch.mul(centred, _expand(scale, rows), out=y_grouped)
        else:
            torch.addcmul(
                _expand(bias.view(c, bands).t(), rows), centred, _expand(scale, rows), out=y_grouped
            )
        ctx.save_for_backward(centred, rstd, scale)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, grad, _grad_mean, _grad_var):
        centred, rstd, scale = ctx.saved_tensors
        b, bands, rows, c = centred.shape
        n = b * rows
        # The gradient may arrive in either layout; the formulas below need it NHWC like ``centred``.
        grouped = (
            grad.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(centred.shape)
        )
        sum_grad = grouped.sum(0).sum(1)
        sum_grad_centred = (grouped * centred).sum(0).sum(1)
        # dx = scale * (dy - mean(dy) - xhat * mean(dy * xhat)), xhat = centred * rstd
        grad_x = torch.addcmul(_expand(scale * sum_grad / -n, rows), grouped, _expand(scale, rows))
        grad_x.addcmul_(centred, _expand(scale * rstd * rstd * sum_grad_centred / -n, rows))
        grad_weight = (sum_grad_centred * rstd).t().reshape(-1) if ctx.needs_input_grad[1] else None
        grad_bias = sum_grad.t().reshape(-1) if ctx.needs_input_grad[2] else None
        _, _, f, t = grad.shape
        return grad_x.view(b, f, t, c).permute(0, 3, 1, 2), grad_weight, grad_bias, None, None


def _expand(per_band_channel: torch.Tensor, rows: int) -> torch.Tensor:
    """``(S, C)`` constants as a contiguous ``(S, rows, C)`` array: broadcasts over the batch only."""
    bands, channels = per_band_channel.shape
    return per_band_channel.unsqueeze(1).expand(bands, rows, channels).contiguous()


def band_batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, bands: int) -> torch.Tensor:
    """``bn`` (over ``C * bands`` features) applied with batch statistics to NHWC ``x`` ``(B, C, F, T)``.

    Updates ``bn``'s running statistics as ``nn.BatchNorm2d`` does in training (unbiased variance,
    ``momentum`` or the cumulative average when it is ``None``). Output and input gradient are NHWC.
    """
    y, mean, var = _BandBatchNorm.apply(x, bn.weight, bn.bias, bands, bn.eps)
    if bn.training and bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
            n = x.numel() // (x.shape[1] * bands)
            bn.running_mean.lerp_(mean.t().reshape(-1), factor)
            bn.running_var.lerp_(var.t().reshape(-1) * (n / max(n - 1, 1)), factor)
    return y
