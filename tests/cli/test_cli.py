"""The command line as a user meets it: --version, -v anywhere, help with defaults and registry choices,
one-line usage errors, did-you-mean, and `bench --train` refusing what it would ignore."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kwsbench import __version__
from kwsbench.cli import COMMAND_MODULES, build_parser, main
from kwsbench.data.datasets import DATASETS
from kwsbench.measure.backend_names import BACKENDS


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"kwsbench {__version__}"


def test_verbose_is_accepted_before_and_after_the_subcommand():
    parser = build_parser()
    assert parser.parse_args(["-v", "models", "bcresnet_1"]).verbose is True
    assert parser.parse_args(["models", "bcresnet_1", "-v"]).verbose is True
    assert parser.parse_args(["models", "bcresnet_1"]).verbose is False


def test_help_shows_defaults_and_takes_choices_from_the_registries(capsys):
    assert main(["bench", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: bcresnet_*)" in text and "(default: 20; with --train: 3 steps)" in text
    assert all(name in text for name in BACKENDS)
    assert main(["data", "prepare", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 2)" in text  # --workers
    assert " | ".join(DATASETS) in text


def test_every_command_module_is_registered(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMAND_MODULES)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["bench", "bcresnet_1", "--iterations", "0"], "--iterations: must be at least 1, got 0"),
        (["bench", "bcresnet_1", "--warmup", "-1"], "--warmup: must be at least 0, got -1"),
        (["bench", "bcresnet_1", "--threads", "two"], "expected a whole number, got 'two'"),
        (["models", "bcresnet1"], "did you mean bcresnet_1"),
        (["bench", "bcresnet1", "--iterations", "1"], "did you mean bcresnet_1"),
        (
            ["bench", "bcresnet_1", "--train", "--backend", "onnxruntime"],
            "--backend does not apply to --train",
        ),
        (["bench", "bcresnet_1", "--train", "--frontend"], "--frontend does not apply to --train"),
        (
            ["data", "summary", "--dataset", "speech_comands", "--data-dir", "x"],
            "invalid choice: 'speech_comands'",
        ),
        (["nosuchcommand"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, expected):
    assert expected in _one_line_error(capsys, argv)


def test_bench_train_honours_iterations_warmup_threads_and_batch(capsys):
    argv = [
        "bench",
        "bcresnet_1",
        "--train",
        "--iterations",
        "2",
        "--warmup",
        "0",
        "--threads",
        "1",
        "--batch",
        "4",
    ]
    assert main([*argv, "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["formulation"] for r in records] == ["eager", "fast"]
    for r in records:
        assert (r["kind"], r["steps"], r["warmup"], r["threads"], r["batch"]) == ("train_speed", 2, 0, 1, 4)
        assert r["provenance"]["threads"] == 1
    assert records[1]["speedup_vs_eager"] == pytest.approx(
        records[1]["samples_per_s"] / records[0]["samples_per_s"], abs=2e-3
    )


def test_models_json_is_a_list_of_schema_records(capsys):
    from kwsbench.results import CountsRecord, record_from_dict

    assert main(["models", "bcresnet_1", "--json"]) == 0
    (values,) = json.loads(capsys.readouterr().out)
    record = record_from_dict(values)
    assert isinstance(record, CountsRecord) and record.params == 9_232


def test_module_entry_point_runs():
    out = subprocess.run(
        [sys.executable, "-m", "kwsbench.cli", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == f"kwsbench {__version__}"
