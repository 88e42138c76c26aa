"""``kwsbench run``: every trial of an experiment, trained, measured and appended to ``results.jsonl``.

Crash safety: a trial is claimed under the results file's lock (a claim file holding the claimant's process
id), trained in ``trials/<trial_id>/`` (resumable from its last epoch), and its record appended under the
same lock the moment it finishes. A re-run skips every trial with an ``ok`` record, takes over claims whose
process is gone, and leaves alone trials another live process is running, so two ``run`` processes on one
folder never duplicate or lose a record. A failed trial is recorded with its error and the sweep goes on
(``--fail-fast`` stops it); a re-run tries failed trials again.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from kwsbench.errors import KwsbenchError
from kwsbench.results.schema import LatencyRecord, TrialRecord
from kwsbench.results.store import append_to, locked, parse_lines
from kwsbench.runner.config import Experiment, TrialConfig

log = logging.getLogger(__name__)

RESULTS_NAME = "results.jsonl"
CLAIMS_DIR = "claims"
TRIALS_DIR = "trials"


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def git_commit() -> str | None:
    """The commit of the kwsbench checkout that runs (None outside a git checkout)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _pid_alive(pid: int, host: str) -> bool:
    if host != socket.gethostname():
        return True  # another machine's claim: assume it is alive (a shared folder), never steal it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _records_in(fd: int) -> list[TrialRecord]:
    size = os.fstat(fd).st_size
    text = os.pread(fd, size, 0).decode("utf-8") if size else ""
    return [r for r in parse_lines(text, RESULTS_NAME) if isinstance(r, TrialRecord)]


@dataclass
class TrialStatus:
    """Where one trial of the grid stands: done (an ok record), failed before, running elsewhere, or to do."""

    config: TrialConfig
    state: str  # "done" | "failed" | "running" | "partial" | "todo"
    detail: str = ""


@dataclass
class SweepSummary:
    """What a ``run`` did: trial ids by outcome."""

    out_dir: str
    done_before: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped_running: list[str] = field(default_factory=list)
    # Ray executor only: per trial id, seconds from submitting the trial to the driver holding its record,
    # less the trial's own wall_time_s (scheduling, worker start-up and imports, transfers).
    overhead_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class Sweep:
    """An experiment bound to its results folder."""

    def __init__(self, experiment: Experiment, out_dir: str | os.PathLike):
        self.experiment = experiment
        self.out = Path(out_dir)
        self.results = self.out / RESULTS_NAME
        self.claims = self.out / CLAIMS_DIR

    def trial_dir(self, config: TrialConfig) -> Path:
        return self.out / TRIALS_DIR / config.trial_id

    def status(self) -> list[TrialStatus]:
        """Every trial's state, read under the lock (``--dry-run``: writes nothing, not even the folder)."""
        records: list[TrialRecord] = []
        if self.results.is_file():
            with locked(self.results) as fd:
                records = _records_in(fd)
        ok = {r.trial_id for r in records if r.status == "ok"}
        failed = {r.trial_id: r.error for r in records if r.status != "ok"}
        out = []
        for config in self.experiment.trials():
            tid = config.trial_id
            claim = self._claim_owner(tid)
            if tid in ok:
                out.append(TrialStatus(config, "done"))
            elif claim is not None and _pid_alive(*claim):
                out.append(TrialStatus(config, "running", f"process {claim[0]} on {claim[1]}"))
            elif (self.trial_dir(config) / "resume.pt").is_file():
                out.append(TrialStatus(config, "partial", "resumes from its last epoch"))
            elif tid in failed:
                out.append(TrialStatus(config, "failed", str(failed[tid])))
            else:
                out.append(TrialStatus(config, "todo"))
        return out

    def _claim_owner(self, trial_id: str) -> tuple[int, str] | None:
        try:
            values = json.loads((self.claims / f"{trial_id}.json").read_text())
            return int(values["pid"]), str(values["host"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def claim(self, config: TrialConfig) -> str:
        """Under the results lock: ``"done"``, ``"running"`` (another live process has it) or ``"claimed"``."""
        with locked(self.results) as fd:
            if any(r.trial_id == config.trial_id and r.status == "ok" for r in _records_in(fd)):
                return "done"
            owner = self._claim_owner(config.trial_id)
            if owner is not None and owner != (os.getpid(), socket.gethostname()) and _pid_alive(*owner):
                return "running"
            self.claims.mkdir(parents=True, exist_ok=True)
            path = self.claims / f"{config.trial_id}.json"
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": utc_now()}))
            os.replace(tmp, path)
            return "claimed"

    def finish(self, record: TrialRecord) -> None:
        """Append the trial's record and release its claim, under the lock."""
        with locked(self.results) as fd:
            append_to(fd, [record])
            with contextlib.suppress(OSError):
                (self.claims / f"{record.trial_id}.json").unlink()

    def release(self, config: TrialConfig) -> None:
        with contextlib.suppress(OSError):
            (self.claims / f"{config.trial_id}.json").unlink()


def stream_summary(record) -> dict:
    """The part of a ``StreamEvalRecord`` a trial record keeps: FRR at each FA/h target, overall and per keyword."""
    return {
        "hours": record.hours,
        "snr_db": record.dataset.get("snr_db"),
        "occurrences": sum(record.occurrences.values()) if record.occurrences else None,
        "operating_points": [
            {
                "target_false_alarms_per_hour": p["target_false_alarms_per_hour"],
                "threshold": p["threshold"],
                "false_alarms_per_hour": p["false_alarms_per_hour"],
                "false_rejection_rate": p["false_rejection_rate"],
                "per_keyword": {
                    k: v.get("false_rejection_rate") for k, v in p.get("per_keyword", {}).items()
                },
            }
            for p in record.operating_points
        ],
    }


def measure_stream(config: TrialConfig, checkpoint: Path, cache_dir=None) -> dict:
    """``kwsbench stream-eval`` of a trained checkpoint as the experiment asks (``measure.stream_hours``)."""
    from kwsbench.stream.detector import DetectorSettings
    from kwsbench.stream.evaluate import evaluate_synthetic
    from kwsbench.stream.scorer import CheckpointScorer

    # Batches of 16 windows scored fastest (stream-eval's default); the stream's seed is the trial's.
    scorer = CheckpointScorer(checkpoint, threads=config.measure.threads, batch=16)
    record = evaluate_synthetic(
        scorer, config.dataset, DetectorSettings(), hours=config.measure.stream_hours,
        snr_db=config.measure.stream_snr_db, seed=config.seed, cache_dir=cache_dir, progress=False,
    )  # fmt: skip
    return stream_summary(record)


def measure_trained(config: TrialConfig, checkpoint: Path, cache_dir=None) -> dict:
    """Params, MACs and latency per backend of a trained checkpoint (batch 1, the experiment's threads), and
    streaming detection when the experiment asks for it."""
    import torch

    from kwsbench.measure.bench import latency_of
    from kwsbench.measure.counts import count_macs, count_params
    from kwsbench.measure.protocol import Protocol
    from kwsbench.models.checkpoint import load_checkpoint, model_from_checkpoint

    model, spec = model_from_checkpoint(load_checkpoint(checkpoint), str(checkpoint))
    x = torch.randn(spec.shape(1), generator=torch.Generator().manual_seed(0))
    macs = count_macs(model, x)
    protocol = Protocol(threads=config.measure.threads, batch=1)
    latency: list[LatencyRecord] = latency_of(config.model, model, x, list(config.measure.backends), protocol)
    return {
        "params": count_params(model),
        "macs_total": macs.total,
        "macs_conv": macs.conv,
        "latency": [r.to_dict() for r in latency],
        "stream_eval": measure_stream(config, checkpoint, cache_dir)
        if config.measure.stream_hours > 0
        else {},
    }


def _record(config: TrialConfig, **fields) -> TrialRecord:
    return TrialRecord(
        trial_id=config.trial_id,
        experiment=config.experiment,
        model=config.model,
        seed=config.seed,
        options=dict(config.options),
        recipe=config.identity()["recipe"],
        dataset=config.identity()["dataset"],
        **fields,
    )


def run_trial(
    sweep: Sweep, config: TrialConfig, *, device: str, threads: int, cache_dir, tracker, progress: bool
) -> TrialRecord:
    """Train and measure one claimed trial; any failure becomes a ``failed`` record (Ctrl-C propagates)."""
    from kwsbench.runner.loop import train_trial

    start = time.perf_counter()
    common = provenance_fields(threads)
    tracker.start_trial(
        config.trial_id, config.label, {**config.identity(), "device": device, "threads": threads}
    )
    try:
        outcome = train_trial(
            config, sweep.trial_dir(config), device=device, threads=threads, cache_dir=cache_dir,
            tracker=tracker, progress=progress,
        )  # fmt: skip
        measured = measure_trained(config, outcome.checkpoint, cache_dir)
        metrics = {k: v for k, v in outcome.metrics.items() if k not in ("history", "config")}
        record = _record(
            config,
            status="ok",
            metrics=metrics,
            train_samples_per_s=outcome.samples_per_s,
            wall_time_s=round(time.perf_counter() - start, 1),
            checkpoint=str(outcome.checkpoint),
            finished_at=utc_now(),
            **measured,
            **common,
        )
        artifacts = [outcome.checkpoint, outcome.checkpoint.parent / "metrics.json"]
        with contextlib.suppress(Exception):
            from kwsbench.runner.tracking import plot_confusion

            artifacts.append(
                plot_confusion(
                    metrics["best"]["confusion"],
                    metrics["labels"],
                    outcome.checkpoint.parent / "confusion.png",
                )
            )
        tracker.end_trial("ok", record.to_dict(), artifacts)
        return record
    except KeyboardInterrupt:
        tracker.end_trial("killed", {}, [])
        raise
    except Exception as err:  # noqa: BLE001 - a failed trial is recorded, the sweep goes on
        record = failed_record(
            config, error_line(err), "".join(traceback.format_exception(err)),
            seconds=time.perf_counter() - start, common=common,
        )  # fmt: skip
        tracker.end_trial("failed", record.to_dict(), [])
        return record


def error_line(err: BaseException) -> str:
    """``Type: first line of the message``: the ``error`` of a failed record."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def provenance_fields(threads: int) -> dict:
    """The provenance, commit and start time every record of a trial starting now carries."""
    from kwsbench.measure.provenance import collect_provenance

    return dict(provenance=collect_provenance(threads), git_commit=git_commit(), started_at=utc_now())


def failed_record(
    config: TrialConfig, error: str, traceback_text: str, *, seconds: float, common: dict
) -> TrialRecord:
    """The ``failed`` record of ``config``: its ``error`` line, the traceback, ``seconds`` spent on it."""
    return _record(
        config,
        status="failed",
        error=error,
        traceback=traceback_text,
        wall_time_s=round(seconds, 1),
        finished_at=utc_now(),
        **common,
    )


class SweepRun:
    """The bookkeeping every executor shares: claims, records appended as trials finish, the summary, and
    ``--fail-fast``. An executor only decides where and when each claimed trial runs."""

    def __init__(self, sweep: Sweep, keep_going: bool) -> None:
        self.sweep = sweep
        self.keep_going = keep_going
        self.summary = SweepSummary(out_dir=str(sweep.out))

    def claim(self, config: TrialConfig) -> bool:
        """Claim ``config`` for this process; False (and noted in the summary) when done or running elsewhere."""
        state = self.sweep.claim(config)
        if state == "done":
            self.summary.done_before.append(config.trial_id)
        elif state == "running":
            self.summary.skipped_running.append(config.trial_id)
        return state == "claimed"

    def finish(self, config: TrialConfig, record: TrialRecord) -> None:
        """Append ``record`` and release the claim; a failed one stops the sweep under ``--fail-fast``."""
        self.sweep.finish(record)
        if record.status == "ok":
            self.summary.finished.append(config.trial_id)
            return
        self.summary.failed.append(config.trial_id)
        log.warning("trial %s (%s) failed: %s", config.trial_id, config.label, record.error)
        if not self.keep_going:
            raise KwsbenchError(
                f"trial {config.label} failed ({record.error}); its record is in {self.sweep.results}"
            )


@contextlib.contextmanager
def tracked_sweep(tracker, experiment: Experiment):
    """Open the sweep in ``tracker`` for the block; close it ``ok``, or ``failed`` when the block raises."""
    tracker.start_sweep(experiment.name, {"source": experiment.source, "trials": len(experiment.trials())})
    status = "ok"
    try:
        yield
    except BaseException:
        status = "failed"
        raise
    finally:
        tracker.end_sweep(status)


def run_experiment(
    experiment: Experiment,
    out_dir: str | os.PathLike,
    *,
    tracking_uri: str | None = None,
    keep_going: bool = True,
    cache_dir: str | os.PathLike | None = None,
    device: str | None = None,
    progress: bool = True,
    ray=None,
) -> SweepSummary:
    """Run every trial not yet done; see the module docstring for what is skipped, resumed and recorded.

    ``ray`` (a ``kwsbench.runner.ray_executor.RayOptions``) runs the trials as Ray tasks; None runs them
    here, one after another.
    """
    from kwsbench.runner.tracking import make_tracker

    run = SweepRun(Sweep(experiment, out_dir), keep_going)
    tracker = make_tracker(tracking_uri, run.sweep.out)
    device = device or experiment.device
    if ray is not None:
        from kwsbench.runner.ray_executor import run_on_ray

        run_on_ray(run, tracker, ray, device=device, cache_dir=cache_dir, progress=progress)
    else:
        with tracked_sweep(tracker, experiment):
            _run_here(run, tracker, device=device, cache_dir=cache_dir, progress=progress)
    return run.summary


def _run_here(run: SweepRun, tracker, *, device: str, cache_dir, progress: bool) -> None:
    """The local executor: each trial in this process, in grid order, at the experiment's threads."""
    from tqdm import tqdm

    experiment = run.sweep.experiment
    bar = tqdm(experiment.trials(), desc=f"{experiment.name}", unit="trial", disable=not progress)
    for config in bar:
        bar.set_postfix_str(config.label)
        if not run.claim(config):
            continue
        try:
            record = run_trial(
                run.sweep, config, device=device, threads=experiment.threads, cache_dir=cache_dir,
                tracker=tracker, progress=progress,
            )  # fmt: skip
        except BaseException:
            run.sweep.release(config)  # interrupted: the next run resumes it from its last epoch
            raise
        run.finish(config, record)


def format_status(statuses: list[TrialStatus]) -> str:
    """``--dry-run``: one line per trial with its state."""
    lines = [f"{len(statuses)} trials; {sum(s.state == 'done' for s in statuses)} done"]
    for s in statuses:
        lines.append(
            f"  {s.config.trial_id}  {s.state:<8}  {s.config.label}" + (f"  ({s.detail})" if s.detail else "")
        )
    return "\n".join(lines)


def format_summary(summary: SweepSummary) -> str:
    overhead = ""
    if summary.overhead_s:
        values = sorted(summary.overhead_s.values())
        overhead = (
            f"; Ray overhead per trial: median {values[len(values) // 2]:.2f} s, max {values[-1]:.2f} s"
        )
    return (
        f"{len(summary.finished)} trials finished, {len(summary.failed)} failed, {len(summary.done_before)} "
        f"already done, {len(summary.skipped_running)} running elsewhere; records in "
        f"{Path(summary.out_dir) / RESULTS_NAME}{overhead}"
    )
