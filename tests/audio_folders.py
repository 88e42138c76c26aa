"""Keyword folders made of the real audio in ../shared/data, for fixtures (a plain module, importable anywhere)."""

from __future__ import annotations

from pathlib import Path


def link_words(shared: Path, root: Path, words, clips_per_word: int) -> Path:
    """A ``folder``-layout tree under ``root``: the first ``clips_per_word`` clips of each word of the official
    v0.02 test set, symlinked (real audio, never copied)."""
    source = shared / "speech_commands_test_set_v0.02"
    for word in words:
        (root / word).mkdir(parents=True)
        for path in sorted((source / word).glob("*.wav"))[:clips_per_word]:
            (root / word / path.name).symlink_to(path)
    return root
