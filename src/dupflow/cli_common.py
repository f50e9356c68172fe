"""What every `dupflow` command shares: the storage option and one way to report dupflow's errors."""

from __future__ import annotations

from collections.abc import Callable

import click

from dupflow.errors import DupflowError

__all__ = ["report_errors", "storage_option"]


def report_errors(fn: Callable[[], None]) -> None:
    """Run a command body; dupflow's own errors become one clean message and exit code 1."""
    try:
        fn()
    except DupflowError as exc:
        raise click.ClickException(str(exc)) from exc


storage_option = click.option(
    "--storage-option",
    "-o",
    "storage_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="fsspec option for remote stores, e.g. endpoint_url=http://127.0.0.1:9000 (repeatable). "
    "The environment (AWS_*, FSSPEC_S3_*) is read too.",
)
