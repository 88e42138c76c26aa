"""Decode one audio file to a fixed-length 16 kHz mono clip, and check files cheaply from their headers.

soundfile (libsndfile) is the one decoder, for WAV (PCM, float, A-law, mu-law) and FLAC. libsndfile reads a
truncated WAV silently, so validity is decided here from the RIFF chunk sizes and the fmt chunk (or the
FLAC STREAMINFO block and the last frame) before anything is decoded: a file the header check passes
decodes, so `data summary` and `data prepare` agree on which files are usable.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile

from kwsbench.data.records import CLIP_SAMPLES, SAMPLE_RATE, Clip, printable
from kwsbench.errors import DataError

AUDIO_SUFFIXES: tuple[str, ...] = (".wav", ".flac")
# Audio that libsndfile or FFmpeg could read but kwsbench does not: found beside the WAVs, such a file is
# reported (stop, or skip with --skip-bad) rather than silently left out of the dataset.
UNREAD_AUDIO_SUFFIXES: tuple[str, ...] = (
    *(".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".wma", ".webm"),
    *(".aif", ".aiff", ".aifc", ".au", ".snd", ".caf", ".w64", ".rf64"),
)
_FIX = "remove it or pass --skip-bad"
_CONVERT_FIX = "convert it to 16-bit PCM WAV or FLAC, remove it, or pass --skip-bad"
# WAV format tags kwsbench decodes (through libsndfile); compressed ones (ADPCM, GSM, MP3-in-WAV) are
# refused by name because their data chunk does not give the frame count the checks rely on.
_PCM, _FLOAT, _ALAW, _ULAW, _EXTENSIBLE = 0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE
_WAV_ENCODINGS = {_PCM: "pcm", _FLOAT: "float", _ALAW: "alaw", _ULAW: "ulaw"}
_FLOAT_BLOCK = 1 << 20  # bytes of float samples checked at a time
_WAV_TAG_NAMES = {0x0002: "MS ADPCM", 0x0011: "IMA ADPCM", 0x0031: "GSM 6.10", 0x0055: "MP3"}


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header declares: its ``format`` ("wav" | "flac"), rate, channels, frames (per
    channel), sample ``encoding`` ("pcm" | "float" | "alaw" | "ulaw") and ``bits`` per sample."""

    format: str
    sample_rate: int
    channels: int
    frames: int
    encoding: str = "pcm"
    bits: int = 16

    def frames_at(self, sample_rate: int = SAMPLE_RATE) -> int:
        """The length in samples once resampled to ``sample_rate``."""
        return self.frames * sample_rate // self.sample_rate

    def exact_in_int16(self, sample_rate: int = SAMPLE_RATE) -> bool:
        """True when every decoded sample is an int16 value / 32768, so int16 storage loses nothing.

        Holds for mono PCM of at most 16 bits (8-bit and A-law/mu-law expand into 16-bit values) that
        needs no resampling; 24-bit or float sources, a stereo average (half steps) or a resampled
        clip (overshoot past full scale) need float32.
        """
        narrow = self.encoding in ("alaw", "ulaw") or (self.encoding == "pcm" and self.bits <= 16)
        return narrow and self.channels == 1 and self.sample_rate == sample_rate


class BadAudio(Exception):
    """A file's header or samples say it cannot be used; ``reason`` is the one-line why (no path, no fix).

    ``convertible``: the file is audio in a form kwsbench does not read, so converting it is a fix.
    """

    def __init__(self, reason: str, *, convertible: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.convertible = convertible


def bad_file_error(path: Path | str, reason: str, *, convertible: bool = False) -> DataError:
    """The one-line DataError for a bad file: the file (readable even when its name is not UTF-8), why,
    and the fix."""
    return DataError(f"{printable(path)}: {reason}; {_CONVERT_FIX if convertible else _FIX}")


def _wav_format(fmt: bytes) -> tuple[str, int]:
    """(encoding, bits) of a WAV fmt chunk body; raises BadAudio for a format kwsbench does not decode."""
    tag, _channels, _rate, _byte_rate, _block_align, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == _EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack("<H", fmt[24:26])[0]  # the first two bytes of the sub-format GUID
    encoding = _WAV_ENCODINGS.get(tag)
    if encoding is None:
        name = _WAV_TAG_NAMES.get(tag, "unknown")
        raise BadAudio(f"WAV format tag 0x{tag:04x} ({name}) is not decoded", convertible=True)
    allowed = {"pcm": (8, 16, 24, 32), "float": (32, 64), "alaw": (8,), "ulaw": (8,)}[encoding]
    if bits not in allowed:
        raise BadAudio(f"WAV {encoding} with {bits} bits per sample is not decoded", convertible=True)
    return encoding, bits


def _check_finite(f: BinaryIO, size: int, bits: int) -> None:
    """Raise BadAudio when the float samples at ``f``'s position hold NaN or infinity.

    Only float WAVs can, and they are rare, so the check reads their samples (about 20 us per second of
    audio) rather than leave it to decoding: `data summary` then refuses the same files `data prepare` does.
    """
    dtype = np.dtype("<f4" if bits == 32 else "<f8")
    bad = 0
    for start in range(0, size, _FLOAT_BLOCK):
        block = f.read(min(_FLOAT_BLOCK, size - start))
        block = block[: len(block) - len(block) % dtype.itemsize]
        bad += int(np.count_nonzero(~np.isfinite(np.frombuffer(block, dtype))))
    if bad:
        raise BadAudio(f"{bad} NaN or infinite samples in a float WAV")


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
            body = f.read(min(size, 40))
            _tag, channels, rate, _byte_rate, block_align, bits = struct.unpack("<HHIIHH", body[:16])
            if channels == 0 or rate == 0 or block_align == 0:
                raise BadAudio(f"WAV fmt chunk declares {channels} channels, {rate} Hz, block {block_align}")
            encoding, bits = _wav_format(body)
            if block_align != channels * ((bits + 7) // 8):
                raise BadAudio(
                    f"WAV fmt chunk declares {block_align}-byte frames for {channels} x {bits}-bit samples"
                )
            fmt = (channels, rate, block_align, encoding, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise BadAudio("WAV data chunk comes before any fmt chunk")
            held = file_size - pos - 8
            if size > held:
                raise BadAudio(f"truncated WAV (data chunk declares {size} bytes, file holds {held})")
            channels, rate, block_align, encoding, bits = fmt
            frames = size // block_align
            if frames == 0:
                raise BadAudio("WAV has 0 audio frames (empty data chunk)")
            if encoding == "float":
                _check_finite(f, frames * block_align, bits)
            return AudioInfo("wav", rate, channels, frames, encoding, bits)
        pos += 8 + size + (size & 1)  # chunks are padded to an even length
        if pos > file_size:
            raise BadAudio(f"WAV chunk {chunk_id.decode('ascii')!r} runs past the end of the file")


def _check_flac_end(f: BinaryIO, frames: int) -> None:
    """Decode the last sample: libFLAC checks the last frame's CRC-16, so a FLAC file cut anywhere (even by
    one byte) fails here, where a header alone would pass; ~0.1 ms, against ~0.5 ms to decode 2.5 s."""
    f.seek(0)
    try:
        with soundfile.SoundFile(f) as sound:
            sound.seek(frames - 1)
            last = sound.read(1, dtype="float32")
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as err:
        raise BadAudio(f"truncated or corrupt FLAC (its last frame does not decode: {err})") from None
    if len(last) != 1:
        raise BadAudio(f"truncated FLAC (STREAMINFO declares {frames} frames, fewer decode)")


def _read_flac_info(f: BinaryIO) -> AudioInfo:
    # STREAMINFO is always the first metadata block: 4-byte block header, then 34 bytes.
    f.seek(4)
    block = f.read(4 + 34)
    if len(block) < 38 or block[0] & 0x7F != 0:
        raise BadAudio("FLAC file has no STREAMINFO block (truncated or malformed)")
    bits = int.from_bytes(block[4 + 10 : 4 + 18], "big")  # rate 20 | channels-1 3 | bps-1 5 | frames 36
    rate, channels, frames = bits >> 44, ((bits >> 41) & 0x7) + 1, bits & ((1 << 36) - 1)
    sample_bits = ((bits >> 36) & 0x1F) + 1
    if rate == 0:
        raise BadAudio("FLAC STREAMINFO declares a sample rate of 0")
    if frames == 0:
        # 0 means "unknown" in FLAC; only decoding can tell, and it is not cheap.
        try:
            f.seek(0)
            frames = soundfile.info(f).frames
        except (soundfile.LibsndfileError, RuntimeError) as err:
            raise BadAudio(f"cannot decode FLAC ({err})") from None
        if frames == 0:
            raise BadAudio("FLAC file has 0 audio frames")
    _check_flac_end(f, frames)
    return AudioInfo("flac", rate, channels, frames, "pcm", sample_bits)


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


def read_file_info(path: Path | str) -> AudioInfo:
    """``path``'s header; raises BadAudio (reason only) when it is missing, unreadable or unusable."""
    try:
        with open(path, "rb") as f:
            return read_info(f, Path(path).stat().st_size)
    except OSError as err:
        raise BadAudio(f"cannot read ({err.strerror or err})") from None


def audio_info(path: Path | str) -> AudioInfo:
    """Read ``path``'s header only; raises DataError naming the file when it is missing or unusable."""
    try:
        return read_file_info(path)
    except BadAudio as err:
        raise bad_file_error(path, err.reason, convertible=err.convertible) from None


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


def decode_clip(
    path: Path | str,
    *,
    offset: int = 0,
    num_samples: int | None = None,
    sample_rate: int = SAMPLE_RATE,
    clip_samples: int = CLIP_SAMPLES,
) -> np.ndarray:
    """``load_clip`` raising BadAudio (the reason only) instead of DataError: the cache's workers decide
    whether a bad file stops the build or is skipped."""
    info = read_file_info(path)
    same_rate = info.sample_rate == sample_rate
    # At the target rate only the requested range is read (silence crops of minute-long noise files).
    start, stop = (offset, None if num_samples is None else offset + num_samples) if same_rate else (0, None)
    try:
        # Bytes: soundfile would encode a str path strictly and fail on a name that is not UTF-8.
        data, _ = soundfile.read(os.fsencode(path), start=start, stop=stop, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as err:
        raise BadAudio(f"cannot decode ({err})") from None
    if data.shape[0] == 0:
        raise BadAudio("decoded 0 audio frames" if offset == 0 else f"no audio at sample {offset}")
    # Float files can hold NaN or infinity, which would poison every feature and gradient they touch.
    if info.encoding == "float" and not np.isfinite(data).all():
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise BadAudio(f"{bad} NaN or infinite samples in a float WAV")
    samples = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not same_rate:
        samples = _resample(np.ascontiguousarray(samples), info.sample_rate, sample_rate)
        if num_samples is not None or offset:
            samples = samples[offset : None if num_samples is None else offset + num_samples]
    return np.ascontiguousarray(fix_length(samples, clip_samples), dtype=np.float32)


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
    end or centre-cropped to ``clip_samples``. Float samples keep their values, louder than full scale
    included. Raises DataError naming the file when it cannot be used (NaN or infinite samples too).
    """
    try:
        return decode_clip(
            path, offset=offset, num_samples=num_samples, sample_rate=sample_rate, clip_samples=clip_samples
        )
    except BadAudio as err:
        raise bad_file_error(path, err.reason, convertible=err.convertible) from None


def load_clip_of(clip: Clip) -> np.ndarray:
    """``load_clip`` for one Clip record: float32 ``(16000,)``."""
    return load_clip(clip.path, offset=clip.offset, num_samples=clip.num_samples)
