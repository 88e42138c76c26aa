"""The clip cache: content equals load_clip, a second build is a hit, and changes to files or settings miss."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kwsbench.data import cache as cache_mod
from kwsbench.data.audio import load_clip
from kwsbench.data.cache import INDEX_NAME, ClipCache, as_float32, build_cache, prepare
from kwsbench.data.records import Clip, DatasetIndex
from kwsbench.data.workdirs import make_work_folder
from kwsbench.errors import ConfigError, DataError
from kwsbench.specs import DatasetSpec

STEP = 1 / 32768  # one int16 step


@pytest.fixture()
def sample(shared_data: Path) -> Path:
    return shared_data / "speech_commands_v0.01_sample"


@pytest.fixture()
def synthetic(tmp_path: Path, write_wav) -> DatasetIndex:
    """Six clips over three splits (b0 at 8 kHz, resampled) and one noise file; classes a, b.

    Lengths differ (1/3 s to 7/3 s) so padding and cropping both happen.
    """
    rng = np.random.default_rng(1)
    names = {
        "a0": 16_000,
        "a1": 16_000,
        "b0": 8_000,
        "b1": 16_000,
        "a2": 16_000,
        "b2": 16_000,
        "noise": 16_000,
    }
    paths = [
        write_wav(tmp_path / "audio" / f"{name}.wav", rng.uniform(-0.9, 0.9, rate * (i + 1) // 3), rate)
        for i, (name, rate) in enumerate(names.items())
    ]
    splits = ["train", "train", "train", "validation", "test", "test"]
    clips = [Clip(p, p.stem[0], s) for p, s in zip(paths[:6], splits, strict=True)]
    return DatasetIndex("synthetic", tmp_path / "audio", "mini", ["a", "b"], clips, noise_files=[paths[6]])


def test_content_equals_load_clip(tmp_path: Path, sample: Path, monkeypatch) -> None:
    """Real 16-bit clips (one shorter than 1 s) and a silence crop at an offset of a noise file, decoded
    by 2 worker processes in chunks of 4 clips (results arrive out of order and must land in place)."""
    monkeypatch.setattr(cache_mod, "_CHUNK", 4)
    words = sorted(sample.glob("*/*_nohash_*.wav"))
    picked = [p for p in words if p.parent.name in ("cat", "happy", "yes", "no")]
    noise = sample / "_background_noise_" / "running_tap.wav"
    clips = [Clip(p, "word", "train") for p in picked] + [
        Clip(noise, "_silence_", "train", offset=48_000, num_samples=16_000)
    ]
    index = DatasetIndex("sample", sample, "mini", ["word", "_silence_"], clips, noise_files=[noise])
    cache = build_cache(index, tmp_path / "cache", workers=2, progress=False)
    waves, labels = cache.split("train")
    assert waves.shape == (len(clips), 16_000) and waves.dtype == np.int16
    assert labels.tolist() == [0] * len(picked) + [1]
    expected = np.stack([load_clip(c.path, offset=c.offset, num_samples=c.num_samples) for c in clips])
    # The sources are 16-bit PCM, so int16 storage is exact, not merely within rounding.
    np.testing.assert_array_equal(as_float32(np.asarray(waves)), expected)
    assert cache.paths("train") == [str(c.path) for c in clips]
    (bank,) = cache.noise()
    np.testing.assert_array_equal(bank[48_000:64_000], expected[-1])
    assert bank.shape == (sf.info(noise).frames,)
    assert cache.counts() == {"train": len(clips), "validation": 0, "test": 0}


def test_resampled_sources_are_stored_as_float32(tmp_path: Path, synthetic: DatasetIndex) -> None:
    cache = build_cache(synthetic, tmp_path / "cache", workers=1, progress=False)
    waves, labels = cache.split("train")
    assert labels.tolist() == [0, 0, 1] and waves.dtype == np.float32
    want = load_clip(synthetic.clips[2].path)  # b0.wav: 8 kHz, resampled to 16 kHz
    assert np.abs(want).max() > 1  # the resampler overshoots full scale: int16 would have clipped this
    np.testing.assert_array_equal(waves[2], want)


def test_int16_storage_when_nothing_is_resampled(tmp_path: Path, synthetic: DatasetIndex) -> None:
    synthetic.clips = [c for c in synthetic.clips if c.path.stem != "b0"]
    cache = build_cache(synthetic, tmp_path / "cache", workers=1, progress=False)
    waves, _ = cache.split("train")
    assert waves.dtype == np.int16
    want = load_clip(synthetic.clips[1].path)
    assert np.abs(as_float32(np.asarray(waves[1])) - want).max() <= STEP / 2


def test_second_build_is_a_hit_without_decoding(tmp_path: Path, synthetic: DatasetIndex, monkeypatch) -> None:
    first = build_cache(synthetic, tmp_path / "cache", workers=1, progress=False)
    assert not first.hit and first.build_seconds > 0
    written = (first.path / INDEX_NAME).stat().st_mtime_ns

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cache hit must not decode")

    monkeypatch.setattr(cache_mod, "_decode_chunk", no_decoding)
    second = build_cache(synthetic, tmp_path / "cache", workers=1, progress=False)
    assert second.hit and second.key == first.key and second.path == first.path
    assert (second.path / INDEX_NAME).stat().st_mtime_ns == written


def test_changed_file_invalidates(tmp_path: Path, synthetic: DatasetIndex) -> None:
    first = build_cache(synthetic, tmp_path / "cache", workers=1, progress=False)
    target = synthetic.clips[3].path  # the validation clip
    sf.write(target, np.full(16_000, 0.25, np.float32), 16_000, subtype="PCM_16")
    second = build_cache(synthetic, tmp_path / "cache", workers=1, progress=False)
    assert not second.hit and second.key != first.key
    np.testing.assert_array_equal(
        as_float32(np.asarray(second.split("validation")[0][0])), np.full(16_000, 0.25)
    )
    assert not first.path.exists()  # the stale cache of the same dataset was removed


def test_relative_and_absolute_paths_share_a_cache(
    tmp_path: Path, synthetic: DatasetIndex, monkeypatch
) -> None:
    first = build_cache(synthetic, tmp_path / "cache", workers=1, progress=False)
    monkeypatch.chdir(tmp_path)
    relative = dataclasses.replace(
        synthetic,
        root=Path("audio"),
        clips=[dataclasses.replace(c, path=c.path.relative_to(tmp_path)) for c in synthetic.clips],
        noise_files=[p.relative_to(tmp_path) for p in synthetic.noise_files],
    )
    again = build_cache(relative, tmp_path / "cache", workers=1, progress=False)
    assert again.hit and again.key == first.key


def test_touched_file_invalidates(tmp_path: Path, synthetic: DatasetIndex) -> None:
    first = build_cache(synthetic, tmp_path / "cache", workers=1, progress=False)
    st = os.stat(synthetic.noise_files[0])
    os.utime(synthetic.noise_files[0], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert build_cache(synthetic, tmp_path / "cache", workers=1, progress=False).key != first.key


@pytest.mark.parametrize(
    "change",
    [
        {"protocol": "12"},
        {"version": "v2"},
        {"classes": ["b", "a"]},
    ],
)
def test_changed_settings_invalidate(tmp_path: Path, synthetic: DatasetIndex, change: dict) -> None:
    first = build_cache(synthetic, tmp_path / "cache", workers=1, progress=False)
    for name, value in change.items():
        setattr(synthetic, name, value)
    second = build_cache(synthetic, tmp_path / "cache", workers=1, progress=False)
    assert not second.hit and second.key != first.key and first.path.exists()


def test_clip_length_is_part_of_the_key(tmp_path: Path, synthetic: DatasetIndex) -> None:
    short = build_cache(synthetic, tmp_path / "cache", workers=1, progress=False, clip_samples=8_000)
    assert short.split("train")[0].shape == (3, 8_000)
    assert build_cache(synthetic, tmp_path / "cache", workers=1, progress=False).key != short.key


def test_failed_build_leaves_no_cache(tmp_path: Path, synthetic: DatasetIndex) -> None:
    synthetic.clips[4].path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(DataError, match="a2.wav"):
        build_cache(synthetic, tmp_path / "cache", workers=2, progress=False)
    assert list((tmp_path / "cache").iterdir()) == []  # no folder, no half-written temporary


def test_unknown_split_is_an_error(tmp_path: Path, synthetic: DatasetIndex) -> None:
    cache = build_cache(synthetic, tmp_path / "cache", workers=1, progress=False)
    with pytest.raises(DataError, match="valid"):
        cache.split("valid")


def test_prepare_v001_sample(tmp_path: Path, sample: Path) -> None:
    spec = DatasetSpec.create("speech_commands", sample, protocol="12")
    first = prepare(spec, cache_dir=tmp_path / "cache", workers=1, progress=False)
    again = prepare(spec, cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert not first.hit and again.hit and again.key == first.key
    assert len(first.classes) == 12 and first.clips == {"train": 12, "validation": 12, "test": 12}
    assert first.noise_files == 6 and len(ClipCache.open(first.path).noise()) == 6
    record = json.loads(json.dumps(again.to_dict()))
    assert record["hit"] is True and record["path"] == first.path
    assert "cache hit" in again.describe() and "cache built" in first.describe()


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize(
    ("damage", "what"),
    [
        (lambda c: _truncate(c / INDEX_NAME), "index.json cannot be read"),
        (lambda c: (c / INDEX_NAME).write_text('{"key": "x"}\n'), "index.json lacks"),
        (lambda c: (c / "train.npy").unlink(), "train.npy is missing"),
        (lambda c: _truncate(c / "train.npy"), "train.npy cannot be read"),
        (lambda c: _truncate(c / "test.npy", keep=0.01), "test.npy cannot be read"),  # the header cut
        (lambda c: _truncate(c / cache_mod.NOISE_NAME), "noise.npy cannot be read"),
    ],
    ids=["index_cut", "index_fields", "array_missing", "array_cut", "header_cut", "noise_cut"],
)
def test_damaged_cache_is_reported_and_rebuilt(
    tmp_path: Path, synthetic: DatasetIndex, caplog, damage, what: str
) -> None:
    first = build_cache(synthetic, tmp_path / "cache", workers=1, progress=False)
    # Copies: the damage below truncates the files these memory maps read.
    expected = {s: as_float32(np.array(first.split(s)[0])) for s in ("train", "validation", "test")}
    damage(first.path)
    with pytest.raises(DataError) as err:  # opened directly: one line, what is wrong and the fix
        ClipCache.open(first.path)
    assert what in str(err.value) and "delete the folder" in str(err.value) and "\n" not in str(err.value)

    again = build_cache(synthetic, tmp_path / "cache", workers=1, progress=False)
    assert not again.hit and again.path == first.path and again.key == first.key
    assert f"{first.path}: damaged cache ({what}" in caplog.text and "rebuilding" in caplog.text
    for split, waves in expected.items():
        np.testing.assert_array_equal(as_float32(np.asarray(again.split(split)[0])), waves)
    assert len(again.noise()) == 1
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [first.path.name]
    assert build_cache(synthetic, tmp_path / "cache", workers=1, progress=False).hit


def test_opening_a_folder_that_is_no_cache(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a clip cache .no index.json.; run kwsbench data prepare"):
        ClipCache.open(tmp_path)


def test_workers_must_be_at_least_one(tmp_path: Path, synthetic: DatasetIndex) -> None:
    with pytest.raises(ConfigError, match="--workers 0"):
        build_cache(synthetic, tmp_path / "cache", workers=0, progress=False)


def test_leftover_of_a_killed_build_is_removed(tmp_path: Path, synthetic: DatasetIndex) -> None:
    """A build killed outright leaves its temporary folder; the next build removes it once its process is
    gone, and leaves the folder of a build whose process still runs."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    cache_root = tmp_path / "cache"
    cache_root.mkdir()

    def owned_by(pid: int, label: str) -> Path:
        made = make_work_folder(cache_root, ".building-", label)  # named after this process
        return made.rename(cache_root / made.name.replace(f"-{os.getpid()}@", f"-{pid}@", 1))

    orphan = owned_by(int(dead.stdout), "synthetic-mini-0123")
    (orphan / "train.npy").write_bytes(b"\x93NUMPY")
    live = owned_by(os.getppid(), "synthetic-mini-4567")  # the process that started pytest still runs
    build_cache(synthetic, cache_root, workers=1, progress=False)
    left = sorted(p.name for p in cache_root.iterdir() if p.name.startswith(".building-"))
    assert left == [live.name]
