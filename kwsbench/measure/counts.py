"""Parameter and multiply-accumulate counts, the way the BC-ResNet paper counts them.

MACs come from fvcore on one input at the model's declared shape, in eval mode (BatchNorm as inference
affine, dropout off). fvcore's *total* includes BatchNorm and pooling (this is the paper's "#Mult" column);
the *conv* count keeps only convolution, linear and matrix-multiply ops. Ops fvcore does not count
(activations, element-wise adds, ...) are listed, never silently folded in.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

# fvcore's operator keys for weight-bearing products (conv, fully connected, attention matmuls).
CONV_LINEAR_OPS = frozenset({"conv", "linear", "addmm", "matmul", "bmm", "einsum", "baddbmm", "mm"})


@dataclass(frozen=True)
class MacCount:
    """fvcore's count on one input: ``total`` (all counted ops), ``conv`` (conv/linear/matmul only),
    ``by_operator`` (op -> MACs), ``skipped`` (op -> number of calls fvcore did not count)."""

    total: int
    conv: int
    by_operator: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    input_shape: tuple[int, ...] = ()


def count_params(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters (trainable only by default, as papers count them; buffers never)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, inputs: torch.Tensor | tuple[torch.Tensor, ...]) -> MacCount:
    """Count MACs with fvcore in eval mode on ``inputs``; the model's train/eval mode is restored after."""
    with warnings.catch_warnings():
        # Importing fvcore scripts a helper with torch.jit, which newer torch flags as deprecated.
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    args = inputs if isinstance(inputs, tuple) else (inputs,)
    was_training = model.training
    model.eval()
    # fvcore traces with torch.jit; its tracer warnings say nothing about the count.
    fvcore_log = logging.getLogger("fvcore")
    level = fvcore_log.level
    fvcore_log.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            analysis = FlopCountAnalysis(model, args)
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            by_op = {k: int(v) for k, v in analysis.by_operator().items()}
            skipped = dict(sorted(analysis.unsupported_ops().items()))
    finally:
        fvcore_log.setLevel(level)
        model.train(was_training)
    return MacCount(
        total=sum(by_op.values()),
        conv=sum(v for k, v in by_op.items() if k in CONV_LINEAR_OPS),
        by_operator=by_op,
        skipped=skipped,
        input_shape=tuple(args[0].shape),
    )
