"""`kwsbench run --executor ray` on a Ray cluster bound to 127.0.0.1, started and stopped here by process id:
records equal the local executor's, a killed worker is recorded failed (or retried) and never lost, resume skips
finished trials, Ctrl-C stops cleanly and a re-run resumes, and a missing ray package is one line."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from kwsbench.cli import main
from kwsbench.results import TrialRecord, read_records

pytestmark = pytest.mark.slow

# Ray's cluster mode off: every Ray server binds 127.0.0.1 instead of all interfaces (checked below with the
# processes' listening sockets), in the head started here and in this process when it is a driver. Token
# authentication off: a cluster no other address can reach, whose token would otherwise go to ~/.ray.
LOOPBACK = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
}
# What differs between two runs of the same trial: how long things took, and where its files are.
TIMINGS = {"wall_time_s", "train_samples_per_s", "started_at", "finished_at", "checkpoint", "latency"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes() -> dict[int, tuple[int, str]]:
    """Every process: pid -> (parent pid, command line)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # The command name in stat is in parentheses and may hold spaces: the parent pid follows the last ")".
        found[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmdline.strip())
    return found


def _descendants(root: int) -> dict[int, str]:
    """The processes under ``root`` (children, their children, ...): pid -> command line."""
    table = _processes()
    out, frontier = {}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, cmdline) in table.items():
            if ppid == parent and pid not in out:
                out[pid] = cmdline
                frontier.append(pid)
    return out


def _kill(pids) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _listening_addresses(pids: set[int]) -> set[str]:
    """The local addresses of the TCP sockets ``pids`` listen on (from /proc/net/tcp and tcp6 and each fd)."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                addresses.add(fields[1].rsplit(":", 1)[0])
    return addresses


# 127.0.0.1 in /proc/net/tcp (little-endian hex), and as an IPv4-mapped address in tcp6.
_LOOPBACK_HEX = {"0100007F", "0000000000000000FFFF00000100007F"}


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head on 127.0.0.1 with 2 CPUs: ``(address, pid of `ray start --block`)``; stopped by pid."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="kwsray")  # short: Ray's socket paths live under it
    log = open(Path(temp) / "ray_start.log", "w+")  # noqa: SIM115 - closed at teardown
    head = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
            "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
            "--disable-usage-stats", f"--temp-dir={temp}", "--object-store-memory=100000000",
        ],
        env={**os.environ, **LOOPBACK}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    started = set()
    try:
        deadline = time.monotonic() + 90
        while "block forever" not in Path(log.name).read_text():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start did not come up:\n{Path(log.name).read_text()[-2000:]}")
            time.sleep(0.2)
        started = set(_descendants(head.pid))
        with pytest.MonkeyPatch.context() as patch:
            for name, value in LOOPBACK.items():
                patch.setenv(name, value)
            yield f"127.0.0.1:{port}", head.pid
    finally:
        started |= set(_descendants(head.pid))
        head.terminate()  # `ray start --block` stops what it started on SIGTERM
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=20)
        _kill(started | {head.pid})  # whatever did not stop, by the process ids recorded here
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(head.pid, signal.SIGKILL)  # and its session (the pgid is its pid)
        head.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)  # its logs and ray_current_cluster, naming this dead head


def _experiment(write_experiment, folder: Path, path: Path, *, seeds, epochs: int) -> str:
    """The runner tests' tiny experiment, timed on eager PyTorch only: what is run where is tested here, not
    the backends, and ONNX Runtime's export and timing would double each trial's time."""
    write_experiment(folder, path, seeds=seeds, epochs=epochs)
    text = path.read_text(encoding="utf-8")
    assert "backends: [eager, onnxruntime]" in text
    path.write_text(text.replace("backends: [eager, onnxruntime]", "backends: [eager]"), encoding="utf-8")
    return str(path)


def _records(out: Path) -> dict[str, TrialRecord]:
    return {r.trial_id: r for r in read_records(out / "results.jsonl", TrialRecord)}


def _comparable(record: TrialRecord) -> dict:
    values = {k: v for k, v in record.to_dict().items() if k not in TIMINGS}
    values["metrics"] = {k: v for k, v in values["metrics"].items() if k not in TIMINGS}
    return values


def _kill_trial_worker(label_part: str, kills: list[int], timeout: float = 120) -> threading.Thread:
    """In the background: SIGKILL the worker process running the trial whose label holds ``label_part``."""

    def hunt() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for pid, (_, cmdline) in _processes().items():
                # Ray titles a busy worker process after its task: "ray::kwsbench trial <label>".
                if cmdline.startswith("ray::kwsbench trial") and label_part in cmdline:
                    time.sleep(0.5)  # well inside the trial (its tracker call, its first batches)
                    _kill([pid])
                    kills.append(pid)
                    return
            time.sleep(0.02)

    thread = threading.Thread(target=hunt, daemon=True)
    thread.start()
    return thread


def test_records_equal_the_local_executor_and_mlflow_gets_every_trial(
    ray_head, tiny_folder, tmp_path, write_experiment, capsys, monkeypatch
):
    address, head_pid = ray_head
    exp = _experiment(write_experiment, tiny_folder, tmp_path / "tiny.yaml", seeds=(0, 1), epochs=1)
    cache = str(tmp_path / "cache")
    # Relative results folders, as `--out` usually is: they mean this folder on the workers and the actor too.
    monkeypatch.chdir(tmp_path)
    local, on_ray = Path("local"), Path("ray")
    assert (
        main(["run", exp, "--out", str(local), "--cache-dir", cache, "--tracking-uri", "none", "--json"]) == 0
    )
    capsys.readouterr()
    args = ["run", exp, "--out", str(on_ray), "--cache-dir", cache, "--executor", "ray", "--address", address]
    assert main([*args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)

    expected, got = _records(local), _records(on_ray)
    assert sorted(got) == sorted(expected) == sorted(summary["finished"])
    for trial_id, record in got.items():
        # Training is deterministic at a fixed thread count (1 here on both sides): every figure but the
        # timings is the same, and the checkpoint sits at the same place in its results folder.
        assert _comparable(record) == _comparable(expected[trial_id])
        assert Path(record.checkpoint).relative_to(on_ray) == Path(expected[trial_id].checkpoint).relative_to(
            local
        )
        assert [e["backend"] for e in record.latency] == ["eager"]
        # Submission to record, less the trial's own time (rounded to 0.1 s): Ray's overhead, never negative.
        assert summary["overhead_s"][trial_id] >= -0.05
    assert not list((on_ray / "claims").glob("*.json"))

    # The tracker actor wrote the embedded SQLite store alone: the sweep's run and one nested run per trial.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{on_ray / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "tiny"]
    runs = client.search_runs([experiment.experiment_id])
    nested = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(r.data.tags["kwsbench.trial_id"] for r in nested) == sorted(expected)
    for run in nested:
        logged = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"checkpoint.pt", "metrics.json", "record.json"} <= logged

    # Nothing of the cluster listens beyond loopback.
    assert _listening_addresses(set(_descendants(head_pid))) <= _LOOPBACK_HEX


def test_a_killed_worker_is_recorded_failed_then_retried_and_resume_skips_finished(
    ray_head, tiny_folder, tmp_path, write_experiment, capsys
):
    address, _ = ray_head
    exp = _experiment(write_experiment, tiny_folder, tmp_path / "tiny.yaml", seeds=(0, 1), epochs=2)
    out = tmp_path / "results"
    args = ["run", exp, "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--tracking-uri", "none"]
    args += ["--executor", "ray", "--address", address, "--json"]

    kills: list[int] = []
    hunter = _kill_trial_worker("seed 0", kills)
    assert main([*args, "--max-retries", "0"]) == 1
    hunter.join()
    first = json.loads(capsys.readouterr().out)
    assert len(kills) == 1
    records = _records(out)
    (failed,) = [r for r in records.values() if r.status == "failed"]
    (ok,) = [r for r in records.values() if r.status == "ok"]
    assert failed.seed == 0 and ok.seed == 1 and first["failed"] == [failed.trial_id]
    assert "WorkerCrashedError" in failed.error and "worker running this trial died" in failed.error

    # The re-run skips the finished trial, and the killed trial survives one more kill through its retry.
    hunter = _kill_trial_worker("seed 0", kills)
    assert main([*args, "--max-retries", "1"]) == 0
    hunter.join()
    second = json.loads(capsys.readouterr().out)
    assert len(kills) == 2
    assert second["done_before"] == [ok.trial_id] and second["finished"] == [failed.trial_id]
    lines = read_records(out / "results.jsonl", TrialRecord)
    assert [(r.trial_id, r.status) for r in lines] == [
        (failed.trial_id, "failed"), (ok.trial_id, "ok"), (failed.trial_id, "ok"),
    ]  # fmt: skip


def test_ctrl_c_stops_its_own_ray_releases_claims_and_a_rerun_resumes(
    ray_head, tiny_folder, tmp_path, write_experiment
):
    address, _ = ray_head
    exp = _experiment(write_experiment, tiny_folder, tmp_path / "tiny.yaml", seeds=(0,), epochs=8)
    out, cache = tmp_path / "results", str(tmp_path / "cache")
    # The Ray instance the driver starts keeps its session (logs, sockets) under RAY_TMPDIR: here, not /tmp/ray.
    ray_tmp = tempfile.mkdtemp(prefix="kwsray")  # short: Ray's socket paths live under it
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_TMPDIR": ray_tmp}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")  # the runner itself keeps the Ray it starts on loopback
    # No --address: the driver starts (and must stop) its own Ray instance.
    driver = subprocess.Popen(
        [sys.executable, "-m", "kwsbench.cli", "run", exp, "--out", str(out), "--cache-dir", cache,
         "--tracking-uri", "none", "--executor", "ray", "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120

        def wait_for(found) -> None:
            while not found():
                assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()
                time.sleep(0.05)

        wait_for(lambda: any(c.startswith("ray::kwsbench trial") for c in _descendants(driver.pid).values()))
        own = _descendants(driver.pid)
        assert _listening_addresses(set(own)) <= _LOOPBACK_HEX
        # Interrupt once the first epoch is saved (each takes a fraction of a second here, hence 8 of them),
        # so the re-run has an epoch to resume from.
        wait_for(lambda: list(out.glob("trials/*/resume.pt")))
        os.killpg(driver.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the driver's whole process group
        _, stderr = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:  # the test failed before the driver stopped: stop it and its Ray
            _kill([*_descendants(driver.pid), driver.pid])
        driver.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert driver.returncode == 130, stderr
    assert "interrupted; finished trials are in" in stderr.strip().splitlines()[-1]
    assert not list((out / "claims").glob("*.json"))
    time.sleep(1)
    left = {pid: c for pid, c in _processes().items() if pid in own}
    _kill(left)
    assert not left, f"Ray processes the driver started outlived it: {left}"

    assert main(["run", exp, "--out", str(out), "--cache-dir", cache, "--tracking-uri", "none",
                 "--executor", "ray", "--address", address]) == 0  # fmt: skip
    (record,) = read_records(out / "results.jsonl", TrialRecord)
    assert record.status == "ok" and record.metrics["resumed_from_epoch"] >= 1


def test_without_the_ray_extra_the_error_is_one_line(
    tiny_folder, tmp_path, write_experiment, capsys, monkeypatch
):
    exp = str(write_experiment(tiny_folder, tmp_path / "tiny.yaml", seeds=(0,)))
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as without the extra
    assert main(["run", exp, "--out", str(tmp_path / "out"), "--executor", "ray"]) == 2
    assert capsys.readouterr().err == (
        "kwsbench: error: --executor ray needs the ray extra: pip install 'kwsbench[ray]'\n"
    )
    assert main(["run", exp, "--out", str(tmp_path / "out"), "--cpus-per-trial", "2"]) == 2
    assert "need --executor ray" in capsys.readouterr().err


def test_an_address_where_no_cluster_answers_is_one_line_in_seconds(
    tiny_folder, tmp_path, write_experiment, capsys, monkeypatch
):
    # The setting the runner makes for a loopback head, undone after the test (see import_ray).
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    exp = str(write_experiment(tiny_folder, tmp_path / "tiny.yaml", seeds=(0,)))
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    start = time.monotonic()
    assert main(["run", exp, "--out", str(tmp_path / "out"), "--executor", "ray", "--address", address]) == 2
    # Ray itself would retry for minutes; a refused connection answers at once (the bound is generous).
    assert time.monotonic() - start < 30
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"kwsbench: error: --address {address}: no Ray cluster answers there")
    assert not (tmp_path / "out").exists()


def test_the_tracker_actor_keeps_concurrent_trials_apart_and_closes_what_died(tmp_path):
    """The actor's logic in this process (Ray only moves it): two trials open at once in one SQLite store,
    a retried trial whose first attempt died, and a trial still open when the sweep ends."""
    from mlflow import MlflowClient

    from kwsbench.runner.ray_executor import _TrackerActor
    from kwsbench.runner.tracking import make_tracker

    actor = _TrackerActor(make_tracker(None, tmp_path))
    actor.start_sweep("concurrent", {"trials": 3})
    actor.start_trial("a", "trial a", {"seed": 0})
    actor.start_trial("b", "trial b", {"seed": 1})
    actor.log_epoch("a", 1, {"train_loss": 1.5})
    actor.log_epoch("b", 1, {"train_loss": 2.5})
    actor.start_trial("a", "trial a", {"seed": 0})  # a's worker died; its retry starts over
    actor.log_epoch("a", 1, {"train_loss": 1.25})
    actor.start_trial("c", "trial c", {"seed": 2})
    actor.end_trial("b", "ok", {"metrics": {"accuracy": 0.5}}, [])
    actor.end_trial("a", "failed", {}, [])
    actor.end_trial("a", "failed", {}, [])  # the driver closing a dead worker's run: already closed, no-op
    actor.end_sweep("failed")  # Ctrl-C with c still running

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "concurrent"]
    runs = client.search_runs([experiment.experiment_id])
    by_name = sorted((r.info.run_name, r.info.status) for r in runs if "mlflow.parentRunId" in r.data.tags)
    assert by_name == [
        ("trial a", "FAILED"), ("trial a", "KILLED"), ("trial b", "FINISHED"), ("trial c", "KILLED")
    ]  # fmt: skip
    (sweep,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert sweep.info.status == "FAILED"
    # Each trial's epochs went to its own run: b's loss is b's, the retry of a logged its own.
    losses = {
        (r.info.run_name, r.info.status): [
            m.value for m in client.get_metric_history(r.info.run_id, "train_loss")
        ]
        for r in runs
        if "mlflow.parentRunId" in r.data.tags
    }
    assert losses[("trial b", "FINISHED")] == [2.5]
    assert losses[("trial a", "KILLED")] == [1.5] and losses[("trial a", "FAILED")] == [1.25]
