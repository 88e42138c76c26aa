"""Locations kwsbench reads from the environment: the shared real-audio folder and the cache folder."""

from __future__ import annotations

import os
from pathlib import Path


def shared_data_dir() -> Path:
    """The folder of real audio used by tests and benchmarks (``KWSBENCH_SHARED_DATA``, default ``../shared/data``)."""
    return Path(os.environ.get("KWSBENCH_SHARED_DATA", "../shared/data")).expanduser().resolve()


def cache_dir() -> Path:
    """Where decoded clip caches live (``KWSBENCH_CACHE``, default ``~/.cache/kwsbench``)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kwsbench"
    return Path(os.environ.get("KWSBENCH_CACHE", default)).expanduser().resolve()
