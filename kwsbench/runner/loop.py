"""One trial: train a registered model under a recipe, keep the best-validation checkpoint, report both epochs.

The paper's recipe (SGD with momentum, linear warm-up then cosine to zero, per step) on the fast training
formulation, which shares the straightforward model's parameters and buffers, so the straightforward model is
what is evaluated and saved. After every epoch the whole training state is written atomically to
``resume.pt``: a run killed at any point continues from its last completed epoch, bit for bit in its data
order and augmentation (both are seeded per epoch) and in its dropout (the RNG state is saved too).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from kwsbench.atomic import write_json_atomically
from kwsbench.data.augment import SpecAugment, specaugment_for_tau
from kwsbench.data.cache import ClipCache, build_cache
from kwsbench.data.datasets import load_dataset
from kwsbench.data.features import make_frontend
from kwsbench.data.loader import iterate_batches, make_augmentation, num_batches
from kwsbench.errors import ConfigError
from kwsbench.models import create_model, model_info
from kwsbench.models.checkpoint import atomic_save, save_checkpoint
from kwsbench.models.reformulate import for_training
from kwsbench.runner.config import Recipe, TrialConfig
from kwsbench.runner.evaluate import Evaluation, evaluate_split

log = logging.getLogger(__name__)

RESUME_NAME = "resume.pt"
CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.json"
SAMPLE_RATE = 16_000


def open_cache(spec, *, cache_dir=None, workers: int = 2, progress: bool = True) -> ClipCache:
    """The decoded clip cache of a ``DatasetSpec`` (built on first use)."""
    return build_cache(load_dataset(spec), cache_dir, workers=workers, progress=progress)


def learning_rate(step: int, steps_per_epoch: int, recipe: Recipe) -> float:
    """The recipe's rate at optimiser step ``step`` (0-based): linear warm-up, then cosine to zero."""
    total = recipe.epochs * steps_per_epoch
    warm = min(recipe.warmup_epochs * steps_per_epoch, total)
    if step < warm:
        return recipe.lr * (step + 1) / warm
    span = max(total - warm, 1)
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / span))


def spec_augment_for(config: TrialConfig) -> SpecAugment | None:
    """SpecAugment as the recipe asks: by BC-ResNet width ("auto"/"on"), or none."""
    mode = config.recipe.spec_augment
    info = model_info(config.model)
    params = inspect.signature(info.constructor).parameters
    has_tau = "tau" in params or "tau" in info.options()
    if mode == "off" or (mode == "auto" and (info.family != "bcresnet" or not has_tau)):
        return None
    if not has_tau:
        raise ConfigError(
            f"recipe spec_augment=on needs a width; {config.model} has no tau option: use auto or off"
        )
    tau = config.options.get("tau", params["tau"].default if "tau" in params else 1.0)
    augment = specaugment_for_tau(tau)
    return augment if augment.enabled else None


@dataclasses.dataclass
class TrialOutcome:
    """What ``train_trial`` produced: metrics (also in ``metrics.json``) and the checkpoint path."""

    metrics: dict[str, Any]
    checkpoint: Path
    params: int
    samples_per_s: float
    resumed_from: int


def _resume_state(path: Path, config: TrialConfig) -> dict | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a damaged resume file costs the epochs, not the run
        log.warning("%s: cannot resume from it (%s); starting the trial again", path, type(err).__name__)
        return None
    if state.get("trial_id") != config.trial_id:
        raise ConfigError(f"{path}: belongs to another configuration; choose another --out or delete it")
    return state


def train_trial(
    config: TrialConfig,
    out_dir: str | os.PathLike,
    *,
    device: str = "cpu",
    threads: int | None = 2,
    cache_dir: str | os.PathLike | None = None,
    tracker=None,
    progress: bool = True,
) -> TrialOutcome:
    """Train ``config`` into ``out_dir`` (``checkpoint.pt``, ``metrics.json``), resuming from ``resume.pt``."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(
            f"{out}: cannot write there ({err.strerror or err}); choose another --out"
        ) from None
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is visible to PyTorch here; use --device cpu")
    dev = torch.device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    wall_start = time.perf_counter()
    recipe = config.recipe

    cache = open_cache(config.dataset, cache_dir=cache_dir, workers=threads or 2, progress=progress)
    labels = list(cache.classes)
    info = model_info(config.model)
    torch.manual_seed(config.seed)
    model = create_model(config.model, num_classes=len(labels), **config.options).to(dev)
    trainable = for_training(model) if recipe.fast else model
    frontend = make_frontend(info.input).to(dev)
    augment = make_augmentation(
        cache,
        frontend,
        time_shift=round(recipe.time_shift_ms * SAMPLE_RATE / 1000),
        noise_probability=recipe.noise_probability,
        spec_augment=spec_augment_for(config),
    ).to(dev)
    optimizer = torch.optim.SGD(
        trainable.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    steps_per_epoch = num_batches(cache, "train", recipe.batch_size)
    if steps_per_epoch == 0:
        raise ConfigError(
            f"{config.dataset.data_dir or config.dataset.dataset}: the train split is empty; check --protocol"
        )

    history: list[dict[str, Any]] = []
    best = {"epoch": -1, "validation_accuracy": -1.0, "state_dict": None}
    start_epoch, elapsed_before = 0, 0.0
    state = _resume_state(out / RESUME_NAME, config)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        history, best, start_epoch = state["history"], state["best"], state["epoch"] + 1
        elapsed_before = state["elapsed_s"]
        log.info("resuming %s from epoch %d", config.trial_id, start_epoch)
    resumed_from = start_epoch

    for epoch in range(start_epoch, recipe.epochs):
        trainable.train()
        bar = tqdm(
            total=steps_per_epoch,
            desc=f"epoch {epoch + 1}/{recipe.epochs}",
            unit="batch",
            leave=False,
            disable=not progress,
        )
        seen, correct, loss_sum, epoch_start = 0, 0, 0.0, time.perf_counter()
        # The seed of each epoch's order and augmentation depends only on (seed, epoch): resumable exactly.
        batches = iterate_batches(
            cache, "train", recipe.batch_size, frontend=frontend, augment=augment,
            seed=config.seed * 100_003 + epoch, device=dev,
        )  # fmt: skip
        for step_in_epoch, (features, target) in enumerate(batches):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(epoch * steps_per_epoch + step_in_epoch, steps_per_epoch, recipe)
            optimizer.zero_grad(set_to_none=True)
            logits = trainable(features)
            loss = F.cross_entropy(logits, target, label_smoothing=recipe.label_smoothing)
            loss.backward()
            optimizer.step()
            seen += len(target)
            correct += int((logits.argmax(1) == target).sum())
            loss_sum += float(loss.detach()) * len(target)
            bar.update()
            bar.set_postfix(
                loss=f"{loss_sum / seen:.3f}", samples_s=f"{seen / (time.perf_counter() - epoch_start):.0f}"
            )
        train_seconds = time.perf_counter() - epoch_start
        validation = evaluate_split(
            model, frontend, cache, "validation", batch_size=recipe.eval_batch_size, device=dev
        )
        bar.set_postfix(
            loss=f"{loss_sum / seen:.3f}",
            val=f"{validation.accuracy * 100:.1f}%",
            samples_s=f"{seen / train_seconds:.0f}",
        )
        bar.close()
        row = {
            "epoch": epoch + 1,
            "loss": loss_sum / seen,
            "train_accuracy": correct / seen,
            "validation_accuracy": validation.accuracy,
            "lr": optimizer.param_groups[0]["lr"],
            "train_seconds": round(train_seconds, 3),
            "samples_per_s": round(seen / train_seconds, 1),
        }
        history.append(row)
        log.info("%s epoch %d: %s", config.trial_id, epoch + 1, row)
        if progress:
            tqdm.write(
                f"epoch {epoch + 1}/{recipe.epochs}: loss {row['loss']:.4f}, validation "
                f"{validation.accuracy * 100:.2f} %, {row['samples_per_s']:.0f} samples/s"
            )
        # Ties go to the later epoch: the same validation accuracy after more training.
        if validation.accuracy >= best["validation_accuracy"]:
            best = {
                "epoch": epoch + 1,
                "validation_accuracy": validation.accuracy,
                "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            }
        if tracker is not None:
            tracker.log_epoch(epoch + 1, {k: float(v) for k, v in row.items() if k != "epoch"})
        atomic_save(
            {
                "trial_id": config.trial_id,
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": torch.get_rng_state(),
                "history": history,
                "best": best,
                "elapsed_s": elapsed_before + time.perf_counter() - wall_start,
            },
            out / RESUME_NAME,
        )

    final = _test_both(model, best["state_dict"], frontend, cache, recipe, dev)
    final_model_state = model.state_dict()
    model.load_state_dict(best["state_dict"])
    resolved = {**config.identity(), "experiment": config.experiment, "device": device, "threads": threads}
    save_checkpoint(
        out / CHECKPOINT_NAME, model, model_name=config.model, options=dict(config.options), labels=labels,
        config=resolved,
    )  # fmt: skip
    model.load_state_dict(final_model_state)
    rates = [row["samples_per_s"] for row in history]
    metrics = {
        "labels": labels,
        "best_epoch": best["epoch"],
        "epochs": recipe.epochs,
        "best": {
            "validation_accuracy": final["best_validation"].accuracy,
            "test_accuracy": final["best_test"].accuracy,
            "per_class": final["best_test"].per_class,
            "confusion": final["best_test"].confusion,
        },
        "final": {
            "validation_accuracy": final["final_validation"].accuracy,
            "test_accuracy": final["final_test"].accuracy,
            "per_class": final["final_test"].per_class,
            "confusion": final["final_test"].confusion,
        },
        "clips": cache.counts(),
        "history": history,
        # Median over epochs of end-to-end training throughput (data, augmentation, frontend and step).
        "train_samples_per_s": float(np.median(rates)),
        "wall_time_s": round(elapsed_before + time.perf_counter() - wall_start, 1),
        "resumed_from_epoch": resumed_from,
        "cache": str(cache.path),
        "config": resolved,
    }
    write_json_atomically(out / METRICS_NAME, metrics, allow_nan=True)
    (out / RESUME_NAME).unlink(missing_ok=True)
    return TrialOutcome(
        metrics=metrics,
        checkpoint=out / CHECKPOINT_NAME,
        params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        samples_per_s=metrics["train_samples_per_s"],
        resumed_from=resumed_from,
    )


def _test_both(model, best_state, frontend, cache, recipe: Recipe, dev) -> dict[str, Evaluation]:
    """Validation and test of the final model and of the best-validation one (test touched only here)."""
    out = {}
    kw = dict(batch_size=recipe.eval_batch_size, device=dev)
    out["final_validation"] = evaluate_split(model, frontend, cache, "validation", **kw)
    out["final_test"] = evaluate_split(model, frontend, cache, "test", **kw)
    best_model = copy.deepcopy(model)
    best_model.load_state_dict(best_state)
    out["best_validation"] = evaluate_split(best_model, frontend, cache, "validation", **kw)
    out["best_test"] = evaluate_split(best_model, frontend, cache, "test", **kw)
    return out


def describe_outcome(outcome: TrialOutcome) -> str:
    """Best-validation and final-epoch accuracies, throughput and where the checkpoint is."""
    m = outcome.metrics
    return "\n".join(
        [
            f"best validation epoch {m['best_epoch']}/{m['epochs']}: validation "
            f"{m['best']['validation_accuracy'] * 100:.2f} %, test {m['best']['test_accuracy'] * 100:.2f} %",
            f"final epoch: validation {m['final']['validation_accuracy'] * 100:.2f} %, "
            f"test {m['final']['test_accuracy'] * 100:.2f} %",
            f"{outcome.params:,} parameters; {m['train_samples_per_s']:.0f} training samples/s end to end; "
            f"{m['wall_time_s']:.0f} s"
            + (f" (resumed at epoch {outcome.resumed_from + 1})" if outcome.resumed_from else ""),
            f"checkpoint: {outcome.checkpoint}",
        ]
    )
