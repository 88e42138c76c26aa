"""The incremental streaming BC-ResNet: each hop computes only its new log-mel frames and the model's new frames.

A causal BC-ResNet (``temporal_padding="causal"``) becomes a step function with explicit state,
``step(audio (B, hop_samples), *state) -> (logits (B, C), *state)``, plain tensors in and out so that it
exports to ONNX as it is (:mod:`kwsbench.export.streaming`). The state, in order:

1. the frontend's last ``keep_samples`` samples (``(B, keep)``): the overlap of the next hop's frames;
2. one ring buffer per causal convolution, the last ``(k_t - 1) * dilation_t`` frames of its input
   (``(B, C, F, past)``), in the order the model calls them (head, 12 blocks, tail);
3. the last ``T - 1`` frame embeddings before the global average pool (``(B, hidden, 1, T - 1)``),
   ``T`` = the frames of the 1 s clip the model was trained on;
4. a standard model's delay lines (see below), ``(B, C, F, d)`` each.

What "equal to the non-streaming model" means (:func:`whole_sequence_logits` computes it in one pass):
the stream is preceded by silence. Its log-mel frames are the frontend's centred frames at every
multiple of the frame hop, computed from real samples (no reflect padding); the causal model runs once
over all of them (its left zero padding is the ring buffers' initial zeros); the score of hop ``i`` is
the classifier applied to the mean of the last ``T`` frame embeddings up to the hop's newest frame
(embeddings before the stream count as zeros). A frame needs half a window after its centre, so the
newest frame of a hop ending at sample ``E`` is centred at ``E - 2 * frame_hop`` (20 ms before it at
BC-ResNet's 10 ms hop, 30 ms window): the frontend's look-ahead rounded up to whole frames.

The streaming scores differ from the per-clip model on the 1 s window with the same frames only
through that window's edges: the per-clip frontend reflect-pads its first and last frames and the
model zero-pads its first frames, where the stream has real audio and real past activations.

A standard model (``temporal_padding="same"``) streams *with a delay* (:func:`delay_compensated`): a
centred convolution reading ``p = (k - 1) * d / 2`` frames ahead is the causal convolution with the same
weights, ``p`` frames late, so each one becomes causal, and each block's shortcut and ``f2`` branches go
through a delay line of ``p`` frames to meet its late temporal branch. The network then emits frame ``t``
of the centred model once frame ``t + D`` has arrived (``D``, :func:`model_delay_frames`: 58 frames for
BC-ResNet), and the score of a hop is that of the window ending ``D`` frames before its newest frame:
the centred model run once over the whole stream, averaged over that window
(:func:`whole_sequence_logits`), for every window whose frames all lie ``D`` or more frames into the
stream (earlier ones read the delay lines' initial zeros where the centred model reads its zero padding
at the stream's start one layer later).
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kwsbench.data.features import LogMel, make_frontend
from kwsbench.errors import ConfigError
from kwsbench.measure.optimize import GlobalMean, inference_graph
from kwsbench.models.bcresnet import BCResBlock
from kwsbench.models.layers import CausalConv2d, ClassifierTail
from kwsbench.models.rewrite import rewrite_tree
from kwsbench.specs import InputSpec


class _Slots:
    """The state tensors of one step call: ``inputs`` read by the streaming layers, ``outputs`` written."""

    def __init__(self, count: int):
        self.inputs: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor | None] = [None] * count


class StreamingConv(nn.Module):
    """A :class:`CausalConv2d` whose past frames come from a state tensor instead of zero padding.

    ``(B, C, F, n) -> (B, C', F', n)``; reads ``(B, C, F, past)`` from slot ``index`` and writes the last
    ``past`` frames of ``[state, x]`` back.
    """

    def __init__(self, conv: CausalConv2d, index: int, slots: _Slots):
        super().__init__()
        self.conv, self.index, self.slots, self.past = conv, index, slots, conv.causal_padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        full = torch.cat([self.slots.inputs[self.index], x], dim=3)
        # A constant negative start: the exported graph slices without shape arithmetic.
        self.slots.outputs[self.index] = full[:, :, :, -self.past :]
        c = self.conv
        return F.conv2d(full, c.weight, c.bias, c.stride, c.padding, c.dilation, c.groups)


class FrameDelay(nn.Module):
    """``x`` delayed by ``frames`` frames, zeros before the first: ``(B, C, F, T) -> (B, C, F, T)``."""

    def __init__(self, frames: int):
        super().__init__()
        self.frames = frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (self.frames, 0))[..., : x.shape[3]]


class StreamingDelay(nn.Module):
    """A :class:`FrameDelay` whose earlier frames come from a state tensor: ``(B, C, F, n) -> (B, C, F, n)``.

    Reads ``(B, C, F, frames)`` from slot ``index``; returns the first ``n`` frames of ``[state, x]`` and
    writes its last ``frames`` back (either may be longer than the other).
    """

    def __init__(self, delay: FrameDelay, index: int, slots: _Slots):
        super().__init__()
        self.frames, self.index, self.slots = delay.frames, index, slots

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        full = torch.cat([self.slots.inputs[self.index], x], dim=3)
        self.slots.outputs[self.index] = full[:, :, :, -self.frames :]
        return full[:, :, :, : x.shape[3]]


class StreamingMean(nn.Module):
    """The tail's global average pool as the mean of the last ``frames`` embeddings: ``(B, C, 1, n) -> (B, C, 1, 1)``.

    The state holds the previous ``frames - 1`` embeddings and the sum is taken over the whole window
    every hop (``frames * C`` additions, under 1 % of a hop's work): a running sum updated by adding the
    new frame and subtracting the oldest would accumulate float32 rounding without bound over hours.
    """

    def __init__(self, frames: int, index: int, slots: _Slots):
        super().__init__()
        self.frames, self.index, self.slots = frames, index, slots

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        full = torch.cat([self.slots.inputs[self.index], x], dim=3)
        self.slots.outputs[self.index] = full[:, :, :, -(self.frames - 1) :]
        return full[:, :, :, -self.frames :].mean(dim=(2, 3), keepdim=True)


class DelayedBlock(nn.Module):
    """A BC-ResBlock whose temporal convolution is causal and ``frames`` late, its other branches delayed to match.

    ``ReLU([D(x) +] D(f2(x)) + BC(f1(pool(f2(x)))))`` with ``D`` a :class:`FrameDelay` of ``frames``; a block
    without shortcut delays ``f2`` only. ``(B, C_in, F, T) -> (B, C_out, F', T)``.
    """

    def __init__(self, block: BCResBlock, frames: int):
        super().__init__()
        self.block = block
        self.delay_aux = FrameDelay(frames) if frames else nn.Identity()
        self.delay_x = FrameDelay(frames) if frames and block.use_shortcut else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        aux = b.f2(x)
        temporal = b.f1(b.pool(aux))
        return b.merge(self.delay_x(x), self.delay_aux(aux), temporal)


def model_delay_frames(model: nn.Module) -> int:
    """Frames a BC-ResNet reads ahead: ``(k - 1) * d / 2`` summed over its centred temporal convolutions.

    A causal model reads none. Residual branches do not add to it (they are delayed to match, not ahead).
    """
    return sum(_look_ahead(m) for m in model.modules() if _is_centred_temporal(m))


def _is_centred_temporal(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Conv2d) and not isinstance(module, CausalConv2d) and module.kernel_size[1] > 1
    )


def _look_ahead(conv: nn.Conv2d) -> int:
    """Frames ``conv`` reads after its output frame; only centred zero padding has a delayed causal twin."""
    reach = (conv.kernel_size[1] - 1) * conv.dilation[1]
    if conv.padding_mode != "zeros" or conv.stride[1] != 1 or reach % 2 or conv.padding[1] != reach // 2:
        raise ConfigError(
            f"{conv}: not a centred temporal convolution, kwsbench cannot stream it with a delay; "
            "train the model with temporal_padding: causal"
        )
    return reach // 2


def _causal_twin(conv: nn.Conv2d) -> CausalConv2d:
    """``conv`` with its time padding moved to the past: the same outputs, ``_look_ahead(conv)`` frames later."""
    twin = CausalConv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=(conv.padding[0], 0),
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    twin.weight, twin.bias = conv.weight, conv.bias
    return twin


def delay_compensated(graph: nn.Module, spec: InputSpec) -> tuple[nn.Module, int]:
    """A standard BC-ResNet as a causal network emitting its frames late: ``(graph', D)``, in place.

    Every centred temporal convolution becomes its causal twin and every BC-ResBlock a
    :class:`DelayedBlock` (see the module docstring). Checked on seeded features in float64: the result's
    frame embeddings must be the centred ones ``D`` frames late, or the model has a branch this rewrite
    does not know and a one-line :class:`ConfigError` says so.
    """
    frames = model_delay_frames(graph)
    reference = copy.deepcopy(graph).double()

    def visit(module: nn.Module, ancestors: tuple[nn.Module, ...]) -> nn.Module:
        if isinstance(module, BCResBlock):  # its convs are rewritten already (bottom-up)
            late = sum(m.causal_padding // 2 for m in module.f1.modules() if isinstance(m, CausalConv2d))
            return DelayedBlock(module, late)
        if _is_centred_temporal(module):  # model_delay_frames above refused any without a causal twin
            return _causal_twin(module)
        return module

    graph = rewrite_tree(graph, visit)
    generator = torch.Generator().manual_seed(0)
    length = spec.frames + 4 * frames
    features = torch.randn((1, 1, spec.n_features, length), generator=generator, dtype=torch.float64)
    with torch.no_grad():
        want = frame_embeddings(reference, features)[..., frames : length - frames]
        got = frame_embeddings(copy.deepcopy(graph).double(), features)[..., 2 * frames :]
    # float64: only summation order differs (~1e-16 relative); a branch left undelayed is off by O(1).
    if not torch.allclose(got, want, rtol=0, atol=1e-9 * float(want.abs().max())):
        raise ConfigError(
            f"{type(graph).__name__}: delaying its branches does not reproduce the centred model; "
            "train it with temporal_padding: causal to stream it"
        )
    return graph, frames


def frame_embeddings(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """A BC-ResNet's per-frame vectors before its global average pool: ``(B, 1, F, T) -> (B, hidden, 1, T)``.

    The tail's layers up to the pool, found by type: the inference graph folds its BatchNorm away.
    """
    x = model.blocks(model.head(features))
    for layer in model.tail.body:
        if isinstance(layer, _POOLS):
            return x
        x = layer(x)
    raise ConfigError(
        f"{type(model).__name__}: no global average pool in its tail; only BC-ResNet models stream"
    )


_POOLS = (GlobalMean, nn.AdaptiveAvgPool2d)


def frontend_lag_samples(log_mel: LogMel, hop_samples: int) -> int:
    """Samples from a hop's newest log-mel frame centre to the hop's end (320 at BC-ResNet's frontend)."""
    keep = keep_samples(log_mel.win_length, log_mel.hop_length)
    per_hop = hop_samples // log_mel.hop_length
    return keep + hop_samples - log_mel.win_length // 2 - (per_hop - 1) * log_mel.hop_length


class StreamingFrontend(nn.Module):
    """The log-mel frames of the newest hop from the last ``keep`` samples and the hop: ``(B, hop) -> (B, 1, n_mels, n)``."""

    def __init__(self, log_mel: LogMel, keep: int, index: int, slots: _Slots):
        super().__init__()
        self.log_mel, self.keep, self.index, self.slots = log_mel, keep, index, slots

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        full = torch.cat([self.slots.inputs[self.index], audio], dim=1)
        self.slots.outputs[self.index] = full[:, -self.keep :]
        return self.log_mel(full)


def uncentred_log_mel(spec: InputSpec, sample_rate: int, clip_samples: int) -> LogMel:
    """The model's log-mel frontend with frames starting at their first window tap (no reflect padding).

    The power spectrum does not depend on where the window sits in the FFT frame, so these frames equal
    the centred frontend's frames wherever those read real samples.
    """
    frontend = make_frontend(
        spec, sample_rate=sample_rate, clip_samples=clip_samples, center=False, num_samples=None
    )
    if not isinstance(frontend, LogMel):
        raise ConfigError(f"streaming needs a log-mel model; input {spec.kind!r} has no streaming frontend")
    return frontend


def keep_samples(win_length: int, hop_length: int) -> int:
    """Samples the frontend keeps between hops: frames stay centred on multiples of ``hop_length``.

    The smallest ``keep >= win_length - hop_length`` with ``keep = win_length / 2 (mod hop_length)``: a
    hop of ``n * hop_length`` new samples then gives exactly ``n`` frames, centred where the per-clip
    frontend centres them (400 samples at BC-ResNet's 480-sample window and 160-sample hop).
    """
    if win_length % 2:
        raise ConfigError(f"window of {win_length} samples has no centre sample; use an even window")
    half = win_length // 2
    return half + hop_length * -(-(win_length - hop_length - half) // hop_length)


class StreamingBCResNet(nn.Module):
    """A causal BC-ResNet as a step function: ``forward(audio, *state) -> (logits, *state)`` (see the module doc).

    ``audio``: ``(B, hop_samples)`` float32, ``hop_samples`` a multiple of the frame hop. Build it with
    :func:`streaming_model`; :meth:`initial_state` is the state of a stream preceded by silence.
    ``state_shapes``: each state tensor's shape without the batch axis. ``delay_frames``: frames the model
    emits late (0 for a causal model, :func:`model_delay_frames` for a standard one); ``lag_samples``: from
    the end of the 1 s window a step scores to the end of its hop (the frontend's look-ahead and that delay).
    """

    def __init__(
        self,
        graph: nn.Module,
        frontend: StreamingFrontend,
        state_shapes: list[tuple[int, ...]],
        hop_samples: int,
        slots: _Slots,
        delay_frames: int = 0,
    ):
        super().__init__()
        self.graph, self.frontend, self.slots = graph, frontend, slots
        self.state_shapes, self.hop_samples, self.delay_frames = state_shapes, hop_samples, delay_frames
        log_mel = frontend.log_mel
        self.lag_samples = frontend_lag_samples(log_mel, hop_samples) + delay_frames * log_mel.hop_length

    def initial_state(self, batch: int = 1, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
        """Zeros of every state shape: silence before the stream, zero padding before the first frame."""
        return [torch.zeros((batch, *shape), dtype=dtype) for shape in self.state_shapes]

    def forward(self, audio: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(state) != len(self.state_shapes):
            raise ValueError(f"expected {len(self.state_shapes)} state tensors, got {len(state)}")
        self.slots.inputs = list(state)
        self.slots.outputs = [None] * len(state)
        logits = self.graph(self.frontend(audio))
        out, self.slots.inputs = self.slots.outputs, []
        return (logits, *out)


def streaming_model(
    model: nn.Module,
    spec: InputSpec,
    *,
    hop_samples: int,
    sample_rate: int = 16000,
    clip_samples: int = 16000,
    rewrite: bool = True,
) -> StreamingBCResNet:
    """``model`` (a BC-ResNet, eval mode) as a :class:`StreamingBCResNet` taking ``hop_samples`` a step.

    A causal model streams as it is; a standard one with a delay (:func:`delay_compensated`).
    ``rewrite``: stream kwsbench's inference graph (BatchNorm folded, pooled temporal convs fused;
    :func:`kwsbench.measure.optimize.inference_graph`) instead of the model as built.
    """
    padding = getattr(model, "temporal_padding", None)
    if padding not in ("same", "causal") or not any(isinstance(m, ClassifierTail) for m in model.modules()):
        raise ConfigError(f"{type(model).__name__} is not a BC-ResNet; only BC-ResNet models stream")
    dtype = next(model.parameters()).dtype  # a float64 model streams in float64, its frontend too
    log_mel = uncentred_log_mel(spec, sample_rate, clip_samples).to(dtype)
    if hop_samples < 1 or hop_samples % log_mel.hop_length:
        raise ConfigError(
            f"hop of {hop_samples} samples is not a whole number of {log_mel.hop_length}-sample frames; "
            f"use a multiple of {1000 * log_mel.hop_length / sample_rate:g} ms"
        )
    model = copy.deepcopy(model).eval()
    graph = inference_graph(model, spec.shape(1)) if rewrite else model
    for p in graph.parameters():
        p.requires_grad_(False)
    delay = 0
    if padding == "same":
        graph, delay = delay_compensated(graph, spec)
    slots = _Slots(0)
    shapes: list[tuple[int, ...]] = []
    keep = keep_samples(log_mel.win_length, log_mel.hop_length)
    shapes.append((keep,))
    stateful = [m for m in graph.modules() if isinstance(m, (CausalConv2d, FrameDelay))]
    seen = _input_shapes(graph, stateful, spec)
    tails = [m for m in graph.modules() if isinstance(m, ClassifierTail)]

    def visit(module: nn.Module, ancestors: tuple[nn.Module, ...]) -> nn.Module:
        if isinstance(module, CausalConv2d):
            _, c, f, _ = seen[id(module)]
            shapes.append((c, f, module.causal_padding))
            return StreamingConv(module, len(shapes) - 1, slots)
        if isinstance(module, FrameDelay):
            _, c, f, _ = seen[id(module)]
            shapes.append((c, f, module.frames))
            return StreamingDelay(module, len(shapes) - 1, slots)
        return module

    graph = rewrite_tree(graph, visit)
    tail = next(m for m in graph.modules() if isinstance(m, ClassifierTail))
    # ClassifierTail.body ends with the pool and the classifier's 1x1 conv (BN folded away when rewritten).
    pool = next(i for i, m in enumerate(tail.body) if isinstance(m, _POOLS))
    hidden = tail.body[pool + 1].in_channels
    shapes.append((hidden, 1, spec.frames - 1))
    tail.body[pool] = StreamingMean(spec.frames, len(shapes) - 1, slots)
    assert len(tails) == 1 and len(stateful) == len(shapes) - 2
    frontend = StreamingFrontend(log_mel, keep, 0, slots)
    return StreamingBCResNet(graph, frontend, shapes, hop_samples, slots, delay)


def _input_shapes(graph: nn.Module, modules: list[nn.Module], spec: InputSpec) -> dict[int, tuple[int, ...]]:
    """The input shape of each of ``modules`` on one declared input (their state has its C and F)."""
    shapes: dict[int, tuple[int, ...]] = {}
    hooks = [
        m.register_forward_hook(lambda mod, args, _out: shapes.__setitem__(id(mod), tuple(args[0].shape)))
        for m in modules
    ]
    try:
        with torch.no_grad():
            graph(torch.zeros(spec.shape(1), dtype=next(graph.parameters()).dtype))
    finally:
        for h in hooks:
            h.remove()
    return shapes


class StreamingExecutor:
    """A :class:`StreamingBCResNet` with its state: ``step(audio) -> logits``; ``reset()`` starts a new stream."""

    def __init__(self, model: StreamingBCResNet, batch: int = 1, dtype: torch.dtype = torch.float32):
        self.model, self.batch, self.dtype = model, batch, dtype
        self.reset()

    def reset(self) -> None:
        """Back to the state of a stream preceded by silence."""
        self.state = self.model.initial_state(self.batch, self.dtype)

    def step(self, audio: torch.Tensor) -> torch.Tensor:
        """``(B, hop_samples)`` float32 -> ``(B, classes)`` logits of the window ending with this hop."""
        if audio.shape != (self.batch, self.model.hop_samples):
            raise ConfigError(
                f"a step takes ({self.batch}, {self.model.hop_samples}) samples, got {tuple(audio.shape)}"
            )
        with torch.inference_mode():
            logits, *self.state = self.model(audio, *self.state)
        return logits


def whole_sequence_logits(
    model: nn.Module,
    spec: InputSpec,
    audio: torch.Tensor,
    *,
    hop_samples: int,
    sample_rate: int = 16000,
    clip_samples: int = 16000,
) -> torch.Tensor:
    """The non-streaming definition of the streaming scores, in one pass: ``(B, L) -> (B, L // hop_samples, C)``.

    ``model``: the BC-ResNet as built (not rewritten); a standard one's windows end
    :func:`model_delay_frames` frames before each hop's newest frame. See the module docstring.
    """
    log_mel = uncentred_log_mel(spec, sample_rate, clip_samples).to(next(model.parameters()).dtype)
    keep = keep_samples(log_mel.win_length, log_mel.hop_length)
    per_hop = hop_samples // log_mel.hop_length
    hops = audio.shape[1] // hop_samples
    delay = model_delay_frames(model)
    audio = F.pad(audio[:, : hops * hop_samples], (keep, 0))  # the frontend's initial zeros
    with torch.inference_mode():
        features = log_mel(audio)  # (B, 1, n_mels, hops * per_hop)
        embeddings = frame_embeddings(model, features)  # (B, H, 1, N)
        padded = F.pad(embeddings, (spec.frames - 1 + delay, 0))  # embeddings before the stream: zeros
        windows = padded[:, :, :, per_hop - 1 :].unfold(3, spec.frames, per_hop)[:, :, :, :hops]
        means = windows.mean(dim=4).permute(0, 3, 1, 2).reshape(-1, embeddings.shape[1], 1, 1)
        return model.tail.classify(means).reshape(audio.shape[0], hops, -1)


def load_streaming_checkpoint(
    checkpoint: str | os.PathLike, *, hop_ms: float = 100.0
) -> tuple[StreamingBCResNet, dict[str, Any]]:
    """The step function of a BC-ResNet checkpoint, ``hop_ms`` per step, and the checkpoint's dict.

    A standard (non-causal) model streams with a delay: its ``lag_samples`` say how late.
    """
    from kwsbench.data.records import SAMPLE_RATE
    from kwsbench.models.checkpoint import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(checkpoint)
    model, spec = model_from_checkpoint(ckpt, str(checkpoint))
    if getattr(model, "temporal_padding", None) not in ("same", "causal"):
        raise ConfigError(
            f"{checkpoint}: model {ckpt['model']} is not a BC-ResNet; only BC-ResNet checkpoints stream"
        )
    return streaming_model(model, spec, hop_samples=round(hop_ms * SAMPLE_RATE / 1000)), ckpt
