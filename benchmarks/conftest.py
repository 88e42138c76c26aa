"""Fixtures shared by the benchmark suites."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a benchmark with one torch thread (latency at batch 1 on one thread is what reports quote)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
