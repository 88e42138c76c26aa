"""The feature frontend: log-mel and MFCC from 16 kHz waveforms, fast in eager mode and exportable to ONNX.

``LogMel`` equals ``torchaudio.transforms.MelSpectrogram`` (hann window, reflect-padded centred frames,
power 2, HTK mel scale, no filter normalisation) followed by ``log(x + eps)``, the BC-ResNet recipe
(../shared/docs/PAPER.md §3). ``MFCC`` is that log-mel followed by an orthonormal DCT-II, like
``torchaudio.transforms.MFCC(log_mels=True)``. ``make_frontend`` builds the frontend a registered model
declares in its ``InputSpec``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kwsbench.errors import ConfigError
from kwsbench.specs import InputSpec

DFT_MODES = ("auto", "fft", "matmul")
CLIPS_PER_CHUNK = 16  # log-mel works through large batches this many clips at a time (see log_mel)


def hz_to_mel(freq: float | Tensor) -> float | Tensor:
    """HTK mel scale: ``2595 * log10(1 + f / 700)``."""
    if isinstance(freq, Tensor):
        return 2595.0 * torch.log10(1.0 + freq / 700.0)
    return 2595.0 * math.log10(1.0 + freq / 700.0)


def mel_filterbank(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> Tensor:
    """Triangular HTK mel filters without area normalisation, ``(n_freqs, n_mels)``.

    Same construction as ``torchaudio.functional.melscale_fbanks(..., norm=None, mel_scale="htk")``:
    ``n_mels + 2`` points equally spaced in mel, each filter rising from its left point to its centre
    and falling to its right point, evaluated at the ``n_freqs`` linearly spaced FFT bin frequencies.
    """
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float64)
    m_pts = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2, dtype=torch.float64)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]  # (n_mels + 1,)
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0).to(torch.float32)


def dct_matrix(n_mfcc: int, n_mels: int) -> Tensor:
    """Orthonormal DCT-II as ``(n_mfcc, n_mels)``: ``mfcc = dct @ log_mel`` over the mel axis."""
    n = torch.arange(n_mels, dtype=torch.float64)
    k = torch.arange(n_mfcc, dtype=torch.float64).unsqueeze(1)
    dct = torch.cos(math.pi / n_mels * (n + 0.5) * k)
    dct[0] *= 1.0 / math.sqrt(2.0)
    return (dct * math.sqrt(2.0 / n_mels)).to(torch.float32)


def frame_count(num_samples: int, win_length: int, hop_length: int, center: bool) -> int:
    """Frames a clip gives: ``1 + L // hop`` centred, ``1 + (L - win) // hop`` without centring."""
    if center:
        return 1 + num_samples // hop_length
    return 1 + (num_samples - win_length) // hop_length


def log_mel(
    waveform: Tensor,
    window: Tensor,
    filterbank_ri: Tensor,
    hop_length: int,
    *,
    n_fft: int,
    center: bool = True,
    eps: float = 1e-6,
) -> Tensor:
    """Log-mel power spectrogram by FFT: ``(B, samples) -> (B, n_mels, frames)``.

    ``window``: ``(n_fft,)`` when ``center`` (the window zero-padded to ``n_fft`` in the middle, as
    torchaudio does), else ``(win_length,)``. ``filterbank_ri``: ``(2 * (n_fft // 2 + 1), n_mels)``, the
    mel filterbank with every frequency row repeated for the real and the imaginary part, so that one
    matmul on the squared ``view_as_real`` spectrum gives the mel power (no complex abs, no extra sum).
    The spectrum is the left operand (frames x bins, contiguous), which measured 20 % faster per clip
    than multiplying the filterbank by its transpose.
    Centred frames reflect-pad ``n_fft // 2`` on both sides (torchaudio's ``center=True``); uncentred
    frames are ``win_length`` long and the FFT zero-pads them to ``n_fft`` (the TensorFlow convention
    KWS reference code uses, which gives ``1 + (L - win) // hop`` frames).
    """
    if waveform.shape[0] > CLIPS_PER_CHUNK:
        # 100 clips make ~20 MB intermediates, which the allocator maps fresh (page faults on every call)
        # and which spill the caches: 16-clip chunks measured 2.8x faster at batch 100.
        chunks = waveform.split(CLIPS_PER_CHUNK)
        return torch.cat(
            [
                log_mel(c, window, filterbank_ri, hop_length, n_fft=n_fft, center=center, eps=eps)
                for c in chunks
            ]
        )
    if center:
        frames = _reflect_pad(waveform, n_fft // 2).unfold(-1, n_fft, hop_length)
        spectrum = torch.fft.rfft(frames * window)
    else:
        frames = waveform.unfold(-1, window.shape[0], hop_length)
        spectrum = torch.fft.rfft(frames * window, n=n_fft)
    # In place: the FFT output is a fresh tensor, and |X|^2 = re^2 + im^2 is summed by the matmul.
    squared = torch.view_as_real(spectrum).square_().reshape(waveform.shape[0], spectrum.shape[1], -1)
    # log on the contiguous (B, frames, n_mels) product, then one transposing copy.
    return torch.matmul(squared, filterbank_ri).add_(eps).log_().transpose(1, 2).contiguous()


def log_mel_matmul(
    waveform: Tensor,
    frame_window: Tensor,
    dft_stage1: Tensor,
    dft_stage2: Tensor,
    filterbank_stage2: Tensor,
    hop_length: int,
    *,
    n_fft: int,
    win_length: int,
    center: bool = True,
    eps: float = 1e-6,
) -> Tensor:
    """The same log-mel as :func:`log_mel`, its DFT as two matrix products: exports to any ONNX opset.

    A Cooley-Tukey split of the ``n_fft``-point DFT into ``N1 x N2`` (:func:`dft_split`), written as three
    large matmuls so that ONNX runtimes need no DFT op (ONNX Runtime's is 3x slower than a direct matmul
    DFT) and do about a quarter of a direct DFT's multiplications. Frames are built as *columns*
    ``(B, taps, frames)`` from hop-long pieces, so every product below is one GEMM with the frames as its
    wide dimension and no transposition is needed: frame sample ``n = N2 * n1 + n2``, bin ``k = k1 + N1 * k2``.

    - ``frame_window`` ``(taps,)``: the hann window over the first ``win_length`` of ``taps`` (a multiple of
      ``N2``) frame samples, zero after. The power spectrum does not depend on where the window sits inside
      the FFT frame, so frames start at the window's first tap (centred frames skip torchaudio's leading
      zero taps).
    - ``dft_stage1`` ``(2 * N1, taps / N2)``: ``N1``-point DFT rows over ``n1`` (row ``2 * k1`` cosine, row
      ``2 * k1 + 1`` minus sine).
    - ``dft_stage2`` ``(N1, 2 * K2, 2 * N2)``: for each ``k1``, the twiddled ``N2``-point DFT over ``n2`` as a
      real matrix on ``[re, im]``, for the ``K2`` values of ``k2`` that reach the highest bin a filter uses.
    - ``filterbank_stage2`` ``(n_mels, N1 * 2 * K2)``: mel weights indexed like stage 2's squared output.

    ``(B, samples) -> (B, n_mels, frames)``.
    """
    samples = waveform.shape[-1]
    if center:
        # torchaudio centres the window inside the n_fft frame: skip the leading zero taps.
        waveform = _reflect_pad(waveform, n_fft // 2)[:, (n_fft - win_length) // 2 :]
    batch, taps = waveform.shape[0], frame_window.shape[0]
    frames = frame_count(samples, win_length, hop_length, center)
    pieces = -(-taps // hop_length)  # hop-long pieces per frame
    needed = (frames - 1 + pieces) * hop_length
    if needed > waveform.shape[1]:  # taps past the window have zero weight: any value will do
        waveform = F.pad(waveform, (0, needed - waveform.shape[1]))
    hops = waveform[:, :needed].reshape(batch, -1, hop_length).transpose(1, 2)  # (B, hop, pieces)
    columns = torch.cat([hops[:, :, j : j + frames] for j in range(pieces)], dim=1)[:, :taps]
    columns = columns * frame_window.unsqueeze(1)  # (B, taps, frames)
    n1_values, n1 = dft_stage1.shape[1], dft_stage1.shape[0] // 2  # n1 ranges over taps / N2 of N1 values
    stage1 = torch.matmul(dft_stage1, columns.reshape(batch, n1_values, -1))  # (B, 2 * N1, N2 * frames)
    stage1 = stage1.reshape(batch, n1, -1, frames)  # (B, N1, 2 * N2, frames): [re, im] per k1
    power = torch.matmul(dft_stage2, stage1).square()  # (B, N1, 2 * K2, frames)
    mel = torch.matmul(filterbank_stage2, power.reshape(batch, -1, frames))
    return torch.log(mel + eps)


def dft_split(n_fft: int) -> tuple[int, int]:
    """``(N1, N2)`` with ``N1 * N2 == n_fft`` and ``N2`` the largest divisor at most ``sqrt(n_fft)``."""
    n2 = max(d for d in range(1, math.isqrt(n_fft) + 1) if n_fft % d == 0)
    return n_fft // n2, n2


def two_stage_dft_buffers(
    filterbank: Tensor, n_fft: int, win_length: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(frame_window, dft_stage1, dft_stage2, filterbank_stage2)`` for :func:`log_mel_matmul`, float64.

    ``filterbank``: ``(n_fft // 2 + 1, n_mels)``. See :func:`log_mel_matmul` for the shapes.
    """
    n1, n2 = dft_split(n_fft)
    used = (filterbank.sum(dim=1) > 0).nonzero().squeeze(1)
    k2_count = -(-(int(used.max()) + 1) // n1)  # k = k1 + N1 * k2 must reach the highest used bin
    taps = -(-win_length // n2) * n2
    window = torch.zeros(taps, dtype=torch.float64)
    window[:win_length] = torch.hann_window(win_length, periodic=True, dtype=torch.float64)

    k1 = torch.arange(n1, dtype=torch.float64)
    angle = 2 * math.pi * k1.unsqueeze(1) * torch.arange(taps // n2, dtype=torch.float64) / n1
    stage1 = torch.stack([torch.cos(angle), -torch.sin(angle)], dim=1).reshape(2 * n1, taps // n2)

    # exp(-2 pi i n2 k / n_fft) with k = k1 + N1 k2: the twiddle factor and the N2-point DFT in one matrix.
    bins = k1.view(n1, 1, 1) + n1 * torch.arange(k2_count, dtype=torch.float64).view(1, k2_count, 1)
    angle = 2 * math.pi * bins * torch.arange(n2, dtype=torch.float64).view(1, 1, n2) / n_fft
    cos, sin = torch.cos(angle), -torch.sin(angle)  # (N1, K2, N2): real and imaginary parts
    # [re_out; im_out] = [[cos, -sin], [sin, cos]] @ [re_in; im_in]
    stage2 = torch.cat([torch.cat([cos, -sin], dim=2), torch.cat([sin, cos], dim=2)], dim=1)

    index = bins.view(n1, k2_count).long()
    weights = torch.zeros(n1, k2_count, filterbank.shape[1], dtype=torch.float64)
    inside = index < filterbank.shape[0]
    weights[inside] = filterbank[index[inside]].to(torch.float64)
    mel = torch.stack([weights, weights], dim=1).reshape(-1, filterbank.shape[1]).T  # re^2 and im^2 alike
    return window, stage1, stage2, mel.contiguous()


def _reflect_pad(waveform: Tensor, pad: int) -> Tensor:
    """``F.pad(x, (pad, pad), mode="reflect")`` for ``(B, L)``, ~1.7x faster on CPU for one 1 s clip.

    Both mirrored edges come from one ``unfold`` view with two windows, ``x[1 : pad + 1]`` and
    ``x[L - pad - 1 : L - 1]``, reversed by a single ``flip``: two kernels instead of ``F.pad``'s slow
    reflect kernel or one ``index_select`` per edge.
    """
    length = waveform.shape[-1]
    if pad == 0:
        return waveform
    if length <= pad + 3:  # too short for two distinct windows; rare, so the plain kernel will do
        return F.pad(waveform.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    edges = waveform[:, 1:].unfold(1, pad, length - 2 - pad).flip(2)  # (B, 2, pad)
    return torch.cat([edges[:, 0], waveform, edges[:, 1]], dim=1)


def _exporting() -> bool:
    """True while tracing (the TorchScript ONNX exporter traces) or under ``torch.export`` / the dynamo exporter.

    ``torch.onnx.is_in_onnx_export()`` would say the same for ONNX but costs 1.4 us a call, 1 % of a clip.
    """
    return torch.jit.is_tracing() or torch.compiler.is_exporting()


class LogMel(nn.Module):
    """Log-mel spectrogram ``log(mel_power + eps)``: ``(B, samples)`` or ``(samples,)`` -> ``(B, 1, n_mels, frames)``.

    Defaults are BC-ResNet's: 40 HTK mel bins, n_fft 512, 30 ms hann window, 10 ms hop, centred frames;
    a 1 s clip at 16 kHz gives 101 frames. With ``center=False`` frames are ``win_length`` long, start at
    the clip's first sample and are zero-padded to ``n_fft`` (``1 + (L - win) // hop`` frames).

    ``dft`` selects how the spectrum is computed: ``"fft"`` (fastest in eager PyTorch), ``"matmul"``
    (a two-stage DFT as matrix products, :func:`log_mel_matmul`) or ``"auto"``: FFT in eager mode, matmuls
    while tracing or exporting. The TorchScript ONNX exporter (``dynamo=False``) cannot export rfft at all;
    the dynamo exporter maps it to ONNX ``DFT``, which ONNX Runtime's CPU provider ran 3x slower than even a
    direct matmul DFT and OpenVINO 2026.4 cannot read, so exports always take the matmuls. Measured for 1 s
    at 1 thread: the exported two-stage DFT frontend takes 0.21 ms in ONNX Runtime and 0.18 ms in
    OpenVINO, against 0.46 and 0.38 ms for a direct DFT as one strided conv1d.

    ``num_samples``: when set, the waveform is zero-padded or cropped at its end to this length first,
    so the frame count is fixed whatever the clip length.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 512,
        win_length: int = 480,
        hop_length: int = 160,
        n_mels: int = 40,
        f_min: float = 0.0,
        f_max: float | None = None,
        eps: float = 1e-6,
        *,
        center: bool = True,
        num_samples: int | None = None,
        dft: str = "auto",
    ):
        super().__init__()
        f_max = float(sample_rate // 2) if f_max is None else f_max
        if not 0 < win_length <= n_fft:
            raise ConfigError(f"win_length={win_length} must be in 1..n_fft={n_fft}; lower it or raise n_fft")
        if not 0 <= f_min < f_max <= sample_rate / 2:
            raise ConfigError(
                f"mel range f_min={f_min}, f_max={f_max} Hz must satisfy 0 <= f_min < f_max <= {sample_rate / 2}"
            )
        if dft not in DFT_MODES:
            raise ConfigError(f"dft={dft!r} is not one of {', '.join(DFT_MODES)}")
        self.sample_rate, self.n_fft, self.win_length, self.hop_length = (
            sample_rate,
            n_fft,
            win_length,
            hop_length,
        )
        self.n_mels, self.f_min, self.f_max, self.eps = n_mels, f_min, f_max, eps
        self.center, self.num_samples, self.dft = center, num_samples, dft

        n_freqs = n_fft // 2 + 1
        filterbank = mel_filterbank(n_freqs, f_min, f_max, n_mels, sample_rate)  # (n_freqs, n_mels)
        window = torch.hann_window(win_length, periodic=True, dtype=torch.float64)
        if center:
            left = (n_fft - win_length) // 2
            window = F.pad(window, (left, n_fft - win_length - left))
        self.register_buffer("window", window.to(torch.float32), persistent=False)
        self.register_buffer(
            "filterbank_ri", filterbank.repeat_interleave(2, dim=0).contiguous(), persistent=False
        )
        # Export path: the DFT as two matrix products (see log_mel_matmul).
        buffers = two_stage_dft_buffers(filterbank, n_fft, win_length)
        for name, value in zip(
            ("frame_window", "dft_stage1", "dft_stage2", "filterbank_stage2"), buffers, strict=True
        ):
            self.register_buffer(name, value.to(torch.float32).contiguous(), persistent=False)

    def output_frames(self, num_samples: int) -> int:
        """Frames produced for a clip of ``num_samples`` samples."""
        length = self.num_samples if self.num_samples is not None else num_samples
        return frame_count(length, self.win_length, self.hop_length, self.center)

    def forward(self, waveform: Tensor) -> Tensor:
        """``(B, samples)`` or ``(samples,)`` float waveform -> ``(B, 1, n_mels, frames)``."""
        if waveform.dim() == 1:
            waveform = waveform.unsqueeze(0)
        if waveform.dim() != 2:
            raise ValueError(f"LogMel expects (B, samples) or (samples,), got shape {tuple(waveform.shape)}")
        if self.num_samples is not None and waveform.shape[-1] != self.num_samples:
            waveform = F.pad(waveform, (0, self.num_samples - waveform.shape[-1]))
        if self.dft == "matmul" or (self.dft == "auto" and _exporting()):
            features = log_mel_matmul(
                waveform,
                self.frame_window,
                self.dft_stage1,
                self.dft_stage2,
                self.filterbank_stage2,
                self.hop_length,
                n_fft=self.n_fft,
                win_length=self.win_length,
                center=self.center,
                eps=self.eps,
            )
        else:
            features = log_mel(
                waveform,
                self.window,
                self.filterbank_ri,
                self.hop_length,
                n_fft=self.n_fft,
                center=self.center,
                eps=self.eps,
            )
        return features.unsqueeze(1)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, win_length={self.win_length}, "
            f"hop_length={self.hop_length}, n_mels={self.n_mels}, center={self.center}, dft={self.dft!r}"
        )


def mfcc(log_mel_features: Tensor, dct: Tensor) -> Tensor:
    """DCT-II over the mel axis: ``(..., n_mels, frames)`` with ``dct`` ``(n_mfcc, n_mels)`` -> ``(..., n_mfcc, frames)``."""
    return torch.matmul(dct, log_mel_features)


class MFCC(nn.Module):
    """MFCC = orthonormal DCT-II of :class:`LogMel`: ``(B, samples)`` -> ``(B, 1, n_mfcc, frames)``.

    Equals ``torchaudio.transforms.MFCC(n_mfcc, dct_type=2, norm="ortho", log_mels=True, melkwargs=...)``
    with the same mel settings: torchaudio's ``log_mels=True`` takes ``log(mel + 1e-6)`` (its default
    ``log_mels=False`` uses a clamped dB scale instead, which no KWS baseline here uses). Every keyword
    argument other than ``n_mfcc`` goes to :class:`LogMel` (``n_mels``, window, hop, ``dft``, ...).
    """

    def __init__(self, n_mfcc: int = 40, **log_mel_options):
        super().__init__()
        # The mel settings are LogMel's own keywords, passed through: one signature to keep in step.
        self.log_mel = LogMel(**log_mel_options)
        n_mels = self.log_mel.n_mels
        if not 0 < n_mfcc <= n_mels:
            raise ConfigError(f"n_mfcc={n_mfcc} must be in 1..n_mels={n_mels}; raise n_mels or lower n_mfcc")
        self.n_mfcc = n_mfcc
        self.register_buffer("dct", dct_matrix(n_mfcc, n_mels), persistent=False)

    def output_frames(self, num_samples: int) -> int:
        """Frames produced for a clip of ``num_samples`` samples."""
        return self.log_mel.output_frames(num_samples)

    def forward(self, waveform: Tensor) -> Tensor:
        """``(B, samples)`` or ``(samples,)`` float waveform -> ``(B, 1, n_mfcc, frames)``."""
        return mfcc(self.log_mel(waveform), self.dct)


def make_frontend(
    spec: InputSpec, *, sample_rate: int = 16000, clip_samples: int = 16000, **options
) -> LogMel | MFCC:
    """The frontend a registered model declares: ``(B, clip_samples)`` -> ``spec.shape(B)``.

    Window and hop come from ``spec.window_ms`` / ``spec.hop_ms``; ``n_fft`` is the next power of two at
    or above the window. Frames are centred (torchaudio's convention, ``1 + L // hop``) unless
    ``spec.frames`` is exactly the uncentred count ``1 + (L - win) // hop`` of a clip (the TensorFlow
    convention of TC-ResNet, KWT and DS-CNN: 98 frames at 30/10 ms, 49 at 40/20 ms). The waveform is then
    zero-padded or cropped at its end to the length that gives exactly ``spec.frames`` frames, so any
    other count (MatchboxNet's 128 frames from a 1 s clip) gets trailing silence rather than a reshaped
    feature map. The mel filterbank comes from ``spec.n_mels`` / ``f_min`` / ``f_max`` (KWT: 80 bins,
    20-7600 Hz); without ``n_mels``, MFCC uses 40 bins (more if it keeps more coefficients). ``options``
    override any constructor argument (e.g. ``dft="matmul"``).
    """
    win_length = round(spec.window_ms * sample_rate / 1000)
    hop_length = round(spec.hop_ms * sample_rate / 1000)
    if spec.kind not in ("logmel", "mfcc"):
        raise ConfigError(f"input kind {spec.kind!r} has no frontend; use 'logmel' or 'mfcc'")
    if win_length < 1 or hop_length < 1 or spec.frames < 1:
        raise ConfigError(
            f"input spec window {spec.window_ms} ms, hop {spec.hop_ms} ms, {spec.frames} frames "
            f"gives no frame at {sample_rate} Hz; use positive values"
        )
    uncentred = frame_count(clip_samples, win_length, hop_length, center=False)
    center = not (spec.frames == uncentred != frame_count(clip_samples, win_length, hop_length, center=True))
    num_samples = (spec.frames - 1) * hop_length + (0 if center else win_length)
    settings = dict(
        sample_rate=sample_rate,
        n_fft=1 << (win_length - 1).bit_length(),
        win_length=win_length,
        hop_length=hop_length,
        center=center,
        num_samples=num_samples,
        f_min=spec.f_min,
        f_max=spec.f_max,
    )
    if spec.kind == "logmel":
        settings["n_mels"] = spec.n_features
        return LogMel(**{**settings, **options})
    settings.update(n_mfcc=spec.n_features, n_mels=spec.n_mels or max(40, spec.n_features))
    return MFCC(**{**settings, **options})
