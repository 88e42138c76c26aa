"""The models and real speech the streaming tests share (a plain module, importable by each of them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from kwsbench.data.audio import load_clip
from kwsbench.models import create_model, list_models

HOP = 1600  # 100 ms, the detector's default hop
WIDTHS = list_models("bcresnet_*")


def causal_model(
    name: str, seed: int = 0, dtype: torch.dtype = torch.float32, padding: str = "causal"
) -> torch.nn.Module:
    """A causal (or ``padding``) model with non-trivial BatchNorm statistics (fresh ones are the identity and
    hide slips)."""
    torch.manual_seed(seed)
    model = create_model(name, temporal_padding=padding).to(dtype).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)
    return model


def load_real_audio(shared_data: Path) -> torch.Tensor:
    """3.2 s of real speech: four clips of the official test set back to back, cut to 32 hops, ``(1, L)``."""
    root = shared_data / "speech_commands_test_set_v0.02"
    paths = [sorted((root / word).glob("*.wav"))[0] for word in ("yes", "no", "up", "left")]
    audio = np.concatenate([load_clip(p) for p in paths])[: 32 * HOP]
    return torch.from_numpy(audio).unsqueeze(0)
