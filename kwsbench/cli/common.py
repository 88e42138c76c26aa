"""What every command shares: the help formatter, the common options and the one way to print a result."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any


class ArgumentParser(argparse.ArgumentParser):
    """Usage errors as one line naming the fix (argparse prints the whole usage block by default)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


class HelpFormatter(argparse.HelpFormatter):
    """Shows every option's default (unless it is None or a flag's False), as users of other tools expect."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or default in (None, argparse.SUPPRESS)
            or isinstance(
                action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._VersionAction)
            )
            or isinstance(action, argparse._HelpAction)
            or not action.option_strings
            and action.nargs not in ("?", "*")
        ):
            return action.help
        return f"{text} (default: %(default)s)".strip()


def add_common(parser: argparse.ArgumentParser, *, json_help: str = "print JSON instead of a table") -> None:
    """Options every command takes: ``--json`` and ``-v`` (accepted after the subcommand too)."""
    parser.add_argument("--json", action="store_true", help=json_help)
    # SUPPRESS: given here it sets args.verbose, absent it leaves the top-level value alone.
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log progress details"
    )


def subparser(sub, name: str, help: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand parser with the shared formatter."""
    return sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter, **kwargs)


def jsonable(value: Any) -> Any:
    """Records and result objects as plain JSON values (``to_dict`` where they have one)."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def emit(result: Any, as_json: bool, table: Callable[[Any], str]) -> int:
    """Print ``result`` as JSON (``--json``) or as the command's table; the one way every command prints."""
    if as_json:
        print(json.dumps(jsonable(result), indent=2, ensure_ascii=False))
    else:
        print(table(result))
    return 0


def positive_int(text: str) -> int:
    """An argparse type for counts that must be at least 1 (threads, batch, iterations)."""
    return _bounded_int(text, 1)


def non_negative_int(text: str) -> int:
    """An argparse type for counts that may be 0 (warm-up)."""
    return _bounded_int(text, 0)


def _bounded_int(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
    return value
