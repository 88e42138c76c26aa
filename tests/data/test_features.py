"""LogMel / MFCC against torchaudio on real clips, frame conventions, and ONNX export with BC-ResNet-1."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import soundfile as sf
import torch
import torchaudio

from kwsbench.data.features import CLIPS_PER_CHUNK, MFCC, LogMel, _reflect_pad, dft_split, make_frontend
from kwsbench.errors import ConfigError
from kwsbench.models import InputSpec, create_model, list_models, model_info
from kwsbench.settings import shared_data_dir

# |a - b| in log-mel is the relative difference of the mel power. float32 FFTs that round differently
# (ours frames at another offset and sums re^2 + im^2 in the filterbank matmul) differ by a few 1e-4,
# only in bins near the log(1e-6) floor; torchaudio's own float32 output is off its float64 result by the
# same order (2e-4 on these clips). 1e-3 (0.1 % of the power) separates that from any real error (a wrong
# window, filter or frame offset moves values by > 1e-2).
LOG_MEL_ATOL = 1e-3


@pytest.fixture(scope="module")
def clips() -> torch.Tensor:
    """Twelve real 1 s clips of the official v0.02 test set, one per class folder: ``(12, 16000)`` float32."""
    root = shared_data_dir() / "speech_commands_test_set_v0.02"
    paths = [sorted(folder.glob("*.wav"))[3] for folder in sorted(p for p in root.iterdir() if p.is_dir())]
    waves = [torch.from_numpy(sf.read(p, dtype="float32")[0]) for p in paths]
    return torch.stack([torch.nn.functional.pad(w, (0, 16000 - w.shape[0])) for w in waves])


def torchaudio_log_mel(waveform: torch.Tensor, **kwargs) -> torch.Tensor:
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, **kwargs).to(waveform.dtype)
    return torch.log(mel(waveform) + 1e-6).unsqueeze(1)


@pytest.mark.parametrize("dft", ["fft", "matmul"])
def test_log_mel_equals_torchaudio_on_real_audio(clips, dft):
    ours = LogMel(dft=dft)(clips)
    reference = torchaudio_log_mel(clips, n_fft=512, win_length=480, hop_length=160, n_mels=40)
    diff = (ours - reference).abs().max().item()
    print(f"LogMel(dft={dft!r}) vs torchaudio MelSpectrogram+log: max abs diff {diff:.2e}")
    assert ours.shape == (12, 1, 40, 101)
    assert diff < LOG_MEL_ATOL


def test_log_mel_error_is_float32_rounding(clips):
    # Against a float64 torchaudio run, our float32 error is of the order of torchaudio's own float32 error.
    kwargs = dict(n_fft=512, win_length=480, hop_length=160, n_mels=40)
    exact = torchaudio_log_mel(clips.double(), **kwargs)
    ours = (LogMel()(clips).double() - exact).abs().max().item()
    theirs = (torchaudio_log_mel(clips, **kwargs).double() - exact).abs().max().item()
    assert ours < 4 * theirs


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
def test_two_stage_matmul_dft_equals_the_fft(clips, settings):
    fft = LogMel(dft="fft", **settings)(clips)
    matmul = LogMel(dft="matmul", **settings)(clips)
    assert matmul.shape == fft.shape
    assert (matmul - fft).abs().max().item() < LOG_MEL_ATOL


@pytest.mark.parametrize(
    ("n_fft", "split"), [(512, (32, 16)), (1024, (32, 32)), (400, (20, 20)), (482, (241, 2))]
)
def test_dft_split_is_the_most_balanced_factorisation(n_fft, split):
    assert dft_split(n_fft) == split


def test_one_clip_without_batch_matches_its_batched_row(clips):
    frontend = LogMel()
    assert frontend(clips[5]).shape == (1, 1, 40, 101)
    torch.testing.assert_close(frontend(clips[5])[0], frontend(clips)[5])


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
    for row in (0, CLIPS_PER_CHUNK - 1, CLIPS_PER_CHUNK, 35):
        torch.testing.assert_close(features[row], LogMel()(batch[row])[0], rtol=0, atol=1e-5)


def test_uncentred_frames_match_torchaudio_when_window_fills_the_fft(clips):
    # DS-CNN style: 40 ms window, 20 ms hop, no centring -> 49 frames (torchaudio frames by n_fft).
    ours = LogMel(n_fft=640, win_length=640, hop_length=320, center=False)(clips)
    reference = torchaudio_log_mel(clips, n_fft=640, win_length=640, hop_length=320, n_mels=40, center=False)
    assert ours.shape == (12, 1, 40, 49)
    assert (ours - reference).abs().max() < LOG_MEL_ATOL


def test_uncentred_frames_are_window_long_and_zero_padded_to_n_fft(clips):
    # TensorFlow convention (TC-ResNet, KWT): 30 ms frames from the first sample, zero-padded to 512 -> 98 frames.
    features = LogMel(center=False)(clips[:2])
    assert features.shape == (2, 1, 40, 98)
    frame = clips[0, 160 * 7 : 160 * 7 + 480] * torch.hann_window(480)
    power = torch.fft.rfft(frame, n=512).abs() ** 2
    expected = torch.log(LogMel().filterbank_ri[::2].T @ power + 1e-6)
    torch.testing.assert_close(features[0, 0, :, 7], expected, atol=LOG_MEL_ATOL, rtol=0)


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
def test_mfcc_equals_torchaudio_log_mels(clips, melkwargs, n_mfcc):
    reference = torchaudio.transforms.MFCC(16000, n_mfcc=n_mfcc, log_mels=True, melkwargs=melkwargs)(clips)
    ours = MFCC(n_mfcc=n_mfcc, **melkwargs)(clips)
    diff = (ours[:, 0] - reference).abs().max().item()
    print(f"MFCC {n_mfcc} x {reference.shape[-1]} vs torchaudio: max abs diff {diff:.2e}")
    assert ours.shape == (12, 1, *reference.shape[1:])
    # A DCT row sums at most sqrt(2 * n_mels) absolute weight times the log-mel error.
    assert diff < LOG_MEL_ATOL * (2 * melkwargs["n_mels"]) ** 0.5


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


def test_padded_frames_are_trailing_silence(clips):
    features = make_frontend(InputSpec("logmel", 40, 128))(clips[:1])
    torch.testing.assert_close(features[..., :99], LogMel()(clips[:1])[..., :99])
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
    torch.manual_seed(0)
    model = torch.nn.Sequential(LogMel(), create_model("bcresnet_1")).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics so that logits depend on every feature
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "kws.onnx"
    torch.onnx.export(model, (clips[:1],), path, dynamo=dynamo, input_names=["waveform"])
    onnx_logits = _onnx_run(path, clips)
    with torch.inference_mode():
        eager = model(clips).numpy()
    diff = np.abs(onnx_logits - eager).max()
    print(
        f"ONNX (dynamo={dynamo}) LogMel+bcresnet_1 vs eager: max abs diff {diff:.2e}, logit scale {np.abs(eager).max():.2f}"
    )
    np.testing.assert_allclose(onnx_logits, eager, atol=1e-4 * np.abs(eager).max(), rtol=0)
    assert (onnx_logits.argmax(1) == eager.argmax(1)).all()


def test_onnx_export_of_frontend_alone_matches_torchaudio(clips, tmp_path):
    path = tmp_path / "logmel.onnx"
    torch.onnx.export(LogMel(), (clips[:1],), path, dynamo=False, input_names=["waveform"])
    reference = torchaudio_log_mel(clips, n_fft=512, win_length=480, hop_length=160, n_mels=40).numpy()
    assert np.abs(_onnx_run(path, clips) - reference).max() < LOG_MEL_ATOL
