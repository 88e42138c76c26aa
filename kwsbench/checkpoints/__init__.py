"""Pretrained checkpoints shipped inside the package (``<model>.pt`` with ``<model>.json`` beside it).

They are written by ``make bundled`` (``kwsbench run experiments/bundled.yaml`` then ``kwsbench bundle``);
``kwsbench listen`` uses ``bcresnet_1`` when no ``--checkpoint`` is given. Only this module knows where they are.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from kwsbench.errors import ModelError

DEFAULT_MODEL = "bcresnet_1"


def bundled_dir() -> Path:
    """The folder of the bundled checkpoints (inside the installed package)."""
    return Path(str(resources.files(__name__)))


def bundled_models() -> list[str]:
    """Names of the bundled checkpoints, sorted."""
    return sorted(p.stem for p in bundled_dir().glob("*.pt"))


def bundled_checkpoint(model: str = DEFAULT_MODEL) -> Path:
    """The bundled ``<model>.pt``; a missing one is a one-line error naming what exists and the fix."""
    path = bundled_dir() / f"{model}.pt"
    if not path.is_file():
        have = ", ".join(bundled_models()) or "none"
        raise ModelError(
            f"{model}: no bundled checkpoint (bundled: {have}); pass --checkpoint FILE or run `make bundled`"
        )
    return path


def bundled_card(model: str = DEFAULT_MODEL) -> dict[str, Any]:
    """The ``<model>.json`` beside a bundled checkpoint: its metrics, training command and provenance."""
    return json.loads(bundled_checkpoint(model).with_suffix(".json").read_text(encoding="utf-8"))
