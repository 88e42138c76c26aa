"""`kwsbench listen` end to end: real held-out clips placed in a WAV are heard at their times, a lavfi source runs
without hardware, Ctrl-C ends cleanly with a summary, and every failure is one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import confident_clips, placed_stream

from kwsbench.cli import main

TOLERANCE_S = 0.5  # stream-eval's default: a detection may come this long after the clip's end


@pytest.fixture(scope="module")
def spoken_stream(trained_checkpoint, word_cache, tmp_path_factory):
    """A 30.5 s WAV: 4 "yes" and 4 "no" held-out clips the model knows, every 3.5 s from 1.5 s, 30 dB over noise."""
    chosen = confident_clips(trained_checkpoint, word_cache, per_word=4)
    assert len(chosen) == 8, "the briefly trained model should know 4 test clips of each word"
    order = [chosen[i] for i in (0, 4, 1, 5, 2, 6, 3, 7)]  # yes, no, yes, no, ...
    stream = placed_stream(word_cache, order, first_s=1.5, every_s=3.5, snr_db=30.0)
    folder = tmp_path_factory.mktemp("spoken")
    stream.save(folder / "stream.wav", folder / "labels.txt")
    return folder / "stream.wav", stream.truth


def _listen(capsys, *argv: str) -> tuple[int, list[str], list[str]]:
    code = main(["listen", *argv])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def test_held_out_keywords_are_heard_at_their_times(spoken_stream, trained_checkpoint, capsys):
    wav, truth = spoken_stream
    code, out, err = _listen(capsys, "--checkpoint", str(trained_checkpoint), "--source", str(wav), "--json")
    assert code == 0, err
    detections = [json.loads(line) for line in out]
    assert all(set(d) == {"time_s", "keyword", "score"} and 0.7 <= d["score"] <= 1 for d in detections)
    # One detection per placed clip, of its word, between the clip's start and its end plus the tolerance;
    # nothing anywhere else.
    heard = []
    for d in detections:
        inside = [o for o in truth if o.start_s <= d["time_s"] <= o.end_s + TOLERANCE_S]
        assert len(inside) == 1 and inside[0].keyword == d["keyword"], (d, truth)
        heard.append(inside[0])
    assert heard == truth
    summary = err[-1]
    assert summary.startswith("kwsbench listen: end of input: 30.5 s of audio") and "305 hops" in summary
    assert "8 detections" in summary and "real-time factor" in summary


def test_the_text_output_is_time_keyword_score(spoken_stream, trained_checkpoint, capsys):
    wav, truth = spoken_stream
    code, out, _ = _listen(
        capsys, "--checkpoint", str(trained_checkpoint), "--source", str(wav), "--backend", "eager"
    )
    assert code == 0
    rows = [line.split() for line in out]
    assert [r[1] for r in rows] == [o.keyword for o in truth]
    assert all(len(r) == 3 and float(r[0]) * 10 == pytest.approx(round(float(r[0]) * 10)) for r in rows)


def test_an_exported_model_hears_the_same(spoken_stream, trained_checkpoint, tmp_path, capsys):
    export = pytest.importorskip("kwsbench.export")
    wav, _ = spoken_stream
    onnx = tmp_path / "model.onnx"
    export.export_checkpoint(trained_checkpoint, onnx, with_frontend=True, progress=False)
    base = ["--source", str(wav), "--json"]
    _, from_checkpoint, _ = _listen(capsys, "--checkpoint", str(trained_checkpoint), *base)
    code, from_export, err = _listen(capsys, "--model-file", str(onnx), *base)
    assert code == 0, err
    a, b = ([json.loads(line) for line in lines] for lines in (from_checkpoint, from_export))
    assert [(d["time_s"], d["keyword"]) for d in a] == [(d["time_s"], d["keyword"]) for d in b]
    assert np.allclose([d["score"] for d in a], [d["score"] for d in b], atol=1e-3)


def test_a_lavfi_source_runs_listen_without_hardware(random_checkpoint, capsys):
    code, _, err = _listen(
        capsys, "--checkpoint", str(random_checkpoint), "--input-format", "lavfi",
        "--source", "sine=frequency=440:duration=3",
    )  # fmt: skip
    assert code == 0, err
    assert err[0].startswith("listening to sine=frequency=440:duration=3 (lavfi) for yes, no")
    assert err[-1].startswith("kwsbench listen: end of input: 3.0 s of audio") and " 30 hops" in err[-1]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_cleanly_with_a_summary(random_checkpoint):
    # A real-time lavfi source (arealtime) as a stand-in for a microphone, then SIGINT as a terminal sends it.
    run = subprocess.Popen(
        [sys.executable, "-m", "kwsbench.cli", "listen", "--checkpoint", str(random_checkpoint), "--backend", "eager",
         "--input-format", "lavfi", "--source", "anoisesrc=duration=60:amplitude=0.1,arealtime"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=_default_sigint, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        first = run.stderr.readline()  # printed once the model is built and the source is about to open
        assert first.startswith("listening to anoisesrc"), first
        time.sleep(1.5)
        os.killpg(run.pid, signal.SIGINT)
        out, err = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, err
    assert "Traceback" not in err
    (summary,) = err.splitlines()
    assert summary.startswith("kwsbench listen: stopped by Ctrl-C: ")
    heard = float(summary.split("stopped by Ctrl-C: ")[1].split(" s of audio")[0])
    assert 0.5 <= heard < 30  # real time: a second or so, not the whole minute


def test_missing_ffmpeg_is_one_line(monkeypatch, random_checkpoint, spoken_stream, capsys):
    monkeypatch.setitem(sys.modules, "av", None)
    code, out, err = _listen(
        capsys, "--checkpoint", str(random_checkpoint), "--source", str(spoken_stream[0])
    )
    assert code == 2 and out == []
    assert (
        err == [err[0]]
        and err[0].startswith("kwsbench: error: FFmpeg is not available")
        and "pip install av" in err[0]
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--source", "missing.wav"], "missing.wav: no such file"),
        (["--source", "x.wav", "--input-device", "hw:1"], "--input-device applies to --source mic"),
        (["--backend", "compile"], "invalid choice: 'compile'"),
        (
            ["--threshold", "2", "--input-format", "lavfi", "--source", "sine"],
            "--threshold 2.0: a posterior threshold",
        ),
        (["--hop-ms", "0", "--input-format", "lavfi", "--source", "sine"], "--hop-ms 0.0: must be between"),
    ],
)
def test_bad_options_are_one_line(random_checkpoint, capsys, argv, message):
    code, out, err = _listen(capsys, "--checkpoint", str(random_checkpoint), *argv)
    assert code == 2 and out == []
    assert len(err) == 1 and message in err[0], err


def test_the_bundled_model_is_the_default_and_its_absence_names_checkpoint(monkeypatch, tmp_path, capsys):
    import kwsbench.checkpoints

    code, _, err = _listen(
        capsys, "--input-format", "lavfi", "--source", "sine=duration=1", "--backend", "eager"
    )
    assert code == 0, err
    assert (
        "(bcresnet_1 on eager)" in err[0]
        and "for yes, no, up, down, left, right, on, off, stop, go" in err[0]
    )
    monkeypatch.setattr(kwsbench.checkpoints, "bundled_dir", lambda: tmp_path)  # an install without them
    code, _, err = _listen(capsys, "--input-format", "lavfi", "--source", "sine=duration=1")
    assert code == 2 and len(err) == 1
    assert "bcresnet_1: no bundled checkpoint" in err[0] and "--checkpoint" in err[0]
