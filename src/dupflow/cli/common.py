"""What every `dupflow` command shares: the storage option and one way to report dupflow's errors."""

from __future__ import annotations

import re
from collections.abc import Callable

import click

from dupflow.errors import DupflowError

__all__ = ["long_storage_option", "report_errors", "say", "shown", "storage_option"]

# C0 and C1 controls (newline, carriage return, ESC of colour and OSC sequences, BEL, ...) and the
# Unicode marks that reorder text on screen: file names may hold any of them.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def shown(text: object) -> str:
    """`text` safe for a terminal: every control character is written as an escape (\\n, \\x1b, \\u202e)."""
    def escape(m: re.Match[str]) -> str:
        c = m.group()
        return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")

    return _UNSAFE.sub(escape, str(text))


def say(line: str, *, err: bool = False) -> None:
    """Print one line; whatever it holds (file names, URIs, messages) cannot break it or drive the terminal."""
    click.echo(shown(line), err=err)


def report_errors(fn: Callable[[], None]) -> None:
    """Run a command body; dupflow's own errors become one clean message and exit code 1."""
    try:
        fn()
    except DupflowError as exc:
        raise click.ClickException(shown(exc)) from exc


_STORAGE_HELP = ("fsspec option for remote stores, e.g. endpoint_url=http://127.0.0.1:9000 (repeatable). "
                 "The environment (AWS_*, FSSPEC_S3_*) is read too.")
storage_option = click.option("--storage-option", "-o", "storage_options", multiple=True, metavar="KEY=VALUE",
                              help=_STORAGE_HELP)
# `merge` keeps -o for its output (imagededup's --encodings habit), so there the option is long only.
long_storage_option = click.option("--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE",
                                   help=_STORAGE_HELP)
