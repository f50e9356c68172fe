"""The base of every stage's settings: one frozen pydantic model per stage, each field declared once
with its default, its bounds and its help. The CLI's options, the YAML config (`dupflow.yaml`), the
flow's parameter and the Python API all derive from these models; `dupflow.cli.options` reads the
`cli` hints that `setting()` attaches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dupflow.errors import ConfigError

__all__ = [
    "PRESETS",
    "CliHint",
    "Preset",
    "StageSettings",
    "cli_hint",
    "paths_of",
    "presets_help",
    "problems",
    "setting",
    "validated",
    "with_paths",
]

M = TypeVar("M", bound=BaseModel)

# The named configurations (README, "Presets"): what each encodes is in dupflow.encode.settings, how each
# matches in dupflow.match.settings. No preset means `default`, the best one without optional extras.
Preset = Literal["fast", "default", "thorough"]
PRESETS: dict[str, str] = {
    "fast": "pHash and dHash, pictures as stored: the quickest",
    "default": "adds mirrored, 90-degree-rotated and cropped copies, loose candidates accepted once local "
               "features verify them (no optional extra needed)",
    "thorough": "adds embeddings: larger crops, rotations and edits, each pair geometrically verified (needs "
                "pip install 'dupflow[cnn]')",
}


def presets_help(what: str) -> str:
    """A preset setting's help: `what` it chooses, then every preset."""
    return f"{what}: " + "; ".join(f"{k}: {v}" for k, v in PRESETS.items())


@dataclass(frozen=True)
class CliHint:
    """How a setting appears on the command line. `flag`: the long name (default: the field's name
    with dashes); `short`: e.g. "-e"; `comma`: a list given as `a,b` in one flag (else the flag
    repeats); `pairs`: a mapping given as repeated NAME=VALUE; `cli`: False keeps it off the CLI."""

    flag: str | None = None
    short: str | None = None
    metavar: str | None = None
    comma: bool = False
    pairs: bool = False
    cli: bool = True


def setting(default: Any = ..., help: str = "", *, flag: str | None = None, short: str | None = None,
            metavar: str | None = None, comma: bool = False, pairs: bool = False, cli: bool = True,
            path: bool = False, **bounds: Any) -> Any:
    """A settings field: its default (or `default_factory=` in `bounds`), the help text the CLI and
    docs show, pydantic bounds (`ge=`, `le=`, ...) and how it appears on the command line. `path`:
    it holds a URL or local path (a mapping: its values do), made absolute where the run starts."""
    hint = CliHint(flag=flag, short=short, metavar=metavar, comma=comma, pairs=pairs, cli=cli)
    if "default_factory" not in bounds:
        bounds["default"] = default
    return Field(description=help, json_schema_extra={"cli": asdict(hint), "path": path}, **bounds)


def cli_hint(model: type[BaseModel], name: str) -> CliHint:
    """The command-line hints of one field of `model`."""
    extra = model.model_fields[name].json_schema_extra
    hint = extra.get("cli") if isinstance(extra, dict) else None
    return CliHint(**cast(dict[str, Any], hint)) if isinstance(hint, dict) else CliHint()


def with_paths(settings: M, convert: Callable[[str], str]) -> M:
    """`settings` with every `path` setting (in nested settings too) passed through `convert`."""
    update: dict[str, Any] = {}
    for name, field in type(settings).model_fields.items():
        value = getattr(settings, name)
        extra = field.json_schema_extra
        if isinstance(value, BaseModel):
            update[name] = with_paths(value, convert)
        elif isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
            update[name] = [with_paths(v, convert) for v in value]
        elif not (isinstance(extra, dict) and extra.get("path")):
            continue
        elif isinstance(value, str):
            update[name] = convert(value)
        elif isinstance(value, dict):
            update[name] = {k: convert(v) for k, v in value.items()}
    return settings.model_copy(update=update)


def paths_of(settings: BaseModel) -> list[tuple[str, str]]:
    """Every `path` setting's (dotted name, value), in nested settings too."""
    found: list[tuple[str, str]] = []
    for name, field in type(settings).model_fields.items():
        value, extra = getattr(settings, name), field.json_schema_extra
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            if isinstance(item, BaseModel):
                where = f"{name}[{i}]" if isinstance(value, list) else name
                found += [(f"{where}.{n}", v) for n, v in paths_of(item)]
        if isinstance(extra, dict) and extra.get("path"):
            if isinstance(value, str):
                found.append((name, value))
            elif isinstance(value, dict):
                found += [(f"{name}.{k}", v) for k, v in value.items()]
    return found


class StageSettings(BaseModel):
    """A stage's settings: frozen, and unknown keys are refused. Checks that need the user to do
    something raise ConfigError with the fix; out-of-bounds values raise pydantic's ValidationError,
    which `validated` turns into one ConfigError listing every problem (`section.key: what`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def problems(exc: ValidationError, model: type[BaseModel] | None = None, prefix: str = "") -> str:
    """A ValidationError as one line per problem, `section.key: what is wrong`; an unknown key is
    named with the keys its section allows."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden" and model is not None:
            allowed = _allowed_keys(model, err["loc"][:-1])
            msg = f"unknown setting; allowed here: {', '.join(allowed)}" if allowed else "unknown setting"
        lines.append(f"{prefix}{where or 'config'}: {msg.removeprefix('Value error, ')}")
    return "; ".join(lines)


def _allowed_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    """The BaseModel inside `X`, `X | None` or `list[X]`, else the annotation itself."""
    for arg in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation


def validated(model: type[M], body: dict[str, Any], source: str = "the settings") -> M:
    """`model` from plain data; every problem is listed in one ConfigError."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise ConfigError(f"invalid settings in {source}: {problems(exc, model)}") from exc
