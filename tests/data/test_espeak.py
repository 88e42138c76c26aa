"""eSpeak NG in-process: the wheel's library speaks, voices and rates change the sound, an utterance never
depends on what was said before it or when, and a missing or broken library is one line naming the fix."""

from __future__ import annotations

import re
import sys
import time

import numpy as np
import pytest

from kwsbench.data.espeak import Voice, library_info, library_paths, synthesize
from kwsbench.errors import ConfigError, DataError


def _f0(samples: np.ndarray, rate: int) -> float:
    """Median fundamental (Hz) over voiced 40 ms frames, by autocorrelation in 60-500 Hz."""
    frame, lags = int(0.04 * rate), np.arange(rate // 500, rate // 60)
    peak = np.abs(samples).max()
    out = []
    for start in range(0, len(samples) - frame - lags[-1], frame // 2):
        x = samples[start : start + frame + lags[-1]]
        if np.abs(x[:frame]).max() < 0.3 * peak:
            continue
        corr = [np.dot(x[:frame], x[lag : lag + frame]) for lag in lags]
        out.append(rate / lags[int(np.argmax(corr))])
    return float(np.median(out))


def test_the_wheel_speaks_english_at_its_rate():
    info = library_info()
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?.*", info.version)
    assert info.sample_rate == 22_050  # eSpeak NG's fixed output rate
    assert {"en", "en-us", "en-gb-x-rp"} <= set(info.voices)
    assert {"m1", "f2", "croak", "whisper"} <= set(info.variants)
    samples, rate = synthesize("seven")
    assert rate == info.sample_rate and samples.dtype == np.float32
    # "seven" at 175 words per minute: well over 0.2 s and under 1 s, loud (int16 peak above -20 dBFS).
    assert 0.2 < len(samples) / rate < 1.0 and np.abs(samples).max() > 0.1


def test_an_utterance_does_not_depend_on_history_or_time():
    # The library keeps state across utterances and seeds breath noise from the clock; each call starts
    # afresh with a fixed seed, so the same word comes out bit-identical after anything else and later.
    first, _ = synthesize("backward", Voice("en-us", "klatt3", rate=130, pitch=30))
    whisper, _ = synthesize("yes", Voice("en-us-nyc", "whisperf"))
    synthesize("go", Voice("en", "croak"))
    time.sleep(1.1)  # the clock's seconds change
    assert np.array_equal(first, synthesize("backward", Voice("en-us", "klatt3", rate=130, pitch=30))[0])
    assert np.array_equal(whisper, synthesize("yes", Voice("en-us-nyc", "whisperf"))[0])


def test_voice_pitch_and_rate_change_the_sound():
    high, rate = synthesize("yes", Voice("en-us", "f2", pitch=70))
    low, _ = synthesize("yes", Voice("en", "m3", pitch=30))
    # A female variant at pitch 70 against a male one at 30: eSpeak NG's bases differ by about an octave.
    assert _f0(high, rate) > 1.5 * _f0(low, rate)
    slow, _ = synthesize("backward", Voice("en-us", rate=130))
    fast, _ = synthesize("backward", Voice("en-us", rate=230))
    # Durations scale about as 1/rate (230/130 = 1.77); at least half of that change in log terms.
    assert len(slow) / len(fast) > (230 / 130) ** 0.5


def test_an_unknown_variant_is_refused_not_replaced():
    # eSpeak NG falls back to its default voice without a word; the wrapper checks what it got.
    with pytest.raises(ConfigError, match=r"'en\+nope': not available"):
        synthesize("yes", Voice("en", "nope"))
    with pytest.raises(ConfigError, match="outside 0-99"):
        synthesize("yes", Voice("en", pitch=120))


def test_a_missing_loader_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # import fails as if not installed
    with pytest.raises(DataError) as err:
        library_info()
    message = str(err.value)
    assert "\n" not in message and "pip install espeakng-loader" in message


def test_a_broken_library_or_data_folder_names_the_fix(tmp_path):
    library, data = library_paths()
    fake = tmp_path / "libespeak-ng.so"
    fake.write_text("not a shared library\n")
    with pytest.raises(DataError, match=r"cannot be loaded .*pip install --force-reinstall espeakng-loader"):
        library_info(paths=(str(fake), data))
    with pytest.raises(DataError, match=r"cannot initialise .*pip install --force-reinstall espeakng-loader"):
        library_info(paths=(library, str(tmp_path)))
    # The failed initialisation left nothing behind: the next utterance is the usual one.
    assert np.array_equal(synthesize("no")[0], synthesize("no")[0]) and len(synthesize("no")[0]) > 0
