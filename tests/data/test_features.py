"""LogMel / MFCC against torchaudio on real clips, frame conventions, and ONNX export with BC-ResNet-1."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import pytest
import soundfile as sf
import torch
import torchaudio
from calibrated import calibrate, float64_output, parity_atol
from torch import nn

from kwsbench.data.features import CLIPS_PER_CHUNK, MFCC, LogMel, _reflect_pad, dft_split, make_frontend
from kwsbench.errors import ConfigError
from kwsbench.models import InputSpec, create_model, list_models, model_info
from kwsbench.settings import shared_data_dir

EPS32 = torch.finfo(torch.float32).eps
FLOOR = 1e-6  # the recipe's log(mel + 1e-6)
BCRESNET = dict(n_fft=512, win_length=480, hop_length=160, n_mels=40)

# How the tolerances below are derived. A float32 log-mel is compared with an exact float64 one (float64
# window, FFT and filterbank, written independently of kwsbench). log(P + 1e-6) is ill conditioned where the
# mel power P is far below its frame's loudest bins, so errors are measured where they are well conditioned:
# on the mel amplitude sqrt(P), recovered from the log output with the floor added back. A float32 DFT's
# rounding adds to every bin an error of a few eps32 times the frame's spectral norm, whatever the bin's own
# power; over a filter's bins (Cauchy-Schwarz) that bounds |sqrt(P32) - sqrt(P64)| by
# tau * eps32 * sqrt(n_fft * frame energy * filter weight). The largest such tau is an implementation's
# float32 rounding. The bound for kwsbench's frontends is torchaudio's own tau at the same settings, on the
# same clips and float64 reference (1.4-8 here, mostly its float32 filterbank): every float32 log-mel must be
# at least as exact as torchaudio's float32 MelSpectrogram. A real error (a wrong window, a frame one sample
# off) shows a tau 1e5 to 1e8 times larger (test_error_bound_is_torchaudios_own_float32_rounding).


@contextmanager
def float64_by_default():
    """Build torchaudio's filterbank / DCT in float64: it creates them in the default dtype."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def filterbank64(n_fft=512, n_mels=40, f_min=0.0, f_max=None) -> torch.Tensor:
    """torchaudio's HTK mel filterbank ``(n_fft // 2 + 1, n_mels)``, computed in float64."""
    with float64_by_default():
        filterbank = torchaudio.functional.melscale_fbanks(
            n_fft // 2 + 1, f_min, 8000.0 if f_max is None else f_max, n_mels, 16000, None, "htk"
        )
    assert filterbank.dtype == torch.float64
    return filterbank


@dataclass
class ExactMel:
    """A float64 mel power spectrogram ``power`` ``(B, n_mels, frames)`` and, per element, the scale of its
    float32 rounding ``scale`` (broadcastable to it): n_fft * windowed frame energy * filter weight."""

    power: torch.Tensor
    scale: torch.Tensor

    @property
    def log(self) -> torch.Tensor:
        return torch.log(self.power + FLOOR)


def exact_mel(
    clips, n_fft=512, win_length=480, hop_length=160, n_mels=40, f_min=0.0, f_max=None, center=True
) -> ExactMel:
    """The log-mel's float64 reference: torchaudio's frames when ``center`` (reflect-padded, window centred
    in n_fft), else window-long frames from the first sample, zero-padded to n_fft (TensorFlow's)."""
    x = clips.double()
    window = torch.hann_window(win_length, periodic=True, dtype=torch.float64)
    if center:
        left = (n_fft - win_length) // 2
        window = torch.nn.functional.pad(window, (left, n_fft - win_length - left))
        padded = torch.nn.functional.pad(x.unsqueeze(1), (n_fft // 2, n_fft // 2), mode="reflect")
        frames = padded.squeeze(1).unfold(-1, n_fft, hop_length) * window
    else:
        frames = x.unfold(-1, win_length, hop_length) * window
    return exact_frames(frames, filterbank64(n_fft, n_mels, f_min, f_max), n_fft)


def exact_frames(frames: torch.Tensor, filterbank: torch.Tensor, n_fft: int) -> ExactMel:
    """Windowed float64 frames ``(B, frames, taps)`` -> their :class:`ExactMel`."""
    power = (torch.fft.rfft(frames, n=n_fft).abs().square() @ filterbank).transpose(1, 2)
    energy = frames.square().sum(-1).unsqueeze(1)  # (B, 1, frames)
    return ExactMel(power, n_fft * energy * filterbank.sum(0).view(1, -1, 1))


def output_rounding(exact_log: torch.Tensor) -> torch.Tensor:
    """The float32 rounding of ``log(P + 1e-6)`` itself, whatever came before: the add and the log are
    each correctly rounded to within an ulp, at most 2 eps32 of the result, plus 2 eps32 of its unit."""
    return 2 * EPS32 * (exact_log.abs() + 1)


def rounding_tau(log_mel32: torch.Tensor, exact: ExactMel) -> float:
    """A float32 log-mel's rounding: its largest mel amplitude error beyond ``output_rounding``, in units of
    ``eps32 * sqrt(exact.scale)`` (elements of scale 0, frames of zeros, are held to ``output_rounding``)."""
    signed = log_mel32.double().reshape(exact.power.shape) - exact.log
    beyond = (signed.abs() - output_rounding(exact.log)).clamp(min=0) * signed.sign()
    power32 = ((exact.power + FLOOR) * torch.exp(beyond) - FLOOR).clamp(min=0)
    error = (power32.sqrt() - exact.power.sqrt()).abs()
    unit = (EPS32 * exact.scale.sqrt()).expand_as(error)
    return (error[unit > 0] / unit[unit > 0]).max().item()


def log_mel_tolerance(exact: ExactMel, tau: float) -> torch.Tensor:
    """Per element ``(B, n_mels, frames)``: the largest |L32 - L64| a float32 log-mel of rounding ``tau``
    may show, the inverse of :func:`rounding_tau`: tight where a bin is loud, loose only near the floor."""
    amplitude, error = exact.power.sqrt(), tau * EPS32 * exact.scale.sqrt()
    above = torch.log((amplitude + error) ** 2 + FLOOR) - exact.log
    below = exact.log - torch.log((amplitude - error).clamp(min=0) ** 2 + FLOOR)
    return output_rounding(exact.log) + torch.maximum(above, below)


def assert_log_mel_within(log_mel32: torch.Tensor, exact: ExactMel, tau: float, label: str) -> None:
    """Every element of ``log_mel32`` within :func:`log_mel_tolerance` of the exact log-mel."""
    error = (log_mel32.double().reshape(exact.power.shape) - exact.log).abs()
    excess = (error / log_mel_tolerance(exact, tau)).max().item()
    print(
        f"{label}: rounding tau {rounding_tau(log_mel32, exact):.3g} (bound {tau:.3g}), "
        f"log max |diff| {error.max():.2e}"
    )
    # 1 + 1e-9: torchaudio's own output meets its tau with equality, up to this float64 arithmetic.
    assert excess <= 1.0 + 1e-9, (
        f"{label}: error {excess:.3g}x its float32 bound (torchaudio's tau {tau:.3g})"
    )


@pytest.fixture(scope="module")
def clips() -> torch.Tensor:
    """Twelve real 1 s clips of the official v0.02 test set, one per class folder: ``(12, 16000)`` float32."""
    root = shared_data_dir() / "speech_commands_test_set_v0.02"
    paths = [sorted(folder.glob("*.wav"))[3] for folder in sorted(p for p in root.iterdir() if p.is_dir())]
    waves = [torch.from_numpy(sf.read(p, dtype="float32")[0]) for p in paths]
    return torch.stack([torch.nn.functional.pad(w, (0, 16000 - w.shape[0])) for w in waves])


def torchaudio_mel(waveform: torch.Tensor, **kwargs) -> torch.Tensor:
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, **kwargs).to(waveform.dtype)
    return mel(waveform)


def torchaudio_log_mel(waveform: torch.Tensor, **kwargs) -> torch.Tensor:
    return torch.log(torchaudio_mel(waveform, **kwargs) + FLOOR).unsqueeze(1)


@pytest.fixture(scope="module")
def reference(clips):
    """``reference(**settings) -> (exact, tau)``: the float64 log-mel of the clips and torchaudio's float32
    rounding at those settings, computed once per settings."""
    cache: dict[tuple, tuple[ExactMel, float]] = {}

    def get(**settings):
        full = {**BCRESNET, **settings}
        key = tuple(sorted(full.items()))
        if key not in cache:
            # torchaudio frames uncentred clips by n_fft, not by the window (TensorFlow's convention): its
            # rounding is taken on centred frames of the same n_fft, window and filterbank, the same arithmetic.
            centred = {k: v for k, v in full.items() if k != "center"}
            theirs = torchaudio_log_mel(clips, **centred)
            cache[key] = exact_mel(clips, **full), rounding_tau(theirs, exact_mel(clips, **centred))
        return cache[key]

    return get


@pytest.mark.parametrize("dft", ["fft", "matmul"])
def test_log_mel_equals_torchaudio_on_real_audio(clips, reference, dft):
    ours = LogMel(dft=dft)(clips)
    theirs = torchaudio_log_mel(clips, **BCRESNET)
    assert ours.shape == theirs.shape == (12, 1, 40, 101)
    exact, tau = reference()
    print(
        f"LogMel(dft={dft!r}) vs torchaudio MelSpectrogram+log: max abs diff {(ours - theirs).abs().max():.2e}"
    )
    assert_log_mel_within(theirs, exact, tau, "torchaudio float32")  # the bound is torchaudio's own
    assert_log_mel_within(ours, exact, tau, f"LogMel(dft={dft!r})")


def test_error_bound_is_torchaudios_own_float32_rounding(clips, reference):
    exact, tau = reference()
    # Computed, not chosen: torchaudio's float32 output against the float64 reference, in eps32 units, at
    # the settings it bounds (KWT's filterbank, built in float32 by torchaudio, rounds differently).
    assert tau == rounding_tau(torchaudio_log_mel(clips, **BCRESNET), exact)
    assert reference(n_mels=80, f_min=20.0, f_max=7600.0)[1] != tau
    # torchaudio rounds (its float32 filterbank, window and FFT), by a few float32 steps.
    assert 0.0 < tau < 100.0
    # The bound tells float32 rounding from real errors: a Hamming window, or frames one sample late.
    hamming = torchaudio.transforms.MelSpectrogram(16000, **BCRESNET, window_fn=torch.hamming_window)
    late = torch.nn.functional.pad(clips[:, 1:], (0, 1))
    for wrong in (torch.log(hamming(clips) + FLOOR), LogMel()(late)):
        assert rounding_tau(wrong, exact) > 1e4 * tau
    # In the log domain the tolerance follows each bin's power: tight where loud (well below the 1e-3 this
    # file once held every bin to), loose only near the floor.
    tolerance = log_mel_tolerance(exact, tau)
    loud = exact.power > 1e-2 * exact.scale  # amplitude at least a tenth of its rounding scale's root
    assert tolerance[loud].max() < 1e-4 and tolerance.max() > 100 * tolerance[loud].max()


@pytest.mark.parametrize(
    "settings",
    [
        dict(),  # BC-ResNet: 512 = 32 x 16, 480 taps
        dict(center=False),  # TensorFlow frames
        dict(n_fft=1024, win_length=640, hop_length=320, center=False),  # DS-CNN 40 / 20 ms
        dict(win_length=400, hop_length=160),  # MatchboxNet 25 ms: window not a whole number of hops
        dict(n_mels=80, f_min=20.0, f_max=7600.0),  # KWT's filterbank stops below the Nyquist bin
        dict(n_fft=400, win_length=400, hop_length=160),  # 400 = 20 x 20, window fills the frame
        dict(n_fft=482, win_length=480, hop_length=160),  # 482 = 241 x 2: a degenerate split
    ],
    ids=["bcresnet", "uncentred", "dscnn", "window-not-hops", "kwt", "n_fft-400", "n_fft-482"],
)
def test_two_stage_matmul_dft_equals_the_fft(clips, reference, settings):
    # Both against the exact float64 log-mel: the two float32 DFTs round differently near the log floor
    # (1e-3 apart there on an AMD EPYC), and each must stay within torchaudio's float32 rounding.
    exact, tau = reference(**settings)
    fft = LogMel(dft="fft", **settings)(clips)
    matmul = LogMel(dft="matmul", **settings)(clips)
    assert matmul.shape == fft.shape == (12, 1, *exact.power.shape[1:])
    assert_log_mel_within(fft, exact, tau, "fft")
    assert_log_mel_within(matmul, exact, tau, "matmul")


@pytest.mark.parametrize(
    ("n_fft", "split"), [(512, (32, 16)), (1024, (32, 32)), (400, (20, 20)), (482, (241, 2))]
)
def test_dft_split_is_the_most_balanced_factorisation(n_fft, split):
    assert dft_split(n_fft) == split


def test_one_clip_without_batch_matches_its_batched_row(clips, reference):
    frontend = LogMel()
    alone = frontend(clips[5])
    assert alone.shape == (1, 1, 40, 101)
    exact, tau = reference()
    # Two float32 runs (a batch may take other GEMM blocking), each within torchaudio's rounding of the exact.
    difference = (alone[0] - frontend(clips)[5]).abs().double()
    assert torch.all(difference <= 2 * log_mel_tolerance(exact, tau)[5])


@pytest.mark.parametrize("length", [16000, 300, 259, 258, 257])
def test_reflect_pad_equals_torch_reflect_mode(clips, length):
    # 257..259 samples sit at the edge where the two mirrored windows of 256 would coincide (fallback path).
    waveform = clips[:3, :length]
    expected = torch.nn.functional.pad(waveform.unsqueeze(1), (256, 256), mode="reflect").squeeze(1)
    assert torch.equal(_reflect_pad(waveform, 256), expected)


def test_large_batches_go_through_in_chunks_with_identical_rows(clips):
    # 3 * 12 = 36 clips: two full chunks of CLIPS_PER_CHUNK and a short one; each row as if alone.
    batch = clips.repeat(3, 1) * torch.linspace(0.5, 1.5, 36).unsqueeze(1)
    assert batch.shape[0] > 2 * CLIPS_PER_CHUNK
    features = LogMel()(batch)
    assert features.shape == (36, 1, 40, 101)
    exact = exact_mel(batch)
    tau = rounding_tau(torchaudio_log_mel(batch, **BCRESNET), exact)
    tolerance = log_mel_tolerance(exact, tau)
    for row in (0, CLIPS_PER_CHUNK - 1, CLIPS_PER_CHUNK, 35):
        # Each float32 run within torchaudio's rounding of the exact row, so within twice of each other.
        difference = (features[row, 0] - LogMel()(batch[row])[0, 0]).abs().double()
        assert torch.all(difference <= 2 * tolerance[row]), f"row {row}"


def test_uncentred_frames_match_torchaudio_when_window_fills_the_fft(clips, reference):
    # DS-CNN style: 40 ms window, 20 ms hop, no centring -> 49 frames (torchaudio frames by n_fft).
    settings = dict(n_fft=640, win_length=640, hop_length=320, center=False)
    ours = LogMel(**settings)(clips)
    theirs = torchaudio_log_mel(clips, **{**BCRESNET, **settings})
    assert ours.shape == theirs.shape == (12, 1, 40, 49)
    exact, tau = reference(**settings)
    assert_log_mel_within(theirs, exact, tau, "torchaudio uncentred")  # one frame convention for both
    assert_log_mel_within(ours, exact, tau, "LogMel uncentred")


def test_uncentred_frames_are_window_long_and_zero_padded_to_n_fft(clips, reference):
    # TensorFlow convention (TC-ResNet, KWT): 30 ms frames from the first sample, zero-padded to 512 -> 98 frames.
    features = LogMel(center=False)(clips[:2])
    assert features.shape == (2, 1, 40, 98)
    frame = clips[0, 160 * 7 : 160 * 7 + 480].double() * torch.hann_window(480, dtype=torch.float64)
    by_hand = exact_frames(frame.view(1, 1, 480), filterbank64(), 512)
    _, tau = reference(center=False)
    assert_log_mel_within(features[0, 0, :, 7], by_hand, tau, "frame 7 by hand")


@pytest.mark.parametrize(
    ("melkwargs", "n_mfcc"),
    [
        (dict(n_fft=512, win_length=480, hop_length=160, n_mels=40), 40),  # Res8/15-style 40 MFCC x 101
        (dict(n_fft=640, win_length=640, hop_length=320, n_mels=40, center=False), 10),  # DS-CNN 10 x 49
        (
            dict(n_fft=512, win_length=480, hop_length=160, n_mels=80, f_min=20.0, f_max=7600.0),
            40,
        ),  # KWT bins
    ],
)
def test_mfcc_equals_torchaudio_log_mels(clips, reference, melkwargs, n_mfcc):
    theirs = torchaudio.transforms.MFCC(16000, n_mfcc=n_mfcc, log_mels=True, melkwargs=melkwargs)(clips)
    ours = MFCC(n_mfcc=n_mfcc, **melkwargs)(clips)
    diff = (ours[:, 0] - theirs).abs().max().item()
    print(f"MFCC {n_mfcc} x {theirs.shape[-1]} vs torchaudio: max abs diff {diff:.2e}")
    assert ours.shape == (12, 1, *theirs.shape[1:])
    exact, tau = reference(**melkwargs)
    with float64_by_default():
        dct = torchaudio.functional.create_dct(n_mfcc, melkwargs["n_mels"], "ortho").T  # (n_mfcc, n_mels)
    exact_mfcc = dct @ exact.log
    # |DCT| carries each log-mel element's tolerance into the coefficients; the float32 DCT itself rounds
    # an n_mels-term dot product, at most (n_mels + 1) eps32 times the sum of its terms' magnitudes
    # (n_mels additions and the float32 rounding of the DCT matrix).
    tolerance = dct.abs() @ log_mel_tolerance(exact, tau)
    tolerance += (melkwargs["n_mels"] + 1) * EPS32 * (dct.abs() @ exact.log.abs())
    for label, mfcc in (("torchaudio", theirs), ("ours", ours[:, 0])):
        excess = ((mfcc.double() - exact_mfcc).abs() / tolerance).max().item()
        assert excess <= 1.0, f"{label} MFCC: error {excess:.3g}x its float32 bound"


@pytest.mark.parametrize("name", list_models())
def test_make_frontend_gives_each_registered_model_its_declared_input(clips, name):
    spec = model_info(name).input
    assert make_frontend(spec)(clips[:2]).shape == spec.shape(2)


@pytest.mark.parametrize(
    ("spec", "center", "n_fft"),
    [
        (InputSpec("mfcc", 10, 49, window_ms=40, hop_ms=20), False, 1024),  # DS-CNN
        (InputSpec("mfcc", 40, 98), False, 512),  # TC-ResNet, KWT
        (InputSpec("mfcc", 40, 101), True, 512),  # Res8/15
        (InputSpec("mfcc", 64, 128, window_ms=25), True, 512),  # MatchboxNet: 1 s padded to 128 frames
    ],
)
def test_make_frontend_picks_frame_convention_from_the_frame_count(clips, spec, center, n_fft):
    frontend = make_frontend(spec)
    assert (frontend.log_mel.center, frontend.log_mel.n_fft) == (center, n_fft)
    assert frontend(clips[:3]).shape == spec.shape(3)


def test_padded_frames_are_trailing_silence(clips, reference):
    features = make_frontend(InputSpec("logmel", 40, 128))(clips[:1])
    exact, tau = reference()
    # The first 99 frames see the same samples; two float32 runs, each within torchaudio's rounding.
    difference = (features[0, 0, :, :99] - LogMel()(clips[:1])[0, 0, :, :99]).abs().double()
    assert torch.all(difference <= 2 * log_mel_tolerance(exact, tau)[0, :, :99])
    assert torch.all(features[..., 105:] == torch.log(torch.tensor(1e-6)))


def test_bad_settings_name_the_option():
    with pytest.raises(ConfigError, match="dft"):
        LogMel(dft="wavelet")
    with pytest.raises(ConfigError, match="win_length"):
        LogMel(n_fft=256, win_length=480)
    with pytest.raises(ConfigError, match="kind"):
        make_frontend(InputSpec("raw", 1, 16000))


def _onnx_run(path, waveform: torch.Tensor) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"waveform": row[None].numpy()})[0] for row in waveform])


@pytest.mark.slow
@pytest.mark.parametrize("dynamo", [True, False])
def test_onnx_export_of_frontend_with_bcresnet_matches_eager(clips, tmp_path, dynamo):
    # The exported graph takes the matmul DFT; eager runs the same function through it, so the two are float32
    # evaluations of one function. Statistics calibrated on these clips' features: logits depend on each one.
    model = nn.Sequential(LogMel(dft="matmul"), create_model("bcresnet_1"))
    calibrate(model, inputs=[clips], seed=0)
    path = tmp_path / "kws.onnx"
    torch.onnx.export(model, (clips[:1],), path, dynamo=dynamo, input_names=["waveform"])
    onnx_logits = _onnx_run(path, clips)
    exact = float64_output(model, clips).numpy()
    with torch.inference_mode():
        eager = model(clips).numpy()
    atol = parity_atol(model, clips)
    diff = np.abs(onnx_logits - exact).max()
    print(
        f"ONNX (dynamo={dynamo}) LogMel+bcresnet_1: max |diff| {diff:.2e} to float64, eager's "
        f"{np.abs(eager - exact).max():.2e}, bound {atol:.2e}, logit spread {exact.std():.2f}"
    )
    assert exact.std(axis=0).min() > 1e-2  # every logit moves with the clip: the features matter
    np.testing.assert_allclose(onnx_logits, exact, atol=atol, rtol=0)


def test_onnx_export_of_frontend_alone_matches_torchaudio(clips, reference, tmp_path):
    path = tmp_path / "logmel.onnx"
    torch.onnx.export(LogMel(), (clips[:1],), path, dynamo=False, input_names=["waveform"])
    exported = torch.from_numpy(_onnx_run(path, clips))
    exact, tau = reference()
    print(
        f"exported LogMel vs torchaudio: max abs diff {(exported - torchaudio_log_mel(clips, **BCRESNET)).abs().max():.2e}"
    )
    assert_log_mel_within(exported, exact, tau, "exported LogMel on ONNX Runtime")
