"""The synthetic keyword set: the ten Speech Commands keywords and other words spoken by eSpeak NG, over
synthesised noise, written in the Speech Commands training-archive layout, generated offline.

A "speaker" is a voice/variant/pitch/rate combination and says every keyword once (and some other words for
`_unknown_`); each clip gets its own small gain and time offset, an intonation (". ? !") and one noise
(white, pink, brown, or babble made from other synthesised words) at a random SNR. ``_background_noise_/``
holds a minute of each noise at a slowly varying level: the `_silence_` class is cut from it, and training
augmentation mixes it in, exactly as for Speech Commands. The layout reads the folder with the Speech
Commands reader under its speaker-disjoint ``mini`` protocol (the same 12 classes as the official test set).

Generation is deterministic for a seed (the same seed gives byte-identical WAVs, whatever the number of
worker processes): every random draw is made up front from seeded generators, and each speaker's words are
said in order in a session of a freshly loaded eSpeak NG (``espeak.py``), so a clip depends on the seed and
its speaker only. ``manifest.json`` records the settings and every clip's voice, rate, pitch, gain, offset,
noise and SNR; it is written last and the folder renamed into place, so a folder with a manifest is
complete.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import soundfile
from tqdm import tqdm

from kwsbench.data import espeak, speech_commands
from kwsbench.data.cache import _cache_root, _init_worker, _sigint_blocked, to_pcm16
from kwsbench.data.layout import Layout
from kwsbench.data.records import CLIP_SAMPLES, SAMPLE_RATE, SPLITS, printable
from kwsbench.data.splits import BACKGROUND_NOISE, DatasetPlan, mini_split
from kwsbench.data.workdirs import make_work_folder, remove_stale_work_folders, writable_folder
from kwsbench.errors import ConfigError, DataError
from kwsbench.specs import DatasetSpec

log = logging.getLogger(__name__)

NAME = "synthetic"
PROTOCOLS: tuple[str, ...] = ("mini",)
GENERATOR_VERSION = 1  # bump when the same settings would give other audio: old sets then never match
# The default set (the dataset name `synthetic` without a data_dir): BC-ResNet-1 reaches >= 90 % test
# accuracy on it in 15 epochs, and it generates in well under a minute on 2 cores.
DEFAULT_SEED = 0
DEFAULT_CLIPS_PER_WORD = 300
DEFAULT_WORKERS = 2  # processes that make the default set on first use
MIN_CLIPS_PER_WORD = 3  # one speaker each for train, validation and test
MANIFEST_NAME = "manifest.json"

KEYWORDS: tuple[str, ...] = speech_commands.KEYWORDS
# The other Speech Commands v2 words: `_unknown_`, read by the Speech Commands layout like the real archive.
UNKNOWN_WORDS: tuple[str, ...] = tuple(w for w in speech_commands.WORDS["v2"] if w not in KEYWORDS)
UNKNOWN_PER_KEYWORD = 1.5  # `_unknown_` clips per keyword clip: the loader subsamples them to 1.0 per split
# Babble talkers say these: everyday words, none a Speech Commands word, so babble never says a class.
BABBLE_WORDS: tuple[str, ...] = (
    *("people", "water", "morning", "table", "window", "garden", "music", "paper", "little", "about"),
    *("because", "really", "coffee", "yellow", "market", "summer", "winter", "later", "maybe", "always"),
    *("something", "together", "hello", "please", "sorry", "picture", "station", "problem", "weekend"),
    *("dinner", "kitchen", "monday", "friday", "letter", "story", "travel", "simple", "minute", "question"),
    *("answer", "better", "number", "office", "doctor", "holiday", "tomorrow", "evening", "children"),
)
# English voices and voice variants, used where the installed eSpeak NG has them (en-shaw is a spelling
# system, not an accent). The variants are the stock male/female/whisper/Klatt ones and human-sounding
# contributed ones; the robotic and effect voices are left out.
VOICES: tuple[str, ...] = (
    *("en", "en-us", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029"),
    "en-us-nyc",
)
VARIANTS: tuple[str, ...] = (
    *("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5"),
    *("croak", "whisper", "whisperf", "klatt", "klatt2", "klatt3", "klatt4"),
    *("Alex", "Annie", "aunty", "david", "edward", "grandma", "grandpa", "ian", "john", "linda"),
    *("max", "michel", "norbert", "paul", "quincy", "rob", "robert", "steph", "travis"),
)
BASE_VOICE_SHARE = 0.2  # of speakers with a language voice's own sound (no variant)
RATE_WPM = (130, 230)  # eSpeak NG's default is 175; 130 keeps "backward" under 0.7 s
PITCH = (20, 80)
PITCH_RANGE = (20, 90)
INTONATIONS = ("", "?", "!")  # eSpeak NG's statement, question and exclamation contours
SPEECH_DBFS = -24.0  # RMS of the spoken part before the gain (peaks then stay below full scale)
GAIN_DB = (-6.0, 6.0)
SNR_DB = (10.0, 40.0)
NOISES: tuple[str, ...] = ("white", "pink", "brown", "babble")
EDGE_SAMPLES = 800  # 50 ms kept free at both ends of a clip, so the spoken part lies inside the second
TRIM_DB = 40.0  # a 10 ms frame this far below the loudest frame is silence before or after the word
PEAK_LIMIT = 0.99  # a clip louder than this is scaled down as a whole (no clipping)
# Noise files: a minute each (Speech Commands' are about one), level ramping between random values
# every 2-6 s, so that `_silence_` crops range from near-silent to loud as the official ones do.
NOISE_FILE_SECONDS = 60
NOISE_LEVEL_DBFS = (-60.0, -20.0)
NOISE_SEGMENT_SECONDS = (2.0, 6.0)
BABBLE_TALKERS = 5  # overlapping streams of words in babble
BABBLE_VOICES = (4, 6)  # voices whose words make the clip bank, and the noise file
BABBLE_WORDS_EACH = 10
BABBLE_BANK_SECONDS = 20  # the babble clips are mixed with (apart from the file silence is cut from)
_CHUNK = 32  # clips per worker task
_BUILDING = ".synth-"
_BANK_NAME = ".babble-bank.npy"  # exchanged with the workers during generation, removed before the rename


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: one voice setting, named ``<voice>.<variant>.p<pitch>.r<rate>``."""

    id: str
    voice: espeak.Voice


@dataclass(frozen=True)
class ClipPlan:
    """Everything that decides one clip's samples: drawn up front so workers only render.

    ``path`` is relative to the set's root; ``offset_fraction`` places the word within the free room of
    the second; ``noise_seed`` seeds the noise samples and the babble crop.
    """

    path: str
    word: str
    speaker: str
    voice: espeak.Voice
    text: str
    gain_db: float
    offset_fraction: float
    noise: str
    snr_db: float
    noise_seed: int


@dataclass
class SynthResult:
    """What ``generate`` did: the folder, whether an existing identical set was reused, and what it holds."""

    path: str
    reused: bool
    seconds: float
    settings: dict[str, object]
    clips: dict[str, int]
    speakers: dict[str, int]
    noise_files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def describe(self) -> str:
        """A few lines for the CLI."""
        s = self.settings
        state = "reused (same settings)" if self.reused else f"generated in {self.seconds:.1f} s"
        return "\n".join(
            [
                f"synthetic set {state}: {self.path}",
                f"seed {s['seed']}, {s['clips_per_word']} clips per keyword, eSpeak NG {s['espeak_ng']}, "
                f"generator v{s['version']}",
                "clips: " + ", ".join(f"{w} {n}" for w, n in self.clips.items()),
                "speakers by mini split: " + ", ".join(f"{k} {n}" for k, n in self.speakers.items()),
                f"noise files: {', '.join(self.noise_files)}",
            ]
        )


# ------------------------------------------------------------------------------------------ planning
def set_settings(seed: int, clips_per_word: int, espeak_version: str) -> dict[str, object]:
    """What makes two sets identical (the manifest's ``settings``)."""
    return {
        "generator": "kwsbench synthetic",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "clips_per_word": clips_per_word,
        "espeak_ng": espeak_version,
    }


def _rng(seed: int, stream: str) -> np.random.Generator:
    """An independent generator per purpose, so adding draws to one never shifts another."""
    return np.random.default_rng([seed, *stream.encode()])


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return round(float(rng.uniform(*bounds)), 2)


def _voice(rng: np.random.Generator, voices: Sequence[str], variants: Sequence[str]) -> espeak.Voice:
    variant = None if not variants or rng.random() < BASE_VOICE_SHARE else str(rng.choice(variants))
    return espeak.Voice(
        name=str(rng.choice(voices)),
        variant=variant,
        rate=int(rng.integers(RATE_WPM[0], RATE_WPM[1] + 1)),
        pitch=int(rng.integers(PITCH[0], PITCH[1] + 1)),
        pitch_range=int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
    )


def _speaker_id(voice: espeak.Voice) -> str:
    return f"{voice.name}.{(voice.variant or 'base').lower()}.p{voice.pitch}.r{voice.rate}"


def split_quotas(count: int) -> dict[str, int]:
    """Speakers per split of the ``mini`` protocol's default fractions (0.8, 0.1, 0.1), at least one each."""
    held = max(1, round(0.1 * count))
    return {"train": count - 2 * held, "validation": held, "test": held}


def draw_speakers(seed: int, count: int, voices: Sequence[str], variants: Sequence[str]) -> list[Speaker]:
    """``count`` distinct speakers whose ``mini`` splits (a hash of the id) fill ``split_quotas(count)``.

    Drawing to quotas makes even a small set hold every split; with other fractions the split is the
    hash's as usual.
    """
    rng = _rng(seed, "speakers")
    left = split_quotas(count)
    speakers: list[Speaker] = []
    seen: set[str] = set()
    while len(speakers) < count:
        voice = _voice(rng, voices, variants)
        ident = _speaker_id(voice)
        split = mini_split(ident)
        if ident in seen or left[split] == 0:
            continue
        seen.add(ident)
        left[split] -= 1
        speakers.append(Speaker(ident, voice))
    return speakers


def plan_clips(seed: int, clips_per_word: int, speakers: Sequence[Speaker]) -> list[ClipPlan]:
    """Every clip, speaker after speaker (a speaker's clips are said in one eSpeak NG session, in this
    order): each speaker says each keyword once, then its share of `_unknown_` words, dealt round the
    speakers in a shuffled order so that every split gets its share."""
    rng = _rng(seed, "clips")
    unknown = math.ceil(UNKNOWN_PER_KEYWORD * clips_per_word)
    order = rng.permutation(len(speakers))
    deck = [w for _ in range(math.ceil(unknown / len(UNKNOWN_WORDS))) for w in rng.permutation(UNKNOWN_WORDS)]
    extra: dict[int, list[str]] = {k: [] for k in range(len(speakers))}
    for i in range(unknown):
        extra[int(order[i % len(speakers)])].append(str(deck[i]))
    plans = []
    for k, speaker in enumerate(speakers):
        takes: Counter[str] = Counter()
        for word in (*KEYWORDS, *extra[k]):
            plans.append(
                ClipPlan(
                    path=f"{word}/{speaker.id}_nohash_{takes[word]}.wav",
                    word=word,
                    speaker=speaker.id,
                    voice=speaker.voice,
                    text=word + str(rng.choice(INTONATIONS)),
                    gain_db=_uniform(rng, GAIN_DB),
                    offset_fraction=round(float(rng.random()), 4),
                    noise=str(rng.choice(NOISES)),
                    snr_db=_uniform(rng, SNR_DB),
                    noise_seed=int(rng.integers(2**62)),
                )
            )
            takes[word] += 1
    return plans


def _babble_plan(
    seed: int, voices: Sequence[str], variants: Sequence[str]
) -> list[list[tuple[str, espeak.Voice]]]:
    """The babble voices, each saying ``BABBLE_WORDS_EACH`` words (one session each)."""
    rng = _rng(seed, "babble")
    talkers = [_voice(rng, voices, variants) for _ in range(sum(BABBLE_VOICES))]
    return [[(str(w), voice) for w in rng.choice(BABBLE_WORDS, BABBLE_WORDS_EACH)] for voice in talkers]


# ---------------------------------------------------------------------------------------- rendering
class Resampler:
    """Speech at the library's rate -> 16 kHz float32, with torchaudio's band-limited resampler.

    Keeps the filter kernel per source rate: computing it costs ten times the resampling itself.
    """

    def __init__(self) -> None:
        self._by_rate: dict[int, object] = {}

    def __call__(self, samples: np.ndarray, rate: int) -> np.ndarray:
        """``(n,)`` at ``rate`` -> ``(m,)`` at 16 kHz."""
        # torch is imported here, in the workers, so that listing layouts never pays for it.
        import torch
        import torchaudio

        if rate not in self._by_rate:
            self._by_rate[rate] = torchaudio.transforms.Resample(rate, SAMPLE_RATE)
        with torch.no_grad():
            return self._by_rate[rate](torch.from_numpy(samples)).numpy()


def trim(samples: np.ndarray, frame: int = SAMPLE_RATE // 100) -> np.ndarray:
    """The spoken part of ``(n,)``: from the first to the last 10 ms frame within ``TRIM_DB`` of the
    loudest, one frame of margin each side."""
    frames = len(samples) // frame
    if frames == 0:
        return samples
    rms = np.sqrt(np.mean(samples[: frames * frame].reshape(frames, frame) ** 2, axis=1))
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (-TRIM_DB / 20))
    start, stop = max(loud[0] - 1, 0) * frame, min((loud[-1] + 2) * frame, len(samples))
    return samples[start:stop]


def say_all(
    items: Sequence[tuple[str, espeak.Voice]],
    resampler: Resampler | None = None,
    room: int = CLIP_SAMPLES - 2 * EDGE_SAMPLES,
) -> list[tuple[np.ndarray, int]]:
    """Each (text, voice) spoken in turn in one eSpeak NG session, at 16 kHz and trimmed: float32 ``(n,)``
    with n <= ``room``, and the rate used. A word longer than ``room`` (a slow variant) is said again
    faster, never cut. The same items give the same samples (see ``espeak.Session``)."""
    resampler = resampler or Resampler()
    out = []
    with espeak.session() as speaker:
        for text, voice in items:
            rate = voice.rate
            while True:
                speech = trim(resampler(speaker.say(text, replace(voice, rate=rate)), speaker.sample_rate))
                if len(speech) <= room:
                    break
                if rate >= 450:  # eSpeak NG's fastest: cannot happen for one word
                    raise RuntimeError(f"{text!r} with {voice}: longer than {room} samples at {rate} wpm")
                rate = min(450, math.ceil(rate * len(speech) / room) + 5)
            out.append((speech.astype(np.float32), rate))
    return out


def colored_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS float32 noise ``(n,)``: ``white``, ``pink`` (power ~ 1/f) or ``brown`` (~ 1/f^2), shaped
    in the frequency domain with the slope flattened below 20 Hz (no drift)."""
    white = rng.standard_normal(n)
    if kind == "white":
        out = white
    else:
        exponent = {"pink": 1.0, "brown": 2.0}[kind]
        freqs = np.maximum(np.fft.rfftfreq(n, 1 / SAMPLE_RATE), 20.0)
        out = np.fft.irfft(np.fft.rfft(white) * freqs ** (-exponent / 2), n)
    out = out - out.mean()
    return (out / np.sqrt(np.mean(out**2))).astype(np.float32)


def babble(
    words: Sequence[np.ndarray], n: int, rng: np.random.Generator, talkers: int = BABBLE_TALKERS
) -> np.ndarray:
    """Unit-RMS babble ``(n,)``: ``talkers`` streams of ``words`` (16 kHz, any order, 50-300 ms apart,
    +-6 dB each) summed."""
    out = np.zeros(n, np.float64)
    for _ in range(talkers):
        at = int(rng.integers(0, SAMPLE_RATE // 2))
        while at < n:
            word = words[int(rng.integers(len(words)))]
            gain = 10 ** (rng.uniform(-6, 6) / 20) / max(float(np.sqrt(np.mean(word**2))), 1e-6)
            end = min(at + len(word), n)
            out[at:end] += gain * word[: end - at]
            at = end + int(rng.integers(SAMPLE_RATE // 20, 3 * SAMPLE_RATE // 10))
    out -= out.mean()
    return (out / np.sqrt(np.mean(out**2))).astype(np.float32)


def level_envelope(n: int, rng: np.random.Generator) -> np.ndarray:
    """Gains ``(n,)``: a level in ``NOISE_LEVEL_DBFS`` at knots 2-6 s apart, linear in dB between them."""
    knots = [0]
    while knots[-1] < n:
        knots.append(knots[-1] + int(rng.uniform(*NOISE_SEGMENT_SECONDS) * SAMPLE_RATE))
    levels = rng.uniform(*NOISE_LEVEL_DBFS, size=len(knots))
    return (10 ** (np.interp(np.arange(n), knots, levels) / 20)).astype(np.float32)


def render_clip(
    plan: ClipPlan, speech: np.ndarray, bank: np.ndarray
) -> tuple[np.ndarray, dict[str, int | float]]:
    """One clip from its spoken word ``(n,)`` (16 kHz, trimmed): int16 ``(CLIP_SAMPLES,)`` and where the
    word went (``start``, ``samples``) and the whole-clip ``scale`` that kept its peak below full scale."""
    level = 10 ** ((SPEECH_DBFS + plan.gain_db) / 20)
    speech = speech * (level / np.sqrt(np.mean(speech**2)))
    room = CLIP_SAMPLES - 2 * EDGE_SAMPLES - len(speech)
    start = EDGE_SAMPLES + int(plan.offset_fraction * room)
    clip = np.zeros(CLIP_SAMPLES, np.float64)
    clip[start : start + len(speech)] = speech
    rng = np.random.default_rng(plan.noise_seed)
    if plan.noise == "babble":
        at = int(rng.integers(0, len(bank) - CLIP_SAMPLES))
        noise = bank[at : at + CLIP_SAMPLES]
    else:
        noise = colored_noise(plan.noise, CLIP_SAMPLES, rng)
    clip += noise * (level / 10 ** (plan.snr_db / 20))
    scale = min(1.0, PEAK_LIMIT / float(np.abs(clip).max()))
    return to_pcm16(clip * scale), {"start": start, "samples": len(speech), "scale": round(scale, 4)}


def _speak_groups(groups: Sequence[Sequence[tuple[str, espeak.Voice]]]) -> list[np.ndarray]:
    """Worker task: each group of (text, voice) said in its own session; the words, 16 kHz, trimmed."""
    resampler = Resampler()
    return [speech for group in groups for speech, _ in say_all(group, resampler)]


def _render_groups(root: str, groups: Sequence[Sequence[ClipPlan]]) -> list[dict[str, object]]:
    """Worker task: each group (one speaker's clips) said in one session, mixed and written under
    ``root``; returns each clip's measurements (word start and length, rate used, peak scale)."""
    bank = np.load(Path(root) / _BANK_NAME)
    resampler = Resampler()
    out: list[dict[str, object]] = []
    for group in groups:
        for plan, (speech, rate) in zip(
            group, say_all([(p.text, p.voice) for p in group], resampler), strict=True
        ):
            pcm, measured = render_clip(plan, speech, bank)
            soundfile.write(Path(root) / plan.path, pcm, SAMPLE_RATE, subtype="PCM_16")
            out.append({**measured, "rate": rate})
    return out


def write_wav(path: Path, samples: np.ndarray) -> None:
    """16 kHz mono 16-bit PCM."""
    soundfile.write(path, to_pcm16(samples), SAMPLE_RATE, subtype="PCM_16")


# --------------------------------------------------------------------------------------- generation
def _available(info: espeak.LibraryInfo) -> tuple[list[str], list[str]]:
    """The voices and variants of ``VOICES`` / ``VARIANTS`` that the installed library has."""
    voices = [v for v in VOICES if v in info.voices]
    if not voices:
        raise DataError(
            f"eSpeak NG {info.version}: none of the English voices {', '.join(VOICES)} is installed; "
            f"{espeak.REINSTALL_FIX}"
        )
    return voices, [v for v in VARIANTS if v in info.variants]


def _tasks(plans: Sequence[ClipPlan], size: int = _CHUNK) -> list[list[list[ClipPlan]]]:
    """``plans`` cut into speaker groups (consecutive clips of one speaker), packed in order into worker
    tasks of at least ``size`` clips."""
    tasks: list[list[list[ClipPlan]]] = [[]]
    for plan in plans:
        task = tasks[-1]
        if task and task[-1][0].speaker == plan.speaker:
            task[-1].append(plan)
            continue
        if sum(len(g) for g in task) >= size:
            tasks.append(task := [])
        task.append([plan])
    return tasks


def _noise_files(folder: Path, seed: int, words: Sequence[np.ndarray]) -> list[dict[str, object]]:
    """Write one minute of each noise kind into ``folder/_background_noise_``; returns their descriptions."""
    n = NOISE_FILE_SECONDS * SAMPLE_RATE
    out = []
    for kind in NOISES:
        rng = _rng(seed, f"noise-file-{kind}")
        noise = babble(words, n, rng) if kind == "babble" else colored_noise(kind, n, rng)
        name = f"{BACKGROUND_NOISE}/{kind}_noise.wav"
        write_wav(folder / name, noise * level_envelope(n, rng))
        out.append(
            {"path": name, "kind": kind, "seconds": NOISE_FILE_SECONDS, "level_dbfs": list(NOISE_LEVEL_DBFS)}
        )
    return out


def _render(
    folder: Path, seed: int, talk: list, tasks: list, workers: int, progress: bool
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Say the babble words, then render every clip task into ``folder`` while the noise files are
    written; returns each clip's measurements (in plan order) and the noise files' descriptions."""
    measured: list[list[dict[str, object]]] = [[] for _ in tasks]
    # spawn: fresh interpreters (safe beside torch threads); the cache's worker set-up leaves Ctrl-C to
    # this process and ends the workers with it. Every task is independent of the others and runs in a
    # worker with one torch thread, so the samples do not depend on how many workers there are.
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(os.getpid(),),
    )
    total = sum(len(g) for g in talk) + sum(len(g) for task in tasks for g in task)
    bar = tqdm(total=total, unit="clip", desc="synthesising", disable=not progress, leave=False)
    try:
        with _sigint_blocked():  # submit() spawns the workers
            spoken = [pool.submit(_speak_groups, talk[i : i + 2]) for i in range(0, len(talk), 2)]
        words: list[np.ndarray] = []
        for future in spoken:
            words += future.result()
            bar.update(len(words) - bar.n)
        in_bank = BABBLE_VOICES[0] * BABBLE_WORDS_EACH
        bank = babble(words[:in_bank], BABBLE_BANK_SECONDS * SAMPLE_RATE, _rng(seed, "bank"))
        np.save(folder / _BANK_NAME, bank)
        rendering = {pool.submit(_render_groups, str(folder), task): i for i, task in enumerate(tasks)}
        noise = _noise_files(folder, seed, words[in_bank:])  # while the workers render
        for future in as_completed(rendering):
            measured[rendering[future]] = future.result()
            bar.update(len(measured[rendering[future]]))
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        bar.close()
    pool.shutdown(wait=True)
    (folder / _BANK_NAME).unlink()
    return [m for task in measured for m in task], noise


def _write_set(folder: Path, wanted: dict, info: espeak.LibraryInfo, workers: int, progress: bool) -> dict:
    """Generate every file into ``folder`` with ``workers`` processes; returns the manifest (not written)."""
    seed, per_word = int(wanted["seed"]), int(wanted["clips_per_word"])  # type: ignore[call-overload]
    voices, variants = _available(info)
    speakers = draw_speakers(seed, per_word, voices, variants)
    plans = plan_clips(seed, per_word, speakers)
    for word in dict.fromkeys(p.word for p in plans):
        (folder / word).mkdir()
    (folder / BACKGROUND_NOISE).mkdir()
    measured, noise = _render(
        folder, seed, _babble_plan(seed, voices, variants), _tasks(plans), workers, progress
    )
    clips = [
        {
            **{k: getattr(p, k) for k in ("path", "word", "speaker")},
            **_voice_fields(replace(p.voice, rate=m["rate"])),  # the rate the word was said at
            **{k: getattr(p, k) for k in ("text", "gain_db", "noise", "snr_db")},
            **{k: m[k] for k in ("start", "samples", "scale")},
        }
        for p, m in zip(plans, measured, strict=True)
    ]
    return {
        "settings": wanted,
        "sample_rate": SAMPLE_RATE,
        "clip_samples": CLIP_SAMPLES,
        "keywords": list(KEYWORDS),
        "unknown_words": list(UNKNOWN_WORDS),
        "clips_per_word": dict(Counter(p.word for p in plans)),
        "voices": voices,
        "variants": variants,
        "speakers": [{"id": s.id, **_voice_fields(s.voice), "split": mini_split(s.id)} for s in speakers],
        "noise_files": noise,
        "clips": clips,
    }


def _voice_fields(voice: espeak.Voice) -> dict[str, object]:
    """A voice as manifest fields: ``voice`` (the language voice), ``variant``, ``rate``, ``pitch``, ``pitch_range``."""
    return {"voice": voice.name, **{k: v for k, v in asdict(voice).items() if k != "name"}}


def _existing(out: Path, wanted: dict, what: str) -> dict | None:
    """The manifest of a complete set with the ``wanted`` settings in ``out``; None when ``out`` is absent
    or an empty folder; anything else there is one DataError."""
    if not out.exists() and not out.is_symlink():
        return None
    if not out.is_dir():
        raise DataError(f"{what}: exists and is not a folder; pass a new folder")
    path = out / MANIFEST_NAME
    if not path.is_file():
        if any(out.iterdir()):
            raise DataError(
                f"{what}: not empty and not a synthetic set (no {MANIFEST_NAME}); pass a new or empty folder"
            )
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        have = manifest["settings"]
        if not isinstance(have, dict):
            raise TypeError("settings is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(
            f"{what}: {MANIFEST_NAME} cannot be read ({err}); delete the folder and generate it again"
        ) from None
    if have != wanted:
        diff = ", ".join(f"{k} {have.get(k)!r} (asked: {v!r})" for k, v in wanted.items() if have.get(k) != v)
        raise DataError(
            f"{what}: holds another synthetic set ({diff}); choose another folder or delete that one"
        )
    return manifest


def _result(out: Path, manifest: dict, reused: bool, seconds: float) -> SynthResult:
    return SynthResult(
        path=str(out),
        reused=reused,
        seconds=round(seconds, 3),
        settings=dict(manifest["settings"]),
        clips=dict(manifest["clips_per_word"]),
        speakers={s: sum(1 for sp in manifest["speakers"] if sp["split"] == s) for s in SPLITS},
        noise_files=[n["path"] for n in manifest["noise_files"]],
    )


def check_size(clips_per_word: int, seed: int, workers: int) -> None:
    """ConfigError for a size, seed or worker count ``generate`` cannot use."""
    for option, value, least in (
        ("--clips-per-word", clips_per_word, MIN_CLIPS_PER_WORD),
        ("--seed", seed, 0),
        ("--workers", workers, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            why = " (a speaker each for train, validation and test)" if option == "--clips-per-word" else ""
            raise ConfigError(f"{option} {value}: need a whole number of at least {least}{why}")


def generate(
    out: str | os.PathLike,
    *,
    clips_per_word: int = DEFAULT_CLIPS_PER_WORD,
    seed: int = DEFAULT_SEED,
    workers: int = 2,
    progress: bool = True,
    what: str | None = None,
    fix: str = "pass --out a folder you can write to",
) -> SynthResult:
    """Write the synthetic set of ``seed`` with ``clips_per_word`` clips per keyword into ``out``, atomically.

    Generated in a temporary folder beside ``out`` and renamed into place when complete. An existing set
    with the same settings (generator version, seed, size, eSpeak NG version) is reused, as is one a
    concurrent twin finished first; a different set there is one DataError. ``what`` / ``fix`` name the
    folder in messages (default: ``--out <out>``).
    """
    start = time.perf_counter()
    check_size(clips_per_word, seed, workers)
    out = Path(out).expanduser()
    what = what or f"--out {printable(out)}"
    info = espeak.library_info()
    wanted = set_settings(seed, clips_per_word, info.version)
    manifest = _existing(out, wanted, what)
    if manifest is not None:
        return _result(out, manifest, True, time.perf_counter() - start)
    parent = writable_folder(out.parent, f"{what} (in {printable(out.parent)})", fix)
    remove_stale_work_folders(parent, _BUILDING)
    tmp = make_work_folder(parent, _BUILDING, out.name)
    try:
        manifest = _write_set(tmp, wanted, info, workers, progress)
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        try:
            os.rename(tmp, out)  # replaces an empty folder; fails on a complete one
            reused = False
        except OSError as err:
            twin = _existing(out, wanted, what)  # a concurrent twin that finished first
            if twin is None:
                raise DataError(
                    f"{what}: cannot move the new set into place ({err.strerror or err}); {fix}"
                ) from None
            manifest, reused = twin, True
            log.info("synthetic set %s was completed by another process meanwhile", printable(out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _result(out, manifest, reused, time.perf_counter() - start)


# ------------------------------------------------------------------------------------------- layout
def _check_options(spec: DatasetSpec) -> None:
    if spec.version:
        raise ConfigError(
            "--version: does not apply to synthetic (its speech is generated, not a Speech Commands "
            "release); leave it out"
        )


def default_root(spec: DatasetSpec) -> Path:
    """The default set (``DEFAULT_SEED``, ``DEFAULT_CLIPS_PER_WORD``) in the cache folder, generated on
    first use: ``<cache>/synthetic/v<generator>-espeak<version>-seed<seed>-n<clips per word>``."""
    _check_options(spec)
    cache_root, what, fix = _cache_root(None)
    version = espeak.library_info().version
    name = f"v{GENERATOR_VERSION}-espeak{version}-seed{DEFAULT_SEED}-n{DEFAULT_CLIPS_PER_WORD}"
    out = cache_root / NAME / name
    if not (out / MANIFEST_NAME).is_file():
        log.info("generating the default synthetic set into %s (once)", printable(out))
    generate(
        out,
        clips_per_word=DEFAULT_CLIPS_PER_WORD,
        seed=DEFAULT_SEED,
        workers=DEFAULT_WORKERS,
        what=what,
        fix=fix,
    )
    return out


def missing_fix(root: Path) -> str:
    """How to get a synthetic set into ``root``."""
    return f"run kwsbench data synth --out {printable(root)}, or leave --data-dir out for the default set"


def build(spec: DatasetSpec, root: Path, protocol: str) -> DatasetPlan:
    """Read a synthetic set under ``root`` with the Speech Commands reader (12 classes, ``mini`` split)."""
    _check_options(spec)
    path = root / MANIFEST_NAME
    try:
        made = json.loads(path.read_text(encoding="utf-8"))["settings"]
    except FileNotFoundError:
        raise DataError(
            f"{printable(root)}: not a synthetic set (no {MANIFEST_NAME}); {missing_fix(root)}"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{printable(path)}: cannot be read ({err}); {missing_fix(root)}") from None
    plan = speech_commands.build(spec, root, "mini")
    # The Speech Commands reader notes the archive version it detected, which says nothing here.
    notes = [n for n in plan.notes if not n.startswith("version ")]
    notes.insert(
        0,
        f"eSpeak NG {made.get('espeak_ng')} speech, generator v{made.get('version')}, seed {made.get('seed')}, "
        f"{made.get('clips_per_word')} clips per keyword; a speaker is a voice/variant/pitch/rate",
    )
    return replace(plan, name=NAME, protocol=protocol, version=None, notes=notes)


# The registry entry (``datasets.DATASETS``).
LAYOUT = Layout(
    NAME,
    PROTOCOLS,
    build,
    missing_fix,
    protocol_hint="speakers are split by a hash of their id, as in Speech Commands' mini protocol",
    default=default_root,
)
