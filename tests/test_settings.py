"""One place per setting: every stage's settings model gives the CLI its flags, defaults, bounds and
help, and the YAML config its sections; a flag overrides only what it names."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from dupflow.apply.settings import ApplyOptions
from dupflow.cli.options import SEP
from dupflow.config import ApplyStep, load_config
from dupflow.encode.settings import EncodeSettings
from dupflow.flows.cli import RUN_SECTIONS, config_from_flags, main
from dupflow.match.settings import MatchSettings
from dupflow.report.settings import ReportSettings
from dupflow.settings import cli_hint

COMMANDS: list[tuple[str, str, type[BaseModel], tuple[str, ...]]] = [
    ("encode", "encode", EncodeSettings, ()),
    ("match", "match", MatchSettings, ()),
    ("report", "report", ReportSettings, ()),
    ("apply", "apply", ApplyOptions, ()),
    *[("run", section, model, exclude) for section, (model, exclude) in RUN_SECTIONS.items()],
]


def _command(name: str) -> click.Command:
    command = main.commands[name]
    assert isinstance(command, click.Command)
    return command


@pytest.mark.parametrize(("command", "section", "model", "exclude"), COMMANDS,
                         ids=[f"{c}-{s}" for c, s, _, _ in COMMANDS])
def test_every_stage_setting_is_a_flag_with_the_models_default_and_help(
        command: str, section: str, model: type[BaseModel], exclude: tuple[str, ...]) -> None:
    params = {p.name: p for p in _command(command).params if isinstance(p, click.Option)}
    for name, field in model.model_fields.items():
        hint = cli_hint(model, name)
        dest = f"{section}{SEP}{name}"
        if not hint.cli or name in exclude:
            assert dest not in params
            continue
        option = params[dest]
        assert f"--{hint.flag or name.replace('_', '-')}" in option.opts
        assert option.default is None  # only what is given overrides a config file
        assert field.description
        assert option.help
        assert option.help.startswith(field.description)
        default = field.get_default(call_default_factory=True)
        if isinstance(default, int) and not isinstance(default, bool) and default:
            assert f"[default: {default:,}]" in option.help


def test_run_takes_the_apply_steps_own_settings() -> None:
    params = {p.name for p in _command("run").params}
    assert {f"apply{SEP}execute", f"apply{SEP}journal", f"apply{SEP}sidecars"} <= params
    assert set(ApplyStep.model_fields) - set(ApplyOptions.model_fields) == {"execute", "journal"}


def _flags(**given: object) -> dict[str, object]:
    """`run`'s parsed flags with nothing given but `given`."""
    context = _command("run").make_context("run", [], resilient_parsing=True)
    return {**context.params, **given}


def test_a_flag_overrides_only_its_own_setting_of_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "dupflow.yaml"
    path.write_text("datasets: [{name: a, url: /data/a}]\nstore: /s\nout: /o\n"
                    "encode: {hash_size: 16, encoders: [phash], max_pixels: 100}\n"
                    "match: {rules: ['phash<=20'], examples: 7}\nreport: {thumbnails: 3, thumb_size: 64}\n")
    config, _ = config_from_flags(str(path), _flags(**{f"encode{SEP}max_pixels": 5, f"match{SEP}examples": 2,
                                                      f"report{SEP}thumb_size": 32}))
    assert (config.encode.hash_size, config.encode.encoders, config.encode.max_pixels) == (16, ("phash",), 5)
    assert (config.match.rules, config.match.examples) == (("phash<=20",), 2)
    assert config.report is not None
    assert (config.report.thumbnails, config.report.thumb_size) == (3, 32)
    report = config.report_settings()
    assert report is not None
    assert report.max_pixels == 5


def test_without_a_config_file_unset_flags_take_the_models_defaults() -> None:
    config, credentials = config_from_flags(None, _flags(datasets=("a=/data/a",), store="/s", out="/o"))
    assert credentials == {}
    assert config.encode == EncodeSettings()
    assert config.report == ReportSettings()
    assert config.match_settings() == MatchSettings(datasets=("a",))
    assert config.apply is None


def test_credentials_given_as_flags_are_kept_out_of_the_config() -> None:
    config, credentials = config_from_flags(None, _flags(datasets=("a=s3://b/a",), store="s3://b/s", out="s3://b/o",
                                                         storage_options=("key=K", "secret=S", "endpoint_url=http://e")))
    assert credentials == {"key": "K", "secret": "S"}
    assert config.storage_options == {"endpoint_url": "http://e", "client_kwargs": {"endpoint_url": "http://e"}}
    assert "S" not in config.model_dump_json().replace("s3://", "")


def test_apply_flags_without_apply_are_refused() -> None:
    with pytest.raises(Exception, match="sidecars set how the apply step runs: add --apply"):
        config_from_flags(None, _flags(datasets=("a=/data/a",), store="/s", out="/o",
                                       **{f"apply{SEP}sidecars": ".txt"}))
    config, _ = config_from_flags(None, _flags(datasets=("a=/data/a",), store="/s", out="/o", apply=True,
                                               **{f"apply{SEP}sidecars": ".txt,.json"}))
    assert config.apply is not None
    assert config.apply.sidecars == (".txt", ".json")
    assert not config.apply.execute


@pytest.mark.parametrize(("args", "message"), [
    (["report", "--out", "x", "--thumb-size", "4"], "4 is not in the range 16<=x<=1024"),
    (["encode", "-d", "a=/nope", "--store", "s", "--hash-size", "12"], "'12' is not one of '8', '16'"),
    (["encode", "-d", "a=/nope", "--store", "s", "--encoders", "md5"], "unknown encoder(s) md5"),
    (["apply", "m.parquet", "--sidecars", "txt"], "sidecar extensions look like .txt,.json: txt"),
    (["apply", "m.parquet", "--annotations", "nope"], "--annotations takes NAME=URL, not 'nope'"),
])
def test_a_bad_flag_is_refused_with_the_models_rule(args: list[str], message: str) -> None:
    done = CliRunner().invoke(main, args)
    assert done.exit_code in (1, 2), done.output
    assert message in done.output


def test_one_preset_names_what_to_encode_and_how_to_match(tmp_path: Path) -> None:
    config, _ = config_from_flags(None, _flags(datasets=("a=/data/a",), store="/s", out="/o",
                                               **{f"encode{SEP}preset": "fast"}))
    assert (config.preset, config.encode.preset, config.match.preset) == ("fast", "fast", "fast")
    assert config.encode.encoders == ("phash", "dhash")
    assert not config.match.uses_orientations(config.encode.encoders)
    path = tmp_path / "dupflow.yaml"
    path.write_text("datasets: [{name: a, url: /data/a}]\nstore: /s\nout: /o\npreset: fast\n"
                    "encode: {encoders: [phash, phash_dihedral]}\nmatch: {preset: default}\n")
    config = load_config(str(path))
    assert config.encode.encoders == ("phash", "phash_dihedral")  # a section's own setting wins
    assert config.match.preset == "default"
    assert config.match.uses_orientations(config.encode.encoders)
    assert EncodeSettings().encoders == ("phash", "dhash", "phash_dihedral", "phash_windows", "orb")
