"""The layout registry and the one DatasetSpec handed down: every layout fits the Protocol, the index
records the spec it resolved, and a wrong --dataset or --data-dir ends in one line naming the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kwsbench.data.datasets import DATASETS, dataset_names, get_layout, load_dataset
from kwsbench.data.layout import DatasetLayout
from kwsbench.errors import ConfigError, DataError
from kwsbench.specs import DatasetSpec

# Where each registered layout finds real audio in KWSBENCH_SHARED_DATA, its default protocol and the
# version it detects (the test-set folder read as plain label folders has no version).
REAL = {
    "speech_commands": ("speech_commands_v0.01_sample", "12", "v1"),
    "speech_commands_test_set": ("speech_commands_test_set_v0.02", "official", "v2"),
    "folder": ("speech_commands_test_set_v0.02", "mini", None),
    "fsdd": ("fsdd", "official", None),
}
# Layouts that make their own audio (no folder of real audio): tests/data/test_synthetic.py checks them alike.
GENERATED = ("synthetic",)


def test_registry_names_are_the_layouts_names() -> None:
    assert dataset_names() == list(DATASETS) == [*REAL, *GENERATED]
    for name in dataset_names():
        assert DATASETS[name].name == name


@pytest.mark.parametrize("name", dataset_names())
def test_each_layout_implements_the_protocol(name: str, tmp_path: Path) -> None:
    layout = get_layout(name)
    assert isinstance(layout, DatasetLayout)
    assert layout.protocols and all(isinstance(p, str) for p in layout.protocols)
    assert isinstance(layout.protocol_hint, str)
    assert str(tmp_path / "x") in layout.missing_fix(tmp_path / "x")


@pytest.mark.parametrize("name", list(REAL))
def test_index_carries_the_resolved_spec(name: str, shared_data: Path) -> None:
    folder, protocol, version = REAL[name]
    spec = DatasetSpec.create(name, shared_data / folder)
    index = load_dataset(spec)
    assert index.clips and index.protocol == protocol
    # The default protocol (the layout's first) and the detected version are written into the spec.
    assert index.spec == spec.replace(protocol=protocol, version=version)
    assert index.spec.protocol == get_layout(name).protocols[0]
    # The resolved spec loads the same index again.
    again = load_dataset(index.spec)
    assert [(c.path, c.split, c.label) for c in again.clips] == [
        (c.path, c.split, c.label) for c in index.clips
    ]


def test_unknown_dataset_names_close_matches(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_dataset(DatasetSpec.create("speech_comands", tmp_path))
    message = str(err.value)
    assert "\n" not in message and "did you mean speech_commands" in message and "fsdd" in message


@pytest.mark.parametrize("name", dataset_names())
def test_unsupported_protocol_lists_the_supported(name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_dataset(DatasetSpec.create(name, tmp_path, protocol="nope"))
    assert ", ".join(get_layout(name).protocols) in str(err.value)


def test_data_dir_that_is_a_file_says_so(tmp_path: Path, write_wav) -> None:
    wav = write_wav(tmp_path / "words" / "ja" / "anna_nohash_0.wav", np.full(1_600, 0.1))
    with pytest.raises(DataError) as err:
        load_dataset(DatasetSpec.create("folder", wav))
    message = str(err.value)
    assert message.startswith(f"--data-dir {wav}: is a file, not a folder;")
    assert str(wav.parent) in message and "no such folder" not in message


def test_data_dir_that_is_an_archive_says_extract_it(tmp_path: Path) -> None:
    archive = tmp_path / "speech_commands_v0.02.tar.gz"
    archive.write_bytes(b"\x1f\x8b")
    with pytest.raises(DataError) as err:
        load_dataset(DatasetSpec.create("speech_commands", archive))
    message = str(err.value)
    assert "is a file, not a folder" in message and "extract it" in message and "--download" in message


def test_dangling_data_dir_link(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    with pytest.raises(DataError, match="symbolic link to nothing"):
        load_dataset(DatasetSpec.create("fsdd", tmp_path / "link"))


def test_noise_dir_that_is_a_file(tmp_path: Path, write_wav) -> None:
    root = tmp_path / "words"
    for speaker in ("aa", "bb"):
        write_wav(root / "ja" / f"{speaker}_nohash_0.wav", np.full(1_600, 0.1))
    noise = write_wav(tmp_path / "fan.wav", np.full(48_000, 0.01))
    with pytest.raises(DataError, match=f"--noise-dir {noise}: is a file, not a folder"):
        load_dataset(DatasetSpec.create("folder", root, noise_dir=noise))


def test_bad_fractions_are_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="summing to 1"):
        load_dataset(DatasetSpec.create("folder", tmp_path, fractions=(0.5, 0.5, 0.5)))


def test_fractions_that_are_not_numbers_are_a_config_error(tmp_path: Path) -> None:
    # A spec built without ``create`` skips its checks; the loader still refuses it with one line.
    spec = DatasetSpec("folder", tmp_path, fractions=("a", "b", "c"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="need three non-negative numbers"):
        load_dataset(spec)
