"""The Ray executor of ``kwsbench run --executor ray``: each trial a Ray task, the records written by the driver.

Tasks, not Ray Tune: what Tune would add (resume, claims, a results table) the sweep already does, with records
that must stay byte-for-byte the runner's schema; a task runs the very ``run_trial`` of the local executor and
returns its ``TrialRecord`` as a (torch-free) dict. The driver claims each trial (the claim holds the driver's
process id) before submitting it, keeps as many in flight as the cluster can run at once, and appends each
record the moment its task ends (``ray.wait``), so resume, ``--fail-fast`` and a second ``run`` on the same
folder behave as with the local executor. A worker that dies (killed, out of memory, its node lost) costs its
task a retry (``max_retries``); once those are spent the trial gets a ``failed`` record and the sweep goes on.
Ctrl-C cancels the running tasks, releases their claims and stops the Ray instance the driver started; a
re-run resumes each trial from its last epoch in ``trials/<id>/``, which on several nodes needs the results
folder on a filesystem they all share.

mlflow: one tracker actor is the only writer to the store, pinned to the driver's node (where the SQLite file
of the default store lives: SQLite written from many processes at once is not sound). Workers get a proxy
that forwards each call to it and waits, so a trial's run is closed before its record is written. A tracking
server would take concurrent writers, but the actor costs only a few calls per epoch and lets the driver
close the run of a trial whose worker died.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kwsbench import settings
from kwsbench.errors import ConfigError, KwsbenchError
from kwsbench.results.schema import TrialRecord
from kwsbench.runner.config import TrialConfig
from kwsbench.runner.sweep import (
    SweepRun,
    error_line,
    failed_record,
    provenance_fields,
    run_trial,
    tracked_sweep,
    utc_now,
)
from kwsbench.runner.tracking import NullTracker

log = logging.getLogger(__name__)

TASK_PREFIX = "kwsbench trial"  # task names (and worker process titles, ``ray::kwsbench trial ...``)
# A proxy call waits at most this long for the tracker actor (queued behind other trials' calls, logging a
# checkpoint); past it tracking is off for that trial, never the trial itself.
_TRACKER_TIMEOUT_S = 120.0
_CONNECT_TIMEOUT_S = 3.0  # a head on a network accepts a TCP connection well within this


class RayExtraMissing(KwsbenchError):
    """``--executor ray`` without the ``ray`` package installed."""


@dataclass(frozen=True)
class RayOptions:
    """Where and how the trials run: ``address`` None starts a local Ray instance for the sweep (bound to
    127.0.0.1) and stops it after; ``"auto"`` or ``HOST:PORT`` joins a running cluster. ``cpus_per_trial``
    None is the experiment's ``threads`` (a trial trains with as many threads as CPUs it holds);
    ``gpus_per_trial`` None is 1 for device cuda, else 0. ``max_retries``: retries of a trial whose worker
    died."""

    address: str | None = None
    cpus_per_trial: int | None = None
    gpus_per_trial: float | None = None
    max_retries: int = 1


@dataclass
class _InFlight:
    config: TrialConfig
    submitted: float  # time.perf_counter() at submission
    started_at: str


def import_ray(loopback: bool = False):
    """The ``ray`` module, or a one-line error naming the extra that installs it.

    ``loopback``: for a private instance or a head at a loopback address. Ray's cluster mode off makes every
    server it starts bind 127.0.0.1 rather than every interface, and keeps a loopback address as given
    (with it on, Ray swaps 127.0.0.1 for the machine's address). Ray reads the setting when first imported
    (its processes inherit it), so a process that imported Ray before keeps Ray's default, as does a user
    who set it.
    """
    if loopback and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise RayExtraMissing("--executor ray needs the ray extra: pip install 'kwsbench[ray]'") from None
    return ray


def _trial_task(sweep, config: TrialConfig, cwd: str, device: str, threads: int, cache_dir: str, tracker):
    """On a worker: ``run_trial`` as the local executor runs it; the record as a dict."""
    # The experiment's relative paths (data_dir, --out) mean the driver's folder; a worker starts elsewhere.
    # A node without that folder can still run an experiment whose paths are all absolute.
    if os.path.isdir(cwd):
        os.chdir(cwd)
    record = run_trial(
        sweep, config, device=device, threads=threads, cache_dir=cache_dir, tracker=tracker, progress=False
    )
    return record.to_dict()


class _TrackerActor:
    """The single writer to the mlflow store: the sweep's tracker, and one trial tracker per running trial."""

    def __init__(self, tracker) -> None:
        self._sweep = tracker
        self._trials: dict[str, Any] = {}

    def start_sweep(self, experiment: str, params: dict) -> None:
        self._sweep.start_sweep(experiment, params)

    def start_trial(self, trial_id: str, run_name: str, params: dict) -> None:
        # A retried trial reuses its tracker, which closes the dead attempt's run as KILLED.
        tracker = self._trials.setdefault(trial_id, self._sweep.trial_tracker())
        tracker.start_trial(trial_id, run_name, params)

    def log_epoch(self, trial_id: str, epoch: int, metrics: dict) -> None:
        if trial_id in self._trials:
            self._trials[trial_id].log_epoch(epoch, metrics)

    def end_trial(self, trial_id: str, status: str, record: dict, artifacts: list[str]) -> None:
        tracker = self._trials.pop(trial_id, None)
        if tracker is not None:
            tracker.end_trial(status, record, [Path(a) for a in artifacts])

    def end_sweep(self, status: str) -> None:
        for tracker in self._trials.values():  # trials cancelled by Ctrl-C or --fail-fast
            tracker.end_trial("killed", {}, [])
        self._trials.clear()
        self._sweep.end_sweep(status)


class TrackerProxy:
    """The runner's ``Tracker`` protocol over the tracker actor; like every tracker, it never fails a trial."""

    def __init__(self, actor, trial_id: str | None = None) -> None:
        self._actor = actor
        self._trial_id = trial_id
        self.enabled = True

    def _call(self, name: str, *args) -> None:
        if not self.enabled:
            return
        import ray

        try:
            ray.get(getattr(self._actor, name).remote(*args), timeout=_TRACKER_TIMEOUT_S)
        except Exception as error:  # the actor died or hangs: the trial goes on untracked
            self.enabled = False
            log.warning(
                "mlflow tracking: the tracker actor failed in %s (%s); tracking is off for this trial and "
                "results.jsonl is unaffected",
                name,
                error_line(error),
            )

    def for_trial(self, trial_id: str) -> TrackerProxy:
        """A proxy for the open trial ``trial_id`` (the driver closing the run of a worker that died)."""
        return TrackerProxy(self._actor, trial_id)

    def start_sweep(self, experiment: str, params: dict) -> None:
        self._call("start_sweep", experiment, params)

    def start_trial(self, trial_id: str, run_name: str, params: dict) -> None:
        self._trial_id = trial_id
        self._call("start_trial", trial_id, run_name, params)

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        self._call("log_epoch", self._trial_id, epoch, metrics)

    def end_trial(self, status: str, record: dict, artifacts: list) -> None:
        # Absolute: the worker's folder is the driver's (relative --out), the actor's is Ray's own.
        self._call("end_trial", self._trial_id, status, record, [str(Path(a).resolve()) for a in artifacts])

    def end_sweep(self, status: str) -> None:
        self._call("end_sweep", status)


def _on_loopback(address: str | None) -> bool:
    """Whether Ray runs on this machine's loopback only: a private instance, or a head at 127.x or localhost."""
    if address is None:
        return True
    host = address.rsplit(":", 1)[0].strip("[]")
    return host == "localhost" or host.startswith("127.") or host == "::1"


def _check_answers(address: str) -> None:
    """Fail fast when nothing accepts a connection at ``HOST:PORT`` (Ray itself retries for minutes)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(
            f"--address {address}: give auto or HOST:PORT of the cluster's head (e.g. HEAD:6379)"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=_CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise KwsbenchError(
            f"--address {address}: no Ray cluster answers there ({err}); start one (`ray start --head "
            "--port=6379`), fix the address, or leave --address out to start a local instance"
        ) from None


def _connect(ray, address: str | None, env: dict[str, str]) -> bool:
    """Start or join Ray with ``env`` in every worker's environment; True when this call started it."""
    if ray.is_initialized():
        return False  # the caller's own Ray session: use it as it is, and leave it running
    if address is not None and address != "auto":
        _check_answers(address)
    common: dict[str, Any] = dict(
        runtime_env={"env_vars": env}, include_dashboard=False, logging_level=logging.WARNING
    )
    try:
        if address is None:
            # A private instance for one sweep ("local": never an instance `ray start` left running), on
            # loopback (see import_ray).
            ray.init(address="local", _node_ip_address="127.0.0.1", **common)
        else:
            ray.init(address=address, **common)
    except (ConnectionError, ValueError, RuntimeError) as err:
        where = "a local Ray instance" if address is None else f"the Ray cluster at --address {address}"
        raise KwsbenchError(
            f"cannot start or join {where} ({error_line(err)[:200]}); check the address, or "
            "`ray status` on the cluster"
        ) from None
    return True


def _capacity(ray, cpus: int, gpus: float, joined: bool) -> int:
    """How many trials of ``cpus`` CPUs and ``gpus`` GPUs the cluster runs at once (at least 1)."""
    resources = ray.cluster_resources()
    fits = int(resources.get("CPU", 0) // cpus)
    if gpus > 0:
        fits = min(fits, int(resources.get("GPU", 0) // gpus))
    if fits == 0:
        message = (
            f"the Ray cluster has {resources.get('CPU', 0):g} CPUs and {resources.get('GPU', 0):g} GPUs, too "
            f"few for one trial of --cpus-per-trial {cpus} --gpus-per-trial {gpus:g}; lower them"
        )
        if not joined:
            raise ConfigError(message)
        log.warning("%s, or wait for the cluster to scale up", message)  # an autoscaler may add nodes
    return max(fits, 1)


def _collect(ray, ref, flight: _InFlight, threads: int, max_retries: int) -> TrialRecord:
    """The record of a finished task; a task that died or raised becomes a ``failed`` record (never lost)."""
    seconds = time.perf_counter() - flight.submitted
    try:
        return TrialRecord.from_dict(ray.get(ref), where="ray task: ")
    except ray.exceptions.RayTaskError as err:  # raised outside run_trial's own handling (an import, a chdir)
        if isinstance(err.cause, KeyboardInterrupt):
            raise KeyboardInterrupt from None  # Ctrl-C reached the worker before this driver: stop, record nothing
        cause = err.cause if isinstance(err.cause, BaseException) else err
        message, text = error_line(cause), str(err)
    except ray.exceptions.RayError as err:  # the worker, its node or the result is gone
        message = (
            f"{type(err).__name__}: the Ray worker running this trial died ({max_retries} retries spent; "
            "killed, out of memory or its node lost); the Ray logs say why, a re-run tries it again"
        )
        text = str(err)
    common = {**provenance_fields(threads), "started_at": flight.started_at}
    return failed_record(flight.config, message, text, seconds=seconds, common=common)


def run_on_ray(
    run: SweepRun, tracker, options: RayOptions, *, device: str, cache_dir, progress: bool
) -> None:
    """Run ``run``'s trials as Ray tasks; records, summary and tracking as the local executor keeps them."""
    ray = import_ray(loopback=_on_loopback(options.address))
    experiment = run.sweep.experiment
    cpus = experiment.threads if options.cpus_per_trial is None else options.cpus_per_trial
    gpus = options.gpus_per_trial if options.gpus_per_trial is not None else (1 if device == "cuda" else 0)
    if cpus < 1 or gpus < 0 or options.max_retries < 0:
        raise ConfigError(
            f"--cpus-per-trial {cpus}, --gpus-per-trial {gpus:g}, --max-retries {options.max_retries}: "
            "give at least 1 CPU, and no negative GPUs or retries"
        )
    if gpus > 0 and device != "cuda":
        raise ConfigError(
            f"--gpus-per-trial {gpus:g} with device {device}: the trials would hold GPUs they never use; "
            "pass --device cuda or drop --gpus-per-trial"
        )
    cache = str(Path(cache_dir).expanduser().resolve() if cache_dir else settings.cache_dir())
    plan = _Plan(cpus, gpus, device, cache, options.max_retries)
    env = {"KWSBENCH_SHARED_DATA": str(settings.shared_data_dir()), "KWSBENCH_CACHE": cache}
    # Ray echoes its workers' and raylets' output on the driver's stdout; on stderr it stays apart from the
    # command's own output (``--json``). Process-wide, but only while this sweep's Ray session lasts.
    with contextlib.redirect_stdout(sys.stderr):
        started = _connect(ray, options.address, env)
        try:
            capacity = _capacity(ray, cpus, gpus, joined=options.address is not None or not started)
            worker_tracker = tracker
            if not isinstance(tracker, NullTracker):
                from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

                here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
                actor = (
                    ray.remote(num_cpus=0)(_TrackerActor).options(scheduling_strategy=here).remote(tracker)
                )
                worker_tracker = TrackerProxy(actor)
            with tracked_sweep(worker_tracker, experiment):
                _drive(ray, run, worker_tracker, plan, capacity, progress)
        finally:
            if started:
                ray.shutdown()  # stops the instance it started; only disconnects from a cluster it joined


@dataclass(frozen=True)
class _Plan:
    """What every task of the sweep gets: its resources (``cpus`` is also its training threads), device, cache."""

    cpus: int
    gpus: float
    device: str
    cache: str
    max_retries: int


def _drive(ray, run: SweepRun, tracker, plan: _Plan, capacity: int, progress: bool) -> None:
    """Claim and submit up to ``capacity`` trials, append each record as its task ends, until none is left."""
    from tqdm import tqdm

    task = ray.remote(_trial_task)
    trials = run.sweep.experiment.trials()
    bar = tqdm(total=len(trials), desc=run.sweep.experiment.name, unit="trial", disable=not progress)
    todo, running = deque(trials), {}
    cwd = os.getcwd()
    try:
        while todo or running:
            while todo and len(running) < capacity:
                config = todo.popleft()
                if not run.claim(config):
                    bar.update()
                    continue
                ref = task.options(
                    name=f"{TASK_PREFIX} {config.label}", num_cpus=plan.cpus, num_gpus=plan.gpus,
                    max_retries=plan.max_retries, retry_exceptions=False,
                ).remote(run.sweep, config, cwd, plan.device, plan.cpus, plan.cache, tracker)  # fmt: skip
                running[ref] = _InFlight(config, time.perf_counter(), utc_now())
            if not running:
                continue
            (ref,), _ = ray.wait(list(running), num_returns=1)
            flight = running.pop(ref)
            record = _collect(ray, ref, flight, plan.cpus, plan.max_retries)
            if record.status == "ok" and record.wall_time_s is not None:
                total = time.perf_counter() - flight.submitted
                run.summary.overhead_s[record.trial_id] = round(total - record.wall_time_s, 2)
                log.info(
                    "trial %s: %.1f s from submission to record, %.1f s in the trial",
                    flight.config.label, total, record.wall_time_s,
                )  # fmt: skip
            elif isinstance(tracker, TrackerProxy):
                # A worker that died left its mlflow run open: close it (a no-op when the trial closed it).
                tracker.for_trial(record.trial_id).end_trial("failed", record.to_dict(), [])
            bar.update()
            bar.set_postfix_str(flight.config.label)
            run.finish(flight.config, record)
    except BaseException:
        # Ctrl-C or --fail-fast: stop the running trials and give their claims back; each resumes from its
        # last epoch on the next run.
        for ref, flight in running.items():
            ray.cancel(ref, force=True)
            run.sweep.release(flight.config)
        raise
    finally:
        bar.close()
