"""Memory of inference: the peak of one forward pass and the size of the saved weights.

Peak forward memory comes from the torch profiler's memory events (``profile_memory=True``): the
profiler's memory timeline lists every tensor allocation (CREATE) and release (DESTROY) in order; the
running sum of their sizes, starting at zero, peaks at the bytes the forward pass needed on top of what
existed before it (the weights and the input are PREEXISTING and not counted). ``tracemalloc`` cannot do
this job: torch allocates tensor storage in C++, outside Python's allocator.
"""

from __future__ import annotations

import io

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile


def peak_forward_memory(model: nn.Module, x: torch.Tensor) -> int:
    """Peak bytes of tensors allocated during one ``model(x)`` call under ``torch.no_grad`` (CPU).

    Activations, workspaces and the output count while alive; weights and ``x`` do not.
    """
    # The timeline is the profiler's own reconstruction of tensor lifetimes; its module is private, so it
    # is imported here, where a change in torch would show up as one failing test.
    from torch.profiler._memory_profiler import Action, MemoryProfileTimeline

    with (
        torch.no_grad(),
        profile(
            activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True
        ) as prof,
    ):
        model(x)
    timeline = MemoryProfileTimeline(prof._memory_profile()).timeline
    live = peak = 0
    for _, action, _, size in timeline:
        if action == Action.CREATE:
            live += size
        elif action == Action.DESTROY:
            live -= size
        peak = max(peak, live)
    return peak


def saved_weights_size(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())`` (weights, buffers and the zip/pickle framing)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes
