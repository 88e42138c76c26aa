"""Fixtures of the report tests: the hand-written sweep of ``report_records`` as a file, and its report."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_records import fixture_trials, write_jsonl


@pytest.fixture
def fixture_records(tmp_path) -> Path:
    """The sweep of ``report_records.fixture_trials`` as a ``results.jsonl``."""
    return write_jsonl(tmp_path / "results.jsonl", fixture_trials())


@pytest.fixture(scope="module")
def built_report(tmp_path_factory):
    """The fixture's report, built once per module: (results path, report folder, Report)."""
    from kwsbench.report import build_report

    root = tmp_path_factory.mktemp("report")
    results = write_jsonl(root / "results.jsonl", fixture_trials())
    report = build_report([results], root / "out")
    return results, root / "out", report
