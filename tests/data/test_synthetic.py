"""The synthetic keyword set: real eSpeak NG speech where the manifest says, at the level and SNR it says,
in 1 s 16 kHz clips; the official 12 classes with speaker-disjoint splits; byte-identical for a seed;
generated once into the cache; `data synth` and its errors; and a BC-ResNet that learns from it."""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile

from kwsbench.cli import main
from kwsbench.data import synthetic
from kwsbench.data.datasets import load_dataset
from kwsbench.data.espeak import Voice
from kwsbench.data.records import CLIP_SAMPLES, SAMPLE_RATE, SILENCE, SPLITS, UNKNOWN
from kwsbench.data.splits import BACKGROUND_NOISE
from kwsbench.errors import ConfigError, DataError
from kwsbench.runner.config import Recipe, TrialConfig
from kwsbench.runner.loop import train_trial
from kwsbench.specs import DatasetSpec

CLIPS_PER_WORD = 40  # 32 train, 4 validation, 4 test speakers: enough to learn, quick to make
SEED = 7


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "set"
    result = synthetic.generate(out, clips_per_word=CLIPS_PER_WORD, seed=SEED, progress=False)
    assert not result.reused and Path(result.path) == out
    return out


@pytest.fixture(scope="module")
def manifest(synth_set: Path) -> dict:
    return json.loads((synth_set / synthetic.MANIFEST_NAME).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def resampler() -> synthetic.Resampler:
    return synthetic.Resampler()


def _read(path: Path) -> np.ndarray:
    samples, rate = soundfile.read(path, dtype="float32")
    assert rate == SAMPLE_RATE
    return samples


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


def test_files_are_one_second_16khz_mono_pcm16(synth_set: Path, manifest: dict):
    wavs = sorted(p for p in synth_set.rglob("*.wav") if p.parent.name != BACKGROUND_NOISE)
    assert len(wavs) == len(manifest["clips"]) == 10 * CLIPS_PER_WORD + int(1.5 * CLIPS_PER_WORD)
    for path in wavs:
        info = soundfile.info(path)
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (
            SAMPLE_RATE,
            1,
            CLIP_SAMPLES,
            "PCM_16",
        )
    noise = sorted((synth_set / BACKGROUND_NOISE).glob("*.wav"))
    assert [p.name for p in noise] == sorted(f"{k}_noise.wav" for k in synthetic.NOISES)
    assert all(soundfile.info(p).frames == synthetic.NOISE_FILE_SECONDS * SAMPLE_RATE for p in noise)
    assert not list(synth_set.glob(".*"))  # the babble bank shared with the workers is gone


def _voice(entry: dict) -> Voice:
    return Voice(entry["voice"], entry["variant"], entry["rate"], entry["pitch"], entry["pitch_range"])


def test_each_clip_holds_its_word_where_and_as_loud_as_the_manifest_says(synth_set, manifest, resampler):
    """Re-speak some speakers (a speaker's words are said in one session, in manifest order: the speech is
    deterministic) and regress each of their clips on its clean word."""
    for speaker in manifest["speakers"][::6]:
        clips = [c for c in manifest["clips"] if c["speaker"] == speaker["id"]]
        assert [c["word"] for c in clips[:10]] == list(synthetic.KEYWORDS)
        spoken = synthetic.say_all([(c["text"], _voice(speaker)) for c in clips], resampler)
        for clip, (speech, rate) in zip(clips, spoken, strict=True):
            samples = _read(synth_set / clip["path"])
            start, stop = clip["start"], clip["start"] + clip["samples"]
            assert (len(speech), rate) == (clip["samples"], clip["rate"])
            assert clip["text"].rstrip("?!") == clip["word"] == clip["path"].split("/")[0]
            # Inside the second, with the margin kept free at both ends.
            assert synthetic.EDGE_SAMPLES <= start and stop <= CLIP_SAMPLES - synthetic.EDGE_SAMPLES
            gain = np.dot(samples[start:stop], speech) / np.dot(speech, speech)
            level = 10 ** ((synthetic.SPEECH_DBFS + clip["gain_db"]) / 20) / np.sqrt(np.mean(speech**2))
            assert gain == pytest.approx(clip["scale"] * level, rel=_tolerance(clip)), clip["path"]


def _tolerance(clip: dict) -> float:
    """Relative error of the regression gain: the noise is independent of the word, so the error's sd is
    the noise/speech amplitude ratio 10^(-SNR/20) over sqrt(n_eff), n_eff the noise's independent samples
    under the word; 4 sd."""
    ratio = 10 ** (-clip["snr_db"] / 20)
    if clip["noise"] == "white":  # every sample independent: n_eff = the word's samples, exactly
        return 4 * ratio / np.sqrt(clip["samples"])
    # Coloured noise and babble put their power in few components: brown noise's lies below ~40 Hz, so a
    # word of >= 0.18 s meets >= 2 * 40 * 0.18 = 14 of them; the same bound serves pink and babble.
    return 4 * ratio / np.sqrt(14)


def test_speech_stands_above_the_noise_floor(synth_set: Path, manifest: dict):
    """RMS inside the word against RMS of the noise-only rest of the clip, at the manifest's SNR."""
    excess = []
    for clip in manifest["clips"]:
        samples = _read(synth_set / clip["path"])
        start, stop = clip["start"], clip["start"] + clip["samples"]
        inside = np.mean(samples[start:stop] ** 2)
        outside = np.mean(np.r_[samples[:start], samples[stop:]] ** 2)
        expected = 1 + 10 ** (clip["snr_db"] / 10)  # speech + noise over noise
        excess.append(10 * np.log10(inside / outside / expected))
        # Never below the noise: the lowest SNR (10 dB) puts the word 10.4 dB above it, and no stretch of
        # noise is 10.4 dB louder than the rest of its second (babble's talkers overlap; the others are
        # stationary or nearly so).
        assert inside > outside, clip["path"]
    # On the whole the measured ratio is the one asked for: the median within 1 dB.
    assert abs(float(np.median(excess))) < 1.0


def test_speakers_and_words_are_distinct(synth_set: Path, manifest: dict, resampler):
    index = load_dataset(DatasetSpec.create("synthetic", synth_set))
    assert index.duplicate_groups == []  # no two files alike
    speakers = {c["speaker"] for c in manifest["clips"]}
    assert len(speakers) == CLIPS_PER_WORD
    assert (
        len({(s["voice"], s["variant"], s["pitch"], s["rate"]) for s in manifest["speakers"]})
        == CLIPS_PER_WORD
    )
    assert (
        len({s["voice"] for s in manifest["speakers"]}) >= 4
        and len({s["variant"] for s in manifest["speakers"]}) >= 10
    )
    # Clean speech: two speakers saying "yes" and one speaker saying "yes" and "no" differ in shape, not
    # only in level: the peak of the normalised cross-correlation stays far from 1.
    by_id = {s["id"]: s for s in manifest["speakers"]}
    one, two = (by_id[i] for i in sorted(by_id)[:2])

    def similarity(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(np.correlate(a, b, "full")).max() / np.sqrt(np.dot(a, a) * np.dot(b, b)))

    yes_one, no_one = (
        speech for speech, _ in synthetic.say_all([("yes", _voice(one)), ("no", _voice(one))], resampler)
    )
    yes_two = synthetic.say_all([("yes", _voice(two))], resampler)[0][0]
    assert similarity(yes_one, yes_one) == pytest.approx(1.0, abs=1e-5)
    assert similarity(yes_one, yes_two) < 0.9 and similarity(yes_one, no_one) < 0.9


def test_the_official_12_classes_with_speaker_disjoint_splits(synth_set: Path, shared_data: Path):
    index = load_dataset(DatasetSpec.create("synthetic", synth_set))
    official = load_dataset(
        DatasetSpec.create("speech_commands_test_set", shared_data / "speech_commands_test_set_v0.02")
    )
    assert index.classes == official.classes == [*synthetic.KEYWORDS, UNKNOWN, SILENCE]
    assert index.name == "synthetic" and index.protocol == "mini" and index.version is None
    counts = Counter((c.split, c.label) for c in index.clips)
    quotas = synthetic.split_quotas(CLIPS_PER_WORD)
    for split in SPLITS:
        speakers = {c.speaker for c in index.clips if c.split == split and c.speaker}
        assert len(speakers) == quotas[split]
        for other in SPLITS:
            if other != split:
                assert not speakers & {c.speaker for c in index.clips if c.split == other}
        # Each speaker says each keyword once; `_unknown_` and `_silence_` are balanced to that size.
        assert all(counts[split, k] == quotas[split] for k in synthetic.KEYWORDS)
        assert counts[split, UNKNOWN] == counts[split, SILENCE] == quotas[split]
    for clip in index.clips:
        if clip.label == SILENCE:
            assert clip.path.parent.name == BACKGROUND_NOISE and clip.num_samples == CLIP_SAMPLES
        else:
            assert clip.word == clip.path.parent.name
            assert clip.label == (clip.word if clip.word in synthetic.KEYWORDS else UNKNOWN)
            assert clip.word in synthetic.KEYWORDS + synthetic.UNKNOWN_WORDS
    assert any("eSpeak NG" in n for n in index.notes) and not any(
        n.startswith("version ") for n in index.notes
    )
    # The resolved spec (mini; no version) loads the same clips.
    assert index.spec == DatasetSpec.create("synthetic", synth_set, protocol="mini")
    assert load_dataset(index.spec).clips == index.clips


@pytest.fixture(scope="module")
def default_set(tmp_path_factory) -> tuple[Path, list]:
    """The default set (made small) loaded by two threads at once with an empty cache: (cache, indexes)."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KWSBENCH_CACHE", str(cache))
        patch.setattr(synthetic, "DEFAULT_CLIPS_PER_WORD", 3)  # the real default takes ~30 s
        patch.setattr(synthetic, "DEFAULT_WORKERS", 1)
        results, errors = [], []

        def load() -> None:
            try:
                results.append(load_dataset(DatasetSpec.create("synthetic")))
            except Exception as err:  # noqa: BLE001 - reported by the assertion below
                errors.append(err)

        twins = [threading.Thread(target=load) for _ in range(2)]
        for t in twins:
            t.start()
        for t in twins:
            t.join()
        assert not errors, errors
        # Loaded again: found, not made again.
        root = results[0].root
        stamp = (root / synthetic.MANIFEST_NAME).stat().st_mtime_ns
        results.append(load_dataset(DatasetSpec.create("synthetic")))
        assert (root / synthetic.MANIFEST_NAME).stat().st_mtime_ns == stamp
    return cache, results


def test_the_default_set_is_made_once_in_the_cache_even_by_twins(default_set):
    cache, indexes = default_set
    spec = DatasetSpec.create("synthetic")
    assert spec.data_dir is None and spec.to_dict()["data_dir"] is None
    assert DatasetSpec.from_dict({"dataset": "synthetic"}) == spec
    version = synthetic.espeak.library_info().version
    root = cache / "synthetic" / f"v{synthetic.GENERATOR_VERSION}-espeak{version}-seed0-n3"
    assert [index.root for index in indexes] == [root] * 3
    assert sorted(p.name for p in root.parent.iterdir()) == [root.name]  # no temporary folder left
    assert all(index.spec.data_dir is None for index in indexes)  # "the default set", not a cache path
    assert [c.path for c in indexes[0].clips] == [c.path for c in indexes[1].clips]


def test_same_seed_same_bytes_whatever_the_workers(default_set, tmp_path: Path):
    made_by_twins = default_set[1][0].root  # by one worker process
    again = synthetic.generate(tmp_path / "again", clips_per_word=3, seed=0, workers=2, progress=False)

    def digests(root: Path) -> dict[str, str]:
        return {
            p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    first = digests(made_by_twins)
    assert first == digests(Path(again.path)) and len(first) == 10 * 3 + 5 + 4 + 1  # clips, noise, manifest
    # Another seed: other speakers altogether.
    voices, variants = synthetic._available(synthetic.espeak.library_info())
    ids = {s.id for s in synthetic.draw_speakers(0, 3, voices, variants)}
    assert not ids & {s.id for s in synthetic.draw_speakers(1, 3, voices, variants)}


def test_data_synth_cli_reuses_the_same_set_and_refuses_another(synth_set: Path, capsys, tmp_path: Path):
    argv = [
        "data",
        "synth",
        "--out",
        str(synth_set),
        "--clips-per-word",
        str(CLIPS_PER_WORD),
        "--seed",
        str(SEED),
    ]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reused"] is True and out["settings"]["seed"] == SEED and out["clips"]["yes"] == CLIPS_PER_WORD
    assert out["speakers"] == synthetic.split_quotas(CLIPS_PER_WORD)
    err = _one_line_error(capsys, [*argv[:-1], str(SEED + 1)])
    assert "holds another synthetic set" in err and f"seed {SEED} (asked: {SEED + 1})" in err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    err = _one_line_error(capsys, ["data", "synth", "--out", str(blocker / "set")])
    assert f"(in {blocker}): is a file, not a folder" in err
    (tmp_path / "other" / "stuff").mkdir(parents=True)
    assert "not a synthetic set" in _one_line_error(
        capsys, ["data", "synth", "--out", str(tmp_path / "other")]
    )
    err = _one_line_error(capsys, ["data", "synth", "--out", str(tmp_path / "s"), "--clips-per-word", "2"])
    assert "--clips-per-word 2: need a whole number of at least 3" in err
    assert not (tmp_path / "s").exists()


def test_options_that_do_not_apply_and_missing_data(capsys, synth_set: Path, tmp_path: Path, monkeypatch):
    err = _one_line_error(
        capsys, ["data", "summary", "--dataset", "synthetic", "--data-dir", str(synth_set), "--version", "v2"]
    )
    assert err.endswith(
        "--version: does not apply to synthetic (its speech is generated, not a Speech Commands release); leave it out"
    )
    with pytest.raises(DataError, match="not a synthetic set .*kwsbench data synth --out"):
        load_dataset(DatasetSpec.create("synthetic", tmp_path))
    # Layouts that cannot make their data still need a folder.
    with pytest.raises(ConfigError, match="data_dir: required for dataset speech_commands"):
        load_dataset(DatasetSpec.create("speech_commands"))
    assert "data_dir: required" in _one_line_error(capsys, ["data", "summary", "--dataset", "fsdd"])
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # as if not installed
    assert "pip install espeakng-loader" in _one_line_error(
        capsys, ["data", "synth", "--out", str(tmp_path / "x")]
    )


@pytest.mark.slow
def test_bc_resnet_learns_the_synthetic_keywords(synth_set: Path, tmp_path: Path):
    # One thread: on a shared 2-core machine a second one slows training several-fold.
    recipe = Recipe(epochs=15, batch_size=16, warmup_epochs=1)
    spec = DatasetSpec.create("synthetic", synth_set)
    config = TrialConfig("synthetic-test", "bcresnet_1", {}, recipe, spec, seed=0)
    out = train_trial(config, tmp_path / "run", threads=1, cache_dir=tmp_path / "cache", progress=False)
    assert out.metrics["labels"] == [*synthetic.KEYWORDS, UNKNOWN, SILENCE]
    test_clips = out.metrics["clips"]["test"]
    assert test_clips == 12 * synthetic.split_quotas(CLIPS_PER_WORD)["test"]  # 48
    # Chance is 1/12: the number right out of 48 then has mean 4 and sd 1.9; 40 % (19.2 right) is 8 sd
    # above it, so a model that learned nothing cannot get there (this one gets about 70 %).
    assert out.metrics["final"]["test_accuracy"] > 0.4
