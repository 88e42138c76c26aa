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


def _now() -> str:
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
            tmp.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": _now()}))
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
    from kwsbench.measure.provenance import collect_provenance
    from kwsbench.runner.loop import train_trial

    started, start = _now(), time.perf_counter()
    common = dict(provenance=collect_provenance(threads), git_commit=git_commit(), started_at=started)
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
            finished_at=_now(),
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
        lines = str(err).strip().splitlines()
        message = f"{type(err).__name__}: {lines[0] if lines else ''}"
        record = _record(
            config,
            status="failed",
            error=message,
            traceback="".join(traceback.format_exception(err)),
            wall_time_s=round(time.perf_counter() - start, 1),
            finished_at=_now(),
            **common,
        )
        tracker.end_trial("failed", record.to_dict(), [])
        return record


def run_experiment(
    experiment: Experiment,
    out_dir: str | os.PathLike,
    *,
    tracking_uri: str | None = None,
    keep_going: bool = True,
    cache_dir: str | os.PathLike | None = None,
    device: str | None = None,
    progress: bool = True,
) -> SweepSummary:
    """Run every trial not yet done; see the module docstring for what is skipped, resumed and recorded."""
    from tqdm import tqdm

    from kwsbench.runner.tracking import make_tracker

    sweep = Sweep(experiment, out_dir)
    summary = SweepSummary(out_dir=str(sweep.out))
    trials = experiment.trials()
    tracker = make_tracker(tracking_uri, sweep.out)
    tracker.start_sweep(experiment.name, {"source": experiment.source, "trials": len(trials)})
    status = "ok"
    try:
        bar = tqdm(trials, desc=f"{experiment.name}", unit="trial", disable=not progress)
        for config in bar:
            bar.set_postfix_str(config.label)
            state = sweep.claim(config)
            if state == "done":
                summary.done_before.append(config.trial_id)
                continue
            if state == "running":
                summary.skipped_running.append(config.trial_id)
                continue
            try:
                record = run_trial(
                    sweep, config, device=device or experiment.device, threads=experiment.threads,
                    cache_dir=cache_dir, tracker=tracker, progress=progress,
                )  # fmt: skip
            except BaseException:
                sweep.release(config)  # interrupted: the next run resumes it from its last epoch
                raise
            sweep.finish(record)
            if record.status == "ok":
                summary.finished.append(config.trial_id)
            else:
                summary.failed.append(config.trial_id)
                log.warning("trial %s (%s) failed: %s", config.trial_id, config.label, record.error)
                if not keep_going:
                    status = "failed"
                    raise KwsbenchError(
                        f"trial {config.label} failed ({record.error}); its record is in {sweep.results}"
                    )
    except BaseException:
        status = "failed" if status == "ok" else status
        raise
    finally:
        tracker.end_sweep(status)
    return summary


def format_status(statuses: list[TrialStatus]) -> str:
    """``--dry-run``: one line per trial with its state."""
    lines = [f"{len(statuses)} trials; {sum(s.state == 'done' for s in statuses)} done"]
    for s in statuses:
        lines.append(
            f"  {s.config.trial_id}  {s.state:<8}  {s.config.label}" + (f"  ({s.detail})" if s.detail else "")
        )
    return "\n".join(lines)


def format_summary(summary: SweepSummary) -> str:
    return (
        f"{len(summary.finished)} trials finished, {len(summary.failed)} failed, {len(summary.done_before)} "
        f"already done, {len(summary.skipped_running)} running elsewhere; records in "
        f"{Path(summary.out_dir) / RESULTS_NAME}"
    )
