"""Shared fixtures: the folder of real audio every data test reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from kwsbench.settings import shared_data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-audio folder (``KWSBENCH_SHARED_DATA``); a missing folder fails the test, it never skips."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.fail(
            f"real audio folder {path} not found: set KWSBENCH_SHARED_DATA to the folder holding "
            "speech_commands_test_set_v0.02/, speech_commands_v0.01_sample/ and fsdd/",
            pytrace=False,
        )
    return path


def _write_wav(path: Path, samples, sample_rate: int = 16_000) -> Path:
    """Write float samples ``(n,)`` or ``(n, channels)`` as 16-bit PCM WAV, creating parent folders."""
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples, sample_rate, subtype="PCM_16")
    return path


def _bad_file(kind: str, path: Path) -> Path:
    """Write one kind of broken audio file at ``path`` (see ``BAD_KINDS``)."""
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "text":
        path.write_text("this is a text file, not audio\n", encoding="utf-8")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "zero_frames":
        _write_wav(path, np.zeros(0, dtype=np.float32))
    elif kind == "truncated":
        _write_wav(path, np.full(16_000, 0.1, dtype=np.float32))
        path.write_bytes(path.read_bytes()[:20_000])  # the data chunk still declares 32,000 bytes
    elif kind == "garbage_after_riff":
        path.write_bytes(b"RIFF" + (4_000).to_bytes(4, "little") + b"WAVE" + bytes(range(256)) * 16)
    else:
        raise ValueError(kind)
    return path


BAD_KINDS = ("text", "empty", "zero_frames", "truncated", "garbage_after_riff")


@pytest.fixture
def write_wav():
    """``write_wav(path, samples, sample_rate=16000) -> path``."""
    return _write_wav


@pytest.fixture
def bad_file():
    """``bad_file(kind, path) -> path`` for each kind in ``BAD_KINDS``."""
    return _bad_file


@pytest.fixture(params=BAD_KINDS)
def bad_kind(request) -> str:
    """Each kind of broken audio file in turn."""
    return request.param
