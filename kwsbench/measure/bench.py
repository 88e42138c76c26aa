"""``kwsbench bench``: latency of registered models on each backend, with parity and provenance.

For every (model, backend) pair: build the model (seed 0, BatchNorm statistics from two training-mode
passes so that folding them is really tested), build the backend, check its output against eager on the
protocol's input, time it under :mod:`kwsbench.measure.protocol`. A pair that cannot run records why in
``status``; the bench itself goes on.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from kwsbench.errors import ConfigError, KwsbenchError
from kwsbench.measure.backends import (
    EXACT_BACKENDS,
    check_backends,
    export_onnx,
    parity_bound,
    prepare_backend,
)
from kwsbench.measure.latency import measure_latency, torch_threads
from kwsbench.measure.protocol import Protocol
from kwsbench.measure.provenance import collect_provenance
from kwsbench.models import create_model, model_info
from kwsbench.models.registry import resolve_models
from kwsbench.results.schema import LatencyRecord, TrainSpeedRecord

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000


# The records bench produces are the torch-free schema's; the old name stays for callers.
BenchRecord = LatencyRecord


@dataclass
class BenchReport:
    """Records of one latency run, the protocol they share and where they were measured."""

    protocol: Protocol
    provenance: dict
    records: list[LatencyRecord] = field(default_factory=list)

    def to_records(self) -> list[dict]:
        """JSON-ready rows; each carries the protocol and provenance it was taken under."""
        return [r.to_dict() for r in self.records]


def seeded_input(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """The protocol's input: standard normal from ``torch.Generator().manual_seed(seed)``."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def bench_model(
    name: str, batch: int, frontend: bool = False, seed: int = 0
) -> tuple[nn.Module, torch.Tensor]:
    """An eval-mode model with non-trivial BatchNorm statistics and the protocol's input for it.

    Two training-mode forward passes on random inputs move the running statistics away from (0, 1); with
    ``frontend`` the model takes raw 16 kHz audio ``(B, 16000)`` through the log-mel frontend first.
    """
    info = model_info(name)
    torch.manual_seed(seed)
    model: nn.Module = create_model(name)
    shape: tuple[int, ...] = info.input.shape(batch)
    if frontend:
        from kwsbench.data.features import make_frontend

        model = nn.Sequential(make_frontend(info.input), model)
        shape = (batch, SAMPLE_RATE)
    model.train()
    with torch.no_grad():
        for i in range(2):
            model(seeded_input((max(batch, 4),) + shape[1:], seed + 1 + i))
    return model.eval(), seeded_input(shape, seed)


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def _run_pair(
    name: str,
    backend: str,
    model: nn.Module,
    x: torch.Tensor,
    reference: np.ndarray,
    protocol: Protocol,
    workdir: Path,
    onnx_path: Path | None,
) -> BenchRecord:
    record = _record(name, backend, protocol)
    try:
        prepared = prepare_backend(
            backend, model, x, threads=protocol.threads, workdir=workdir, onnx_path=onnx_path, label=name
        )
        record.note = prepared.note
        record.max_abs_diff = float(np.abs(prepared.output - reference).max())
        bound = parity_bound(reference)
        if backend in EXACT_BACKENDS and not record.max_abs_diff <= bound:
            record.status = f"parity failed: max |diff| {record.max_abs_diff:.3g} > {bound:.3g} vs eager"
        result = measure_latency(prepared.run, threads=protocol.threads, protocol=protocol)
    except Exception as err:  # noqa: BLE001 - one pair failing must not stop the bench
        log.info("%s on %s failed", name, backend, exc_info=True)
        record.status = _one_line(err)
        return record
    for key in ("median_ms", "p90_ms", "iqr_ms", "mean_ms", "min_ms", "n"):
        setattr(record, key, getattr(result, key))
    return record


def _record(name: str, backend: str, protocol: Protocol, **fields) -> LatencyRecord:
    return LatencyRecord(
        name, backend, protocol.threads, protocol.batch, protocol.timed, protocol=protocol.to_dict(), **fields
    )


def _validate(pattern: str, **counts: int | None) -> list[str]:
    """The models matching ``pattern``; each count must be at least 1 (``warmup``: at least 0)."""
    for label, value in counts.items():
        least = 0 if label == "warmup" else 1
        if value is not None and value < least:
            raise ConfigError(f"--{label} must be at least {least}, got {value}")
    return resolve_models(pattern)


def run_bench(
    pattern: str = "bcresnet_*",
    backends: list[str] | tuple[str, ...] = ("eager",),
    threads: int = 1,
    batch: int = 1,
    frontend: bool = False,
    iterations: int | None = None,
    warmup: int | None = None,
) -> BenchReport:
    """Time every model matching ``pattern`` on every backend under the latency protocol."""
    names = _validate(pattern, threads=threads, batch=batch, iterations=iterations, warmup=warmup)
    defaults = Protocol()
    protocol = Protocol(
        warmup=defaults.warmup if warmup is None else warmup,
        iterations=defaults.iterations if iterations is None else iterations,
        timed="frontend+model" if frontend else "model",
        threads=threads,
        batch=batch,
    )
    backends = check_backends(list(backends))
    report = BenchReport(protocol=protocol, provenance=collect_provenance(threads))
    for name in tqdm(names, desc="bench", unit="model", leave=False, disable=len(names) < 2):
        try:
            model, x = bench_model(name, batch, frontend)
        except KwsbenchError:
            raise
        except Exception as err:  # noqa: BLE001 - a model that cannot even be built is recorded
            report.records += [_record(name, b, protocol, status=_one_line(err)) for b in backends]
            continue
        report.records += latency_of(name, model, x, backends, protocol, report.provenance)
    return report


def latency_of(
    name: str,
    model: nn.Module,
    x: torch.Tensor,
    backends: list[str],
    protocol: Protocol,
    provenance: dict | None = None,
) -> list[LatencyRecord]:
    """Latency of the eval-mode ``model`` on input ``x`` on every backend, each checked against eager."""
    backends = check_backends(list(backends))
    provenance = provenance or collect_provenance(protocol.threads)
    try:
        with torch_threads(protocol.threads), torch.inference_mode():
            reference = model(x).float().numpy()
    except Exception as err:  # noqa: BLE001 - a model that cannot even run eagerly is recorded
        return [_record(name, b, protocol, status=_one_line(err), provenance=provenance) for b in backends]
    records = []
    with tempfile.TemporaryDirectory(prefix="kwsbench-bench-") as tmp:
        workdir = Path(tmp)
        onnx_path = _shared_export(model, x, backends, workdir, name)
        for backend in backends:
            records.append(_run_pair(name, backend, model, x, reference, protocol, workdir, onnx_path))
    _fill_ratios(records)
    for record in records:
        record.provenance = provenance
    return records


def run_train_bench(
    pattern: str = "bcresnet_1",
    threads: int | None = None,
    batch: int | None = None,
    steps: int | None = None,
    warmup: int | None = None,
) -> list[TrainSpeedRecord]:
    """Training throughput of both formulations of every model matching ``pattern``, side by side.

    ``None`` takes the training-speed protocol's default (``TRAIN_DEFAULTS``), the same for the API and the CLI.
    """
    from kwsbench.measure.train_speed import TRAIN_DEFAULTS, compare_training_throughput

    settings = {
        "threads": TRAIN_DEFAULTS["threads"] if threads is None else threads,
        "batch": TRAIN_DEFAULTS["batch"] if batch is None else batch,
        "steps": TRAIN_DEFAULTS["steps"] if steps is None else steps,
        "warmup": TRAIN_DEFAULTS["warmup"] if warmup is None else warmup,
    }
    names = _validate(pattern, **settings)
    provenance = collect_provenance(settings["threads"])
    records: list[TrainSpeedRecord] = []
    for name in tqdm(names, desc="train speed", unit="model", leave=False):
        # Both formulations in one run, steps alternating, so a noisy machine slows both alike.
        both = compare_training_throughput(name, **settings)
        for formulation in ("eager", "fast"):
            record = both[formulation]
            record.speedup_vs_eager = both["speedup"]
            record.provenance = provenance
            records.append(record)
    return records


def _shared_export(
    model: nn.Module, x: torch.Tensor, backends: list[str], workdir: Path, name: str
) -> Path | None:
    """One ONNX export per model for the backends that read it; a failure is left to each backend."""
    if not {"onnxruntime", "openvino", "openvino-bf16"} & set(backends):
        return None
    try:
        return export_onnx(model, x, workdir / "model.onnx", name)
    except KwsbenchError:
        return None


def _fill_ratios(records: list[BenchRecord]) -> None:
    eager = {r.name: r.median_ms for r in records if r.backend == "eager" and r.median_ms}
    for r in records:
        if r.median_ms is not None and r.name in eager:
            r.ratio_to_eager = r.median_ms / eager[r.name]


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _provenance_lines(p: dict, batch: int) -> list[str]:
    versions = ", ".join(f"{k} {v}" for k, v in p["versions"].items() if v)
    return [
        f"CPU: {p['cpu']} ({p['logical_cpus']} logical; flags: {' '.join(p['cpu_flags']) or 'none'})",
        f"threads: {p['threads']}; batch: {batch}; {versions}",
    ]


def format_train_bench(records: list[TrainSpeedRecord]) -> str:
    """A provenance header and one row per model x formulation."""
    first = records[0]
    lines = _provenance_lines(first.provenance, first.batch)
    lines.append(
        f"protocol {first.protocol_version}: {first.protocol}; {first.warmup} warm-up, {first.steps} timed steps"
    )
    width = max(len(r.name) for r in records)
    header = (
        f"{'model':<{width}}  {'formulation':<11}  {'batch':>5}  {'samples/s':>9}  {'step ms':>8}  "
        f"{'p90 ms':>8}  {'x eager':>7}"
    )
    lines += [header, "-" * len(header)]
    for r in records:
        lines.append(
            f"{r.name:<{width}}  {r.formulation:<11}  {r.batch:>5}  {r.samples_per_s:>9.1f}  "
            f"{r.step_ms_median:>8.1f}  {r.step_ms_p90:>8.1f}  "
            f"{1.0 if r.formulation == 'eager' else r.speedup_vs_eager:>7.3f}"
        )
    return "\n".join(lines)


def format_bench(report: BenchReport) -> str:
    """A provenance header and one row per model x backend."""
    lines = _provenance_lines(report.provenance, report.protocol.batch)
    pr = report.protocol
    lines.append(
        f"protocol {pr.version}: timed {pr.timed}, warm-up {pr.warmup}, >= {pr.iterations} calls "
        f"and >= {pr.min_time_s} s, input {pr.input}"
    )
    width = max([len(r.name) for r in report.records] + [5])
    header = f"{'model':<{width}}  {'backend':<13}  {'median ms':>9}  {'p90 ms':>8}  {'iqr ms':>7}  {'x eager':>7}  {'max|diff|':>9}  status"
    lines += [header, "-" * len(header)]
    for r in report.records:
        lines.append(
            f"{r.name:<{width}}  {r.backend:<13}  {_fmt(r.median_ms, '9.3f')}  {_fmt(r.p90_ms, '8.3f')}  "
            f"{_fmt(r.iqr_ms, '7.3f')}  {_fmt(r.ratio_to_eager, '7.3f')}  {_fmt(r.max_abs_diff, '9.2e')}  "
            f"{r.status}{'  (' + r.note + ')' if r.note and r.backend == 'optimized' else ''}"
        )
    return "\n".join(lines)
