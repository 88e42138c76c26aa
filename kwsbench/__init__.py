"""kwsbench: a benchmark and ablation suite for efficient keyword spotting."""

__version__ = "0.1.0"
