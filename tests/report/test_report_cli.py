"""`kwsbench report`: the files it writes, its JSON, and bad input as one line with exit code 2."""

from __future__ import annotations

import json

import pytest
from report_records import latency

from kwsbench.cli import main


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_report_writes_the_folder_and_prints_the_verdicts(fixture_records, tmp_path, capsys):
    out = tmp_path / "reports" / "mini"
    assert main(["report", str(fixture_records), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"wrote {out}/README.md and 12 more files: 24 finished trials, 1 failed")
    assert "supported       SubSpectral Norm beats plain BatchNorm" in printed
    assert (out / "claims.csv").is_file()

    assert main(["report", str(fixture_records), "--out", str(out), "--json"]) == 0
    values = json.loads(capsys.readouterr().out)
    assert values["trials"] == 24 and values["verdicts"]["contradicted"] == 2
    assert {c["claim"] for c in values["claims"]} >= {"beats:table2_no_ssn", "grows:tau"}


def test_bench_file_adds_its_latency(fixture_records, tmp_path, capsys):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps([latency("bcresnet_1", 0.2, backend="optimized")]))
    out = tmp_path / "out"
    assert main(["report", str(fixture_records), "--out", str(out), "--bench", str(bench)]) == 0
    text = (out / "README.md").read_text(encoding="utf-8")
    assert "| bench |  | bcresnet_1 | optimized | 1 | 0.200 |" in text.replace("| – |", "|  |")
    # The bench figure stands in for the variant's optimized latency, which its trials did not measure.
    assert "| optimized ms |" in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such results file; run the experiment first or check the path"),
        ("# notes\nnot records\n", "not a results file (its first line is not a JSON record)"),
        ('[{"kind": "latency"}]\n', "a JSON list, not the JSON Lines of `kwsbench run`"),
        (
            '{"kind": "counts", "schema_version": 1, "name": "m", "family": "f", "num_classes": 12, '
            '"params": 1, "macs_total": null, "macs_conv": null}\n',
            "no trial records",
        ),
        ('{"kind": "trial", "schema_version": 99}\n', "newer than this kwsbench's"),
    ],
)
def test_bad_results_files_are_one_line_errors(tmp_path, capsys, content, message):
    path = tmp_path / "results.jsonl"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    assert main(["report", str(path), "--out", str(tmp_path / "out")]) == 2
    err = _one_line(capsys)
    assert err.startswith(f"kwsbench: error: {path}") and message in err
    assert not (tmp_path / "out").exists()


def test_bad_bench_file_and_out_folder_are_one_line_errors(fixture_records, tmp_path, capsys):
    bench = tmp_path / "bench.json"
    bench.write_text("median 0.2 ms\n")
    assert main(["report", str(fixture_records), "--out", str(tmp_path / "a"), "--bench", str(bench)]) == 2
    assert "bench.json: not a JSON results file" in _one_line(capsys)
    # The results file given as the bench file, then a bench file of training speeds.
    assert (
        main(["report", str(fixture_records), "--out", str(tmp_path / "a"), "--bench", str(fixture_records)])
        == 2
    )
    assert "not the JSON list of `kwsbench bench --json`" in _one_line(capsys)
    bench.write_text(json.dumps([{"kind": "train_speed", "schema_version": 1, "name": "m", "formulation": "fast",
                                  "batch": 1, "threads": 1, "samples_per_s": 1.0, "step_ms_median": 1.0,
                                  "step_ms_p90": 1.0, "steps": 1, "warmup": 0, "protocol": "p",
                                  "protocol_version": "1"}]))  # fmt: skip
    assert main(["report", str(fixture_records), "--out", str(tmp_path / "a"), "--bench", str(bench)]) == 2
    assert "no latency records; pass the file `kwsbench bench --json` wrote" in _one_line(capsys)
    assert not (tmp_path / "a").exists()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "data.txt").write_text("x")
    assert main(["report", str(fixture_records), "--out", str(taken)]) == 2
    assert "a folder of other files, not a kwsbench report" in _one_line(capsys)
    assert main(["report"]) == 2
    assert "the following arguments are required" in _one_line(capsys)
