"""A tiny keyword folder made of real Speech Commands clips (symlinked, never copied) and an experiment on it."""

from __future__ import annotations

from pathlib import Path

import pytest
from audio_folders import link_words

WORDS = ("yes", "no", "up")
CLIPS_PER_WORD = 20


@pytest.fixture(scope="session")
def tiny_folder(shared_data: Path, tmp_path_factory) -> Path:
    """``folder`` layout: 3 words x 20 clips of distinct speakers from the official test set, plus noise."""
    return link_words(shared_data, tmp_path_factory.mktemp("tiny_words"), WORDS, CLIPS_PER_WORD)


def experiment_yaml(
    folder: Path, path: Path, *, seeds=(0, 1), epochs: int = 2, extra_options: str = ""
) -> Path:
    """Write a tiny experiment on ``folder`` to ``path``: BC-ResNet-1, a few epochs of batch 16."""
    path.write_text(
        f"""
name: tiny
dataset:
  dataset: folder
  data_dir: {folder}
  protocol: mini
  fractions: [0.6, 0.2, 0.2]
  noise_dir: ${{KWSBENCH_SHARED_DATA}}/speech_commands_v0.01_sample/_background_noise_
recipe:
  epochs: {epochs}
  batch_size: 16
  warmup_epochs: 1
grid:
  models: [bcresnet_1]
  options:
    - {{}}
{extra_options}
  seeds: {list(seeds)}
measure:
  backends: [eager, onnxruntime]
  threads: 1
threads: 1
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def write_experiment():
    """``write_experiment(folder, path, seeds=(0, 1), epochs=2, extra_options="") -> path``."""
    return experiment_yaml
