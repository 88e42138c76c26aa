"""Exact training-time reformulations: the same function as a registered model, computed faster on CPU.

``for_training(model)`` returns a second module tree that shares every parameter and buffer tensor of
``model`` (so an optimiser step on one is seen by the other, and the state_dict keys are identical), with
modules whose pattern is recognised swapped for faster equivalents. ``model`` itself is not modified: the
straightforward formulation stays what fvcore counts and exporters trace.

Rewrites (each measured on BC-ResNet-1, batch 100, to be faster; see benchmarks/bench_train.py):

- ``FrequencyPool`` (adaptive pooling to ``(1, T)``) -> a mean / max over the frequency axis. Adaptive
  pooling with one output bin per column is that mean, but its CPU kernel and backward are generic and slow.
- ``nn.AdaptiveAvgPool2d(1)`` -> a mean over ``(F, T)``, for the same reason.
- Inside models whose ``forward`` is layout-agnostic (``_CHANNELS_LAST_SAFE``): every ``nn.Conv2d`` and
  ``Conv2dSame`` runs on channels-last (NHWC) tensors. oneDNN's depthwise and 1x1 kernels are 2-4x faster
  in NHWC than in NCHW, which it otherwise reorders to a blocked format on every call, forward and
  backward; BatchNorm, ReLU, SiLU, adds, means and Dropout2d keep the NHWC layout of their input, so the
  whole network stays NHWC. Besides BC-ResNet and its ablations this covers DS-CNN (measured 1.3-1.6x
  per training step, S to L) and Res8/Res15 (1.2-1.3x); TC-ResNet's (1 x T) maps measured no gain, and
  MatchboxNet (1-D convolutions) and KWT (attention) have no 2-D convolution to move.
- ``SubSpectralNorm`` -> in training, per-(band, channel) statistics computed on the NHWC array itself
  (``_BandBatchNorm``), where the reference reshape is not a view and would cost four layout copies.
- ``BCResBlock`` -> the same block with its final sum and ReLU computed in place; ``nn.ReLU`` modules of
  those models run in place too (each follows a BatchNorm or a convolution).
- ``nn.BatchNorm2d`` in those models, when the channel count is not a multiple of 16 -> ``_BandBatchNorm``
  with one band in training (PyTorch's NHWC kernel vectorises across channels and is 3-6x slower there).

Dropout2d is left as it is: it draws its ``(B, C, 1, 1)`` mask from the same generator in the same order
in both formulations, so seeded runs of the two agree mask for mask.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from kwsbench.models.bcresnet import BCResBlock, BCResNet
from kwsbench.models.dscnn import DSCNN
from kwsbench.models.layers import Conv2dSame, FrequencyPool, SubSpectralNorm
from kwsbench.models.resnet_ablation import ResNetDS
from kwsbench.models.resnet_kws import ResKWS

# Models whose forward only uses ops that accept any memory layout (no ``.view`` of a conv output, no
# layout-sensitive reshape): read before adding a class here; tests/models/test_reformulate.py checks them.
_CHANNELS_LAST_SAFE: tuple[type[nn.Module], ...] = (BCResNet, ResNetDS, DSCNN, ResKWS)


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


class FastFrequencyPool(FrequencyPool):
    """``FrequencyPool`` as a plain reduction over the frequency axis: ``(B, C, F, T) -> (B, C, 1, T)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "avg":
            # A sum scaled afterwards: the scale touches the small (B, C, 1, T) result, and the sum's
            # backward is a free broadcast, where mean's backward divides a full-size gradient.
            return x.sum(2, keepdim=True).mul_(1.0 / x.shape[2])
        # max(dim) routes the gradient to one arg-max per column, as adaptive max pooling does.
        return x.max(2, keepdim=True).values


class GlobalAvgPool2d(nn.AdaptiveAvgPool2d):
    """``AdaptiveAvgPool2d(1)`` as a mean: ``(B, C, H, W) -> (B, C, 1, 1)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


class ChannelsLastConv2d(nn.Conv2d):
    """``nn.Conv2d`` computed on an NHWC copy of its input; the output stays NHWC."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(to_channels_last(x))


class ChannelsLastConv2dSame(Conv2dSame):
    """``Conv2dSame`` (TensorFlow "SAME" padding) computed on an NHWC copy of its input; the output stays NHWC."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(to_channels_last(x))


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


def _uses_batch_statistics(bn: nn.BatchNorm2d) -> bool:
    return bn.training or bn.running_mean is None


def _through_nchw(forward, x: torch.Tensor) -> torch.Tensor:
    """``forward`` (a norm with running statistics) on an NCHW copy of NHWC ``x``; the result back in NHWC."""
    return relayout(forward(relayout(x, torch.contiguous_format)), torch.channels_last)


def _is_nhwc(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last)


class FastSubSpectralNorm(SubSpectralNorm):
    """``SubSpectralNorm`` computed on its NHWC input without changing layout.

    The reference reshape ``(B, C, F, T) -> (B, C * S, F / S, T)`` is not a view of NHWC memory; in training
    the statistics come from ``_BandBatchNorm`` on the NHWC array directly. With running statistics (eval)
    the input is copied to NCHW for the batch norm and the output copied back to NHWC, so that later ops
    and the next convolution see one layout.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _is_nhwc(x):
            return super().forward(x)
        assert x.shape[2] % self.num_subbands == 0, (
            f"frequency size {x.shape[2]} not divisible by {self.num_subbands} sub-bands"
        )
        if _uses_batch_statistics(self.bn):
            return band_batch_norm(self.bn, x, self.num_subbands)
        return _through_nchw(super().forward, x)


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


class SmallChannelBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` for NHWC maps with few channels, not a multiple of 16 (``_band_norm_pays``).

    PyTorch's NHWC batch-norm kernels vectorise across channels: with 8, 12 or 20 channels (BC-ResNet-1's
    stages) forward + backward measured 3-6x slower than NCHW (batch 100, 2 threads). In training it is
    ``_BandBatchNorm`` with one band; with running statistics the batch norm runs on an NCHW copy. The
    output is NHWC either way, so the network around it keeps one layout.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (_is_nhwc(x) and _band_norm_pays(x.shape[1])):
            return super().forward(x)
        if _uses_batch_statistics(self):
            return band_batch_norm(self, x, 1)
        return _through_nchw(super().forward, x)


def _band_norm_pays(channels: int) -> bool:
    """Whether ``_BandBatchNorm`` beats PyTorch's NHWC batch norm for this many channels.

    Measured forward + backward at batch 100, 2 threads, on BC-ResNet and DS-CNN map sizes: faster for
    12-100 channels that are not a multiple of 16 (1.2-4x), slower from 120 on (120, 172 and 276 channels:
    0.5-0.8x) and for multiples of 16, whose NHWC kernel has no remainder loop.
    """
    return channels % 16 != 0 and channels < 112


def _share(module: nn.Module, cls: type[nn.Module] | None = None) -> nn.Module:
    """A new module object holding the same parameter and buffer tensors (and hooks) as ``module``.

    Its own ``_modules``/``_parameters``/``_buffers`` dicts let children be swapped without touching
    ``module``; ``cls`` (a subclass adding no state) changes only how it computes.
    """
    new = copy.copy(module)
    for key, value in vars(module).items():
        if isinstance(value, dict):
            setattr(new, key, type(value)(value))
    if cls is not None:
        new.__class__ = cls
    return new


def _rewrite(module: nn.Module, channels_last: bool) -> nn.Module:
    channels_last = channels_last or isinstance(module, _CHANNELS_LAST_SAFE)
    if type(module) is FrequencyPool:
        return _share(module, FastFrequencyPool)
    if type(module) is nn.AdaptiveAvgPool2d and module.output_size in (1, (1, 1)):
        return _share(module, GlobalAvgPool2d)
    if type(module) is SubSpectralNorm:
        new = _share(module, FastSubSpectralNorm)
    elif type(module) is BCResBlock:
        new = _share(module, FastBCResBlock)
    elif type(module) is nn.Conv2d and channels_last and module.padding_mode == "zeros":
        return _share(module, ChannelsLastConv2d)
    elif type(module) is Conv2dSame and channels_last and module.padding_mode == "zeros":
        return _share(module, ChannelsLastConv2dSame)
    elif type(module) is nn.BatchNorm2d and channels_last:
        return _share(module, SmallChannelBatchNorm2d)
    elif type(module) is nn.ReLU and channels_last:
        # In these models a ReLU module follows a BatchNorm or a convolution, whose backward needs its
        # input, never its output: overwriting the output in place saves a full-size buffer per call.
        new = _share(module)
        new.inplace = True
        return new
    else:
        new = _share(module)
    for name, child in module.named_children():
        new._modules[name] = _rewrite(child, channels_last)
    return new


def for_training(model: nn.Module) -> nn.Module:
    """``model`` reformulated for fast CPU training: same function, same parameter tensors, same keys.

    ``model`` is left unchanged; modules no rewrite recognises are shared copies computing as before.
    """
    return _rewrite(model, channels_last=False)
