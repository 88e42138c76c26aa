"""`kwsbench models`: the Done-when of the registry issue, checked through the CLI itself."""

from __future__ import annotations

import json

import pytest

from kwsbench.cli import main

PAPER_PARAMS = [9_232, 17_154, 27_284, 54_168, 187_812, 321_068]
PAPER_MULT = [3.1e6, 5.5e6, 8.5e6, 16.2e6, 53.1e6, 89.1e6]  # Table 3, matches fvcore's total count


def _json(capsys, *argv) -> list[dict]:
    assert main(["models", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_bcresnet_widths_exact_params_and_macs_within_3_percent(capsys):
    rows = _json(capsys, "bcresnet_*")
    for row in rows:
        assert {"name", "family", "params", "macs_total", "macs_conv", "declared"} <= set(row)
    assert [r["params"] for r in rows] == PAPER_PARAMS
    for row, mult in zip(rows, PAPER_MULT, strict=True):
        assert abs(row["macs_total"] / mult - 1) <= 0.03, row["name"]
        # The conv-only count is reported too, and is the smaller one (BatchNorm and pooling excluded).
        assert row["macs_conv"] < row["macs_total"]
        assert row["declared"]["macs"] == round(mult)
        assert row["checks"]["params_equal_reference"] is True


def test_bcresnet_1_counts_match_the_official_structure(capsys):
    (row,) = _json(capsys, "bcresnet_1")
    # fvcore on the official code (PAPER.md §2): total 3.11 M, conv only 2.48 M.
    assert round(row["macs_total"] / 1e6, 2) == 3.11
    assert round(row["macs_conv"] / 1e6, 2) == 2.48
    assert row["macs_by_operator"]["batch_norm"] > 0 and row["macs_by_operator"]["adaptive_avg_pool2d"] > 0
    assert "aten::silu" in row["macs_skipped_ops"]


def test_table_output_names_both_counts(capsys):
    assert main(["models", "bcresnet_1"]) == 0
    out = capsys.readouterr().out
    assert "9,232" in out and "3.11M" in out and "2.48M" in out and "3.1M mult" in out


@pytest.mark.parametrize("pattern", ["nosuchmodel*"])
def test_unmatched_pattern_is_one_line_and_exit_2(capsys, pattern):
    assert main(["models", pattern]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no registered model matches" in err[0]
