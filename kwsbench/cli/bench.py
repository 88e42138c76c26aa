"""`kwsbench bench`: latency per model and backend, or (``--train``) training throughput of both formulations."""

from __future__ import annotations

import argparse

from kwsbench.cli.common import add_common, emit, non_negative_int, positive_int, subparser
from kwsbench.errors import ConfigError


def _bench(args: argparse.Namespace) -> int:
    if args.streaming:
        return _streaming(args)
    if args.temporal_padding != "causal":
        raise ConfigError("--temporal-padding applies to --streaming; add --streaming or drop it")
    if args.train:
        # Training throughput has no backend and no frontend: refuse them rather than ignore them silently.
        for option, given in (("--backend", args.backend), ("--frontend", args.frontend)):
            if given:
                raise ConfigError(
                    f"{option} does not apply to --train (training runs eagerly on features); drop it"
                )
        from kwsbench.measure.bench import format_train_bench, run_train_bench

        records = run_train_bench(
            args.pattern, threads=args.threads, batch=args.batch, steps=args.iterations, warmup=args.warmup
        )
        return emit(records, args.json, format_train_bench)
    from kwsbench.measure.bench import format_bench, run_bench

    report = run_bench(
        pattern=args.pattern,
        backends=args.backend or ["eager"],
        threads=args.threads if args.threads is not None else 1,
        batch=args.batch if args.batch is not None else 1,
        frontend=args.frontend,
        iterations=args.iterations,
        warmup=args.warmup,
    )
    return emit(report.records, args.json, lambda _: format_bench(report))


def _streaming(args: argparse.Namespace) -> int:
    for option, given in (
        ("--backend", args.backend),
        ("--train", args.train),
        ("--frontend", args.frontend),
        ("--batch", args.batch),
    ):
        if given:
            raise ConfigError(
                f"{option} does not apply to --streaming (every stream backend is timed at batch 1, "
                "log-mel included); drop it"
            )
    from kwsbench.measure.protocol import Protocol
    from kwsbench.models.registry import resolve_models
    from kwsbench.stream.hop_cost import format_hop_costs, hop_cost

    names = resolve_models(args.pattern)
    not_streamable = [n for n in names if not n.startswith("bcresnet_")]
    if not_streamable:
        raise ConfigError(f"{not_streamable[0]}: only BC-ResNet streams; use a pattern such as bcresnet_1")
    defaults = Protocol()
    protocol = Protocol(
        iterations=args.iterations or defaults.iterations,
        warmup=defaults.warmup if args.warmup is None else args.warmup,
    )
    threads = args.threads if args.threads is not None else 1
    costs = [
        hop_cost(
            n, hop_ms=args.hop_ms, threads=threads, protocol=protocol, temporal_padding=args.temporal_padding
        )
        for n in names
    ]
    return emit([c.to_dict() for c in costs], args.json, lambda _: format_hop_costs(costs))


def register(sub) -> None:
    from kwsbench.measure.backend_names import BACKENDS
    from kwsbench.measure.protocol import TRAIN_DEFAULTS, Protocol

    latency = Protocol()

    bench = subparser(sub, "bench", "latency per model and backend, or training throughput (--train)")
    bench.add_argument("pattern", nargs="?", default="bcresnet_*", help="model name or shell-style pattern")
    bench.add_argument(
        "--backend",
        action="append",
        metavar="NAME",
        help="repeatable; default eager. " + "; ".join(f"{k}: {v}" for k, v in BACKENDS.items()),
    )
    bench.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help=f"intra-op threads (default: 1; {TRAIN_DEFAULTS['threads']} with --train)",
    )
    bench.add_argument(
        "--batch",
        type=positive_int,
        default=None,
        help=f"clips per call (default: 1; {TRAIN_DEFAULTS['batch']} with --train)",
    )
    bench.add_argument("--frontend", action="store_true", help="time raw 16 kHz audio through log-mel too")
    bench.add_argument(
        "--train", action="store_true", help="training samples/s of the straightforward and fast formulations"
    )
    bench.add_argument(
        "--iterations", type=positive_int, default=None,
        help=f"timed calls (default: {latency.iterations}, continued to {latency.min_time_s} s; "
        f"with --train: {TRAIN_DEFAULTS['steps']} timed steps)",
    )  # fmt: skip
    bench.add_argument(
        "--warmup",
        type=non_negative_int,
        default=None,
        help=f"untimed calls first (default: {latency.warmup}; with --train: {TRAIN_DEFAULTS['warmup']} steps)",
    )
    bench.add_argument(
        "--streaming",
        action="store_true",
        help="per-hop cost of the causal model streamed incrementally next to re-running its 1 s window "
        "(features included, batch 1, the fastest backend of each)",
    )
    bench.add_argument(
        "--temporal-padding",
        choices=("causal", "same"),
        default="causal",
        help="with --streaming: the causal model, or the standard one streamed with its delay lines "
        "(default: causal)",
    )
    bench.add_argument(
        "--hop-ms", type=float, default=100.0, help="with --streaming: the hop (a multiple of 10 ms)"
    )
    add_common(bench, json_help="print a list of JSON records")
    bench.set_defaults(func=_bench)
