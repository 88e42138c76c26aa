"""The torch-free record schema: round trips, version and field checks, and the JSON Lines store under
concurrent writers and torn writes."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys

import pytest

from kwsbench.results import (
    SCHEMA_VERSION,
    CountsRecord,
    LatencyRecord,
    RecordError,
    StreamEvalRecord,
    TrainSpeedRecord,
    TrialRecord,
    append_record,
    read_json,
    read_records,
    record_from_dict,
    write_json,
)
from kwsbench.results.store import locked

EXAMPLES = [
    CountsRecord(
        "bcresnet_1", "bcresnet", 12, 9232, 3_110_000, 2_480_000, checks={"params_equal_reference": True}
    ),
    LatencyRecord("bcresnet_1", "onnxruntime", 1, 1, "model", median_ms=0.5, p90_ms=0.6, n=100),
    TrainSpeedRecord(
        "bcresnet_1", "fast", 100, 2, 620.0, 161.2, 170.0, 20, 3, "one step", "kwsbench-train-speed/1"
    ),
    TrialRecord(
        "abc123", "mini", "bcresnet_1", 0, "failed", error="ValueError: x", traceback="Traceback ..."
    ),
    StreamEvalRecord("bcresnet_1", None, ["yes", "no"], 1.5, false_alarms=3, false_alarms_per_hour=2.0),
]


def test_importing_the_schema_leaves_torch_and_numpy_out():
    code = "import sys, kwsbench.results; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize("record", EXAMPLES, ids=lambda r: r.KIND)
def test_every_kind_round_trips_through_json(record):
    values = json.loads(json.dumps(record.to_dict()))
    assert values["kind"] == record.KIND and values["schema_version"] == SCHEMA_VERSION
    assert record_from_dict(values) == record


def test_a_newer_schema_an_unknown_field_and_a_wrong_type_are_refused():
    values = EXAMPLES[1].to_dict()
    with pytest.raises(RecordError, match="newer than this kwsbench"):
        record_from_dict(dict(values, schema_version=SCHEMA_VERSION + 1))
    with pytest.raises(RecordError, match="unknown field 'median_us'"):
        record_from_dict(dict(values, median_us=500))
    with pytest.raises(RecordError, match="'median_ms'"):
        record_from_dict(dict(values, median_ms="fast"))
    with pytest.raises(RecordError, match="unknown record kind"):
        record_from_dict(dict(values, kind="latencies"))
    with pytest.raises(RecordError, match="lacks field 'backend'"):
        record_from_dict({k: v for k, v in values.items() if k != "backend"})


def test_json_list_written_atomically_and_read_back(tmp_path):
    path = tmp_path / "bench.json"
    write_json(path, EXAMPLES)
    assert read_json(path) == EXAMPLES
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]  # no temporary file left behind


def test_an_unwritable_results_folder_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RecordError, match="cannot write results"):
        append_record(blocker / "results.jsonl", EXAMPLES[0])
    with pytest.raises(RecordError, match="no such results file"):
        read_records(tmp_path / "missing.jsonl")


def _append_many(path: str, worker: int, count: int) -> None:
    for i in range(count):
        append_record(
            path, TrialRecord(f"{worker}-{i}", "x", "bcresnet_1", i, "ok", metrics={"pad": "x" * 5000})
        )


def test_concurrent_appends_never_interleave_or_lose_a_record(tmp_path):
    path = str(tmp_path / "results.jsonl")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(path, w, 40)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ids = [r.trial_id for r in read_records(path)]
    assert sorted(ids) == sorted(f"{w}-{i}" for w in range(3) for i in range(40))


def test_a_torn_last_line_is_skipped_and_sealed_by_the_next_append(tmp_path, caplog):
    path = tmp_path / "results.jsonl"
    append_record(path, EXAMPLES[3])
    whole = path.read_bytes()
    with open(path, "ab") as f:  # a writer killed mid-line
        f.write(json.dumps(EXAMPLES[1].to_dict()).encode()[:40])
    assert read_records(path) == [EXAMPLES[3]]
    assert "incomplete line" in caplog.text
    append_record(path, EXAMPLES[1])
    assert read_records(path) == [EXAMPLES[3], EXAMPLES[1]]
    assert path.read_bytes().startswith(whole)  # nothing already written was touched
    assert read_records(path, LatencyRecord) == [EXAMPLES[1]]


def test_a_damaged_line_in_the_middle_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "results.jsonl"
    lines = [
        json.dumps(EXAMPLES[0].to_dict()),
        '{"kind": "counts", "oops": }',
        json.dumps(EXAMPLES[1].to_dict()),
    ]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=r"results.jsonl:2: not valid JSON"):
        read_records(path)


def test_the_lock_is_exclusive_across_processes(tmp_path):
    path = tmp_path / "results.jsonl"
    code = (
        "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR);"
        "\ntry: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')"
        "\nexcept BlockingIOError: print('held')"
    )
    with locked(path):
        held = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True).stdout
    free = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True).stdout
    assert (held.strip(), free.strip()) == ("held", "free")
