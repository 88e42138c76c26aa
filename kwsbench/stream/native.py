"""The ``native`` streaming runtime: a streaming BC-ResNet's whole step as one call into hand-written C.

A 100 ms step of BC-ResNet-1 is about 0.3M multiply-adds (a tenth of a 1 s window's 3.1M) over some 180
graph nodes. Graph runtimes pay a fixed cost per node (0.4-0.9 us on OpenVINO) and per call (13 us), which
is most of the step's time there (:mod:`kwsbench.export.streaming`). ``native_step.c`` runs the same step as a list of
plain loops over buffers allocated here once: what an embedded deployment would write by hand.

:func:`build_program` walks the :class:`~kwsbench.stream.incremental.StreamingBCResNet` (BatchNorm folded,
pooled temporal convolutions fused, causal or delay-compensated) module by module and emits one op per
layer into a :class:`Program`: its weights re-laid out time-major and channels innermost (see the C file),
every activation and state buffer preallocated. Only the modules a BC-ResNet streams with are known; any
other (another family, a block subclass, the attention or max-pool variants) is refused with one line, and
:func:`kwsbench.export.streaming.open_step` checks every native session against the PyTorch step before use.

The C file is compiled on first use with the system C compiler (``$CC``, default ``cc``), ``-O3
-march=native``, into the cache folder (``KWSBENCH_CACHE``/native), keyed by the source, the flags, the
compiler and the CPU: a library built on one CPU is never loaded on another. No compiler: the runtime says
so in one line and the others remain. One thread: a step is far too small to split.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kwsbench.errors import BackendError, ConfigError
from kwsbench.models.bcresnet import BCResBlock, BCResNet
from kwsbench.models.fused import ChannelFrequencyAffine
from kwsbench.models.layers import ClassifierTail
from kwsbench.stream.incremental import (
    DelayedBlock,
    StreamingBCResNet,
    StreamingConv,
    StreamingDelay,
    StreamingMean,
)

SOURCE = Path(__file__).with_name("native_step.c")
FLAGS = ("-O3", "-march=native", "-std=gnu11", "-fPIC", "-shared")
NI, NP = 16, 12  # ints and pointers per op, as in native_step.c
OPS = dict(
    frontend=1,
    push=2,
    shift=3,
    conv=4,
    depthwise=5,
    affine=6,
    relu=7,
    silu=8,
    merge=9,
    mean=10,
    frequency_mean=11,
)


class Program:
    """The ops of one step and every buffer they touch: ``ints`` ``(ops, NI)``, ``ptrs`` ``(ops, NP)`` addresses.

    ``state``: the buffers whose contents carry from one hop to the next (zeroed by a reset);
    ``audio``: where a hop's samples go; ``logits``: where the step leaves its ``(classes,)`` output.
    """

    def __init__(self):
        self._ops: list[tuple[list[int], list[int]]] = []  # (ints, addresses) per op
        self._shifts: list[tuple[list[int], list[int]]] = []
        self._alive: list[np.ndarray] = []  # every array an address points into
        self.state: list[np.ndarray] = []
        self.audio = self.logits = np.zeros(0, dtype=np.float32)

    def array(self, shape: tuple[int, ...]) -> np.ndarray:
        """A C-contiguous float32 buffer of zeros that lives as long as the program."""
        return self.constant(np.zeros(shape, dtype=np.float32))

    def constant(self, value, dtype=np.float32) -> np.ndarray:
        """``value`` as a C-contiguous array of ``dtype`` that lives as long as the program."""
        a = np.ascontiguousarray(value, dtype=dtype)
        self._alive.append(a)
        return a

    def op(self, kind: str, ints=(), ptrs=(), *, last: bool = False) -> None:
        """Append op ``kind``; ``last``: run it after every other op (the SHIFTs that keep a buffer's past)."""
        if len(ints) >= NI or len(ptrs) > NP:
            raise AssertionError(f"op {kind}: {len(ints)} ints and {len(ptrs)} pointers do not fit its row")
        row = [*ints, *[0] * (NI - len(ints))]
        row[NI - 1] = OPS[kind]
        addresses = [0 if p is None else p.ctypes.data for p in ptrs]
        entry = (row, addresses + [0] * (NP - len(addresses)))
        (self._shifts if last else self._ops).append(entry)

    def stateful(self, x: np.ndarray, past: int, pad: int = 0) -> np.ndarray:
        """A work buffer of ``past`` frames then ``x``'s ``(n, F, C)``, each frame with ``pad`` zero rows of
        frequency above and below: ``x`` copied in each hop and, ``past`` > 0, its last ``past`` frames kept."""
        n, f, c = x.shape
        work = self.array((past + n, f + 2 * pad, c))
        frame = (f + 2 * pad) * c
        self.op("push", (n, f * c, frame, pad * c, past), (x, work))
        if past:
            self.state.append(work)
            self.op("shift", (n * frame, past * frame), (work,), last=True)
        return work

    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ints, ptrs)`` of every op in order, SHIFTs last."""
        rows = [*self._ops, *self._shifts]
        ints = self.constant(np.array([r for r, _ in rows], dtype=np.int32).reshape(-1, NI), np.int32)
        ptrs = self.constant(np.array([p for _, p in rows], dtype=np.uint64).reshape(-1, NP), np.uint64)
        return ints, ptrs


def _refuse(module: nn.Module) -> ConfigError:
    return ConfigError(f"the native streaming runtime does not know {type(module).__name__}; {_OTHERS}")


_OTHERS = "use --backend openvino or onnxruntime for this model"


def _padded(channels: int) -> int:
    """Channels rounded up to the C kernel's 8-float vectors (the extra ones hold zeros)."""
    return -(-channels // 8) * 8


def _conv(program: Program, conv: nn.Conv2d, x: np.ndarray, past: int = 0) -> np.ndarray:
    """``conv`` on ``(n, F, C)`` frames; ``past`` > 0: a causal convolution whose past frames are state."""
    w = conv.weight.detach().numpy()  # (cout, cin / groups, kf, kt)
    cout, _, kf, kt = w.shape
    n, fin, stride = x.shape  # stride: the input's channels, padded (1 for the log-mel)
    (sf, st), (pf, pt), (df, dt) = conv.stride, conv.padding, conv.dilation
    if st != 1 or pt != 0 or df != 1 or conv.padding_mode != "zeros" or (kt - 1) * dt != past:
        raise _refuse(conv)
    depthwise = conv.groups == conv.in_channels == cout
    if depthwise and kf == fin > 1 and pf == 0 and (w == w[:, :, :1]).all():
        # BC-ResNet's frequency average fused into its temporal conv (kwsbench.models.bcresnet): F x k taps a
        # frame where the average then the 1 x k conv take F + k. Its state is then the averaged frames.
        pooled = program.array((n, 1, stride))
        program.op("frequency_mean", (n, fin, stride), (x, pooled))
        x, fin, kf, w = pooled, 1, 1, w[:, :, :1] * fin
    fout = (fin + 2 * pf - kf) // sf + 1
    source = program.stateful(x, past, pf) if past or pf else x
    padded = _padded(cout)
    out = program.array((n, fout, padded))
    bias = None if conv.bias is None else program.constant(_pad(conv.bias.detach().numpy(), padded))
    ints = (stride, padded, fin + 2 * pf, fout, kf, kt, sf, 0, dt, n)
    if conv.groups == 1:
        weights = np.zeros((kt, kf, stride, padded), dtype=np.float32)
        weights[:, :, : conv.in_channels, :cout] = w.transpose(3, 2, 1, 0)
        program.op("conv", ints, (source, out, program.constant(weights), bias))
    elif depthwise and stride == padded:
        weights = _pad(w[:, 0].transpose(2, 1, 0), padded)  # (kt, kf, c)
        program.op("depthwise", ints, (source, out, program.constant(weights), bias))
    else:
        raise _refuse(conv)
    return out


def _pad(value: np.ndarray, channels: int) -> np.ndarray:
    """``value`` with its last axis (channels) zero-padded to ``channels``."""
    widths = [(0, 0)] * (value.ndim - 1) + [(0, channels - value.shape[-1])]
    return np.pad(value, widths)


def _elementwise(program: Program, kind: str, x: np.ndarray) -> np.ndarray:
    out = program.array(x.shape)
    program.op(kind, (x.size,), (x, out))
    return out


def _affine(program: Program, module: ChannelFrequencyAffine, x: np.ndarray) -> np.ndarray:
    n, f, c = x.shape
    # (C, F, 1) constants -> (F, C), the layout of one frame.
    scale, shift = (
        program.constant(_pad(v.detach().numpy()[:, :, 0].T, c)) for v in (module.scale, module.shift)
    )
    if scale.shape != (f, c):
        raise _refuse(module)
    out = program.array(x.shape)
    program.op("affine", (n, f * c), (x, out, scale, shift))
    return out


def _block(program: Program, block: BCResBlock, x: np.ndarray, delays=(None, None)) -> np.ndarray:
    """``ReLU([x] + [aux] + temporal)``; ``delays``: a :class:`DelayedBlock`'s delay lines for ``x`` and ``aux``."""
    if type(block) is not BCResBlock or block.broadcast != "add" or not isinstance(block.pool, nn.Identity):
        raise _refuse(block)  # attention and max-pool variants; average pooling is fused into f1
    aux = emit(program, block.f2, x)
    temporal = emit(program, block.f1, aux)  # (n, 1, C): broadcast over frequency by the merge
    if temporal.shape[1] != 1:
        raise _refuse(block)
    delay_x, delay_aux = delays
    if delay_x is not None:
        x = emit(program, delay_x, x)
    if delay_aux is not None:
        aux = emit(program, delay_aux, aux)
    n, f, c = aux.shape
    out = program.array(aux.shape)
    program.op(
        "merge",
        (n, f, c),
        (aux if block.use_aux_residual else None, temporal, x if block.use_shortcut else None, out),
    )
    return out


def _mean(program: Program, module: StreamingMean, x: np.ndarray) -> np.ndarray:
    n, f, h = x.shape
    if f != 1:
        raise _refuse(module)
    work = program.stateful(x, module.frames - 1)
    out = program.array((1, 1, h))
    program.op("mean", (module.frames, h, n), (work, out))
    return out


def emit(program: Program, module: nn.Module, x: np.ndarray) -> np.ndarray:
    """Append the ops of ``module`` applied to the ``(n, F, C)`` activation ``x``; return its output buffer.

    Types are matched exactly: a subclass may compute something else.
    """
    kind = type(module)
    if kind is nn.Sequential:
        for layer in module:
            x = emit(program, layer, x)
        return x
    if kind in (nn.Identity, nn.Dropout, nn.Dropout2d):
        return x
    if kind is StreamingConv:
        return _conv(program, module.conv, x, past=module.past)
    if kind is nn.Conv2d:
        return _conv(program, module, x)
    if kind is nn.ReLU:
        return _elementwise(program, "relu", x)
    if kind is nn.SiLU:
        return _elementwise(program, "silu", x)
    if kind is ChannelFrequencyAffine:
        return _affine(program, module, x)
    if kind is BCResBlock:
        return _block(program, module, x)
    if kind is DelayedBlock:
        delays = tuple(
            d if isinstance(d, StreamingDelay) else None for d in (module.delay_x, module.delay_aux)
        )
        return _block(program, module.block, x, delays)
    if kind is StreamingDelay:
        return program.stateful(x, module.frames)[: x.shape[0]]  # the oldest n of past + new frames
    if kind is StreamingMean:
        return _mean(program, module, x)
    if kind is ClassifierTail:
        return emit(program, module.body, x)
    if kind is BCResNet:
        return emit(program, module.tail, emit(program, module.blocks, emit(program, module.head, x)))
    raise _refuse(module)


def _frontend(program: Program, model: StreamingBCResNet) -> np.ndarray:
    """The FFT log-mel of the hop's frames: ``(n, n_mels, 1)``; the hop's samples go to ``program.audio``."""
    log_mel, keep, hop = model.frontend.log_mel, model.frontend.keep, model.hop_samples
    n_fft, win, step = log_mel.n_fft, log_mel.win_length, log_mel.hop_length
    half = n_fft // 2
    if half < 2 or half & (half - 1) or win > n_fft:
        raise ConfigError(f"the native streaming runtime needs a power-of-two n_fft, not {n_fft}; {_OTHERS}")
    n = hop // step
    if (keep + hop - win) // step + 1 != n:
        raise AssertionError("the frontend keeps the samples that make one frame per frame hop")
    samples = program.array((keep + hop,))
    program.state.append(samples)
    program.audio = samples[keep:]
    program.op("shift", (hop, keep), (samples,), last=True)

    bits = half.bit_length() - 1
    bitrev = np.array([int(f"{m:0{bits}b}"[::-1], 2) for m in range(half)], dtype=np.int32)
    twiddle = np.exp(-2j * np.pi * np.arange(half // 2) / half)
    post = np.exp(-2j * np.pi * np.arange(half + 1) / n_fft)
    interleave = lambda z: np.stack([z.real, z.imag], axis=1)  # noqa: E731
    filterbank = log_mel.filterbank_ri[::2].double().numpy()  # (n_fft // 2 + 1, n_mels)
    starts, counts, weights = [], [], []
    for column in filterbank.T:
        used = np.flatnonzero(column)
        first, last = (used[0], used[-1] + 1) if used.size else (0, 0)
        starts.append(first)
        counts.append(last - first)
        weights.append(column[first:last])
    out = program.array((n, log_mel.n_mels, 1))
    eps_bits = int(np.array(log_mel.eps, dtype=np.float32).view(np.int32))
    program.op(
        "frontend",
        (n, step, win, half, log_mel.n_mels, eps_bits),
        (
            samples,
            program.constant(log_mel.window.numpy()),
            program.constant(interleave(twiddle)),
            program.constant(interleave(post)),
            program.constant(np.concatenate(weights)),
            program.constant(bitrev, np.int32),
            program.constant(starts, np.int32),
            program.constant(counts, np.int32),
            program.array((half, _padded(n))),  # frames padded to the C kernel's vectors
            program.array((half, _padded(n))),
            program.array((half + 1, _padded(n))),
            out,
        ),
    )
    return out


def build_program(model: StreamingBCResNet) -> Program:
    """``model``'s step (batch 1, float32) as a :class:`Program`."""
    if next(model.graph.parameters()).dtype != torch.float32:
        raise ConfigError(f"the native streaming runtime runs float32 models only; {_OTHERS}")
    program = Program()
    logits = emit(program, model.graph, _frontend(program, model))
    classes = model.graph.tail.body[-1].out_channels
    program.logits = logits.reshape(-1)[:classes]
    return program


@functools.lru_cache(maxsize=1)
def library() -> ctypes.CDLL:
    """``native_step.c`` compiled for this CPU (once per cache folder) and loaded."""
    from kwsbench.measure.provenance import cpu_info
    from kwsbench.settings import cache_dir

    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        raise BackendError(
            f"the native streaming runtime needs a C compiler ({compiler} not found); "
            "install gcc or use --backend openvino"
        )
    source = SOURCE.read_bytes()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    # The CPU's name and flags: -march=native code must not run on another CPU.
    model, flags = cpu_info()
    cpu = " ".join([model, *flags])
    key = hashlib.sha256(b"\0".join([source, " ".join(FLAGS).encode(), version.encode(), cpu.encode()]))
    name = f"native_step-{key.hexdigest()[:16]}.so"
    try:
        folder = cache_dir() / "native"
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # an unwritable cache: build once per process in a private folder instead
        folder = Path(tempfile.mkdtemp(prefix="kwsbench-native-"))
    path = folder / name
    if not path.exists():
        partial = folder / f".{name}.{os.getpid()}.tmp"
        done = subprocess.run(
            [compiler, *FLAGS, "-o", str(partial), str(SOURCE)], capture_output=True, text=True
        )
        if done.returncode:
            first = (done.stderr.strip().splitlines() or ["no message"])[0]
            raise BackendError(
                f"compiling the native streaming runtime failed ({first}); use --backend openvino"
            )
        os.replace(partial, path)  # whole or absent: another process may be loading it
    lib = ctypes.CDLL(str(path))
    lib.kws_step.argtypes = (ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p)
    lib.kws_step.restype = None
    return lib


class NativeStep:
    """A :class:`StreamingBCResNet` on the native runtime: ``step((1, hop) float32) -> (1, C)``; ``reset()``."""

    def __init__(self, model: StreamingBCResNet):
        self.program = build_program(model)
        self.hop_samples = model.hop_samples
        ints, ptrs = self.program.tables()
        self._call = functools.partial(library().kws_step, len(ints), ints.ctypes.data, ptrs.ctypes.data)
        self.reset()

    def reset(self) -> None:
        """Back to the state of a stream preceded by silence."""
        for buffer in self.program.state:
            buffer[...] = 0.0

    def step(self, audio: np.ndarray) -> np.ndarray:
        np.copyto(self.program.audio, audio.reshape(-1))
        self._call()
        return self.program.logits.reshape(1, -1).copy()
