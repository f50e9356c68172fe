"""Command-line options derived from the stage settings models: each setting's flag, type, bounds,
default and help come from its one declaration (`dupflow.settings.setting`). A value reaches the
command as `SECTION__FIELD` and is `None` unless given, so a config file's value is never overridden
by a default."""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import annotated_types
import click
from pydantic import BaseModel

from dupflow.errors import ConfigError
from dupflow.settings import cli_hint, validated

__all__ = ["build", "given", "options"]

F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=BaseModel)
SEP = "__"


def options(section: str, model: type[BaseModel], *, only: Iterable[str] | None = None,
            exclude: Iterable[str] = ()) -> Callable[[F], F]:
    """A decorator adding one click option per command-line setting of `model` (those in `only`, less
    `exclude`), in declaration order."""
    wanted = [n for n in model.model_fields if cli_hint(model, n).cli and n not in set(exclude)
              and (only is None or n in set(only))]

    def decorate(fn: F) -> F:
        for name in reversed(wanted):
            fn = _option(section, model, name)(fn)
        return fn

    return decorate


def given(section: str, model: type[BaseModel], flags: dict[str, Any]) -> dict[str, Any]:
    """The settings of `section` given on the command line, as the model's keys and types; they are
    taken out of `flags`."""
    out: dict[str, Any] = {}
    for key in [k for k in flags if k.startswith(section + SEP)]:
        name, value = key[len(section) + len(SEP):], flags.pop(key)
        if value is None or value == ():
            continue
        hint, base = cli_hint(model, name), _base(model.model_fields[name].annotation)
        if hint.comma:
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif hint.pairs:
            value = _pairs(value, _flag(model, name))
        elif get_origin(base) is Literal and all(isinstance(a, int) for a in get_args(base)):
            value = int(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[name] = value
    return out


def build(section: str, model: type[M], flags: dict[str, Any], **fixed: Any) -> M:
    """`model` from the settings of `section` given on the command line, plus `fixed` values."""
    return validated(model, {**given(section, model, flags), **fixed}, "the command line")


def _flag(model: type[BaseModel], name: str) -> str:
    return "--" + (cli_hint(model, name).flag or name.replace("_", "-"))


def _base(annotation: Any) -> Any:
    """`X` of `X | None`."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _pairs(items: tuple[str, ...], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ConfigError(f"{flag} takes NAME=URL, not {item!r}")
        out[name] = value
    return out


def _option(section: str, model: type[BaseModel], name: str) -> Callable[[F], F]:
    field, hint = model.model_fields[name], cli_hint(model, name)
    flag, base = _flag(model, name), _base(field.annotation)
    default = field.get_default(call_default_factory=True)
    kwargs: dict[str, Any] = {"default": None, "metavar": hint.metavar, "help": _help(field.description or "", default)}
    decls = [flag, *([hint.short] if hint.short else [])]
    if base is bool:
        decls = [f"{flag}/--no-{flag[2:]}", *decls[1:]]
    elif get_origin(base) is Literal:
        kwargs["type"] = click.Choice([str(a) for a in get_args(base)])
    elif base in (int, float):
        low: Any = next((m.ge for m in field.metadata if isinstance(m, annotated_types.Ge)), None)
        high: Any = next((m.le for m in field.metadata if isinstance(m, annotated_types.Le)), None)
        kwargs["type"] = (click.IntRange if base is int else click.FloatRange)(low, high)
    elif hint.pairs or (get_origin(base) is tuple and not hint.comma):
        kwargs["multiple"] = True
    return click.option(*decls, f"{section}{SEP}{name}", **kwargs)


def _help(text: str, default: Any) -> str:
    if "[default" in text:
        return text + "."
    if default is None or isinstance(default, bool) or default in ((), {}, ""):
        return text + "."
    if isinstance(default, tuple):
        shown = ",".join(map(str, default))
    else:
        shown = f"{default:,}" if isinstance(default, int) else str(default)
    return f"{text} [default: {shown}]."
