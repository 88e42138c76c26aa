"""Accuracy, per-class accuracy and the confusion matrix of a model on a split of a cached dataset.

Used by the training loop (validation each epoch, test at the end) and by ``kwsbench evaluate``, which maps
another dataset's labels onto a checkpoint's by name.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from kwsbench.data.cache import ClipCache
from kwsbench.data.loader import iterate_batches
from kwsbench.data.records import SPLITS
from kwsbench.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """What ``evaluate_split`` measured; ``confusion[i][j]`` counts clips of label ``i`` predicted as ``j``."""

    accuracy: float
    clips: int
    labels: list[str]
    per_class: dict[str, float | None]
    confusion: list[list[int]]
    split: str = "test"
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise(targets: np.ndarray, predictions: np.ndarray, labels: list[str], split: str) -> Evaluation:
    """Accuracy, per-class accuracy (None for a class with no clip) and the confusion matrix."""
    n = len(labels)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (targets, predictions), 1)
    per_row = confusion.sum(axis=1)
    per_class = {
        label: (float(confusion[i, i] / per_row[i]) if per_row[i] else None) for i, label in enumerate(labels)
    }
    clips = int(len(targets))
    accuracy = float((targets == predictions).mean()) if clips else float("nan")
    return Evaluation(accuracy, clips, list(labels), per_class, confusion.tolist(), split)


def predict(
    model: nn.Module,
    frontend: nn.Module,
    cache: ClipCache,
    split: str,
    *,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """``(targets, predictions)`` of the eval-mode ``model`` over ``split`` (cache label indices)."""
    targets, predictions = [], []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for features, target in iterate_batches(
                cache, split, batch_size, frontend=frontend, shuffle=False, device=device
            ):
                predictions.append(model(features).argmax(dim=1).cpu().numpy())
                targets.append(target.cpu().numpy())
    finally:
        model.train(was_training)
    if not targets:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(targets), np.concatenate(predictions)


def label_map(classes: list[str], labels: list[str]) -> np.ndarray:
    """Index of each data class (``classes``) among the model's outputs (``labels``), matched by name.

    A class the model does not know is a ``ConfigError``.
    """
    unknown = [c for c in classes if c not in labels]
    if unknown:
        raise ConfigError(
            f"the data has label(s) {', '.join(unknown)} that the model does not know "
            f"(it knows {', '.join(labels)}); pass --keywords to keep only those, or evaluate another model"
        )
    return np.array([labels.index(c) for c in classes], dtype=np.int64)


def split_predictions(
    model: nn.Module,
    frontend: nn.Module,
    cache: ClipCache,
    split: str,
    *,
    labels: list[str],
    batch_size: int = 500,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """``(targets, predictions)`` over ``split`` (or ``"all"`` splits), both as indices into ``labels``."""
    to_model = label_map(cache.classes, labels)
    splits = SPLITS if split == "all" else (split,)
    if split != "all" and split not in SPLITS:
        raise ConfigError(f"--split {split}: choose one of {', '.join(SPLITS)} or all")
    targets, predictions = [], []
    for name in splits:
        t, p = predict(model, frontend, cache, name, batch_size=batch_size, device=device)
        targets.append(to_model[t])
        predictions.append(p)
    return np.concatenate(targets), np.concatenate(predictions)


def evaluate_split(
    model: nn.Module,
    frontend: nn.Module,
    cache: ClipCache,
    split: str,
    *,
    labels: list[str] | None = None,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
) -> Evaluation:
    """Evaluate ``model`` on ``split`` (or ``"all"`` splits) of ``cache``.

    ``labels`` are the model's output classes; the cache's classes are mapped onto them by name (a class the
    model does not know is a ``ConfigError``). Without ``labels`` the model's outputs are the cache's classes.
    """
    start = time.perf_counter()
    labels = list(labels) if labels is not None else list(cache.classes)
    targets, predictions = split_predictions(
        model, frontend, cache, split, labels=labels, batch_size=batch_size, device=device
    )
    result = summarise(targets, predictions, labels, split)
    if result.clips == 0:
        raise ConfigError(f"the {split} split has no clips; choose another --split or --protocol")
    result.seconds = round(time.perf_counter() - start, 3)
    return result


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    spec,
    split: str = "test",
    *,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 500,
    device: str = "cpu",
    progress: bool = True,
) -> Evaluation:
    """``kwsbench evaluate``: a checkpoint on a dataset (``DatasetSpec``), labels matched by name."""
    from kwsbench.data.features import make_frontend
    from kwsbench.models.checkpoint import load_checkpoint, model_from_checkpoint
    from kwsbench.runner.loop import open_cache

    ckpt = load_checkpoint(checkpoint)
    model, input_spec = model_from_checkpoint(ckpt, str(checkpoint))
    cache = open_cache(spec, cache_dir=cache_dir, progress=progress)
    frontend = make_frontend(input_spec)
    device = torch.device(device)
    return evaluate_split(
        model.to(device),
        frontend.to(device),
        cache,
        split,
        labels=list(ckpt["labels"]),
        batch_size=batch_size,
        device=device,
    )


class ExportedModule(nn.Module):
    """An exported model (``kwsbench.export.ExportedModel``) behind ``nn.Module``'s call, so that ``predict``
    runs it like a PyTorch model: ``(B, ...)`` tensor in, ``(B, num_classes)`` logits out, on ONNX Runtime."""

    def __init__(self, exported):
        super().__init__()
        self.exported = exported

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.exported.run(x.detach().cpu().numpy()))


def exported_pipeline(exported, cache: ClipCache) -> tuple[nn.Module, nn.Module]:
    """``(model, frontend)`` that ``predict`` runs an exported model on ``cache``'s clips with.

    A ``--with-frontend`` export computes log-mel itself (the frontend is the identity); a features export
    gets the frontend its ``input_spec`` declares. Clips of another length than the export's are refused.
    """
    rate = int(cache.meta["settings"]["sample_rate"])
    if exported.takes_waveform and (cache.clip_samples, rate) != (
        exported.clip_samples,
        exported.sample_rate,
    ):
        raise ConfigError(
            f"{exported.path}: takes {exported.clip_samples} samples at {exported.sample_rate} Hz, the data "
            f"has {cache.clip_samples} at {rate} Hz; export without --with-frontend to evaluate on it"
        )
    if exported.takes_waveform:
        return ExportedModule(exported), nn.Identity()
    from kwsbench.data.features import make_frontend

    return ExportedModule(exported), make_frontend(
        exported.input_spec, sample_rate=rate, clip_samples=cache.clip_samples
    )


def evaluate_exported(
    model_file: str | os.PathLike,
    spec,
    split: str = "test",
    *,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 100,
    threads: int = 1,
    runtime: str | None = None,
    progress: bool = True,
) -> Evaluation:
    """``kwsbench evaluate --model-file``: an exported ONNX model on a dataset (``DatasetSpec``), labels
    matched by name, on ``runtime`` (ONNX Runtime by default) with ``threads`` threads: the same
    ``Evaluation`` as a checkpoint's."""
    from kwsbench.export.exported import load_exported
    from kwsbench.runner.loop import open_cache

    exported = load_exported(model_file, threads=threads, runtime=runtime or "onnxruntime")
    cache = open_cache(spec, cache_dir=cache_dir, progress=progress)
    model, frontend = exported_pipeline(exported, cache)
    return evaluate_split(model, frontend, cache, split, labels=exported.labels, batch_size=batch_size)


def format_evaluation(result: Evaluation) -> str:
    """Accuracy, then per-class accuracy and the confusion matrix as aligned text."""
    width = max(len(label) for label in result.labels) + 2
    lines = [
        f"{result.split}: accuracy {result.accuracy * 100:.2f} % on {result.clips:,} clips ({result.seconds:.1f} s)",
        "",
    ]
    lines.append(
        f"{'class':<{width}}{'accuracy':>10}  " + " ".join(f"{i:>5}" for i in range(len(result.labels)))
    )
    for i, label in enumerate(result.labels):
        acc = result.per_class[label]
        cell = "-" if acc is None else f"{acc * 100:.1f}"
        lines.append(f"{label:<{width}}{cell:>10}  " + " ".join(f"{n:>5}" for n in result.confusion[i]))
    lines.append("rows: true label; columns: predicted label, in the order of the rows")
    return "\n".join(lines)
