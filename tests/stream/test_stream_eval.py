"""`kwsbench stream-eval` end to end on real held-out clips: the record, its operating points checked against the
live detector, the DET plot, and the command's one-line errors."""

from __future__ import annotations

import json

import pytest
from stream_options import data_options as _data_options

from kwsbench.cli import main
from kwsbench.results.store import read_json
from kwsbench.stream.evaluate import THRESHOLDS
from kwsbench.stream.labels import read_labels
from kwsbench.stream.matching import match


@pytest.fixture(scope="module")
def evaluated(trained_checkpoint, word_spec, tmp_path_factory):
    """stream-eval on 108 s of synthetic stream at 20 dB, the stream saved beside the record."""
    out = tmp_path_factory.mktemp("stream_eval")
    argv = ["stream-eval", "--checkpoint", str(trained_checkpoint), *_data_options(word_spec)]
    code = main(
        [*argv, "--hours", "0.03", "--snr-db", "20", "--seed", "1", "--out", str(out), "--save-stream"]
    )
    assert code == 0
    return out


def test_the_record_describes_the_stream(evaluated):
    (record,) = read_json(evaluated / "stream_eval.json")
    truth = read_labels(evaluated / "stream_labels.txt")
    assert record.KIND == "stream_eval" and record.keywords == ["yes", "no"]
    assert record.hours == pytest.approx(0.03) and record.timing["hops"] == 1_080  # 108 s at 100 ms
    assert record.occurrences == {k: sum(o.keyword == k for o in truth) for k in ("yes", "no")}
    assert record.distractors == sum(o.keyword == "_unknown_" for o in truth)
    assert sum(record.occurrences.values()) + record.distractors == len(truth) == 10  # one clip per 10 s
    assert record.dataset["snr_db"] == 20 and record.dataset["seed"] == 1
    det = record.det
    assert len(det["thresholds"]) == len(det["false_alarms_per_hour"]) == len(THRESHOLDS)
    # Every operating point is the best DET point within its false-alarm budget (recomputed here).
    targets = [p["target_false_alarms_per_hour"] for p in record.operating_points]
    assert targets == [0.5, 1.0, 2.0]
    for point in record.operating_points:
        allowed = [
            frr for fa, frr in zip(det["false_alarms_per_hour"], det["false_rejection_rate"], strict=True)
            if fa <= point["target_false_alarms_per_hour"]
        ]  # fmt: skip
        assert point["false_rejection_rate"] == min(allowed, default=1.0)
    frr = [p["false_rejection_rate"] for p in record.operating_points]
    assert frr[0] >= frr[1] >= frr[2]  # a larger false-alarm budget never rejects more
    assert record.false_rejection_rate == frr[1]  # the headline is 1 FA/h
    if any(fa > 0 for fa in det["false_alarms_per_hour"]):
        assert (evaluated / "det.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_recording_with_labels_agrees_with_the_live_detector(
    evaluated, trained_checkpoint, tmp_path, capsys
):
    wav, labels = evaluated / "stream.wav", evaluated / "stream_labels.txt"
    code = main(["stream-eval", "--checkpoint", str(trained_checkpoint), "--recording", str(wav),
                 "--labels", str(labels), "--json"])  # fmt: skip
    out, _ = capsys.readouterr()
    assert code == 0
    record = json.loads(out)
    point = record["operating_points"][2]  # 2 FA/h: the most detections of the three
    if point["threshold"] is None:
        pytest.fail("the trained model should reach 2 FA/h below the top threshold on 20 dB speech")
    # `listen` at that threshold on the same file, matched by hand, gives the sweep's counts.
    code = main(["listen", "--checkpoint", str(trained_checkpoint), "--source", str(wav), "--json",
                 "--threshold", repr(point["threshold"])])  # fmt: skip
    out, _ = capsys.readouterr()
    detections = [json.loads(line) for line in out.splitlines()]
    truth = read_labels(labels)
    hit, false_alarm = match(
        [d["time_s"] for d in detections], [d["keyword"] for d in detections], truth, 0.5
    )
    keywords = sum(o.keyword in ("yes", "no") for o in truth)
    assert int(false_alarm.sum()) == point["false_alarms"]
    assert (keywords - int(hit.sum())) / keywords == pytest.approx(point["false_rejection_rate"])


def test_the_table_names_every_keyword(evaluated, trained_checkpoint, word_spec, capsys):
    code = main(["stream-eval", "--checkpoint", str(trained_checkpoint), *_data_options(word_spec),
                 "--hours", "0.01", "--backend", "eager"])  # fmt: skip
    out, _ = capsys.readouterr()
    assert code == 0
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("keyword"))
    assert header.split() == ["keyword", "count", "FRR@0.5", "FA/h", "FRR@1", "FA/h", "FRR@2", "FA/h"]
    rows = {
        line.split()[0]: line.split()
        for line in lines
        if line.split() and line.split()[0] in ("yes", "no", "all")
    }
    assert set(rows) == {"yes", "no", "all"}
    assert int(rows["all"][1]) == int(rows["yes"][1]) + int(rows["no"][1])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "needs either --dataset and --data-dir"),
        (["--recording", "x.wav"], "--recording and --labels go together"),
        (["--dataset", "folder"], "--dataset and --data-dir go together"),
        (["--dataset", "folder", "--data-dir", "d", "--recording", "x", "--labels", "y"], "needs either"),
        (
            ["--recording", "x.wav", "--labels", "y.txt", "--save-stream", "--out", "o"],
            "--save-stream applies",
        ),
        (["--dataset", "folder", "--data-dir", "d", "--save-stream"], "--save-stream writes into --out"),
        (["--hop-ms", "-5", "--recording", "x", "--labels", "y"], "--hop-ms -5.0"),
        (["--backend", "compile"], "invalid choice: 'compile'"),
    ],
)
def test_bad_options_are_one_line(random_checkpoint, capsys, argv, message):
    code = main(["stream-eval", "--checkpoint", str(random_checkpoint), *argv])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_a_bad_label_file_or_recording_fails_first(tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("1.0 yes\n", encoding="utf-8")
    missing = str(tmp_path / "no_model.pt")  # the model is never reached
    code = main(["stream-eval", "--checkpoint", missing, "--recording", "x.wav", "--labels", str(labels)])
    _, err = capsys.readouterr()
    assert code == 2 and err.splitlines() == [
        f"kwsbench: error: {labels}:1: expected 'start_s end_s keyword', got '1.0 yes'; fix that line"
    ]
    labels.write_text("1.0 2.0 yes\n", encoding="utf-8")
    code = main(
        [
            "stream-eval",
            "--checkpoint",
            missing,
            "--recording",
            str(tmp_path / "x.wav"),
            "--labels",
            str(labels),
        ]
    )
    _, err = capsys.readouterr()
    assert code == 2 and "x.wav: no such file" in err


def test_the_det_plot_is_the_envelope_and_deterministic(tmp_path):
    from kwsbench.results.schema import StreamEvalRecord
    from kwsbench.stream.plot import _curve, det_figure

    # FA/h is not monotone in the threshold (refractory periods): the curve keeps the best FRR per budget.
    assert _curve([0.0, 2.0, 1.0, 4.0, 3.0], [1.0, 0.5, 0.8, 0.6, 0.2]) == (
        [1.0, 2.0, 3.0, 4.0],
        [80.0, 50.0, 20.0, 20.0],
    )
    det = {"thresholds": [0.9, 0.5], "false_alarms_per_hour": [0.0, 0.0], "false_rejection_rate": [0.5, 0.25]}
    record = StreamEvalRecord("bcresnet_1", None, ["yes"], 1.0, det=det, occurrences={"yes": 4})
    assert det_figure(record, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
    record.det = {**det, "false_alarms_per_hour": [0.0, 3.0]}
    a, b = det_figure(record, tmp_path / "a.png"), det_figure(record, tmp_path / "b.png")
    assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and a.read_bytes() == b.read_bytes()
