"""The `kwsbench` command line: one module per command group, each adding its parser and calling one library
function; ``main`` turns bad input (a ``KwsbenchError``) into one line on stderr and exit code 2.

A new command is a new module with ``register(subparsers)`` plus one entry in ``COMMAND_MODULES``. Modules
import the library lazily, inside their handlers, so ``kwsbench --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from kwsbench import __version__
from kwsbench.cli.common import ArgumentParser, HelpFormatter
from kwsbench.errors import KwsbenchError

# Command groups in the order `kwsbench --help` lists them.
COMMAND_MODULES = ("data", "models", "bench", "train", "run", "report", "bundle", "export", "listen")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="kwsbench",
        description="kwsbench: benchmark and ablation suite for efficient keyword spotting.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"kwsbench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"kwsbench.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # A file name that is not valid UTF-8 reaches us as surrogate escapes: print it escaped, never crash on it.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage error already printed on one line
        return done.code if isinstance(done.code, int) else 2
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
