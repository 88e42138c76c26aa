"""In-process eSpeak NG speech synthesis through the ``espeakng-loader`` wheel (the library and its voices).

The library is driven with ctypes in synchronous retrieval mode: a synth callback collects the 16-bit samples
(mono, at the library's rate, 22 050 Hz). eSpeak NG keeps process-global state, and some of it carries from
one utterance to the next (the pitch-flutter phase and the wave generator's cycle position are function-level
statics that neither ``espeak_Terminate`` nor a new ``espeak_Initialize`` resets: the same word said twice
in a row differs by a few samples). So speech happens in a ``session``: the library is loaded afresh (about
8 ms), its random seed fixed, a run of utterances said, and the library unloaded. A session's samples then
depend only on what it was asked to say, in order, never on earlier sessions or the clock; a lock lets one
thread of a process hold a session at a time. Parallelism is processes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from kwsbench.errors import ConfigError, DataError

INSTALL_FIX = "pip install espeakng-loader (the wheel bundles the eSpeak NG library and its voices)"
REINSTALL_FIX = "reinstall it: pip install --force-reinstall espeakng-loader"
PCM_SCALE = 32768.0  # eSpeak NG hands out int16 samples

# speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # without it a missing data folder ends the whole process (exit(1))
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH, _RANGE = 1, 3, 4
_RAND_SEED = 1  # what `espeak-ng -D` (deterministic random mode) sets
_BUFFER_MS = 200  # milliseconds of samples per callback

# One thread at a time per process: the library's state is global.
_LOCK = threading.Lock()


class _Voice(ctypes.Structure):
    """``espeak_VOICE`` of speak_lib.h."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, NUL-terminated name) pairs, ended by a 0 byte
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


@dataclass(frozen=True)
class Voice:
    """How to speak: a language voice ``name`` (``"en-us"``), an optional ``variant`` (``"f2"``, ``"croak"``),
    ``rate`` in words per minute (80-450), ``pitch`` (0-99) and ``pitch_range`` (0-100; 50 is the default)."""

    name: str = "en"
    variant: str | None = None
    rate: int = 175
    pitch: int = 50
    pitch_range: int = 50

    @property
    def spec(self) -> str:
        """The name eSpeak NG takes (``"en-us+f2"``)."""
        return self.name + (f"+{self.variant}" if self.variant else "")


@dataclass(frozen=True)
class LibraryInfo:
    """The library found: its ``version``, output ``sample_rate`` (Hz), the language ``voices`` of the
    language asked for (lowercase names, as ``Voice.name`` takes them) and every voice ``variant``."""

    version: str
    sample_rate: int
    voices: tuple[str, ...]
    variants: tuple[str, ...]


def library_paths() -> tuple[str, str]:
    """(shared library, data folder) of the installed ``espeakng-loader``; missing is one DataError."""
    try:
        import espeakng_loader
    except ImportError as err:
        raise DataError(f"eSpeak NG: cannot import espeakng_loader ({err}); {INSTALL_FIX}") from None
    try:
        return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
    except (RuntimeError, OSError) as err:  # the loader raises RuntimeError when its data folder is gone
        raise DataError(f"eSpeak NG: {err}; {REINSTALL_FIX}") from None


def _declare(lib: ctypes.CDLL) -> None:
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_ListVoices.argtypes = [ctypes.POINTER(_Voice)]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_GetCurrentVoice.restype = ctypes.POINTER(_Voice)
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [
        *(ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint),
        *(ctypes.c_void_p, ctypes.c_void_p),
    ]


def _unload(lib: ctypes.CDLL) -> None:
    import _ctypes

    close = getattr(_ctypes, "dlclose", None) or _ctypes.FreeLibrary  # POSIX, or Windows
    close(lib._handle)


@contextlib.contextmanager
def _loaded(paths: tuple[str, str] | None = None) -> Iterator[tuple[ctypes.CDLL, int]]:
    """The library loaded and initialised for this block only, as (library, sample rate); the lock is held."""
    library, data = paths if paths is not None else library_paths()
    with _LOCK:
        try:
            lib = ctypes.CDLL(library)
        except OSError as err:
            raise DataError(
                f"eSpeak NG library {library}: cannot be loaded ({err}); {REINSTALL_FIX}"
            ) from None
        try:
            _declare(lib)
            rate = lib.espeak_Initialize(
                _AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, os.fsencode(data), _INITIALIZE_DONT_EXIT
            )
            if rate <= 0:
                raise DataError(
                    f"eSpeak NG data {data}: the library cannot initialise from it; {REINSTALL_FIX}"
                )
            # Initialisation seeds the noise of breathy voices (whisper) from the clock; fixed here.
            lib.espeak_ng_SetRandSeed(_RAND_SEED)
            yield lib, rate
        finally:
            with contextlib.suppress(AttributeError):
                lib.espeak_Terminate()
            _unload(lib)


def _languages(pointer: int | None) -> list[str]:
    """The language names of an ``espeak_VOICE.languages`` list."""
    out: list[str] = []
    while pointer and ctypes.c_ubyte.from_address(pointer).value:  # a 0 priority ends the list
        name = ctypes.string_at(pointer + 1)
        out.append(name.decode("utf-8", "replace"))
        pointer += 2 + len(name)
    return out


def _list(lib: ctypes.CDLL, language: str | None) -> list[tuple[str, list[str]]]:
    """(identifier, languages) of every voice eSpeak NG lists for ``language`` (None: every language voice)."""
    spec = None
    if language is not None:
        name = ctypes.c_char_p(language.encode())
        spec = _Voice(languages=ctypes.cast(name, ctypes.c_void_p))
    voices = lib.espeak_ListVoices(ctypes.byref(spec) if spec is not None else None)
    out, i = [], 0
    while voices[i]:
        voice = voices[i].contents
        out.append((voice.identifier.decode("utf-8", "replace"), _languages(voice.languages)))
        i += 1
    return out


def library_info(language: str = "en", *, paths: tuple[str, str] | None = None) -> LibraryInfo:
    """Version, sample rate, the voices of ``language`` and the variants of the installed library.

    A voice is listed by the last part of its identifier (``gmw/en-GB-x-rp`` -> ``en-gb-x-rp``) when one
    of its languages starts with ``language``; ``paths`` (library, data folder) overrides the wheel's.
    """
    with _loaded(paths) as (lib, rate):
        data = ctypes.c_char_p()
        version = (lib.espeak_Info(ctypes.byref(data)) or b"?").decode()
        voices = sorted(
            {
                ident.rsplit("/", 1)[-1].lower()
                for ident, langs in _list(lib, None)
                if any(lang == language or lang.startswith(f"{language}-") for lang in langs)
            }
        )
        variants = sorted(ident.rsplit("/", 1)[-1] for ident, _ in _list(lib, "variant"))
    return LibraryInfo(version, rate, tuple(voices), tuple(variants))


def _set_voice(lib: ctypes.CDLL, voice: Voice, previous: Voice | None) -> None:
    """Select ``voice`` (loading its files only when it changes) and its rate and pitch, checking that
    eSpeak NG took it: an unknown name or variant falls back to the default voice without a word."""
    for name, value, low, high in (
        ("rate", voice.rate, 80, 450),
        ("pitch", voice.pitch, 0, 99),
        ("pitch_range", voice.pitch_range, 0, 100),
    ):
        if not low <= value <= high:
            raise ConfigError(f"eSpeak NG voice {voice.spec!r}: {name} {value} is outside {low}-{high}")
    if previous is None or previous.spec != voice.spec:
        status = lib.espeak_SetVoiceByName(voice.spec.encode())
        current = lib.espeak_GetCurrentVoice()
        taken = current.contents.identifier.decode("utf-8", "replace").lower() if current else ""
        wanted = voice.spec.lower()
        if status != 0 or not (taken == wanted or taken.endswith(f"/{wanted}")):
            raise ConfigError(
                f"eSpeak NG voice {voice.spec!r}: not available (got {taken or 'none'}); "
                "pick one of kwsbench.data.espeak.library_info().voices / .variants"
            )
    for parameter, value in ((_RATE, voice.rate), (_PITCH, voice.pitch), (_RANGE, voice.pitch_range)):
        lib.espeak_SetParameter(parameter, int(value), 0)


class Session:
    """One loaded library saying a run of utterances (``session()`` makes one).

    The library's state carries from one utterance to the next, so an utterance's samples depend on what
    the session said before it: the same sequence of (text, voice) gives the same samples in any process.
    Loading the library once per run instead of once per word makes speech about five times cheaper.
    """

    def __init__(self, lib: ctypes.CDLL, sample_rate: int):
        self.sample_rate = sample_rate
        self._lib = lib
        self._chunks: list[np.ndarray] = []
        self._voice: Voice | None = None
        # Kept on the session: the library calls it for as long as the session lives.
        self._callback = _SYNTH_CALLBACK(self._collect)
        lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, samples, count, events) -> int:
        if count > 0:
            self._chunks.append(np.ctypeslib.as_array(samples, (count,)).copy())
        return 0  # 0: go on

    def say(self, text: str, voice: Voice = Voice()) -> np.ndarray:
        """``text`` spoken: float32 ``(n,)`` in [-1, 1), mono, at ``sample_rate``."""
        _set_voice(self._lib, voice, self._voice)
        self._voice = voice
        self._chunks = []
        encoded = text.encode("utf-8") + b"\0"
        status = self._lib.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != 0:
            raise DataError(f"eSpeak NG: speaking {text!r} failed (status {status}); {REINSTALL_FIX}")
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return samples.astype(np.float32) / np.float32(PCM_SCALE)


@contextlib.contextmanager
def session(*, paths: tuple[str, str] | None = None) -> Iterator[Session]:
    """A freshly loaded library for a run of utterances, unloaded at the end; ``paths`` (library, data
    folder) overrides the wheel's. Holds the process's eSpeak NG lock for the whole block."""
    with _loaded(paths) as (lib, rate):
        yield Session(lib, rate)


def synthesize(
    text: str, voice: Voice = Voice(), *, paths: tuple[str, str] | None = None
) -> tuple[np.ndarray, int]:
    """Speak ``text`` in a session of its own: (float32 ``(n,)`` in [-1, 1), mono; the library's sample
    rate in Hz, 22 050). The same text and voice give the same samples in any process, whatever was
    said before."""
    with session(paths=paths) as speaker:
        return speaker.say(text, voice), speaker.sample_rate
