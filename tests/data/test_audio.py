"""load_clip and probe: decoding, resampling, downmix, fixed length, and one-line errors for bad files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch
import torchaudio.functional

from kwsbench.data.audio import audio_info, load_clip, load_clip_of, probe
from kwsbench.data.records import Clip
from kwsbench.errors import DataError


def test_16k_clip_is_decoded_unchanged(shared_data):
    path = shared_data / "speech_commands_test_set_v0.02/yes/022cd682_nohash_0.wav"
    raw, rate = soundfile.read(path, dtype="float32")
    out = load_clip(path)
    assert rate == 16_000 and raw.shape == (16_000,)
    assert out.dtype == np.float32 and out.shape == (16_000,)
    np.testing.assert_array_equal(out, raw)


def test_short_clip_is_zero_padded_at_the_end(shared_data):
    path = shared_data / "speech_commands_v0.01_sample/cat/31583d30_nohash_0.wav"  # 15,702 frames
    raw, _ = soundfile.read(path, dtype="float32")
    out = load_clip(path)
    np.testing.assert_array_equal(out[:15_702], raw)
    assert not out[15_702:].any() and out.shape == (16_000,)


def test_long_clip_is_centre_cropped(tmp_path, write_wav):
    ramp = np.arange(20_000) / 40_000
    path = write_wav(tmp_path / "long.wav", ramp)
    out = load_clip(path)
    stored, _ = soundfile.read(path, dtype="float32")
    np.testing.assert_array_equal(out, stored[2_000:18_000])


def test_8k_sine_keeps_its_frequency(tmp_path, write_wav):
    t = np.arange(8_000) / 8_000
    path = write_wav(tmp_path / "sine8k.wav", 0.5 * np.sin(2 * np.pi * 440 * t), sample_rate=8_000)
    out = load_clip(path)
    assert out.shape == (16_000,)
    peak = np.fft.rfftfreq(16_000, d=1 / 16_000)[np.argmax(np.abs(np.fft.rfft(out)))]
    assert peak == pytest.approx(440, abs=1)
    assert np.abs(out).max() == pytest.approx(0.5, abs=0.02)


def test_fsdd_resample_matches_torchaudio(shared_data):
    path = shared_data / "fsdd/recordings/0_george_0.wav"
    raw, rate = soundfile.read(path, dtype="float32")
    expected = torchaudio.functional.resample(torch.from_numpy(raw), rate, 16_000).numpy()
    out = load_clip(path)
    assert rate == 8_000 and expected.shape[0] < 16_000
    np.testing.assert_allclose(out[: expected.shape[0]], expected, atol=1e-6)
    assert not out[expected.shape[0] :].any()


def test_stereo_is_averaged(tmp_path, write_wav):
    left, right = np.full(16_000, 0.5), np.full(16_000, -0.25)
    path = write_wav(tmp_path / "stereo.wav", np.stack([left, right], axis=1))
    assert audio_info(path).channels == 2
    np.testing.assert_allclose(load_clip(path), 0.125, atol=1e-4)


def test_offset_crop_of_a_noise_file(shared_data):
    path = shared_data / "speech_commands_v0.01_sample/_background_noise_/white_noise.wav"
    raw, _ = soundfile.read(path, dtype="float32", start=100_000, stop=116_000)
    clip = Clip(path, "_silence_", "train", offset=100_000, num_samples=16_000)
    np.testing.assert_array_equal(load_clip_of(clip), raw)


def test_offset_crop_after_resampling(tmp_path, write_wav):
    ramp = np.linspace(-0.5, 0.5, 16_000)
    path = write_wav(tmp_path / "ramp8k.wav", ramp, sample_rate=8_000)  # 2 s
    whole = load_clip(path, clip_samples=32_000)
    np.testing.assert_array_equal(load_clip(path, offset=8_000, num_samples=16_000), whole[8_000:24_000])


def test_flac_is_read(tmp_path):
    path = tmp_path / "tone.flac"
    soundfile.write(path, np.full(8_000, 0.25), 16_000, format="FLAC")
    info = audio_info(path)
    assert (info.format, info.sample_rate, info.frames) == ("flac", 16_000, 8_000)
    np.testing.assert_allclose(load_clip(path)[:8_000], 0.25, atol=1e-4)


def test_bad_file_raises_one_line_naming_it(tmp_path, bad_file, bad_kind):
    path = bad_file(bad_kind, tmp_path / f"{bad_kind}.wav")
    for call in (probe, load_clip):
        with pytest.raises(DataError) as err:
            call(path)
        message = str(err.value)
        assert message.startswith(f"{path}: ") and "--skip-bad" in message and "\n" not in message


def test_text_file_message_says_riff_missing(tmp_path, bad_file):
    path = bad_file("text", tmp_path / "x.wav")
    with pytest.raises(
        DataError, match=r"x\.wav: not a WAV file \(RIFF header missing\); remove it or pass --skip-bad"
    ):
        probe(path)


def test_truncated_message_gives_sizes(tmp_path, bad_file):
    path = bad_file("truncated", tmp_path / "t.wav")
    with pytest.raises(DataError, match="truncated WAV .data chunk declares 32000 bytes, file holds 19956"):
        probe(path)
