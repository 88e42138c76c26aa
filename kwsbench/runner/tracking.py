"""Experiment tracking for the runner: mlflow behind a small protocol that can never fail a trial.

``results.jsonl`` is the source of truth; a tracker only mirrors each trial into mlflow for browsing. So every
tracker call catches its own errors, logs one warning line and turns tracking off for the rest of the sweep.
Importing this module imports neither mlflow nor matplotlib (both are slow to import); a tracker imports
mlflow when its sweep starts.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from kwsbench.errors import ConfigError

log = logging.getLogger(__name__)

DATABASE_NAME = "mlflow.db"
ARTIFACTS_NAME = "mlartifacts"
KIND_TAG = "kwsbench.kind"
TRIAL_ID_TAG = "kwsbench.trial_id"
EXPERIMENT_TAG = "kwsbench.experiment"
PARENT_RUN_TAG = "mlflow.parentRunId"  # the tag mlflow's UI and ``nested=True`` use to nest runs

# mlflow 2.x servers reject parameter values over 500 characters; newer ones allow 6000, but a shared
# server may be old, so the lowest limit is the safe one.
MAX_PARAM_VALUE_LENGTH = 500
MAX_KEY_LENGTH = 250  # mlflow's limit for param and metric keys
# mlflow accepts only these characters in keys; anything else is replaced by "_".
_KEY_INVALID = re.compile(r"[^\w\-. /]")

# The runner speaks the record's vocabulary ("ok", "failed"); mlflow's own names are accepted too.
_RUN_STATUS = {
    "ok": "FINISHED",
    "finished": "FINISHED",
    "failed": "FAILED",
    "killed": "KILLED",
    "interrupted": "KILLED",
}

# mlflow retries an HTTP request 7 times with exponential backoff and a 120 s timeout by default: about
# four minutes per call against a dead server. These bounds make a failing call cost seconds (at most
# 3 attempts x 10 s on a server that accepts connections but never answers); a value the user has set in
# the environment wins.
_HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
_CONNECT_TIMEOUT_S = 3.0  # a reachable server on a network answers a TCP connect well within this
_LOCAL_SCHEMES = {"", "file", "sqlite"}


class Tracker(Protocol):
    """What the runner tells a tracker: one sweep holding trials, each with epochs and a final record."""

    def start_sweep(self, experiment: str, params: dict[str, object]) -> None:
        """Open the sweep of kwsbench experiment ``experiment``; ``params`` is its (nested) configuration."""

    def start_trial(self, trial_id: str, run_name: str, params: dict[str, object]) -> None:
        """Open one trial of the sweep; ``params`` is the trial's resolved (nested) configuration."""

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Log the open trial's metrics after epoch ``epoch`` (the metric's step)."""

    def end_trial(self, status: str, record: dict[str, object], artifacts: list[Path]) -> None:
        """Close the open trial: ``status`` ``"ok"`` or ``"failed"``, its ``TrialRecord`` dict, files to keep."""

    def end_sweep(self, status: str) -> None:
        """Close the sweep with ``status`` ``"ok"`` or ``"failed"``."""


class NullTracker:
    """The tracker for URI ``"none"``: every call does nothing."""

    def start_sweep(self, experiment: str, params: dict[str, object]) -> None:
        """Do nothing."""

    def start_trial(self, trial_id: str, run_name: str, params: dict[str, object]) -> None:
        """Do nothing."""

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Do nothing."""

    def end_trial(self, status: str, record: dict[str, object], artifacts: list[Path]) -> None:
        """Do nothing."""

    def end_sweep(self, status: str) -> None:
        """Do nothing."""

    def trial_tracker(self) -> NullTracker:
        """Itself: no state to keep apart between concurrent trials."""
        return self


def make_tracker(uri: str | None, out_dir: Path) -> Tracker:
    """The tracker for ``uri``; ``out_dir`` is the results folder of the sweep.

    ``None``: an embedded SQLite store ``<out_dir>/mlflow.db`` with artifacts in ``<out_dir>/mlartifacts``;
    ``"none"``: no tracking; ``http(s)://host:port``: a tracking server; any other URI goes to mlflow as is
    (a ``sqlite:`` one also keeps its artifacts in ``<out_dir>/mlartifacts`` rather than ``./mlruns``).
    """
    out = Path(out_dir).resolve()
    if uri is None:
        return MlflowTracker(f"sqlite:///{out / DATABASE_NAME}", artifact_location=out / ARTIFACTS_NAME)
    uri = uri.strip()
    if not uri:
        raise ConfigError(
            "tracking URI is empty; give an mlflow URI (http://host:port, sqlite:///path.db), "
            "'none' to turn tracking off, or leave it unset for the store in the results folder"
        )
    if uri.lower() == "none":
        return NullTracker()
    if urlsplit(uri).scheme == "sqlite":
        return MlflowTracker(uri, artifact_location=out / ARTIFACTS_NAME)
    return MlflowTracker(uri)


_Method = TypeVar("_Method", bound=Callable[..., None])


def _guarded(method: _Method) -> _Method:
    """Run a tracker call only while tracking is on; turn any failure into one warning and tracking off."""

    @functools.wraps(method)
    def call(self: MlflowTracker, *args: Any, **kwargs: Any) -> None:
        if not self.enabled:
            return
        try:
            with self._bounded_http():
                method(self, *args, **kwargs)
        except Exception as error:  # tracking must never fail a trial
            self._disable(method.__name__.lstrip("_"), error)

    return call  # type: ignore[return-value]


class MlflowTracker:
    """Tracks a sweep in mlflow: one parent run per sweep, one nested run per trial.

    Talks to the store through its own ``MlflowClient`` (never mlflow's global active run), so two trackers
    in one process, or two sweeps one after the other, never share a run.
    """

    def __init__(self, uri: str, artifact_location: Path | None = None) -> None:
        self.uri = uri
        self.artifact_location = artifact_location
        self.enabled = True
        self._remote = urlsplit(uri).scheme.lower() not in _LOCAL_SCHEMES
        self._client: Any = None
        self._experiment_id: str | None = None
        self._sweep_run_id: str | None = None
        self._trial_run_id: str | None = None
        self._last_epoch = 0

    def start_sweep(self, experiment: str, params: dict[str, object]) -> None:
        """Open a parent run tagged ``kwsbench.kind=sweep`` in mlflow experiment ``experiment``."""
        # A failure only turns tracking off for its own sweep: each new sweep tries again.
        self.enabled = True
        self._sweep_run_id = self._trial_run_id = None
        self._start_sweep(experiment, params)

    @_guarded
    def _start_sweep(self, experiment: str, params: dict[str, object]) -> None:
        if self._remote:
            _check_reachable(self.uri)
        if self.artifact_location is not None:
            self.artifact_location.mkdir(parents=True, exist_ok=True)
        from mlflow import MlflowClient

        self._client = MlflowClient(tracking_uri=self.uri)
        self._experiment_id = self._experiment(experiment)
        started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        run = self._client.create_run(
            self._experiment_id,
            run_name=f"{experiment} {started}",
            tags={KIND_TAG: "sweep", EXPERIMENT_TAG: experiment},
        )
        self._sweep_run_id = run.info.run_id
        self._log_params(self._sweep_run_id, params)

    def trial_tracker(self) -> MlflowTracker:
        """A tracker for one of several trials running at once in this open sweep (the Ray executor's).

        It shares this tracker's client, experiment and sweep run but keeps its own open trial, so concurrent
        trials never close each other's runs. Call only ``start_trial``, ``log_epoch`` and ``end_trial`` on it;
        the sweep stays this tracker's to end.
        """
        child = MlflowTracker(self.uri, self.artifact_location)
        child.enabled = self.enabled
        child._client, child._experiment_id = self._client, self._experiment_id
        child._sweep_run_id = self._sweep_run_id
        return child

    @_guarded
    def start_trial(self, trial_id: str, run_name: str, params: dict[str, object]) -> None:
        """Open a run nested under the sweep's, tagged with ``trial_id``, holding the flattened ``params``."""
        if self._sweep_run_id is None:
            raise RuntimeError("start_trial called before start_sweep")
        if self._trial_run_id is not None:
            # The runner opened a trial without closing the last one: that one did not finish.
            self._client.set_terminated(self._trial_run_id, "KILLED")
            self._trial_run_id = None
        run = self._client.create_run(
            self._experiment_id,
            run_name=run_name,
            tags={PARENT_RUN_TAG: self._sweep_run_id, KIND_TAG: "trial", TRIAL_ID_TAG: trial_id},
        )
        self._trial_run_id = run.info.run_id
        self._last_epoch = 0
        self._log_params(self._trial_run_id, params)

    @_guarded
    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Log the numeric ``metrics`` of the open trial at step ``epoch``."""
        run_id = self._open_trial("log_epoch")
        self._last_epoch = epoch
        self._log_metrics(run_id, numeric_metrics(metrics), step=epoch)

    @_guarded
    def end_trial(self, status: str, record: dict[str, object], artifacts: list[Path]) -> None:
        """Log the record's final figures, ``record.json`` and ``artifacts``; close the run FINISHED or FAILED."""
        run_id = self._open_trial("end_trial")
        self._trial_run_id = None
        # At the last epoch's step, so a final figure that is also an epoch metric is its latest value.
        self._log_metrics(run_id, record_metrics(record), step=self._last_epoch)
        self._client.log_text(
            run_id, json.dumps(record, indent=2, sort_keys=True, default=str), "record.json"
        )
        for path in map(Path, artifacts):
            if path.is_dir():
                self._client.log_artifacts(run_id, str(path), artifact_path=path.name)
            elif path.is_file():
                self._client.log_artifact(run_id, str(path))
            else:
                # A missing file is the trial's business (a failed trial has no checkpoint), not tracking's.
                log.warning("mlflow tracking: artifact %s does not exist; not logged for this trial", path)
        self._client.set_terminated(run_id, _run_status(status))

    @_guarded
    def end_sweep(self, status: str) -> None:
        """Close the sweep's run (and a trial left open, as KILLED) with ``status``."""
        if self._trial_run_id is not None:
            self._client.set_terminated(self._trial_run_id, "KILLED")
            self._trial_run_id = None
        if self._sweep_run_id is not None:
            run_id, self._sweep_run_id = self._sweep_run_id, None
            self._client.set_terminated(run_id, _run_status(status))

    def _experiment(self, name: str) -> str:
        """The id of mlflow experiment ``name``, created (with the artifact location) or restored as needed."""
        from mlflow.exceptions import MlflowException

        experiment = self._client.get_experiment_by_name(name)
        if experiment is None:
            location = self.artifact_location.as_uri() if self.artifact_location is not None else None
            try:
                return self._client.create_experiment(name, artifact_location=location)
            except MlflowException:
                # Another process of the same sweep created it between our look-up and create.
                experiment = self._client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            log.info(
                "mlflow experiment %r was deleted in %s; restoring it to track this sweep", name, self.uri
            )
            self._client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id

    def _open_trial(self, call: str) -> str:
        if self._trial_run_id is None:
            raise RuntimeError(f"{call} called without an open trial (start_trial first)")
        return self._trial_run_id

    def _log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        from mlflow.entities import Param

        flat = flatten_params(params)
        if flat:
            # The client splits a long list into requests of mlflow's per-request limit.
            self._client.log_batch(run_id, params=[Param(k, v) for k, v in flat.items()])

    def _log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        if metrics:
            now = int(time.time() * 1000)
            self._client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    @contextmanager
    def _bounded_http(self) -> Iterator[None]:
        """Bound mlflow's HTTP retries for the duration of one call, then restore the environment.

        mlflow reads these settings only from the environment, at each request. Setting them for the call
        alone leaves the rest of the process (and the user's own mlflow use) with its own settings.
        """
        if not self._remote:
            yield
            return
        saved = {name: os.environ.get(name) for name in _HTTP_BOUNDS}
        for name, value in _HTTP_BOUNDS.items():
            os.environ.setdefault(name, value)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def _disable(self, call: str, error: Exception) -> None:
        self.enabled = False
        reason = (str(error).strip().splitlines() or [""])[0][:300]
        log.warning(
            "mlflow tracking at %s failed in %s (%s: %s); tracking is off for the rest of this sweep and "
            "results.jsonl is unaffected: check that the store is reachable, or set the tracking URI to 'none'",
            self.uri,
            call,
            type(error).__name__,
            reason,
        )


def _check_reachable(uri: str) -> None:
    """Raise ``ConnectionError`` fast when nothing listens at an http(s) URI's host and port."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=_CONNECT_TIMEOUT_S):
            pass
    except OSError as error:
        raise ConnectionError(f"no tracking server answers at {parts.hostname}:{port} ({error})") from error


def _run_status(status: str) -> str:
    """mlflow's run status for the runner's ``status``; an unknown one is FAILED, with a warning."""
    known = _RUN_STATUS.get(status.lower())
    if known is None:
        log.warning(
            "mlflow tracking: unknown run status %r, recorded as FAILED; the statuses are: %s",
            status,
            ", ".join(_RUN_STATUS),
        )
        return "FAILED"
    return known


def _key(key: str) -> str:
    return _KEY_INVALID.sub("_", key)[:MAX_KEY_LENGTH] or "_"


def _flatten(values: Mapping[str, object], prefix: str = "") -> Iterator[tuple[str, object]]:
    for name, value in values.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{key}.")
        else:
            yield key, value


def flatten_params(params: Mapping[str, object]) -> dict[str, str]:
    """Nested ``params`` as mlflow params: dotted ``a.b.c`` keys, values as strings of at most 500 chars.

    A longer value keeps its first 497 characters and ends in ``...``; characters mlflow refuses in a key
    become ``_``.
    """
    flat = {}
    for key, value in _flatten(params):
        text = str(value)
        if len(text) > MAX_PARAM_VALUE_LENGTH:
            text = text[: MAX_PARAM_VALUE_LENGTH - 3] + "..."
        flat[_key(key)] = text
    return flat


def _number(value: object) -> float | None:
    """``value`` as a float if it is a real number (not a bool, which JSON readers would miscount)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def numeric_metrics(metrics: Mapping[str, object]) -> dict[str, float]:
    """The numeric leaves of (nested) ``metrics`` under dotted, mlflow-safe keys; other values are dropped."""
    found = {}
    for key, value in _flatten(metrics):
        number = _number(value)
        if number is not None:
            found[_key(key)] = number
    return found


_RECORD_FIGURES = ("params", "macs_total", "macs_conv", "train_samples_per_s", "wall_time_s")


def record_metrics(record: Mapping[str, object]) -> dict[str, float]:
    """A ``TrialRecord`` dict's final figures as mlflow metrics.

    The numeric leaves of ``metrics`` under their own names; ``params``, ``macs_total``, ``macs_conv``,
    ``train_samples_per_s`` and ``wall_time_s`` when set; each latency entry's median as
    ``latency_ms.<backend>.t<threads>.b<batch>`` (threads and batch in the key, since one trial may be
    timed at several). A NaN (a diverged trial) is kept: mlflow stores and shows it.
    """
    figures = numeric_metrics(record.get("metrics") or {})
    for name in _RECORD_FIGURES:
        number = _number(record.get(name))
        if number is not None:
            figures[name] = number
    for entry in record.get("latency") or []:
        if not isinstance(entry, Mapping):
            continue
        median = _number(entry.get("median_ms"))
        if median is not None:
            key = f"latency_ms.{entry.get('backend')}.t{entry.get('threads')}.b{entry.get('batch')}"
            figures[_key(key)] = median
    return figures


def plot_confusion(confusion: list[list[int]], labels: list[str], path: Path) -> Path:
    """Write the confusion matrix (rows: true label, columns: predicted) as a PNG at ``path``; return it.

    Each cell's colour is its share of the row (the recall of that true label), so a rare class reads as
    clearly as a common one; counts are printed in the cells while they still fit (up to 20 labels).
    """
    n = len(labels)
    if len(confusion) != n or any(len(row) != n for row in confusion):
        raise ValueError(
            f"confusion matrix must be {n} x {n} for {n} labels, got "
            f"{len(confusion)} rows of lengths {sorted({len(row) for row in confusion})}"
        )
    # The object-oriented API with the Agg canvas: no pyplot, so no global figure state or GUI backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # max(..., 1): a label absent from the evaluation set has an all-zero row, drawn as zeros.
    shares = [[count / max(sum(row), 1) for count in row] for row in confusion]
    size = 2.0 + 0.45 * n
    figure = Figure(figsize=(size + 1.2, size), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="share of the true label")
    axes.set_xticks(range(n), labels, rotation=90)
    axes.set_yticks(range(n), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if n <= 20:
        for i, row in enumerate(confusion):
            for j, count in enumerate(row):
                colour = "white" if shares[i][j] > 0.5 else "black"
                axes.text(j, i, str(count), ha="center", va="center", color=colour, fontsize=7)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
