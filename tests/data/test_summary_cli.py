"""`kwsbench data summary`: JSON shape and numbers on the real folders, one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kwsbench.cli import main
from kwsbench.data.records import SPLITS
from kwsbench.data.summary import format_summary, summarize
from kwsbench.specs import DatasetSpec


def _summary_json(capsys, *args: str) -> dict:
    assert main(["data", "summary", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_test_set_json(capsys, shared_data):
    out = _summary_json(
        capsys,
        "--dataset",
        "speech_commands_test_set",
        "--data-dir",
        str(shared_data / "speech_commands_test_set_v0.02"),
    )
    assert out["total"] == 3_965 and len(out["classes"]) == 12
    assert set(out["splits"]) == set(SPLITS)
    assert all(set(counts) == set(out["classes"]) for counts in out["splits"].values())
    assert sum(out["splits"]["test"].values()) == 3_965
    assert (out["duplicates"], out["duplicate_groups"], out["skipped"]) == (81, 79, [])
    assert out["speakers"]["test"] == 195


def test_test_set_mini_json_shares_no_speaker(capsys, shared_data):
    out = _summary_json(
        capsys,
        *("--dataset", "speech_commands_test_set", "--protocol", "mini"),
        *("--data-dir", str(shared_data / "speech_commands_test_set_v0.02")),
    )
    assert all(out["speakers"][s] > 0 for s in SPLITS)
    assert sum(out["speakers"].values()) == 195  # a speaker in two splits would be counted twice
    assert sum(sum(c.values()) for c in out["splits"].values()) == 3_965


def test_speech_commands_sample_json(capsys, shared_data):
    out = _summary_json(
        capsys,
        "--dataset",
        "speech_commands",
        "--data-dir",
        str(shared_data / "speech_commands_v0.01_sample"),
    )
    assert out["word_clips"] == {"train": 36, "validation": 29, "test": 25}
    assert (out["protocol"], out["version"], len(out["classes"])) == ("12", "v1", 12)
    assert len(out["silence"]["noise_files"]) == 6 and out["silence"]["per_split"] == {s: 1 for s in SPLITS}


def test_text_summary_is_a_table(shared_data):
    spec = DatasetSpec.create("speech_commands", shared_data / "speech_commands_v0.01_sample")
    text = format_summary(summarize(spec))
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}
    assert rows["word"] == ["clips", "36", "29", "25"]
    assert rows["_silence_"] == ["1", "1", "1", "3"] and rows["total"] == ["12", "12", "12", "36"]
    assert "duplicates: 0 redundant copies in 0 groups" in text


def _cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "kwsbench.cli", "data", "summary", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def broken_folder(tmp_path, write_wav, bad_file):
    write_wav(tmp_path / "data" / "ja" / "anna_nohash_0.wav", [0.1] * 1_600)
    bad_file("text", tmp_path / "data" / "ja" / "x.wav")
    return tmp_path / "data"


def test_broken_folder_exits_2_with_one_line(broken_folder):
    result = _cli("--dataset", "folder", "--data-dir", str(broken_folder))
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and str(broken_folder / "ja" / "x.wav") in lines[0] and "--skip-bad" in lines[0]


def test_skip_bad_counts_the_file(broken_folder, capsys):
    out = _summary_json(capsys, "--dataset", "folder", "--data-dir", str(broken_folder), "--skip-bad")
    assert out["skipped"] == [
        {"path": str(broken_folder / "ja" / "x.wav"), "reason": "not a WAV file (RIFF header missing)"}
    ]
    assert out["total"] == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--dataset", "nope", "--data-dir", "."), "nope"),
        (("--dataset", "speech_commands", "--data-dir", "/no/such/dir"), "speech_commands_v0.02.tar.gz"),
    ],
)
def test_bad_arguments_exit_2(capsys, args, needle):
    assert main(["data", "summary", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and needle in err
