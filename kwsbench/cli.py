"""The `kwsbench` command line: parse arguments, call one library function, print its result.

Bad input raises a ``KwsbenchError``; ``main`` prints it on one line and exits 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from kwsbench.errors import KwsbenchError


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


# --------------------------------------------------------------------------------------------- data
def _cmd_data_summary(args: argparse.Namespace) -> int:
    from kwsbench.data.summary import format_summary, summarize

    summary = summarize(
        dataset=args.dataset,
        data_dir=args.data_dir,
        protocol=args.protocol,
        keywords=args.keywords,
        noise_dir=args.noise_dir,
        skip_bad=args.skip_bad,
        version=args.version,
    )
    if args.json:
        _print_json(summary.to_dict())
    else:
        print(format_summary(summary))
    return 0


def _cmd_data_prepare(args: argparse.Namespace) -> int:
    from kwsbench.data.cache import prepare

    result = prepare(
        dataset=args.dataset,
        data_dir=args.data_dir,
        protocol=args.protocol,
        keywords=args.keywords,
        noise_dir=args.noise_dir,
        skip_bad=args.skip_bad,
        version=args.version,
        cache_dir=args.cache_dir,
        workers=args.workers,
        download=args.download,
    )
    if args.json:
        _print_json(result.to_dict())
    else:
        print(result.describe())
    return 0


def _add_dataset_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset",
        required=True,
        help="speech_commands | speech_commands_test_set | folder | fsdd",
    )
    p.add_argument("--data-dir", required=True, help="the dataset's root folder")
    p.add_argument("--protocol", default=None, help="12 | 35 | mini | official (default: the dataset's own)")
    p.add_argument("--keywords", default=None, help="comma-separated keywords (folder datasets)")
    p.add_argument("--noise-dir", default=None, help="a folder of background-noise WAVs")
    p.add_argument("--version", default=None, help="Speech Commands version v1|v2 (default: detected)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable clips and count them")
    p.add_argument("--json", action="store_true", help="print one JSON object")


# ------------------------------------------------------------------------------------------- models
def _cmd_models(args: argparse.Namespace) -> int:
    from kwsbench.measure.describe import describe_models, format_models_table

    rows = describe_models(args.pattern, num_classes=args.num_classes)
    if args.json:
        _print_json(rows)
    else:
        print(format_models_table(rows))
    return 0


# -------------------------------------------------------------------------------------------- bench
def _cmd_bench(args: argparse.Namespace) -> int:
    from kwsbench.measure.bench import format_bench, run_bench

    report = run_bench(
        pattern=args.pattern,
        backends=args.backend or ["eager"],
        # Latency defaults to one clip on one thread; training throughput to the paper's batch 100 on
        # both cores of the reference machine.
        threads=args.threads if args.threads is not None else (2 if args.train else 1),
        batch=args.batch if args.batch is not None else (100 if args.train else 1),
        frontend=args.frontend,
        train=args.train,
        iterations=args.iterations,
        warmup=args.warmup,
    )
    if args.json:
        _print_json(report.to_records())
    else:
        print(format_bench(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kwsbench", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="inspect and prepare datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    summary = data_sub.add_parser("summary", help="class x split counts, duplicates and skipped files")
    _add_dataset_options(summary)
    summary.set_defaults(func=_cmd_data_summary)
    prepare = data_sub.add_parser("prepare", help="decode, resample and cache fixed-length clips")
    _add_dataset_options(prepare)
    prepare.add_argument("--cache-dir", default=None, help="cache folder (default: $KWSBENCH_CACHE)")
    prepare.add_argument("--workers", type=int, default=2, help="decoding processes")
    prepare.add_argument(
        "--download", default=None, help="fetch this official archive into --data-dir first (e.g. v0.02)"
    )
    prepare.set_defaults(func=_cmd_data_prepare)

    models = sub.add_parser("models", help="registered models: params, MACs and the paper's figures")
    models.add_argument("pattern", nargs="?", default="*", help="shell-style name pattern")
    models.add_argument("--num-classes", type=int, default=12)
    models.add_argument("--json", action="store_true", help="print a list of JSON objects")
    models.set_defaults(func=_cmd_models)

    bench = sub.add_parser("bench", help="latency per model and backend, or training throughput")
    bench.add_argument("pattern", nargs="?", default="bcresnet_*", help="shell-style name pattern")
    bench.add_argument(
        "--backend",
        action="append",
        help="eager | compile | onnxruntime | openvino | openvino-bf16 | optimized (repeatable)",
    )
    bench.add_argument("--threads", type=int, default=None, help="default 1 (2 with --train)")
    bench.add_argument("--batch", type=int, default=None, help="default 1 (100 with --train)")
    bench.add_argument("--frontend", action="store_true", help="time raw 16 kHz audio through log-mel too")
    bench.add_argument("--train", action="store_true", help="training samples/s at batch 100 instead")
    bench.add_argument("--iterations", type=int, default=None, help="timed repetitions")
    bench.add_argument("--warmup", type=int, default=None, help="untimed warm-up repetitions")
    bench.add_argument("--json", action="store_true", help="print a list of JSON objects")
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except KwsbenchError as err:
        print(f"kwsbench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kwsbench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: not an error of ours; silence the flush at exit.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 0


if __name__ == "__main__":
    sys.exit(main())
