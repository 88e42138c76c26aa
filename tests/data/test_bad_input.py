"""Bad input a new user meets in the data commands ends in one line naming the input and the fix, or is
counted as skipped; nothing is clipped, zeroed or dropped without a word, and summary and prepare agree."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kwsbench.data.audio import load_clip
from kwsbench.data.cache import ClipCache, as_float32, prepare
from kwsbench.data.summary import format_summary, summarize
from kwsbench.errors import DataError
from kwsbench.specs import DatasetSpec

SPEAKERS = ("anna", "bob", "chen", "dana")


@pytest.fixture
def words(tmp_path: Path, write_wav) -> Path:
    """Two label folders of 16-bit clips, 4 speakers each, at distinct levels (no byte-identical files)."""
    root = tmp_path / "words"
    level = iter(np.linspace(0.05, 0.5, 16))
    for label in ("ja", "nein"):
        for speaker in SPEAKERS:
            write_wav(root / label / f"{speaker}_nohash_0.wav", np.full(8_000, next(level)))
    return root


def _spec(root: Path, **options) -> DatasetSpec:
    return DatasetSpec.create("folder", root, **options)


def _prepare(root: Path, cache: Path, **options):
    return prepare(_spec(root, **options), cache_dir=cache, workers=1, progress=False)


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def _unwritable(tmp_path: Path) -> Path:
    """An existing folder in which this user cannot create a file.

    Tests run as root, whom no permission bit stops; procfs refuses new files even to root (ENOENT).
    """
    if os.geteuid() == 0:
        return Path("/proc")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    return folder


# ----------------------------------------------------------------------------- folders kwsbench writes
@pytest.mark.parametrize("where", ["file", "under_file", "unwritable", "under_unwritable"])
def test_cache_dir_that_cannot_take_files(tmp_path: Path, words: Path, where: str) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    cache = {
        "file": blocker,
        "under_file": blocker / "cache",
        "unwritable": _unwritable(tmp_path),
        "under_unwritable": _unwritable(tmp_path) / "kwsbench-cache",
    }[where]
    with pytest.raises(DataError) as err:
        _prepare(words, cache)
    message = _one_line(err)
    assert (
        message.startswith(f"--cache-dir {cache}: ")
        and "pass --cache-dir a folder you can write to" in message
    )
    if where == "file":
        assert "is a file, not a folder" in message
    elif where == "under_file":
        assert f"lies under {blocker}, which is a file" in message
    else:
        assert "cannot write there" in message
    assert blocker.read_text() == "x"  # nothing written over the file in the way


def test_kwsbench_cache_variable_is_named(tmp_path: Path, words: Path, monkeypatch) -> None:
    blocker = tmp_path / "cachefile"
    blocker.write_text("x")
    monkeypatch.setenv("KWSBENCH_CACHE", str(blocker / "sub"))
    with pytest.raises(DataError) as err:
        prepare(_spec(words), workers=1, progress=False)
    message = _one_line(err)
    assert message.startswith(f"KWSBENCH_CACHE={blocker / 'sub'}: lies under {blocker}, which is a file")
    assert "set KWSBENCH_CACHE to a folder you can write to" in message


@pytest.mark.parametrize("where", ["file", "unwritable"])
def test_download_into_a_folder_that_cannot_take_files(tmp_path: Path, where: str) -> None:
    parent = tmp_path / "blocker" if where == "file" else _unwritable(tmp_path)
    if where == "file":
        parent.write_text("x")
    target = parent / "sc"
    spec = DatasetSpec.create("speech_commands", target)
    with pytest.raises(DataError) as err:
        prepare(spec, cache_dir=tmp_path / "cache", download="v0.02", progress=False)
    message = _one_line(err)
    assert message.startswith(f"--data-dir {target} (its parent {parent}): ")
    assert ("is a file, not a folder" if where == "file" else "cannot write there") in message
    assert "pass --download a --data-dir inside a folder you can write to" in message


def test_download_target_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "sc"
    target.write_text("x")
    with pytest.raises(DataError) as err:
        prepare(DatasetSpec.create("speech_commands", target), cache_dir=tmp_path / "c", download="v2")
    assert _one_line(err).startswith(f"--data-dir {target}: is a file, not a folder")


# ------------------------------------------------------------------------------ names that are not UTF-8
def _raw_file(folder: Path, name: bytes, data: bytes) -> Path:
    """Write ``data`` under a file name given as bytes (which need not be UTF-8)."""
    fd = os.open(os.fsencode(folder) + b"/" + name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return folder / os.fsdecode(name)


@pytest.fixture
def latin1(words: Path, tmp_path: Path, write_wav) -> Path:
    """``words`` plus a clip named ``caf\\xe9_nohash_0.wav``, a label folder ``gr\\xfc\\xdf`` and a text file
    named ``zed\\xe9_nohash_0.wav``: Latin-1 bytes, as an old archive or a Windows share may carry."""
    wav = write_wav(tmp_path / "src.wav", np.full(8_000, 0.7)).read_bytes()
    _raw_file(words / "ja", b"caf\xe9_nohash_0.wav", wav)
    os.mkdir(os.fsencode(words) + b"/gr\xfc\xdf")
    for i, speaker in enumerate((b"eve", b"fay")):
        other = write_wav(tmp_path / f"src{i}.wav", np.full(8_000, 0.8 + i / 20)).read_bytes()
        _raw_file(words / os.fsdecode(b"gr\xfc\xdf"), speaker + b"_nohash_0.wav", other)
    _raw_file(words / "nein", b"zed\xe9_nohash_0.wav", b"not audio\n")
    return words


def test_names_that_are_not_utf8_stop_with_a_readable_line(latin1: Path) -> None:
    with pytest.raises(DataError) as err:
        summarize(_spec(latin1))
    message = _one_line(err)
    assert message.startswith(f"{latin1}/nein/zed\\xe9_nohash_0.wav: not a WAV file")
    message.encode("utf-8")  # no lone surrogate left: it prints anywhere


def test_names_that_are_not_utf8_in_summary_and_prepare(latin1: Path, tmp_path: Path) -> None:
    summary = summarize(_spec(latin1, skip_bad=True))
    record = summary.to_dict()
    json.dumps(record, ensure_ascii=False).encode("utf-8")  # what --json prints
    format_summary(summary).encode("utf-8")
    assert record["classes"] == ["gr\\xfc\\xdf", "ja", "nein"]
    assert record["skipped"] == [
        {"path": f"{latin1}/nein/zed\\xe9_nohash_0.wav", "reason": "not a WAV file (RIFF header missing)"}
    ]
    assert record["total"] == 2 + 5 + 4  # the two clips of the Latin-1 folder, café among ja's clips

    result = _prepare(latin1, tmp_path / "cache", skip_bad=True)
    json.dumps(result.to_dict(), ensure_ascii=False).encode("utf-8")
    result.describe().encode("utf-8")
    assert [s["path"] for s in result.to_dict()["skipped"]] == [s["path"] for s in record["skipped"]]
    assert sum(result.clips.values()) == record["total"]
    cache = ClipCache.open(result.path)
    paths = [p for split in ("train", "validation", "test") for p in cache.paths(split)]
    cafe = [p for p in paths if "caf" in p]
    # The cache keeps the real name, so the clip can be opened again from it.
    assert len(cafe) == 1 and Path(cafe[0]).is_file()


def test_cli_json_prints_names_that_are_not_utf8(latin1: Path) -> None:
    command = [sys.executable, "-m", "kwsbench.cli", "data", "summary", "--dataset", "folder"]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    run = subprocess.run(
        [*command, "--data-dir", str(latin1), "--skip-bad", "--json"],
        capture_output=True,
        timeout=120,
        env=env,
    )
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    out = json.loads(run.stdout.decode("utf-8"))
    assert out["skipped"][0]["path"].endswith("zed\\xe9_nohash_0.wav")


# ------------------------------------------------------------ headers that pass, samples that do not
def _wav_with_format_tag(path: Path, source: Path, tag: int) -> Path:
    data = bytearray(source.read_bytes())
    data[20:22] = struct.pack("<H", tag)  # the fmt chunk's format tag (after RIFF/WAVE and 'fmt ' + size)
    path.write_bytes(bytes(data))
    return path


def _truncated_flac(path: Path, cut: int = 100) -> Path:
    rng = np.random.default_rng(3)
    sf.write(path, rng.uniform(-0.5, 0.5, 16_000), 16_000, format="FLAC")
    path.write_bytes(path.read_bytes()[:-cut])  # STREAMINFO still declares 16,000 frames
    return path


@pytest.fixture
def undecodable(words: Path) -> list[Path]:
    """A WAV whose format tag libsndfile does not know and a FLAC cut short, among the ja clips."""
    source = words / "ja" / "anna_nohash_0.wav"
    return [
        _wav_with_format_tag(words / "ja" / "eve_nohash_0.wav", source, 0x1234),
        _truncated_flac(words / "ja" / "fay_nohash_0.flac"),
    ]


def test_undecodable_files_stop_with_the_fix(words: Path, undecodable: list[Path], tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        summarize(_spec(words))
    message = _one_line(err)
    assert message.startswith(f"{undecodable[0]}: WAV format tag 0x1234 (unknown) is not decoded")
    assert message.endswith("convert it to 16-bit PCM WAV or FLAC, remove it, or pass --skip-bad")
    undecodable[0].unlink()
    with pytest.raises(DataError) as err:
        _prepare(words, tmp_path / "cache")
    assert _one_line(err).startswith(f"{undecodable[1]}: truncated or corrupt FLAC")


def test_undecodable_files_are_skipped_alike_by_summary_and_prepare(
    words: Path, undecodable: list[Path], tmp_path: Path
) -> None:
    summary = summarize(_spec(words, skip_bad=True))
    assert sorted(s["path"] for s in summary.skipped) == sorted(str(p) for p in undecodable)
    result = _prepare(words, tmp_path / "cache", skip_bad=True)
    assert result.skipped == summary.skipped  # the same files, the same reasons
    assert sum(result.clips.values()) == summary.total == 8


def test_decode_failure_found_only_by_the_build_is_skipped(words: Path, tmp_path: Path, monkeypatch) -> None:
    """A file that turns bad after indexing: the build lists it (with skip_bad) and keeps every other clip
    in its place; two workers and 3-clip chunks, so the dropped row is inside a chunk of another process."""
    from kwsbench.data import cache as cache_mod
    from kwsbench.data.cache import build_cache
    from kwsbench.data.datasets import load_dataset

    monkeypatch.setattr(cache_mod, "_CHUNK", 3)
    index = load_dataset(_spec(words, protocol="mini", fractions=(1.0, 0.0, 0.0)))
    victim = index.clips[4].path
    sf.write(victim, np.array([0.1, np.nan] * 4_000, np.float32), 16_000, subtype="FLOAT")
    with pytest.raises(DataError) as err:
        build_cache(index, tmp_path / "cache", workers=2, progress=False)
    assert _one_line(err).startswith(f"{victim}: 4000 NaN or infinite samples")
    assert list((tmp_path / "cache").iterdir()) == []

    cache = build_cache(index, tmp_path / "cache", workers=2, progress=False, skip_bad=True)
    assert [(s.path, s.reason) for s in cache.decode_skipped] == [
        (str(victim), "4000 NaN or infinite samples in a float WAV")
    ]
    waves, labels = cache.split("train")
    kept = [c for c in index.clips if c.path != victim]
    assert cache.paths("train") == [str(c.path) for c in kept] and len(labels) == 7
    np.testing.assert_array_equal(as_float32(np.asarray(waves)), np.stack([load_clip(c.path) for c in kept]))
    assert labels.tolist() == [index.classes.index(c.label) for c in kept]
    # A later run without --skip-bad must not take the cache that silently lacks the file.
    with pytest.raises(DataError, match="pass --skip-bad"):
        build_cache(index, tmp_path / "cache", workers=1, progress=False)
    assert build_cache(index, tmp_path / "cache", workers=1, progress=False, skip_bad=True).hit


# -------------------------------------------------------------------------- what the cache keeps
def test_float_louder_than_full_scale_is_kept(words: Path, tmp_path: Path) -> None:
    loud = words / "ja" / "eve_nohash_0.wav"
    samples = np.linspace(-2.0, 2.5, 16_000, dtype=np.float32)  # peaks past full scale both ways
    sf.write(loud, samples, 16_000, subtype="FLOAT")
    result = _prepare(words, tmp_path / "cache", protocol="mini", fractions=(1.0, 0.0, 0.0))
    cache = ClipCache.open(result.path)
    waves, _ = cache.split("train")
    assert waves.dtype == np.float32  # int16 would clip every sample past +-1
    row = cache.paths("train").index(str(loud))
    np.testing.assert_array_equal(waves[row], samples)
    # The 16-bit clips beside it are stored exactly too.
    other = cache.paths("train").index(str(words / "ja" / "anna_nohash_0.wav"))
    np.testing.assert_array_equal(waves[other], load_clip(words / "ja" / "anna_nohash_0.wav"))


def test_24_bit_source_is_not_quantised_to_16(words: Path, tmp_path: Path) -> None:
    deep = words / "nein" / "eve_nohash_0.wav"
    steps = np.arange(16_000) - 8_000  # whole 24-bit steps, most of them between two 16-bit steps
    sf.write(deep, (steps / 2**23).astype(np.float64), 16_000, subtype="PCM_24")
    result = _prepare(words, tmp_path / "cache", protocol="mini", fractions=(1.0, 0.0, 0.0))
    cache = ClipCache.open(result.path)
    waves, _ = cache.split("train")
    row = np.asarray(waves[cache.paths("train").index(str(deep))])
    assert waves.dtype == np.float32
    np.testing.assert_array_equal(row * 2**23, steps)  # float32 holds every 24-bit value exactly


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_samples_are_refused_or_skipped(words: Path, tmp_path: Path, bad: float) -> None:
    poisoned = words / "ja" / "eve_nohash_0.wav"
    samples = np.full(16_000, 0.25, np.float32)
    samples[[10, 500, 9_000]] = bad
    sf.write(poisoned, samples, 16_000, subtype="FLOAT")
    for call in (lambda: summarize(_spec(words)), lambda: _prepare(words, tmp_path / "cache")):
        with pytest.raises(DataError) as err:
            call()
        assert _one_line(err) == (
            f"{poisoned}: 3 NaN or infinite samples in a float WAV; remove it or pass --skip-bad"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy "invalid value" warning on the way either
        summary = summarize(_spec(words, skip_bad=True))
        result = _prepare(words, tmp_path / "cache", skip_bad=True)
    assert [s["path"] for s in summary.skipped] == [s["path"] for s in result.skipped] == [str(poisoned)]
    assert sum(result.clips.values()) == summary.total == 8


# ----------------------------------------------------------------- what the loaders would have dropped
def test_unread_formats_links_and_empty_folders(words: Path) -> None:
    (words / "ja" / "greta_nohash_0.mp3").write_bytes(b"ID3\x03\x00")
    (words / "nein" / "hans_nohash_0.ogg").write_bytes(b"OggS\x00")
    (words / "ja" / "ivan_nohash_0.wav").symlink_to(words / "ja" / "gone.wav")
    (words / "leer").mkdir()
    (words / "ja" / "README.txt").write_text("not audio, not reported\n")
    with pytest.raises(DataError) as err:
        summarize(_spec(words))
    assert _one_line(err) == (
        f"{words}/ja/greta_nohash_0.mp3: MP3 audio is not read (kwsbench reads WAV and FLAC); "
        "convert it to WAV, remove it, or pass --skip-bad"
    )
    summary = summarize(_spec(words, skip_bad=True))
    assert summary.skipped == [
        {
            "path": f"{words}/ja/greta_nohash_0.mp3",
            "reason": "MP3 audio is not read (kwsbench reads WAV and FLAC)",
        },
        {
            "path": f"{words}/ja/ivan_nohash_0.wav",
            "reason": f"dangling symbolic link (its target {words}/ja/gone.wav is missing)",
        },
        {"path": f"{words}/leer", "reason": "empty label folder (no WAV or FLAC files)"},
        {
            "path": f"{words}/nein/hans_nohash_0.ogg",
            "reason": "OGG audio is not read (kwsbench reads WAV and FLAC)",
        },
    ]
    assert summary.classes == ["ja", "nein"] and summary.total == 8  # "leer" is no class without clips
    assert "skipped: 4 files" in format_summary(summary)


def test_dangling_link_alone_names_its_fix(words: Path) -> None:
    (words / "nein" / "ivan_nohash_0.wav").symlink_to(words / "nowhere.wav")
    with pytest.raises(DataError) as err:
        summarize(_spec(words))
    assert _one_line(err).endswith("dangling symbolic link (its target " + f"{words}/nowhere.wav is missing); "
                                   "restore its target, remove it, or pass --skip-bad")  # fmt: skip


def test_empty_keyword_folder_is_refused_even_with_skip_bad(words: Path) -> None:
    (words / "leer").mkdir()
    with pytest.raises(DataError) as err:
        summarize(_spec(words, keywords="ja,leer", skip_bad=True))
    assert _one_line(err).startswith(f"--keywords leer: {words}/leer holds no WAV or FLAC files")


def test_unread_noise_file_in_speech_commands(tmp_path: Path, write_wav) -> None:
    root = tmp_path / "sc"
    for i, word in enumerate(("yes", "no", "bed")):
        write_wav(root / word / f"spk{i:05d}_nohash_0.wav", np.full(16_000, 0.1 * (i + 1)))
    write_wav(root / "_background_noise_" / "hum.wav", np.full(48_000, 0.01))
    (root / "_background_noise_" / "street.mp3").write_bytes(b"ID3\x03")
    spec = DatasetSpec.create("speech_commands", root, protocol="mini", keywords="yes,no")
    with pytest.raises(DataError, match=r"street\.mp3: MP3 audio is not read"):
        summarize(spec)
    summary = summarize(spec.replace(skip_bad=True))
    assert [s["path"] for s in summary.skipped] == [str(root / "_background_noise_" / "street.mp3")]
    assert summary.silence["noise_files"] == ["_background_noise_/hum.wav"]
