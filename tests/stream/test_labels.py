"""The label file of a real recording: what reads, what is refused (one line naming the file, the line and the fix)."""

from __future__ import annotations

import pytest

from kwsbench.errors import DataError
from kwsbench.stream.labels import format_labels, parse_labels, read_labels
from kwsbench.stream.matching import Occurrence


def test_labels_read_with_comments_blank_lines_and_tabs(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("# start end word\n\n1.25 1.90 yes\n3\t3.5\tno\n  7.000   7.000 up  \n", encoding="utf-8")
    assert read_labels(path) == [
        Occurrence(1.25, 1.9, "yes"),
        Occurrence(3.0, 3.5, "no"),
        Occurrence(7.0, 7.0, "up"),
    ]


def test_format_and_parse_round_trip():
    truth = [Occurrence(0.0, 1.0, "yes"), Occurrence(12.345, 13.345, "_unknown_")]
    assert parse_labels(format_labels(truth), "x") == truth


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1.0 2.0", r"labels.txt:2: expected 'start_s end_s keyword'"),
        ("1.0 2.0 yes please", r"labels.txt:2: expected 'start_s end_s keyword'"),
        ("one 2.0 yes", r"labels.txt:2: 'one' '2.0' are not times in seconds"),
        ("2.0 1.0 yes", r"labels.txt:2: times must satisfy 0 <= start_s <= end_s, got 2.0 1.0"),
        ("-1 1.0 yes", r"labels.txt:2: times must satisfy"),
        ("nan 1.0 yes", r"labels.txt:2: times must satisfy"),
        ("1.0 inf yes", r"labels.txt:2: times must satisfy"),
    ],
)
def test_a_bad_line_is_one_line_naming_it(tmp_path, line, message):
    path = tmp_path / "labels.txt"
    path.write_text(f"0.5 1.0 yes\n{line}\n", encoding="utf-8")
    with pytest.raises(DataError, match=message) as err:
        read_labels(path)
    assert "\n" not in str(err.value)


def test_a_missing_or_binary_label_file_is_one_line(tmp_path):
    with pytest.raises(DataError, match="no such label file"):
        read_labels(tmp_path / "none.txt")
    binary = tmp_path / "labels.bin"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="must be UTF-8 text"):
        read_labels(binary)
