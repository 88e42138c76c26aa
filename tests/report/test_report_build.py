"""The report folder: README sections, failed trials, plots, determinism, refreshing an old report, and
building without torch."""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from report_records import fixture_trials, trial, write_jsonl

from kwsbench.errors import ConfigError
from kwsbench.report import build_report
from kwsbench.report.build import MARKER

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunks(data: bytes) -> list[bytes]:
    """The chunk types of a PNG file, in order."""
    assert data[:8] == PNG_SIGNATURE
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        chunks.append(data[at + 4 : at + 8])
        at += 12 + length
    return chunks


def test_readme_has_every_section_the_claims_and_the_failed_trial(built_report):
    _, out, report = built_report
    text = (out / "README.md").read_text(encoding="utf-8")
    assert text.startswith(MARKER + "\n# kwsbench report: fixture\n")
    for heading in ("## Contexts", "## Models", "## Paper claims", "## Accuracy against cost", "## Latency",
                    "## Ablations", "## Provenance", "### Failed trials", "## Files"):  # fmt: skip
        assert f"\n{heading}\n" in text
    # The failed trial: its variant, seed and error folded onto one line.
    assert (
        "| `bcresnet_1_5--9` | fixture | bcresnet_1_5 | 9 | RuntimeError: out of memory while training |"
        in text
    )
    assert "- Trials: 25 (24 finished, 1 failed)" in text
    assert "| SubSpectral Norm beats plain BatchNorm" in text and "**supported**" in text
    assert "![accuracy against MACs](accuracy_vs_macs.png)" in text
    assert "![use_subspectral_norm](ablation_use_subspectral_norm.png)" in text
    assert "Git commits: `0123456789ab` (25 trials)" in text
    assert report.trials == 24 and report.failed == 1
    assert report.verdicts == {"supported": 16, "contradicted": 2, "undecided": 2, "not comparable": 8}
    # Every file the README links is in the folder, and every file in it is linked.
    written = sorted(p.name for p in out.iterdir())
    assert written == report.files
    assert all(f"[`{name}`]({name})" in text for name in written if name != "README.md")


def test_plots_are_written_non_empty_and_without_a_software_chunk(built_report):
    _, out, report = built_report
    pngs = [name for name in report.files if name.endswith(".png")]
    assert {"accuracy_vs_macs.png", "accuracy_vs_latency.png", "ablation_tau.png"} <= set(pngs)
    for name in pngs:
        data = (out / name).read_bytes()
        chunks = _png_chunks(data)
        assert chunks[0] == b"IHDR" and b"IDAT" in chunks and chunks[-1] == b"IEND"
        width, height = struct.unpack(">II", data[16:24])
        assert width >= 600 and height >= 300, name  # 6.4 x 4.2 in or 7.2 x 3.4 in at 100 dpi
        assert b"matplotlib" not in data and b"Software" not in data


def test_building_twice_gives_identical_files(tmp_path, fixture_records):
    first = build_report([fixture_records], tmp_path / "a")
    second = build_report([fixture_records], tmp_path / "b")
    assert first.files == second.files
    for name in first.files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    # The same records in another order are the same report.
    (tmp_path / "shuffled").mkdir()
    shuffled = write_jsonl(tmp_path / "shuffled" / "results.jsonl", fixture_trials()[::-1])
    third = build_report([shuffled], tmp_path / "c")
    for name in first.files:
        a, c = (tmp_path / "a" / name).read_bytes(), (tmp_path / "c" / name).read_bytes()
        assert a.replace(str(fixture_records).encode(), b"") == c.replace(str(shuffled).encode(), b""), name
    assert third.files == first.files


def test_rebuilding_removes_the_old_reports_files_and_refuses_other_folders(tmp_path, fixture_records):
    out = tmp_path / "report"
    build_report([fixture_records], out)
    assert (out / "ablation_tau.png").exists()
    # Only the SSN pair left: the tau ablation and its plot go.
    fewer = [r for r in fixture_trials() if r["model"] == "bcresnet_1"]
    build_report([write_jsonl(tmp_path / "fewer.jsonl", fewer)], out)
    assert not (out / "ablation_tau.png").exists() and (out / "ablation_use_subspectral_norm.png").exists()

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a kwsbench report"):
        build_report([fixture_records], tmp_path / "mine")
    (tmp_path / "mine" / "README.md").write_text("# my project\n")
    with pytest.raises(ConfigError, match="not a kwsbench report"):
        build_report([fixture_records], tmp_path / "mine")
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["README.md", "notes.txt"]


def test_only_failed_trials_still_give_a_report(tmp_path):
    records = [trial("bcresnet_1", s, None, status="failed", error=f"error {s}") for s in range(2)]
    report = build_report([write_jsonl(tmp_path / "r.jsonl", records)], tmp_path / "out")
    text = (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
    assert report.trials == 0 and report.failed == 2
    assert "| error 1 |" in text and "These records touch none of the paper's claims." in text


@pytest.mark.slow
def test_a_report_builds_without_importing_torch(tmp_path, fixture_records):
    script = textwrap.dedent(
        f"""
        import sys
        from kwsbench.report import build_report
        build_report([{str(fixture_records)!r}], {str(tmp_path / "out")!r})
        from kwsbench.cli import main
        assert main(["report", {str(fixture_records)!r}, "--out", {str(tmp_path / "cli")!r}]) == 0
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        print("TORCH", loaded)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "TORCH []" in done.stdout
    assert (tmp_path / "out" / "README.md").is_file()
