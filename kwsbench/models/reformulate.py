"""Exact training-time reformulations: the same function as a registered model, computed faster on CPU.

``for_training(model)`` returns a second module tree that shares every parameter and buffer tensor of
``model`` (so an optimiser step on one is seen by the other, and the state_dict keys are identical), with
modules whose pattern is recognised swapped for faster equivalents. ``model`` itself is not modified: the
straightforward formulation stays what fvcore counts and exporters trace.

The tree is walked once (``kwsbench.models.rewrite.rewrite_tree``); a module of ours says how it
reformulates through its ``for_training`` hook and ``channels_last_safe`` declaration, PyTorch's layers
through the table in ``_torch_layer``. Rewrites (each measured on BC-ResNet-1, batch 100, to be faster;
see benchmarks/bench_train.py):

- ``FrequencyPool`` (adaptive pooling to ``(1, T)``) -> a mean / max over the frequency axis. Adaptive
  pooling with one output bin per column is that mean, but its CPU kernel and backward are generic and slow.
- ``nn.AdaptiveAvgPool2d(1)`` -> a mean over ``(F, T)``, for the same reason.
- Inside models that declare ``channels_last_safe`` (their ``forward`` is layout-agnostic): every
  ``nn.Conv2d`` and ``Conv2dSame`` runs on channels-last (NHWC) tensors. oneDNN's depthwise and 1x1
  kernels are 2-4x faster in NHWC than in NCHW, which it otherwise reorders to a blocked format on every
  call, forward and backward; BatchNorm, ReLU, SiLU, adds, means and Dropout2d keep the NHWC layout of
  their input, so the whole network stays NHWC. Besides BC-ResNet and its ablations this covers DS-CNN
  (measured 1.3-1.6x per training step, S to L) and Res8/Res15 (1.2-1.3x); TC-ResNet's (1 x T) maps
  measured no gain, and MatchboxNet (1-D convolutions) and KWT (attention) have no 2-D convolution to move.
- ``SubSpectralNorm`` -> in training, per-(band, channel) statistics computed on the NHWC array itself
  (``band_batch_norm``), where the reference reshape is not a view and would cost four layout copies.
- ``BCResBlock`` -> the same block with its final sum and ReLU computed in place; ``nn.ReLU`` modules of
  channels-last models run in place too (each follows a BatchNorm or a convolution).
- ``nn.BatchNorm2d`` in those models, when the channel count is not a multiple of 16 -> ``band_batch_norm``
  with one band in training (PyTorch's NHWC kernel vectorises across channels and is 3-6x slower there).

Dropout2d is left as it is: it draws its ``(B, C, 1, 1)`` mask from the same generator in the same order
in both formulations, so seeded runs of the two agree mask for mask.
"""

from __future__ import annotations

import torch
from torch import nn

from kwsbench.models.fused import (
    band_batch_norm,
    is_nhwc,
    relayout,
    through_nchw,
    to_channels_last,
    uses_batch_statistics,
)

# The fast twins of our own blocks live beside them; re-exported so callers find every twin here.
from kwsbench.models.layers import ChannelsLastConv2dSame, FastFrequencyPool, FastSubSpectralNorm
from kwsbench.models.rewrite import TrainingContext, declares_channels_last, rewrite_tree, share_module

__all__ = [
    "ChannelsLastConv2d",
    "ChannelsLastConv2dSame",
    "FastFrequencyPool",
    "FastSubSpectralNorm",
    "GlobalAvgPool2d",
    "SmallChannelBatchNorm2d",
    "band_batch_norm",
    "for_training",
    "relayout",
    "to_channels_last",
]


class GlobalAvgPool2d(nn.AdaptiveAvgPool2d):
    """``AdaptiveAvgPool2d(1)`` as a mean: ``(B, C, H, W) -> (B, C, 1, 1)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


class ChannelsLastConv2d(nn.Conv2d):
    """``nn.Conv2d`` computed on an NHWC copy of its input; the output stays NHWC."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(to_channels_last(x))


class SmallChannelBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` for NHWC maps with few channels, not a multiple of 16 (``_band_norm_pays``).

    PyTorch's NHWC batch-norm kernels vectorise across channels: with 8, 12 or 20 channels (BC-ResNet-1's
    stages) forward + backward measured 3-6x slower than NCHW (batch 100, 2 threads). In training it is
    ``band_batch_norm`` with one band; with running statistics the batch norm runs on an NCHW copy. The
    output is NHWC either way, so the network around it keeps one layout.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (is_nhwc(x) and _band_norm_pays(x.shape[1])):
            return super().forward(x)
        if uses_batch_statistics(self):
            return band_batch_norm(self, x, 1)
        return through_nchw(super().forward, x)


def _band_norm_pays(channels: int) -> bool:
    """Whether ``band_batch_norm`` beats PyTorch's NHWC batch norm for this many channels.

    Measured forward + backward at batch 100, 2 threads, on BC-ResNet and DS-CNN map sizes: faster for
    12-100 channels that are not a multiple of 16 (1.2-4x), slower from 120 on (120, 172 and 276 channels:
    0.5-0.8x) and for multiples of 16, whose NHWC kernel has no remainder loop.
    """
    return channels % 16 != 0 and channels < 112


def _torch_layer(module: nn.Module, context: TrainingContext) -> nn.Module:
    """The fast form of a PyTorch layer (exact classes: a subclass may compute differently), else itself."""
    if type(module) is nn.AdaptiveAvgPool2d and module.output_size in (1, (1, 1)):
        return share_module(module, GlobalAvgPool2d)
    if not context.channels_last:
        return module
    if type(module) is nn.Conv2d and module.padding_mode == "zeros":
        return share_module(module, ChannelsLastConv2d)
    if type(module) is nn.BatchNorm2d:
        return share_module(module, SmallChannelBatchNorm2d)
    if type(module) is nn.ReLU:
        # In these models a ReLU module follows a BatchNorm or a convolution, whose backward needs its
        # input, never its output: overwriting the output in place saves a full-size buffer per call.
        module.inplace = True  # ``module`` is the walker's private copy
    return module


def _fast_form(module: nn.Module, ancestors: tuple[nn.Module, ...]) -> nn.Module:
    context = TrainingContext(
        channels_last=any(declares_channels_last(m) for m in (*ancestors, module)),
    )
    hook = getattr(module, "for_training", None)
    if hook is not None:
        return hook(context)
    return _torch_layer(module, context)


def for_training(model: nn.Module) -> nn.Module:
    """``model`` reformulated for fast CPU training: same function, same parameter tensors, same keys.

    ``model`` is left unchanged; modules no rewrite recognises are shared copies computing as before.
    """
    return rewrite_tree(model, _fast_form, share=True)
