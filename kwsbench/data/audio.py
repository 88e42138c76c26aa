"""Decode one audio file to a fixed-length 16 kHz mono clip, and check files cheaply from their headers.

soundfile (libsndfile) is the one decoder. libsndfile reads a truncated WAV silently, so validity is
decided here from the RIFF chunk sizes (or the FLAC STREAMINFO block) before anything is decoded.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile

from kwsbench.data.records import CLIP_SAMPLES, SAMPLE_RATE, Clip
from kwsbench.errors import DataError

AUDIO_SUFFIXES: tuple[str, ...] = (".wav", ".flac")
_FIX = "remove it or pass --skip-bad"


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header declares: its ``format`` ("wav" | "flac"), rate, channels and frames (per channel)."""

    format: str
    sample_rate: int
    channels: int
    frames: int

    def frames_at(self, sample_rate: int = SAMPLE_RATE) -> int:
        """The length in samples once resampled to ``sample_rate``."""
        return self.frames * sample_rate // self.sample_rate


class BadAudio(Exception):
    """A file's header says it cannot be used; ``reason`` is the one-line why (no path, no fix)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def bad_file_error(path: Path | str, reason: str) -> DataError:
    """The one-line DataError for a bad file: the file, why, and the fix."""
    return DataError(f"{path}: {reason}; {_FIX}")


def _read_wav_info(f: BinaryIO, file_size: int) -> AudioInfo:
    # Walk the chunks up to `data`: every chunk size must fit in the file; chunks after `data` (LIST, id3 in
    # the Speech Commands noise files) are not needed.
    pos, fmt = 12, None
    while True:
        f.seek(pos)
        header = f.read(8)
        if len(header) < 8:
            raise BadAudio("WAV has no data chunk (truncated or malformed header)")
        chunk_id, size = header[:4], struct.unpack("<I", header[4:])[0]
        if not all(32 <= b < 127 for b in chunk_id):
            raise BadAudio(f"corrupt WAV chunk header at byte {pos} (not a chunk id)")
        if chunk_id == b"fmt ":
            if size < 16 or pos + 8 + size > file_size:
                raise BadAudio("WAV fmt chunk is too short or truncated")
            _tag, channels, rate, _byte_rate, block_align, _bits = struct.unpack("<HHIIHH", f.read(16))
            if channels == 0 or rate == 0 or block_align == 0:
                raise BadAudio(f"WAV fmt chunk declares {channels} channels, {rate} Hz, block {block_align}")
            fmt = (channels, rate, block_align)
        elif chunk_id == b"data":
            if fmt is None:
                raise BadAudio("WAV data chunk comes before any fmt chunk")
            held = file_size - pos - 8
            if size > held:
                raise BadAudio(f"truncated WAV (data chunk declares {size} bytes, file holds {held})")
            channels, rate, block_align = fmt
            frames = size // block_align
            if frames == 0:
                raise BadAudio("WAV has 0 audio frames (empty data chunk)")
            return AudioInfo("wav", rate, channels, frames)
        pos += 8 + size + (size & 1)  # chunks are padded to an even length
        if pos > file_size:
            raise BadAudio(f"WAV chunk {chunk_id.decode('ascii')!r} runs past the end of the file")


def _read_flac_info(f: BinaryIO) -> AudioInfo:
    # STREAMINFO is always the first metadata block: 4-byte block header, then 34 bytes.
    f.seek(4)
    block = f.read(4 + 34)
    if len(block) < 38 or block[0] & 0x7F != 0:
        raise BadAudio("FLAC file has no STREAMINFO block (truncated or malformed)")
    bits = int.from_bytes(block[4 + 10 : 4 + 18], "big")  # rate 20 | channels-1 3 | bps-1 5 | frames 36
    rate, channels, frames = bits >> 44, ((bits >> 41) & 0x7) + 1, bits & ((1 << 36) - 1)
    if rate == 0:
        raise BadAudio("FLAC STREAMINFO declares a sample rate of 0")
    if frames == 0:
        # 0 means "unknown" in FLAC; only decoding can tell, and it is not cheap.
        try:
            frames = soundfile.info(f.name).frames
        except (soundfile.LibsndfileError, RuntimeError) as err:
            raise BadAudio(f"cannot decode FLAC ({err})") from None
        if frames == 0:
            raise BadAudio("FLAC file has 0 audio frames")
    return AudioInfo("flac", rate, channels, frames)


def read_info(f: BinaryIO, file_size: int) -> AudioInfo:
    """The header of an open binary file ``f`` of ``file_size`` bytes; raises BadAudio when it is not usable."""
    if file_size == 0:
        raise BadAudio("empty file (0 bytes)")
    f.seek(0)
    magic = f.read(12)
    if magic[:4] == b"fLaC":
        return _read_flac_info(f)
    if magic[:4] != b"RIFF":
        raise BadAudio("not a WAV file (RIFF header missing)")
    if magic[8:12] != b"WAVE":
        raise BadAudio("not a WAV file (RIFF file without WAVE form)")
    return _read_wav_info(f, file_size)


def audio_info(path: Path | str) -> AudioInfo:
    """Read ``path``'s header only; raises DataError naming the file when it is missing or unusable."""
    try:
        with open(path, "rb") as f:
            return read_info(f, Path(path).stat().st_size)
    except BadAudio as err:
        raise bad_file_error(path, err.reason) from None
    except OSError as err:
        raise bad_file_error(path, f"cannot read ({err.strerror or err})") from None


def probe(path: Path | str) -> None:
    """Cheap validity check from the header (no decoding); raises DataError naming the file."""
    audio_info(path)


def _resample(samples: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    # torch is imported here so that listing and summarising datasets never pays for it.
    import torch
    import torchaudio.functional

    out = torchaudio.functional.resample(torch.from_numpy(samples), orig_freq=orig_rate, new_freq=new_rate)
    return out.numpy()


def fix_length(samples: np.ndarray, clip_samples: int) -> np.ndarray:
    """Pad ``(n,)`` with zeros at the end, or crop its centre, to ``(clip_samples,)``."""
    n = samples.shape[0]
    if n >= clip_samples:
        start = (n - clip_samples) // 2
        return samples[start : start + clip_samples]
    return np.pad(samples, (0, clip_samples - n))


def load_clip(
    path: Path | str,
    *,
    offset: int = 0,
    num_samples: int | None = None,
    sample_rate: int = SAMPLE_RATE,
    clip_samples: int = CLIP_SAMPLES,
) -> np.ndarray:
    """Decode ``path`` to float32 ``(clip_samples,)`` mono at ``sample_rate``.

    Stereo is averaged to mono, any rate is resampled, then samples ``[offset, offset + num_samples)``
    (counted at ``sample_rate``; the whole file when ``num_samples`` is None) are taken and padded at the
    end or centre-cropped to ``clip_samples``. Raises DataError naming the file when it cannot be used.
    """
    info = audio_info(path)
    same_rate = info.sample_rate == sample_rate
    # At the target rate only the requested range is read (silence crops of minute-long noise files).
    start, stop = (offset, None if num_samples is None else offset + num_samples) if same_rate else (0, None)
    try:
        data, _ = soundfile.read(path, start=start, stop=stop, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as err:
        raise bad_file_error(path, f"cannot decode ({err})") from None
    if data.shape[0] == 0:
        raise bad_file_error(
            path, "decoded 0 audio frames" if offset == 0 else f"no audio at sample {offset}"
        )
    samples = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not same_rate:
        samples = _resample(np.ascontiguousarray(samples), info.sample_rate, sample_rate)
        if num_samples is not None or offset:
            samples = samples[offset : None if num_samples is None else offset + num_samples]
    return np.ascontiguousarray(fix_length(samples, clip_samples), dtype=np.float32)


def load_clip_of(clip: Clip) -> np.ndarray:
    """``load_clip`` for one Clip record: float32 ``(16000,)``."""
    return load_clip(clip.path, offset=clip.offset, num_samples=clip.num_samples)
