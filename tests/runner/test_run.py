"""`kwsbench run`, `train` and `evaluate` end to end on real audio: records, mlflow runs, resume after SIGKILL,
two concurrent sweeps, a failing trial, and a checkpoint that rebuilds the same model."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from kwsbench.cli import main
from kwsbench.models import create_model
from kwsbench.models.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from kwsbench.results import TrialRecord, read_records

pytestmark = pytest.mark.slow

FAILING = "    - {tau: 0.01}"  # builds no model: BC-ResNet needs tau >= 0.125


def _cli(*args: str, cache: Path) -> subprocess.Popen:
    env = dict(os.environ, KWSBENCH_CACHE=str(cache), PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "kwsbench.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        # A shell runs background jobs with SIGINT ignored, and Python then never raises KeyboardInterrupt:
        # give the child the default disposition, as a terminal's foreground job has.
        preexec_fn=_default_sigint,
    )


def _ok_ids(out: Path) -> list[str]:
    return [r.trial_id for r in read_records(out / "results.jsonl", TrialRecord) if r.status == "ok"]


def test_run_records_tracks_skips_and_records_a_failure(tiny_folder, tmp_path, capsys, write_experiment):
    exp = write_experiment(tiny_folder, tmp_path / "tiny.yaml", seeds=(0,), extra_options=FAILING)
    out = tmp_path / "results"
    assert main(["run", str(exp), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 1
    records = read_records(out / "results.jsonl", TrialRecord)
    ok = [r for r in records if r.status == "ok"]
    failed = [r for r in records if r.status == "failed"]
    assert len(ok) == 1 and len(failed) == 1
    (good,) = ok
    labels = good.metrics["labels"]
    assert sorted(labels[:3]) == ["no", "up", "yes"]
    # BC-ResNet-1's head is a 1x1 convolution 32 -> classes with bias: 33 parameters per class.
    assert good.params == 9_232 - 33 * 12 + 33 * len(labels)
    assert good.macs_total and good.macs_conv and good.git_commit and good.provenance["cpu"]
    assert {r["backend"]: r["status"] for r in good.latency} == {"eager": "ok", "onnxruntime": "ok"}
    best, final = good.metrics["best"], good.metrics["final"]
    assert 0 <= best["test_accuracy"] <= 1 and 0 <= final["test_accuracy"] <= 1
    assert sum(map(sum, best["confusion"])) == good.metrics["clips"]["test"]
    assert Path(good.checkpoint).is_file() and good.train_samples_per_s > 0
    assert "tau" in failed[0].error and "Traceback" in failed[0].traceback

    # The embedded mlflow store: a parent run for the sweep, one nested run per trial, with the record.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "tiny"]
    runs = client.search_runs([experiment.experiment_id])
    nested = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 3 and len(nested) == 2
    assert {r.info.status for r in nested} == {"FINISHED", "FAILED"}

    # Run again: the finished trial is skipped, the failed one is tried again and fails again.
    capsys.readouterr()
    assert main(["run", str(exp), "--out", str(out), "--dry-run", "--json"]) == 0
    states = Counter(row["state"] for row in json.loads(capsys.readouterr().out))
    assert states == {"done": 1, "failed": 1}
    assert (
        main(
            [
                "run",
                str(exp),
                "--out",
                str(out),
                "--tracking-uri",
                "none",
                "--cache-dir",
                str(tmp_path / "cache"),
            ]
        )
        == 1
    )
    assert _ok_ids(out) == [good.trial_id]

    # Evaluate the trial's checkpoint on all the tiny folder's clips through the CLI.
    capsys.readouterr()
    argv = [
        "evaluate",
        "--checkpoint",
        good.checkpoint,
        "--dataset",
        "folder",
        "--data-dir",
        str(tiny_folder),
    ]
    assert main([*argv, "--split", "all", "--json", "--cache-dir", str(tmp_path / "cache")]) == 0
    result = json.loads(capsys.readouterr().out)
    # 3 words x 20 clips; without --noise-dir no silence is cut, and the model's _silence_ row stays empty.
    assert result["clips"] == 60 and 0 <= result["accuracy"] <= 1
    assert set(result["per_class"]) == set(good.metrics["labels"])


def test_sigkill_at_random_points_loses_and_redoes_nothing(tiny_folder, tmp_path, write_experiment):
    """Kill the sweep while a trial is mid-training (its resume file exists), several times; the re-run
    finishes with one ok record per trial, and an interrupted trial resumes from its last epoch."""
    # 30 short epochs (a few seconds a trial), so that a kill soon after an epoch ends lands mid-training.
    exp = write_experiment(tiny_folder, tmp_path / "tiny.yaml", seeds=(0, 1), epochs=30)
    out, cache = tmp_path / "results", tmp_path / "cache"
    args = ("run", str(exp), "--out", str(out), "--tracking-uri", "none", "--cache-dir", str(cache))
    rng = random.Random(0)
    for _ in range(3):
        started = time.time()
        proc = _cli(*args, cache=cache)
        deadline = time.monotonic() + 240
        # Wait for an epoch written by this process (a resume file left by an earlier round does not count).
        while time.monotonic() < deadline and proc.poll() is None:
            if any(p.stat().st_mtime > started for p in out.glob("trials/*/resume.pt")):
                time.sleep(rng.uniform(0.0, 1.0))
                break
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        if (out / "results.jsonl").exists():  # what was finished before the kill is still there, once
            assert len(set(_ok_ids(out))) == len(_ok_ids(out))
    proc = _cli(*args, cache=cache)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    records = read_records(out / "results.jsonl", TrialRecord)
    ids = [r.trial_id for r in records]
    assert len(ids) == 2 and len(set(ids)) == 2 and all(r.status == "ok" for r in records)
    assert any(r.metrics["resumed_from_epoch"] > 0 for r in records), "no trial resumed from an epoch"
    assert not list(out.glob("claims/*.json")) and not list(out.glob("trials/*/resume.pt"))


def test_two_concurrent_runs_share_the_work_without_duplicates(tiny_folder, tmp_path, write_experiment):
    exp = write_experiment(tiny_folder, tmp_path / "tiny.yaml", seeds=(0, 1, 2), epochs=1)
    out, cache = tmp_path / "results", tmp_path / "cache"
    # Build the clip cache once first, so both runs spend their time on trials, not on the same decode.
    assert main(["data", "prepare", "--dataset", "folder", "--data-dir", str(tiny_folder), "--protocol", "mini",
                 "--cache-dir", str(cache), "--noise-dir",
                 str(Path(os.environ["KWSBENCH_SHARED_DATA"]) / "speech_commands_v0.01_sample/_background_noise_")]) in (0, 2)  # fmt: skip
    args = ("run", str(exp), "--out", str(out), "--tracking-uri", "none", "--cache-dir", str(cache), "--json")
    first, second = _cli(*args, cache=cache), _cli(*args, cache=cache)
    outputs = [p.communicate(timeout=600)[0] for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    ids = [r.trial_id for r in read_records(out / "results.jsonl", TrialRecord)]
    assert len(ids) == 3 and len(set(ids)) == 3
    summaries = [json.loads(o[o.index("{") :]) for o in outputs]
    trained = summaries[0]["finished"] + summaries[1]["finished"]
    assert sorted(trained) == sorted(ids)  # each trial trained by exactly one of the two processes


def test_checkpoint_round_trip_reproduces_the_logits(tmp_path):
    torch.manual_seed(0)
    model = create_model("bcresnet_1", num_classes=3, use_subspectral_norm=False).eval()
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, model, model_name="bcresnet_1", options={"use_subspectral_norm": False},
                    labels=["yes", "no", "up"], config={"seed": 0})  # fmt: skip
    ckpt = torch.load(path, weights_only=True)  # a plain dict, safe to load
    assert ckpt["labels"] == ["yes", "no", "up"] and ckpt["options"] == {"use_subspectral_norm": False}
    rebuilt, spec = model_from_checkpoint(load_checkpoint(path))
    x = torch.randn(spec.shape(4))
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))


def test_a_checkpoint_from_elsewhere_is_one_line(tmp_path, capsys):
    path = tmp_path / "other.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, path)  # a pickled module: refused by weights_only
    argv = ["evaluate", "--checkpoint", str(path), "--dataset", "folder", "--data-dir", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not a kwsbench checkpoint" in err
    torch.save({"state_dict": {}}, path)
    assert main(argv) == 2
    assert "kwsbench-checkpoint/1" in capsys.readouterr().err


def _train_argv(folder: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "train", "--model", "bcresnet_1", "--dataset", "folder", "--data-dir", str(folder), "--protocol", "mini",
        "--recipe", "batch_size=16", "--recipe", "warmup_epochs=1", "--recipe", "noise_probability=0",
        "--threads", "1", "--out", str(out), "--cache-dir", str(cache), *extra,
    ]  # fmt: skip


def test_ctrl_c_during_train_keeps_the_last_epoch_and_resume_continues(tiny_folder, tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    proc = _cli(*_train_argv(tiny_folder, out, cache, "--epochs", "40"), cache=cache)
    deadline = time.monotonic() + 240
    while not (out / "resume.pt").is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    last = output.strip().splitlines()[-1]
    assert "interrupted" in last and "--resume" in last and "Traceback" not in output
    # Without --resume the folder is refused (never silently overwritten); with it, training continues.
    proc = _cli(*_train_argv(tiny_folder, out, cache, "--epochs", "40"), cache=cache)
    assert proc.wait(120) == 2 and "pass --resume" in proc.stdout.read()
    proc = _cli(*_train_argv(tiny_folder, out, cache, "--epochs", "40", "--resume", "--json"), cache=cache)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    metrics = json.loads(output[output.index("{") :])
    assert metrics["resumed_from_epoch"] >= 1 and len(metrics["history"]) == 40
    assert [row["epoch"] for row in metrics["history"]] == list(range(1, 41))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_train_on_cuda(tiny_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main([*_train_argv(tiny_folder, out, tmp_path / "cache", "--epochs", "2", "--device", "cuda")]) == 0
    )
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert all(t.device.type == "cpu" for t in ckpt["state_dict"].values())  # saved loadable anywhere


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_a_gpu_is_one_line(tiny_folder, tmp_path, capsys):
    argv = _train_argv(tiny_folder, tmp_path / "run", tmp_path / "cache", "--epochs", "1", "--device", "cuda")
    assert main(argv) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
