"""`kwsbench export`: a checkpoint as an ONNX model with a JSON beside it, parity-checked against PyTorch.

What is exported is kwsbench's exactly equivalent inference graph (:func:`kwsbench.measure.optimize.
inference_graph`: BatchNorm folded into convolutions, SubSpectral Norm as constants, frequency averages fused;
``Add`` chains merged into ``Sum`` in float32 files), optionally behind the log-mel frontend, which exports its
DFT as matrix products (no ONNX ``DFT`` op). The graph takes batch 1: the TorchScript exporter cannot give the
frontend's framing (``unfold``) a dynamic batch, and the dynamo exporter took 13 s here and, traced at batch 1,
fixed the batch as well; streaming runs batch 1 anyway, and ``ExportedModel.run`` feeds larger batches row by row.

Parity: ONNX Runtime's output against the PyTorch model the checkpoint describes (eager, float32, FFT
frontend), on real clips of a dataset when one is given (32 test clips, seeded) or else on seeded standard
normal inputs of the declared shape. The float32 export is refused when the largest difference exceeds
:func:`kwsbench.measure.backends.parity_bound` (a fraction of the largest logit), and nothing is written;
otherwise the figures are printed and kept in the JSON.

``int8``: the float32 graph quantised by :mod:`kwsbench.export.quantize` on 300 seeded training clips, then the
fp32 and int8 files are both evaluated on the dataset's test split (accuracy, delta, share of clips on which
they agree) and timed at batch 1 on one thread (:func:`measure_latency`), each on ONNX Runtime and on OpenVINO.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from kwsbench.atomic import write_atomically, write_json_atomically
from kwsbench.data.records import CLIP_SAMPLES
from kwsbench.errors import BackendError, ConfigError
from kwsbench.export.exported import EXPORT_FORMAT, ExportedModel, file_sha256, sidecar_path
from kwsbench.export.quantize import CALIBRATION_CLIPS
from kwsbench.specs import DatasetSpec, InputSpec

PARITY_ITEMS = (
    32  # clips (or noise inputs) the parity check runs: enough to cover every class of a test split
)
LATENCY_RUNTIMES = ("onnxruntime", "openvino")
FRONTEND_PREFIX = "/frontend/"  # ONNX node names of the frontend (the export wraps it as child "frontend")


@dataclass
class ExportResult:
    """What ``export_checkpoint`` wrote: the ONNX file, the JSON beside it and that JSON's contents."""

    onnx_path: Path
    json_path: Path
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"onnx": str(self.onnx_path), "json": str(self.json_path), **self.meta}


def _out_path(out_path: str | os.PathLike) -> Path:
    from kwsbench.data.workdirs import writable_folder

    out = Path(out_path).expanduser()
    if out.suffix != ".onnx":
        raise ConfigError(f"--out {out}: name the ONNX file to write, ending in .onnx (e.g. {out}.onnx)")
    if out.is_dir():
        raise ConfigError(
            f"--out {out}: is a folder; name the ONNX file to write inside it, e.g. {out}/model.onnx"
        )
    writable_folder(out.parent, f"--out {out}", "choose a writable folder for --out")
    return out


def _parity_inputs(
    reference_frontend: nn.Module, with_frontend: bool, spec: InputSpec, cache, seed: int
) -> tuple[torch.Tensor, str]:
    """The inputs the export is checked on, ``(PARITY_ITEMS, *input shape)``, and how they were drawn."""
    from kwsbench.data.cache import as_float32
    from kwsbench.measure.bench import seeded_input

    if cache is None:
        shape = (PARITY_ITEMS, CLIP_SAMPLES) if with_frontend else spec.shape(PARITY_ITEMS)
        return seeded_input(shape, seed), f"{PARITY_ITEMS} standard normal inputs, seed {seed}"
    waves, _ = cache.split("test")
    if len(waves) == 0:
        raise ConfigError(
            "the dataset's test split has no clips; choose another --protocol for the parity check"
        )
    chosen = np.sort(np.random.default_rng(seed).permutation(len(waves))[:PARITY_ITEMS])
    clips = torch.from_numpy(as_float32(waves[chosen]))
    what = f"{len(chosen)} test clips of {cache.meta['settings']['dataset']}, seed {seed}"
    if with_frontend:
        return clips, what
    with torch.no_grad():
        return reference_frontend(clips), what


def _calibration_inputs(frontend: nn.Module, with_frontend: bool, cache, count: int, seed: int) -> np.ndarray:
    from kwsbench.data.cache import as_float32

    waves, _ = cache.split("train")
    if len(waves) == 0:
        raise ConfigError(
            "the dataset's train split has no clips to calibrate int8 on; choose another --protocol"
        )
    chosen = np.sort(np.random.default_rng(seed).permutation(len(waves))[:count])
    clips = as_float32(waves[chosen])
    if with_frontend:
        return clips
    with torch.no_grad():
        return frontend(torch.from_numpy(clips)).numpy()


def _max_diff(exported: ExportedModel, inputs: torch.Tensor, reference: np.ndarray) -> float:
    return float(np.abs(exported.run(inputs.numpy()) - reference).max())


def _versions() -> dict[str, str | None]:
    from kwsbench.measure.provenance import collect_provenance

    versions = collect_provenance(threads=1)["versions"]
    return {k: versions.get(k) for k in ("kwsbench", "torch", "onnx", "onnxruntime")}


def _frontend_settings(frontend: nn.Module) -> dict[str, Any]:
    """The log-mel (or MFCC) settings ``make_frontend`` derived from the checkpoint's input spec."""
    log_mel = getattr(frontend, "log_mel", frontend)  # MFCC wraps a LogMel
    names = ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "f_min", "f_max", "eps", "center")
    settings = {"kind": type(frontend).__name__, **{n: getattr(log_mel, n) for n in names}}
    settings["num_samples"] = log_mel.num_samples
    if hasattr(frontend, "n_mfcc"):
        settings["n_mfcc"] = frontend.n_mfcc
    return settings


def _metadata(
    ckpt: dict, checkpoint: Path, spec: InputSpec, frontend: nn.Module, example: torch.Tensor, path: Path
) -> dict[str, Any]:
    import onnx

    with_frontend = example.dim() == 2
    settings = _frontend_settings(frontend)
    return {
        "format": EXPORT_FORMAT,
        "onnx_sha256": file_sha256(path),
        "labels": list(ckpt["labels"]),
        "input": {
            "kind": "waveform" if with_frontend else "features",
            "shape": [1, *example.shape[1:]],
            "dtype": "float32",
            "sample_rate": int(settings["sample_rate"]),
            "clip_samples": int(example.shape[1]) if with_frontend else CLIP_SAMPLES,
            "frontend_inside": with_frontend,
        },
        "input_spec": dataclasses.asdict(spec),
        "frontend": settings,
        "model": {
            "name": ckpt["model"],
            "options": dict(ckpt["options"]),
            "num_classes": int(ckpt["num_classes"]),
            "graph": "kwsbench inference graph (BatchNorm folded, SubSpectral Norm as constants)",
        },
        "source": {"checkpoint": str(checkpoint.resolve()), "sha256": file_sha256(checkpoint)},
        "versions": _versions(),
        "opset": int(
            next(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx"))
        ),
        "int8": None,
    }


def _latencies(fp32: Path, int8: Path, example: torch.Tensor, workdir: Path, model: nn.Module) -> dict:
    from kwsbench.measure.backends import prepare_backend
    from kwsbench.measure.latency import measure_latency
    from kwsbench.measure.protocol import Protocol

    protocol = Protocol(timed="frontend+model" if example.dim() == 2 else "model")
    out: dict[str, Any] = {"batch": 1, "threads": 1, "protocol": protocol.to_dict()}
    for runtime in LATENCY_RUNTIMES:
        ms = {}
        for precision, path in (("fp32", fp32), ("int8", int8)):
            prepared = prepare_backend(runtime, model, example, threads=1, workdir=workdir, onnx_path=path)
            ms[precision] = measure_latency(prepared.run, threads=1, protocol=protocol).median_ms
        out[runtime] = {
            "fp32_ms": round(ms["fp32"], 4),
            "int8_ms": round(ms["int8"], 4),
            "ratio": round(ms["int8"] / ms["fp32"], 3),
        }
    return out


def _accuracies(fp32: ExportedModel, int8: ExportedModel, cache) -> dict:
    """Test accuracy of both files on each runtime of ``LATENCY_RUNTIMES``: the int8 delta is a property of
    the runtime's integer kernels as much as of the scales (OpenVINO and ONNX Runtime round differently)."""
    from kwsbench.runner.evaluate import exported_pipeline, split_predictions, summarise

    out: dict[str, Any] = {"split": "test"}
    for runtime in LATENCY_RUNTIMES:
        predictions = {}
        for name, exported in (("fp32", fp32), ("int8", int8)):
            on_runtime = ExportedModel(exported.path, exported.meta, threads=1, runtime=runtime)
            model, frontend = exported_pipeline(on_runtime, cache)
            targets, predictions[name] = split_predictions(
                model, frontend, cache, "test", labels=exported.labels
            )
        fp, q = (summarise(targets, predictions[k], fp32.labels, "test").accuracy for k in ("fp32", "int8"))
        out["clips"] = int(len(targets))
        out[runtime] = {
            "fp32": round(fp, 6),
            "int8": round(q, 6),
            "delta": round(q - fp, 6),
            "agreement": round(float((predictions["fp32"] == predictions["int8"]).mean()), 6),
        }
    return out


def _check_parity(
    exported: ExportedModel, inputs: torch.Tensor, expected: np.ndarray, drawn: str, where: str
) -> dict[str, Any]:
    """The parity figures of a float32 export; a difference beyond ``parity_bound`` is a BackendError."""
    from kwsbench.measure.backends import parity_bound

    diff, bound = _max_diff(exported, inputs, expected), parity_bound(expected)
    if not diff <= bound:  # NaN fails too
        raise BackendError(
            f"{where}: the ONNX export differs from PyTorch by {diff:.3g} (bound {bound:.3g}, {drawn}); "
            "nothing was written; please report this message as a bug"
        )
    with_frontend = exported.takes_waveform
    return {
        "reference": "PyTorch eager float32" + (" with the FFT log-mel frontend" if with_frontend else ""),
        "inputs": drawn,
        "max_abs_diff": diff,
        "bound": bound,
        "max_abs_logit": float(np.abs(expected).max()),
    }


def _int8(
    raw: Path,
    fp32: ExportedModel,
    reference: nn.Module,
    frontend: nn.Module,
    checked: tuple[torch.Tensor, np.ndarray],
    cache,
    calibration: DatasetSpec,
    clips: int,
    seed: int,
    bar: tqdm,
) -> tuple[Path, dict[str, Any]]:
    """Quantise ``raw`` (the float32 graph before ``Sum`` merging) beside it; returns the file and its
    figures: scheme, calibration, accuracy and latency against ``fp32`` (see the module docstring)."""
    from kwsbench.export.quantize import quantize_int8

    bar.set_postfix_str("calibrate")
    inputs, expected = checked
    path = raw.with_name("int8.onnx")
    rows = _calibration_inputs(frontend, fp32.takes_waveform, cache, clips, seed)
    details = quantize_int8(raw, path, rows, keep_float=FRONTEND_PREFIX if fp32.takes_waveform else None)
    details["calibration"] = {
        "dataset": calibration.to_dict(),
        "split": "train",
        "clips": len(rows),
        "seed": seed,
    }
    int8 = ExportedModel(path, {**fp32.meta, "onnx_sha256": file_sha256(path)})
    details["max_abs_diff_vs_pytorch"] = _max_diff(int8, inputs, expected)
    bar.update()
    bar.set_postfix_str("accuracy")
    details["accuracy"] = _accuracies(fp32, int8, cache)
    bar.update()
    bar.set_postfix_str("latency")
    details["latency"] = _latencies(fp32.path, path, inputs[:1].clone(), raw.parent, reference)
    bar.update()
    return path, details


def export_checkpoint(
    checkpoint_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    with_frontend: bool = False,
    int8: bool = False,
    calibration: DatasetSpec | None = None,
    cache_dir: str | os.PathLike | None = None,
    calibration_clips: int = CALIBRATION_CLIPS,
    seed: int = 0,
    progress: bool = True,
) -> ExportResult:
    """Export a checkpoint to ``out_path`` (``.onnx``) with its JSON beside it; see the module docstring.

    ``calibration``: the dataset whose test clips the parity check uses and, with ``int8``, whose training
    clips calibrate the quantisation and whose test split measures the accuracy delta (required then). The
    graph takes ``(1, 16000)`` 16 kHz audio with ``with_frontend``, else features ``(1, 1, n_features,
    frames)``, and returns logits ``(1, num_classes)``. Both files are written atomically, the ONNX file first
    (the JSON holds its SHA-256, so an interrupted overwrite is detected by ``load_exported``).
    """
    import onnx

    from kwsbench.data.features import make_frontend
    from kwsbench.measure.backends import export_onnx
    from kwsbench.measure.optimize import inference_graph, merge_add_chains
    from kwsbench.models.checkpoint import load_checkpoint, model_from_checkpoint
    from kwsbench.runner.evaluate import label_map
    from kwsbench.runner.loop import open_cache

    checkpoint = Path(checkpoint_path)
    if int8 and calibration is None:
        raise ConfigError(
            "--int8 needs a dataset to calibrate on and measure with: add --dataset and --data-dir"
        )
    out = _out_path(out_path)
    ckpt = load_checkpoint(checkpoint)
    model, spec = model_from_checkpoint(ckpt, str(checkpoint))
    frontend = make_frontend(spec).eval()
    graph = inference_graph(model, spec.shape(1))
    if with_frontend:
        reference: nn.Module = nn.Sequential(frontend, model).eval()
        exportable: nn.Module = nn.Sequential(OrderedDict(frontend=frontend, model=graph)).eval()
    else:
        reference, exportable = model, graph
    cache = None
    if calibration is not None:
        cache = open_cache(calibration, cache_dir=cache_dir, progress=progress)
        if int8:  # the accuracy delta maps the data's classes onto the model's: fail before the work
            label_map(cache.classes, list(ckpt["labels"]))
    inputs, drawn = _parity_inputs(frontend, with_frontend, spec, cache, seed)
    with torch.inference_mode():
        expected = reference(inputs).numpy()

    stages = 2 + (3 if int8 else 0)
    with (
        tqdm(total=stages, desc="export", unit="step", disable=not progress) as bar,
        tempfile.TemporaryDirectory(prefix=".kwsbench-export-", dir=out.parent) as tmp,
    ):
        bar.set_postfix_str("export")
        raw = export_onnx(exportable, inputs[:1].clone(), Path(tmp) / "raw.onnx", ckpt["model"])
        final = raw.with_name("fp32.onnx")
        onnx.save(merge_add_chains(onnx.load(str(raw))), str(final))
        bar.update()

        bar.set_postfix_str("parity")
        meta = _metadata(ckpt, checkpoint, spec, frontend, inputs[:1], final)
        fp32 = ExportedModel(final, meta)
        meta["parity"] = _check_parity(fp32, inputs, expected, drawn, f"{checkpoint} ({ckpt['model']})")
        bar.update()
        if int8:
            final, meta["int8"] = _int8(
                raw,
                fp32,
                reference,
                frontend,
                (inputs, expected),
                cache,
                calibration,
                calibration_clips,
                seed,
                bar,
            )
            meta["onnx_sha256"] = file_sha256(final)
        data = final.read_bytes()
    write_atomically(out, lambda f: f.write(data))
    json_path = write_json_atomically(sidecar_path(out), meta)
    return ExportResult(out, json_path, meta)


def format_export(result: ExportResult) -> str:
    """The lines ``kwsbench export`` prints: the files, the parity figures and, for int8, the deltas."""
    meta, parity = result.meta, result.meta["parity"]
    size = result.onnx_path.stat().st_size / 1024
    kind = "16 kHz audio (log-mel inside)" if meta["input"]["kind"] == "waveform" else "log-mel features"
    lines = [
        f"wrote {result.onnx_path} ({size:.1f} kB, {'int8' if meta['int8'] else 'float32'}, input {kind} "
        f"{tuple(meta['input']['shape'])}) and {result.json_path.name}",
        f"parity: max |ONNX Runtime - PyTorch| = {parity['max_abs_diff']:.3g} on {parity['inputs']} "
        f"(bound {parity['bound']:.3g}, largest |logit| {parity['max_abs_logit']:.3g})",
    ]
    int8 = meta["int8"]
    if int8:
        acc = int8["accuracy"]
        for runtime in LATENCY_RUNTIMES:
            a = acc[runtime]
            lines.append(
                f"int8 on {runtime}: test accuracy {a['fp32'] * 100:.2f} % fp32 -> {a['int8'] * 100:.2f} % int8 "
                f"({a['delta'] * 100:+.2f} points) on {acc['clips']} clips; same prediction on "
                f"{a['agreement'] * 100:.1f} %"
            )
        lines.append(f"int8: max |int8 - PyTorch| {int8['max_abs_diff_vs_pytorch']:.3g} (ONNX Runtime)")
        for runtime in LATENCY_RUNTIMES:
            t = int8["latency"][runtime]
            lines.append(
                f"int8 latency on {runtime} (batch 1, 1 thread, median): fp32 {t['fp32_ms']:.3f} ms, "
                f"int8 {t['int8_ms']:.3f} ms, ratio {t['ratio']:.2f}"
            )
    return "\n".join(lines)
