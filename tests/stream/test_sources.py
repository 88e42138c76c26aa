"""Audio through FFmpeg (PyAV): real clips re-encoded as MP3 and Ogg/Opus decode to the same samples, channels are
averaged as kwsbench's decoder does, capture sources resolve per platform, and missing FFmpeg or devices are one line."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import soundfile

from kwsbench.data.audio import load_clip
from kwsbench.errors import BackendError, ConfigError, DataError
from kwsbench.stream.sources import decode_file, import_av, open_source, resolve_source

EPS32 = np.finfo(np.float32).eps


@pytest.fixture
def real_clip(shared_data):
    """A real 1 s Speech Commands clip: ``(path, float32 samples)``."""
    path = sorted((shared_data / "speech_commands_test_set_v0.02" / "yes").glob("*.wav"))[0]
    samples, rate = soundfile.read(path, dtype="float32")
    assert rate == 16_000
    return path, samples


def _encode(samples: np.ndarray, path, codec: str, container: str, rate: int) -> None:
    """Encode 16 kHz mono float32 ``samples`` with PyAV (``codec`` at ``rate``, 64 kbit/s)."""
    import av

    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        stream.bit_rate = 64_000
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
        frame.sample_rate = 16_000
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=rate)
        for part in resampler.resample(frame):
            out.mux(stream.encode(part))
        out.mux(stream.encode(None))


def _snr_db(reference: np.ndarray, decoded: np.ndarray, lag: int) -> float:
    """SNR of ``decoded`` shifted by ``lag`` samples against ``reference``, over their overlap."""
    n = min(len(reference), len(decoded)) - abs(lag)
    ref = reference[max(0, -lag) :][:n]
    out = decoded[max(0, lag) :][:n]
    return float(
        10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((out - ref).astype(np.float64) ** 2))
    )


@pytest.mark.parametrize(
    ("name", "codec", "container", "rate", "frame"),
    [("clip.mp3", "libmp3lame", "mp3", 16_000, 1152), ("clip.ogg", "libopus", "ogg", 48_000, 320)],
)
def test_a_lossy_file_decodes_to_the_clip_it_was_made_from(
    real_clip, tmp_path, name, codec, container, rate, frame
):
    _, samples = real_clip
    path = tmp_path / name
    _encode(samples, path, codec, container, rate)
    decoded = decode_file(path)
    assert decoded.dtype == np.float32 and decoded.ndim == 1
    # Container framing may pad or trim the end by less than one codec frame (at 16 kHz), never more.
    assert abs(len(decoded) - len(samples)) < frame
    # Codec tolerance: at 64 kbit/s both codecs keep this clip at 21-24 dB SNR; a √2 gain error (FFmpeg's
    # own stereo-to-mono matrix) gives 7.7 dB and a one-sample shift of this clip 2.4 dB, so 15 dB
    # separates a faithful decode from a wrong level or alignment. The decode must also be best aligned at 0.
    snr = {lag: _snr_db(samples, decoded, lag) for lag in range(-3, 4)}
    assert snr[0] >= 15.0, snr
    assert max(snr, key=snr.get) == 0, snr


def test_channels_are_averaged_as_kwsbench_decodes_them(tmp_path):
    rng = np.random.default_rng(0)
    left, right = (rng.standard_normal((2, 16_000)) * 0.1).astype(np.float32)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), 16_000, subtype="FLOAT")
    decoded = decode_file(path)
    # (L + R) / 2 in float32: one rounding per sample, at most eps/2 relative to the larger channel.
    assert np.abs(decoded - (left + right) / 2).max() <= EPS32 * np.abs(np.stack([left, right])).max()
    assert np.array_equal(decoded, load_clip(path))


def test_a_44_1_khz_file_is_resampled_to_16_khz(tmp_path):
    # A 440 Hz tone at 44.1 kHz: 16 kHz out, the same frequency and level (a resampler passes 440 Hz at unit gain).
    t = np.arange(44_100 * 2) / 44_100
    path = tmp_path / "tone.wav"
    soundfile.write(path, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 44_100, subtype="FLOAT")
    decoded = decode_file(path)
    assert abs(len(decoded) - 32_000) <= 16  # the resampler's delay line, 1 ms at most
    middle = decoded[4_000:28_000]
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(len(middle))))
    assert abs(np.argmax(spectrum) * 16_000 / len(middle) - 440) <= 16_000 / len(middle)
    assert abs(np.sqrt(np.mean(middle**2)) - 0.5 / np.sqrt(2)) < 0.01


def test_a_lavfi_source_needs_no_hardware():
    spec = resolve_source("sine=frequency=440:duration=3", "lavfi")
    with open_source(spec) as chunks:
        samples = np.concatenate(list(chunks))
    assert len(samples) == 3 * 16_000
    assert abs(np.abs(samples).max() - 0.125) < 0.01  # FFmpeg's sine source is at 1/8 of full scale


def test_mic_resolves_to_the_platform_default():
    assert resolve_source("mic", platform="linux", available={"alsa", "pulse"}).input_format == "pulse"
    linux = resolve_source("mic", platform="linux", available={"alsa"})
    assert (linux.input_format, linux.target, linux.device) == ("alsa", "default", True)
    mac = resolve_source("mic", platform="darwin", available={"avfoundation"})
    assert (mac.input_format, mac.target) == ("avfoundation", ":default")
    chosen = resolve_source("mic", "alsa", "hw:1", available={"alsa"})
    assert (chosen.input_format, chosen.target) == ("alsa", "hw:1")
    with pytest.raises(ConfigError, match="--input-device 'audio=NAME'"):
        resolve_source("mic", platform="win32", available={"dshow"})
    with pytest.raises(ConfigError, match="no pulse or alsa input"):
        resolve_source("mic", platform="linux", available={"lavfi"})
    with pytest.raises(ConfigError, match="--input-device applies to --source mic"):
        resolve_source("x.wav", input_device="hw:1")


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(DataError, match="no such file") as err:
        resolve_source(str(tmp_path / "nothing.wav"))
    assert "\n" not in str(err.value)


def test_a_device_that_cannot_open_is_one_line_naming_the_fix():
    import av

    if "alsa" not in av.formats_available:
        pytest.skip("this FFmpeg build has no ALSA input")
    with pytest.raises(DataError, match=r"FFmpeg cannot open it .*--input-device hw:CARD") as err:
        with open_source(resolve_source("mic", "alsa", "hw:99,0")):
            pass
    assert "\n" not in str(err.value)


def test_missing_ffmpeg_is_one_line_naming_the_fix(monkeypatch, real_clip):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now raises ImportError
    with pytest.raises(BackendError, match=r"pip install av") as err:
        import_av()
    assert "\n" not in str(err.value)
    with pytest.raises(BackendError, match="FFmpeg is not available"):
        decode_file(real_clip[0])
