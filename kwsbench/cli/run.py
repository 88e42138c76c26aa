"""`kwsbench run EXPERIMENT.yaml`: train and measure every trial of an experiment grid, crash-safe and resumable."""

from __future__ import annotations

import argparse
import sys

from kwsbench.cli.common import add_common, emit, subparser


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kwsbench.errors import ConfigError
    from kwsbench.runner.config import load_experiment
    from kwsbench.runner.sweep import Sweep, format_status, format_summary, run_experiment

    experiment = load_experiment(args.experiment)
    out = Path(args.out) if args.out else Path("results") / experiment.name
    if args.dry_run:
        statuses = Sweep(experiment, out).status()
        rows = [
            {"trial_id": s.config.trial_id, "state": s.state, "label": s.config.label, "detail": s.detail}
            for s in statuses
        ]
        return emit(rows, args.json, lambda _: format_status(statuses))
    ray = None
    if args.executor == "ray":
        from kwsbench.runner.ray_executor import RayOptions

        retries = 1 if args.max_retries is None else args.max_retries
        ray = RayOptions(args.address, args.cpus_per_trial, args.gpus_per_trial, retries)
    elif any(
        v is not None for v in (args.address, args.cpus_per_trial, args.gpus_per_trial, args.max_retries)
    ):
        raise ConfigError(
            "--address, --cpus-per-trial, --gpus-per-trial and --max-retries need --executor ray; add it"
        )
    try:
        summary = run_experiment(
            experiment, out, tracking_uri=args.tracking_uri, keep_going=args.keep_going, cache_dir=args.cache_dir,
            device=args.device, progress=not args.json, ray=ray,
        )  # fmt: skip
    except KeyboardInterrupt:
        print(
            f"\nkwsbench: interrupted; finished trials are in {out / 'results.jsonl'}, and the same command "
            "resumes the interrupted one from its last completed epoch",
            file=sys.stderr,
        )
        return 130
    emit(summary, args.json, format_summary)
    return 1 if summary.failed else 0


def register(sub) -> None:
    run = subparser(
        sub, "run", "train and measure every trial of an experiment; one record per trial in results.jsonl"
    )
    run.add_argument("experiment", help="an experiment YAML file (see experiments/)")
    run.add_argument("--out", default=None, help="results folder (default: results/<experiment name>)")
    run.add_argument(
        "--tracking-uri", default=None,
        help="mlflow tracking: a server URI, or none (default: sqlite:///<out>/mlflow.db, embedded)",
    )  # fmt: skip
    run.add_argument("--keep-going", action=argparse.BooleanOptionalAction, default=True,
                     help="go on after a failed trial (--no-keep-going or --fail-fast stops)")  # fmt: skip
    run.add_argument(
        "--fail-fast", dest="keep_going", action="store_false", help="stop at the first failed trial"
    )
    run.add_argument(
        "--dry-run", action="store_true", help="list the trials and which are done; train nothing"
    )
    run.add_argument(
        "--device", choices=("cpu", "cuda"), default=None, help="override the experiment's device"
    )
    run.add_argument("--cache-dir", default=None, help="clip cache folder (default: $KWSBENCH_CACHE)")
    run.add_argument(
        "--executor", choices=("local", "ray"), default="local",
        help="local: the trials one after another in this process; ray: each trial a Ray task (kwsbench[ray])",
    )  # fmt: skip
    run.add_argument(
        "--address", default=None,
        help="with --executor ray: auto or HOST:PORT of a running Ray cluster (default: start a local one)",
    )  # fmt: skip
    run.add_argument("--cpus-per-trial", type=int, default=None,
                     help="with --executor ray: CPUs (training threads) per trial (default: the experiment's threads)")  # fmt: skip
    run.add_argument("--gpus-per-trial", type=float, default=None,
                     help="with --executor ray: GPUs per trial, fractions allowed (default: 1 for cuda, else 0)")  # fmt: skip
    run.add_argument("--max-retries", type=int, default=None,
                     help="with --executor ray: retries of a trial whose worker dies (default: 1)")  # fmt: skip
    add_common(run, json_help="print JSON (the trial list with --dry-run, else a summary)")
    run.set_defaults(func=_run)
