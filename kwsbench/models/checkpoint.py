"""The one checkpoint format: a plain dict of tensors and JSON-like values, loadable with ``weights_only=True``.

Keys: ``format`` (``CHECKPOINT_FORMAT``), ``state_dict``, ``model`` (registered name), ``options`` (registry
overrides), ``num_classes``, ``labels`` (class names in output order), ``input`` (the ``InputSpec`` fields the
frontend is rebuilt from) and ``config`` (the fully resolved training configuration). ``model_from_checkpoint``
rebuilds the model from it; nothing else is needed.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kwsbench.atomic import write_atomically
from kwsbench.errors import ModelError
from kwsbench.models.registry import create_model, model_info
from kwsbench.specs import InputSpec

CHECKPOINT_FORMAT = "kwsbench-checkpoint/1"
_KEYS = ("format", "state_dict", "model", "options", "num_classes", "labels", "input", "config")


def atomic_save(obj: object, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: a crash never leaves half a file."""
    write_atomically(path, lambda f: torch.save(obj, f))


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    model_name: str,
    options: dict[str, Any],
    labels: list[str],
    config: dict[str, Any],
) -> None:
    """Write ``model``'s weights with everything needed to rebuild it (see the module docstring)."""
    info = model_info(model_name)
    atomic_save(
        {
            "format": CHECKPOINT_FORMAT,
            "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "model": model_name,
            "options": dict(options),
            "num_classes": len(labels),
            "labels": list(labels),
            "input": dataclasses.asdict(info.input),
            "config": config,
        },
        path,
    )


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a kwsbench checkpoint safely (``weights_only=True``); anything else is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such checkpoint file; pass the checkpoint.pt a `kwsbench train` wrote")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickles with code, truncated files, other formats
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise ModelError(
            f"{path}: not a kwsbench checkpoint that loads safely ({type(err).__name__}: {first}); "
            "train one with `kwsbench train`"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ModelError(
            f"{path}: not a {CHECKPOINT_FORMAT} checkpoint (found {found!r}); train one with `kwsbench train`"
        )
    missing = [k for k in _KEYS if k not in ckpt]
    if missing:
        raise ModelError(
            f"{path}: checkpoint lacks {missing[0]!r}; it was not written by kwsbench, retrain it"
        )
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any], where: str = "checkpoint") -> tuple[nn.Module, InputSpec]:
    """The eval-mode model a checkpoint describes, with its weights, and the input spec of its frontend."""
    model = create_model(ckpt["model"], num_classes=ckpt["num_classes"], **ckpt["options"])
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0][:200]
        raise ModelError(
            f"{where}: weights do not fit model {ckpt['model']!r} ({first}); the checkpoint is damaged"
        ) from None
    return model.eval(), InputSpec(**ckpt["input"])
