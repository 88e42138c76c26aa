"""Audio in through FFmpeg: a file, a URL or a capture device, as 16 kHz mono float32 chunks.

FFmpeg comes from PyAV, whose wheels carry FFmpeg's libraries (and ALSA on Linux), so ``pip install`` is
enough: no system ``ffmpeg`` binary, and capture devices open in-process (torchaudio's StreamReader, which
did this before, is gone from torchaudio 2.9). ``av.AudioResampler`` converts whatever the source gives
(any rate, layout and sample format) to 16 kHz mono float32.

``--source mic`` is the platform's default capture device: PulseAudio where this FFmpeg has it, else ALSA
``default`` on Linux; DirectShow on Windows (which has no default device: ``--input-device "audio=NAME"``);
AVFoundation ``:default`` on macOS. ``--input-format`` / ``--input-device`` override it; a source given
with ``--input-format`` is passed to FFmpeg as it is (``--input-format lavfi --source sine=duration=3``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kwsbench.data.records import SAMPLE_RATE, printable
from kwsbench.errors import BackendError, ConfigError, DataError

log = logging.getLogger(__name__)

MIC = "mic"
# Capture formats to try per platform, in order; the first this FFmpeg build has is the default.
CAPTURE_FORMATS: dict[str, tuple[str, ...]] = {
    "linux": ("pulse", "alsa"),
    "win32": ("dshow",),
    "darwin": ("avfoundation",),
}
# The default device of each capture format (None: the format has no default, a name is required).
DEFAULT_DEVICES: dict[str, str | None] = {
    "pulse": "default",
    "alsa": "default",
    "avfoundation": ":default",
    "dshow": None,
}
_DEVICE_HINTS = {
    "alsa": "pick a card with --input-device hw:CARD (list them with `arecord -l`)",
    "pulse": "check that PulseAudio runs, or use --input-format alsa",
    "dshow": "name it with --input-device 'audio=NAME' (list with `ffmpeg -list_devices true -f dshow -i dummy`)",
    "avfoundation": "pick one with --input-device :INDEX and allow microphone access for this terminal",
}
_SYSTEM_ALSA_DIR = Path("/usr/share/alsa")


def import_av():
    """The ``av`` module; a missing PyAV (FFmpeg) is a one-line :class:`BackendError` naming the fix."""
    try:
        import av
    except ImportError as err:
        raise BackendError(
            f"FFmpeg is not available: PyAV cannot be imported ({err}); install it with `pip install av`"
        ) from None
    return av


@dataclass(frozen=True)
class SourceSpec:
    """What FFmpeg opens: ``target`` (path, URL, device or filtergraph) with ``input_format`` (None: probed).

    ``label`` names the source in messages; ``device`` is True for capture devices and other sources opened
    through an explicit input format.
    """

    target: str
    input_format: str | None
    label: str
    device: bool


def resolve_source(
    source: str,
    input_format: str | None = None,
    input_device: str | None = None,
    *,
    platform: str = sys.platform,
    available: set[str] | frozenset[str] | None = None,
) -> SourceSpec:
    """The :class:`SourceSpec` for ``--source``, ``--input-format`` and ``--input-device``.

    ``available``: the input formats this FFmpeg has (default: PyAV's ``av.formats_available``).
    """
    if source == MIC:
        if input_format is None:
            if available is None:
                available = import_av().formats_available
            system = "linux" if platform.startswith("linux") else platform
            candidates = CAPTURE_FORMATS.get(system, ())
            input_format = next((f for f in candidates if f in available), None)
            if input_format is None:
                wanted = " or ".join(candidates) or "a capture format"
                raise ConfigError(
                    f"--source mic: this FFmpeg has no {wanted} input on {platform}; "
                    "pass --input-format F and --input-device NAME"
                )
        device = input_device or DEFAULT_DEVICES.get(input_format)
        if device is None:
            hint = _DEVICE_HINTS.get(input_format, "name the device")
            raise ConfigError(f"--source mic with {input_format}: no default device; {hint}")
        return SourceSpec(device, input_format, f"mic ({input_format} {device!r})", True)
    if input_device is not None:
        raise ConfigError("--input-device applies to --source mic; drop it or use --source mic")
    if input_format is not None:
        return SourceSpec(source, input_format, f"{source} ({input_format})", True)
    if "://" not in source and not Path(source).is_file():
        raise DataError(
            f"{printable(source)}: no such file; pass an audio file, a URL, or --source mic for the microphone"
        )
    return SourceSpec(source, None, printable(source), False)


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Collect what C libraries print on file descriptor 2 (ALSA's diagnostics) instead of showing it."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode("utf-8", "replace").splitlines())


def _prepare_alsa() -> None:
    # PyAV's wheel bundles alsa-lib built for another prefix, where it looks for its configuration and then
    # knows no "default" device; the system's configuration folder is the one that describes this machine.
    if (
        not ({"ALSA_CONFIG_DIR", "ALSA_CONFIG_PATH"} & set(os.environ))
        and (_SYSTEM_ALSA_DIR / "alsa.conf").is_file()
    ):
        os.environ["ALSA_CONFIG_DIR"] = str(_SYSTEM_ALSA_DIR)


def _reason(err: BaseException, diagnostics: list[str]) -> str:
    text = str(err).strip().splitlines()
    reason = text[0] if text else type(err).__name__
    # ALSA's own lines end in the useful part after the source location: "... (parse_card) cannot find card '0'".
    detail = [line.rsplit(")", 1)[-1].strip() for line in diagnostics if line.strip()]
    return f"{reason}; {detail[0]}" if detail else reason


def _open(av, spec: SourceSpec):
    """``av.open`` on ``spec``; failures become one-line errors naming the fix."""
    if spec.input_format == "alsa":
        _prepare_alsa()
    # An unreachable URL must not hang `listen` forever: 10 s to connect and between reads.
    timeout = 10.0 if "://" in spec.target else None
    diagnostics: list[str] = []
    try:
        if not spec.device:
            return av.open(spec.target, timeout=timeout)
        with _captured_stderr() as diagnostics:
            return av.open(spec.target, format=spec.input_format, timeout=timeout)
    except (av.error.FFmpegError, ValueError, OSError) as err:
        raise DataError(
            f"{spec.label}: FFmpeg cannot open it ({_reason(err, diagnostics)}); {_fix(spec, err)}"
        ) from None


def _fix(spec: SourceSpec, err: BaseException) -> str:
    if not spec.device:
        return (
            "check the URL and the network"
            if "://" in spec.target
            else "check that it is audio FFmpeg decodes"
        )
    if isinstance(err, ValueError) and "format" in str(err):
        return f"this FFmpeg has no {spec.input_format!r} input; choose another --input-format"
    return _DEVICE_HINTS.get(spec.input_format or "", "check --input-format and --input-device")


def _mono(planes: np.ndarray) -> np.ndarray:
    """``(channels, n)`` planar float32 -> ``(n,)``, the mean of the channels."""
    return planes[0] if planes.shape[0] == 1 else planes.mean(axis=0, dtype=np.float32)


def _chunks(av, container, spec: SourceSpec, sample_rate: int) -> Iterator[np.ndarray]:
    if not container.streams.audio:
        raise DataError(f"{spec.label}: has no audio stream; pass a source with sound")
    stream = container.streams.audio[0]
    # Channels are kept through resampling and averaged here: FFmpeg's own downmix to mono sums stereo at
    # 1/sqrt(2) each (3 dB louder than either channel), while kwsbench's decoder, and so every model it
    # trained, averages them.
    resampler = av.AudioResampler(format="fltp", layout=None, rate=sample_rate)
    try:
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                yield _mono(out.to_ndarray())
        for out in resampler.resample(None):  # the resampler's delayed tail
            yield _mono(out.to_ndarray())
    except av.error.FFmpegError as err:
        raise DataError(
            f"{spec.label}: FFmpeg stopped decoding ({_reason(err, [])}); the source is damaged or was cut"
        ) from None


@contextlib.contextmanager
def open_source(spec: SourceSpec, sample_rate: int = SAMPLE_RATE) -> Iterator[Iterator[np.ndarray]]:
    """Open ``spec`` and yield an iterator of float32 mono chunks ``(n,)`` at ``sample_rate``.

    Chunks have whatever length the decoder gives (a codec frame, a device period); the container is closed
    when the block ends, also on Ctrl-C.
    """
    av = import_av()
    container = _open(av, spec)
    try:
        yield _chunks(av, container, spec, sample_rate)
    finally:
        container.close()


def decode_file(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A whole file or URL through FFmpeg: float32 mono ``(samples,)`` at ``sample_rate``."""
    with open_source(resolve_source(str(path)), sample_rate) as chunks:
        parts = list(chunks)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
