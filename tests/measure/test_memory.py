"""Saved weight size and peak forward memory on nets whose figures can be worked out by hand."""

from __future__ import annotations

import torch
from torch import nn

from kwsbench.measure.memory import peak_forward_memory, saved_weights_size


def test_saved_size_grows_by_four_bytes_per_parameter():
    # 1024 and 2048 float32 weights are both multiples of the zip format's 64-byte record alignment, and the
    # pickled shapes have the same number of digits, so the framing is the same size.
    small = saved_weights_size(nn.Linear(1024, 1, bias=False))
    large = saved_weights_size(nn.Linear(2048, 1, bias=False))
    assert large - small == 4 * 1024
    assert small >= 4 * 1024


def test_saved_size_counts_buffers_too():
    with_stats = saved_weights_size(nn.BatchNorm1d(1024))  # weight, bias, mean, var: 4 x 1024 floats
    assert with_stats >= 4 * 4 * 1024


def test_peak_forward_memory_of_two_live_activations():
    # Linear(1000 -> 1000) then a non-inplace ReLU on 64 rows: both (64, 1000) float32 maps are alive at
    # once (256,000 bytes each); the last Linear's 64 x 10 output comes after the first map is freed.
    model = nn.Sequential(nn.Linear(1000, 1000), nn.ReLU(), nn.Linear(1000, 10)).eval()
    assert peak_forward_memory(model, torch.randn(64, 1000)) == 2 * 64 * 1000 * 4


def test_peak_forward_memory_at_least_the_largest_activation():
    model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.AdaptiveAvgPool2d(1)).eval()
    activation = 2 * 32 * 40 * 101 * 4
    assert peak_forward_memory(model, torch.randn(2, 1, 40, 101)) >= activation
