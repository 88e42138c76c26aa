"""mlflow tracking: runs read back from the embedded SQLite store and from a real ``mlflow server``."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from kwsbench.errors import ConfigError
from kwsbench.results.schema import TrialRecord, record_from_dict
from kwsbench.runner.tracking import (
    MlflowTracker,
    NullTracker,
    flatten_params,
    make_tracker,
    plot_confusion,
    record_metrics,
)

LOGGER = "kwsbench.runner.tracking"


def _record(trial_id: str, status: str, **fields) -> dict:
    """A real ``TrialRecord`` dict, so the tracker is fed exactly what the runner appends."""
    return TrialRecord(
        trial_id=trial_id, experiment="exp", model="bcresnet_1", seed=0, status=status, **fields
    ).to_dict()


def _latency(backend: str, median_ms: float | None, threads: int = 1, batch: int = 1) -> dict:
    return {"backend": backend, "threads": threads, "batch": batch, "median_ms": median_ms}


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


def _free_port() -> int:
    """A port nothing listens on: the kernel picks a free one for port 0, and closing it frees it again."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _runs(client, experiment: str):
    """The sweep run and its trial runs (by trial id) of experiment ``experiment``, asserting one sweep."""
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"experiment {experiment!r} was not created"
    runs = client.search_runs([found.experiment_id])
    sweeps = [r for r in runs if r.data.tags.get("kwsbench.kind") == "sweep"]
    assert len(sweeps) == 1
    sweep = sweeps[0]
    trials = {
        r.data.tags["kwsbench.trial_id"]: r for r in runs if r.data.tags.get("kwsbench.kind") == "trial"
    }
    for trial in trials.values():
        assert trial.data.tags["mlflow.parentRunId"] == sweep.info.run_id
    return found, sweep, trials


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_importing_imports_neither_mlflow_nor_matplotlib():
    # A fresh interpreter: another test of this session may already have imported mlflow.
    code = (
        "import sys, kwsbench.runner.tracking as t;"
        "t.make_tracker('none', '.'); t.make_tracker(None, 'results');"
        "print(sorted(m for m in ('mlflow', 'matplotlib') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_make_tracker_picks_the_store_from_the_uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    default = make_tracker(None, Path("results"))
    assert isinstance(default, MlflowTracker)
    # Four slashes: sqlite:/// followed by the absolute path, whatever the working folder becomes later.
    assert default.uri == f"sqlite:///{tmp_path.resolve()}/results/mlflow.db"
    assert default.uri.startswith("sqlite:////")
    assert default.artifact_location == tmp_path.resolve() / "results" / "mlartifacts"
    assert isinstance(make_tracker("none", tmp_path), NullTracker)
    assert isinstance(make_tracker(" NONE ", tmp_path), NullTracker)
    served = make_tracker("http://127.0.0.1:5000", tmp_path)
    assert isinstance(served, MlflowTracker)
    assert (served.uri, served.artifact_location) == ("http://127.0.0.1:5000", None)
    other_db = make_tracker("sqlite:////data/shared.db", tmp_path / "out")
    assert other_db.uri == "sqlite:////data/shared.db"
    assert other_db.artifact_location == tmp_path.resolve() / "out" / "mlartifacts"
    with pytest.raises(ConfigError, match="tracking URI is empty") as raised:
        make_tracker("  ", tmp_path)
    assert "\n" not in str(raised.value)


def test_flatten_params_dots_nested_keys_and_respects_the_length_limit():
    flat = flatten_params(
        {
            "model": {"name": "bcresnet_1", "options": {"tau": 1.5, "use_subspectral_norm": False}},
            "seeds": [0, 1],
            "note": "x" * 600,
            "exactly": "y" * 500,
            "odd key!": 3,
        }
    )
    assert flat == {
        "model.name": "bcresnet_1",
        "model.options.tau": "1.5",
        "model.options.use_subspectral_norm": "False",
        "seeds": "[0, 1]",
        "note": "x" * 497 + "...",
        "exactly": "y" * 500,
        "odd key_": "3",
    }
    assert len(flat["note"]) == 500


def test_record_metrics_takes_the_numeric_figures_of_a_trial_record():
    record = _record(
        "t1",
        "ok",
        metrics={
            "best_val_accuracy": 0.91,
            "test_accuracy": 0.88,
            "per_class": {"yes": 0.95},
            "best_epoch": 7,
        },
        params=9232,
        macs_total=3_110_000,
        latency=[
            _latency("eager", 4.24),
            _latency("onnxruntime", 0.549),
            _latency("onnxruntime", 0.31, threads=2),
            _latency("openvino", None),  # a backend that failed has no timing
        ],
        train_samples_per_s=1210.5,
        error=None,
    )
    record["metrics"]["converged"] = True  # a flag is not a figure
    record["metrics"]["optimizer"] = "sgd"
    assert record_metrics(record) == {
        "best_val_accuracy": 0.91,
        "test_accuracy": 0.88,
        "per_class.yes": 0.95,
        "best_epoch": 7.0,
        "params": 9232.0,
        "macs_total": 3_110_000.0,
        "train_samples_per_s": 1210.5,
        "latency_ms.eager.t1.b1": 4.24,
        "latency_ms.onnxruntime.t1.b1": 0.549,
        "latency_ms.onnxruntime.t2.b1": 0.31,
    }


def test_plot_confusion_writes_a_png_and_refuses_a_wrong_shape(tmp_path):
    from matplotlib.image import imread

    path = plot_confusion(
        [[9, 1, 0], [2, 7, 1], [0, 0, 0]], ["yes", "no", "_silence_"], tmp_path / "c" / "m.png"
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(path)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.std() > 0.05  # cells, ticks and text drawn, not a blank canvas
    with pytest.raises(ValueError, match="must be 3 x 3"):
        plot_confusion([[1, 2], [3, 4]], ["a", "b", "c"], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="must be 2 x 2"):
        plot_confusion([[1, 2], [3]], ["a", "b"], tmp_path / "bad.png")


def test_sqlite_sweep_reads_back_as_one_parent_and_two_nested_trials(tmp_path, monkeypatch, caplog):
    import mlflow
    from mlflow import MlflowClient

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # artifacts must land in the results folder, never in ./mlruns
    out = tmp_path / "results"
    checkpoint = out / "a" / "checkpoint.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(bytes(range(256)) * 4)
    metrics_json = out / "a" / "metrics.json"
    metrics_json.write_text('{"test_accuracy": 0.7}\n')
    confusion = plot_confusion([[5, 1], [0, 4]], ["yes", "no"], out / "a" / "confusion.png")
    missing = out / "b" / "checkpoint.pt"  # a failed trial has no checkpoint
    record_a = _record(
        "aaaa",
        "ok",
        metrics={"best_val_accuracy": 0.75, "test_accuracy": 0.7},
        params=9232,
        latency=[_latency("eager", 4.2)],
        train_samples_per_s=950.0,
    )
    record_b = _record("bbbb", "failed", error="loss diverged at epoch 0")

    caplog.set_level(logging.WARNING, logger=LOGGER)
    tracker = make_tracker(None, out)
    tracker.start_sweep("exp1", {"grid": {"model": ["bcresnet_1"], "seed": [0, 1]}})
    tracker.start_trial(
        "aaaa", "bcresnet_1 seed 0", {"model": "bcresnet_1", "recipe": {"epochs": 3, "lr": 0.1}}
    )
    for epoch, (loss, accuracy) in enumerate([(2.0, 0.3), (1.2, 0.6), (0.8, 0.75)]):
        tracker.log_epoch(epoch, {"train_loss": loss, "val_accuracy": accuracy})
    tracker.end_trial("ok", record_a, [checkpoint, confusion, metrics_json])
    tracker.start_trial(
        "bbbb", "bcresnet_1 seed 1", {"model": "bcresnet_1", "recipe": {"epochs": 3, "lr": 0.1}}
    )
    tracker.log_epoch(0, {"train_loss": float("nan")})
    tracker.end_trial("failed", record_b, [missing])
    tracker.end_sweep("ok")

    # The only warning is the missing file; it names the file and leaves tracking on (trial b was closed).
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and str(missing) in warnings[0]
    assert mlflow.active_run() is None  # the global fluent run was never touched
    assert not (cwd / "mlruns").exists() and not (cwd / "mlartifacts").exists()

    client = MlflowClient(tracking_uri=f"sqlite:///{out.resolve() / 'mlflow.db'}")
    experiment, sweep, trials = _runs(client, "exp1")
    assert experiment.artifact_location == (out / "mlartifacts").resolve().as_uri()
    assert sweep.info.status == "FINISHED"
    assert sweep.data.params == {"grid.model": "['bcresnet_1']", "grid.seed": "[0, 1]"}
    assert sorted(trials) == ["aaaa", "bbbb"]

    a, b = trials["aaaa"], trials["bbbb"]
    assert (a.info.status, b.info.status) == ("FINISHED", "FAILED")
    assert (a.info.run_name, b.info.run_name) == ("bcresnet_1 seed 0", "bcresnet_1 seed 1")
    assert a.data.params == {"model": "bcresnet_1", "recipe.epochs": "3", "recipe.lr": "0.1"}
    assert _history(client, a.info.run_id, "val_accuracy") == [(0, 0.3), (1, 0.6), (2, 0.75)]
    assert _history(client, a.info.run_id, "train_loss") == [(0, 2.0), (1, 1.2), (2, 0.8)]
    # Final figures sit at the last epoch's step, so they read as the latest values in mlflow's charts.
    assert _history(client, a.info.run_id, "test_accuracy") == [(2, 0.7)]
    assert a.data.metrics["params"] == 9232
    assert a.data.metrics["latency_ms.eager.t1.b1"] == 4.2
    assert a.data.metrics["train_samples_per_s"] == 950.0
    [(step, loss)] = _history(client, b.info.run_id, "train_loss")
    assert step == 0 and math.isnan(loss)

    assert {f.path for f in client.list_artifacts(a.info.run_id)} == {
        "record.json",
        "checkpoint.pt",
        "confusion.png",
        "metrics.json",
    }
    assert {f.path for f in client.list_artifacts(b.info.run_id)} == {"record.json"}
    downloaded = Path(client.download_artifacts(a.info.run_id, "record.json", str(tmp_path / "dl")))
    assert json.loads(downloaded.read_text()) == record_a
    assert record_from_dict(json.loads(downloaded.read_text())).trial_id == "aaaa"
    stored = [p for p in (out / "mlartifacts").rglob("checkpoint.pt")]
    assert len(stored) == 1 and stored[0].read_bytes() == checkpoint.read_bytes()


def test_two_trackers_in_one_process_keep_their_sweeps_apart(tmp_path, caplog):
    from mlflow import MlflowClient

    caplog.set_level(logging.WARNING, logger=LOGGER)

    out = tmp_path / "results"
    first, second = make_tracker(None, out), make_tracker(None, out)
    first.start_sweep("shared", {"which": "first"})
    second.start_sweep("shared", {"which": "second"})
    first.start_trial("f1", "first trial", {})
    second.start_trial("s1", "second trial", {})
    first.log_epoch(0, {"val_accuracy": 0.1})
    second.log_epoch(0, {"val_accuracy": 0.2})
    second.end_trial("crashed", _record("s1", "failed"), [])  # not a status: recorded as FAILED
    first.end_trial("ok", _record("f1", "ok"), [])
    first.end_sweep("ok")
    second.end_sweep("interrupted")
    [warning] = _warnings(caplog)
    assert "'crashed'" in warning and "FAILED" in warning

    client = MlflowClient(tracking_uri=f"sqlite:///{out.resolve() / 'mlflow.db'}")
    found = client.get_experiment_by_name("shared")
    runs = client.search_runs([found.experiment_id])
    sweeps = {r.data.params["which"]: r for r in runs if r.data.tags.get("kwsbench.kind") == "sweep"}
    assert sorted(sweeps) == ["first", "second"]
    assert (sweeps["first"].info.status, sweeps["second"].info.status) == ("FINISHED", "KILLED")
    trials = {
        r.data.tags["kwsbench.trial_id"]: r for r in runs if r.data.tags.get("kwsbench.kind") == "trial"
    }
    assert (trials["f1"].info.status, trials["s1"].info.status) == ("FINISHED", "FAILED")
    assert trials["f1"].data.tags["mlflow.parentRunId"] == sweeps["first"].info.run_id
    assert trials["s1"].data.tags["mlflow.parentRunId"] == sweeps["second"].info.run_id
    assert trials["f1"].data.metrics["val_accuracy"] == 0.1
    assert trials["s1"].data.metrics["val_accuracy"] == 0.2


def test_a_failing_store_warns_once_and_turns_tracking_off_until_the_next_sweep(tmp_path, caplog):
    from mlflow import MlflowClient

    caplog.set_level(logging.WARNING, logger=LOGGER)
    tracker = make_tracker(None, tmp_path)
    tracker.start_sweep("exp", {})
    tracker.start_trial("t1", "t1", {})
    client = tracker._client
    real_log_batch, calls = client.log_batch, []

    def broken_log_batch(*args, **kwargs):
        calls.append(args)
        raise RuntimeError("database is locked\nsecond line of the driver's message")

    client.log_batch = broken_log_batch
    tracker.log_epoch(0, {"val_accuracy": 0.5})
    tracker.log_epoch(1, {"val_accuracy": 0.6})
    tracker.end_trial("ok", _record("t1", "ok", metrics={"test_accuracy": 0.5}), [])
    tracker.end_sweep("ok")
    [warning] = _warnings(caplog)
    assert tracker.uri in warning and "log_epoch" in warning and "database is locked" in warning
    assert "\n" not in warning and "second line" not in warning
    assert len(calls) == 1  # once off, nothing more reaches the store

    client.log_batch = real_log_batch
    tracker.start_sweep("exp", {})  # a new sweep tries again
    tracker.end_sweep("ok")
    assert len(_warnings(caplog)) == 1
    reader = MlflowClient(tracking_uri=tracker.uri)
    runs = reader.search_runs([reader.get_experiment_by_name("exp").experiment_id])
    statuses = sorted(r.info.status for r in runs if r.data.tags.get("kwsbench.kind") == "sweep")
    assert statuses == ["FINISHED", "RUNNING"]  # the broken sweep's run was left as it was


def test_calls_out_of_order_warn_once_and_touch_no_store(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    tracker = make_tracker(None, tmp_path)
    tracker.log_epoch(0, {"val_accuracy": 0.5})
    tracker.end_trial("ok", _record("t", "ok"), [])
    [warning] = _warnings(caplog)
    assert "log_epoch" in warning and "start_trial" in warning
    assert not (tmp_path / "mlflow.db").exists()


def test_unreachable_server_warns_once_and_never_raises(tmp_path, caplog, monkeypatch):
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    uri = f"http://127.0.0.1:{_free_port()}"
    tracker = make_tracker(uri, tmp_path)
    # Finishing at all is the check: mlflow's default retries would keep these calls going for minutes.
    tracker.start_sweep("exp", {"a": 1})
    tracker.start_trial("t1", "t1", {"b": 2})
    tracker.log_epoch(0, {"val_accuracy": 0.5})
    tracker.end_trial("ok", _record("t1", "ok"), [])
    tracker.end_sweep("ok")
    [warning] = _warnings(caplog)
    assert uri in warning and "start_sweep" in warning and "'none'" in warning
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # the bounds are lifted after each call
    assert not tracker.enabled


@dataclass
class _Server:
    uri: str
    artifacts: Path
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        """Stop the server's whole process group (uvicorn and job runner) by id, and check it is gone."""
        group = self.process.pid  # the leader of its own session, so its id is the group's
        if self.process.poll() is None:
            os.killpg(group, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(group, signal.SIGKILL)
                self.process.wait(timeout=30)
        if not _group_gone(group, seconds=20):
            os.killpg(group, signal.SIGKILL)  # a child that outlived the leader
        assert _group_gone(group, seconds=20), f"mlflow server process group {group} still running"


def _group_gone(group: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


@pytest.fixture
def mlflow_server(tmp_path):
    """A real ``mlflow server`` on a free port of 127.0.0.1, storing into ``tmp_path``, stopped by id."""
    port = _free_port()
    root = tmp_path / "server"
    root.mkdir()
    log_path = root / "server.log"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--workers", "1",
    ]  # fmt: skip
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, cwd=root, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = _Server(f"http://127.0.0.1:{port}", root / "artifacts", process, log_path)
    try:
        # Generous: the server starts in about 8 s on an idle core, and the cores are shared.
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(f"mlflow server exited with {process.returncode}: {log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{server.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy after 180 s: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        yield server
    finally:
        server.stop()
    with pytest.raises(OSError):  # nothing listens on the port any more
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


@pytest.mark.slow
def test_real_server_tracks_a_sweep_and_its_loss_costs_one_warning(mlflow_server, tmp_path, caplog):
    from mlflow import MlflowClient

    caplog.set_level(logging.WARNING, logger=LOGGER)
    out = tmp_path / "results"
    confusion = plot_confusion([[3, 0], [1, 2]], ["yes", "no"], out / "c" / "confusion.png")
    record = _record("cccc", "ok", metrics={"test_accuracy": 0.83}, params=9232)
    tracker = make_tracker(mlflow_server.uri, out)
    tracker.start_sweep("served", {"grid": {"seed": [0]}})
    tracker.start_trial("cccc", "bcresnet_1 seed 0", {"recipe": {"epochs": 2}})
    tracker.log_epoch(0, {"val_accuracy": 0.5, "val_loss": float("nan")})
    tracker.log_epoch(1, {"val_accuracy": 0.8, "val_loss": 0.4})
    tracker.end_trial("ok", record, [confusion])
    tracker.end_sweep("ok")
    assert _warnings(caplog) == []

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    _, sweep, trials = _runs(client, "served")
    assert sweep.info.status == "FINISHED" and sweep.data.params == {"grid.seed": "[0]"}
    [trial] = trials.values()
    assert trial.info.status == "FINISHED" and trial.data.params == {"recipe.epochs": "2"}
    assert _history(client, trial.info.run_id, "val_accuracy") == [(0, 0.5), (1, 0.8)]
    [(_, nan), (_, loss)] = _history(client, trial.info.run_id, "val_loss")
    assert math.isnan(nan) and loss == 0.4
    assert trial.data.metrics["test_accuracy"] == 0.83
    assert {f.path for f in client.list_artifacts(trial.info.run_id)} == {"record.json", "confusion.png"}
    downloaded = Path(client.download_artifacts(trial.info.run_id, "record.json", str(tmp_path / "dl")))
    assert json.loads(downloaded.read_text()) == record
    # Uploaded through the server into its artifact destination; nothing embedded in the results folder.
    [stored] = mlflow_server.artifacts.rglob("confusion.png")
    assert stored.read_bytes() == confusion.read_bytes()
    assert not (out / "mlflow.db").exists()

    # The server goes away in the middle of the next sweep: one warning, no exception, nothing more tried.
    tracker.start_sweep("served", {})
    tracker.start_trial("dddd", "bcresnet_1 seed 1", {})
    mlflow_server.stop()
    tracker.log_epoch(0, {"val_accuracy": 0.5})
    tracker.end_trial("ok", _record("dddd", "ok"), [])
    tracker.end_sweep("ok")
    [warning] = _warnings(caplog)
    assert mlflow_server.uri in warning and "log_epoch" in warning
