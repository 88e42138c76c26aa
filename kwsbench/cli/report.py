"""`kwsbench report RESULTS.jsonl ...`: the report of one or more sweeps (tables, plots, claim verdicts)."""

from __future__ import annotations

import argparse

from kwsbench.cli.common import add_common, emit, subparser


def _format(report) -> str:
    tally = ", ".join(f"{n} {verdict}" for verdict, n in report.verdicts.items()) or "no claim touched"
    lines = [
        f"wrote {report.out_dir}/README.md and {len(report.files) - 1} more files: "
        f"{report.trials} finished trials, {report.failed} failed; claims: {tally}"
    ]
    lines += [f"  {c['verdict']:<15} {c['text']}" + (f" [{c['context']}]" if c["context"] else "")
              for c in report.claims]  # fmt: skip
    return "\n".join(lines)


def _report(args: argparse.Namespace) -> int:
    from kwsbench.report import build_report

    report = build_report(args.results, args.out, bench=args.bench)
    return emit(report, args.json, _format)


def register(sub) -> None:
    report = subparser(
        sub,
        "report",
        "a report of sweeps: Markdown tables, Pareto plots and the paper's claims with verdicts",
    )
    report.add_argument("results", nargs="+", metavar="RESULTS.jsonl", help="results files of `kwsbench run`")
    report.add_argument("--out", default=None, help="report folder (default: reports/<experiment name>)")
    report.add_argument(
        "--bench",
        default=None,
        metavar="BENCH.json",
        help="latency records of `kwsbench bench --json` to add",
    )
    add_common(report, json_help="print what was written and every verdict as JSON")
    report.set_defaults(func=_report)
