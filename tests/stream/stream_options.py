"""The command-line options of the stream tests' word dataset (a plain module, importable by each of them)."""

from __future__ import annotations


def data_options(spec) -> list[str]:
    """``--dataset ... --noise-dir ...`` naming ``spec``, the ``word_spec`` fixture's folder dataset."""
    return [
        "--dataset", "folder", "--data-dir", str(spec.data_dir), "--protocol", "mini",
        "--keywords", "yes,no", "--noise-dir", str(spec.noise_dir),
    ]  # fmt: skip
