"""infra/ and prefect.yaml cannot run here (no container engine): check them against their schemas,
the code's names (environment variables, work pool, event, entrypoints) and dupflow's config model."""

from __future__ import annotations

import json
import re
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import jsonschema
import kubernetes_validate
import pytest
import yaml
from prefect.settings import Settings
from prefect.settings.base import PrefectBaseSettings
from prefect.utilities.importtools import import_object

from dupflow.config import ADDRESS_ENV, validate_config
from dupflow.encode.onnx_net import CACHE_ENV
from dupflow.flows.ingest import INGEST_EVENT

PROJECT = Path(__file__).resolve().parents[1]
INFRA = PROJECT / "infra"
BIN = Path(sys.executable).parent


def _yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((INFRA / "compose.yaml").read_text())
    return doc


def _prefect_settings(model: type[PrefectBaseSettings]) -> set[str]:
    names: set[str] = set()
    for key, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, PrefectBaseSettings):
            names |= _prefect_settings(field.annotation)
            continue
        names.add((model.model_config.get("env_prefix", "") + key).upper())
        alias = field.validation_alias
        names |= {c.upper() for c in getattr(alias, "choices", [alias]) if isinstance(c, str)}
    return names


def test_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads(resources.files("check_jsonschema.builtin_schemas.vendor")
                        .joinpath("compose-spec.json").read_text())
    jsonschema.validate(_compose(), schema)


def test_compose_has_every_part_of_an_installation() -> None:
    services = _compose()["services"]
    commands = {name: " ".join(s.get("command", [])) for name, s in services.items()}
    assert any("prefect server start" in c for c in commands.values())
    assert any(s.get("image", "").startswith("postgres") for s in services.values())
    assert any(s.get("image", "").startswith("minio/minio") for s in services.values())
    assert any(c.startswith("dask scheduler") for c in commands.values())
    assert any(c.startswith("dask worker") for c in commands.values())
    assert any(c.startswith("prefect worker start --pool dupflow") for c in commands.values())


def test_kubernetes_manifests_are_valid_resources() -> None:
    docs = _yaml_docs(INFRA / "k8s" / "dupflow.yaml")
    assert {d["kind"] for d in docs} >= {"Namespace", "ConfigMap", "Deployment", "Service"}
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30.0", strict=True)
    values = yaml.safe_load((INFRA / "k8s" / "prefect-server-values.yaml").read_text())
    assert values["server"]["image"]["prefectTag"].startswith("3.8.8")


def _dupflow_commands() -> list[list[str]]:
    """Every command run in the dupflow image: compose services built from it, Kubernetes
    containers using it, and the Dockerfile's CMD."""
    commands = [s["command"] for s in _compose()["services"].values() if s.get("image") == "dupflow:latest"]
    for doc in _yaml_docs(INFRA / "k8s" / "dupflow.yaml"):
        if doc["kind"] == "Deployment":
            commands += [c["command"] for c in doc["spec"]["template"]["spec"]["containers"]
                         if c["image"] == "dupflow:latest"]
    cmd = re.search(r"^CMD (\[.*\])$", (INFRA / "Dockerfile").read_text(), re.M)
    assert cmd, "the Dockerfile has no exec-form CMD"
    return [*commands, json.loads(cmd.group(1))]


def test_image_entrypoints_exist_and_accept_their_arguments() -> None:
    commands = _dupflow_commands()
    assert len(commands) >= 7
    for command in commands:
        exe = shutil.which(command[0], path=str(BIN))
        assert exe, f"{command[0]} is not installed by `pip install .`"
    # the pool the workers poll is the one prefect.yaml deploys to and `dupflow deploy` creates
    pools = {c[c.index("--pool") + 1] for c in commands if "--pool" in c}
    deployments = yaml.safe_load((PROJECT / "prefect.yaml").read_text())["deployments"]
    assert pools == {d["work_pool"]["name"] for d in deployments} == {"dupflow"}


def test_dockerfile_copies_what_the_package_needs() -> None:
    copied = re.findall(r"^COPY (.+) \./?\S*$", (INFRA / "Dockerfile").read_text(), re.M)
    for line in copied:
        for item in line.split():
            assert (PROJECT / item).exists(), f"Dockerfile copies {item}, which is not in the project"
    text = (INFRA / "Dockerfile").read_text()
    for package in ("src", "tasks", "flows"):
        assert f"COPY {package} " in text


def test_environment_names_in_infra_are_ones_the_code_reads() -> None:
    text = "\n".join(p.read_text() for p in [INFRA / "compose.yaml", INFRA / "Dockerfile",
                                              *(INFRA / "k8s").glob("*.yaml")])
    names = set(re.findall(r"\b((?:DUPFLOW|PREFECT|DASK|AWS)_[A-Z0-9_]+)\b", text))
    dupflow_names = {n for n in names if n.startswith("DUPFLOW_")}
    assert dupflow_names == {ADDRESS_ENV, CACHE_ENV}
    unknown = {n for n in names if n.startswith("PREFECT_")} - _prefect_settings(Settings)
    assert not unknown, f"not Prefect settings: {unknown}"
    aws = {n for n in names if n.startswith("AWS_")}
    assert aws <= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"}
    compose_env = _compose()["services"]["prefect-worker"]["environment"]
    assert compose_env[ADDRESS_ENV] == "tcp://dask-scheduler:8786"


def _render(value: Any, context: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return jinja2.Template(value).render(**context)
    if isinstance(value, dict):
        return {k: _render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, context) for v in value]
    return value


@pytest.mark.parametrize("name", ["nightly", "adhoc", "on-ingest"])
def test_every_deployment_has_valid_parameters_and_entrypoint(name: str) -> None:
    deployments = {d["name"]: d for d in yaml.safe_load((PROJECT / "prefect.yaml").read_text())["deployments"]}
    deployment = deployments[name]
    flow = import_object(deployment["entrypoint"])
    assert flow.name == "dupflow-dedup"
    if name == "on-ingest":
        (trigger,) = deployment["triggers"]
        assert trigger["expect"] == [INGEST_EVENT]
        event = {"payload": {"dataset": "batch-2026-11-22", "prefix": "s3://raw/ingest/2026-11-22/"}}
        parameters = _render(trigger["parameters"], {"event": event})
        config = validate_config(parameters["config"])
        assert config.datasets[0].url == "s3://raw/ingest/2026-11-22/"
        assert config.match.reference == ("corpus",)
        assert (config.datasets[1].url, config.store, config.out) == (
            "s3://images/corpus", "s3://dupflow/store", "s3://dupflow/runs/ingest/batch-2026-11-22")
        where = {"corpus": "/data/corpus", "store": "/data/store", "out": "/data/runs/b2"}  # a trial on local folders
        event["payload"].update(where)
        config = validate_config(_render(trigger["parameters"], {"event": event})["config"])
        assert (config.datasets[1].url, config.store, config.out) == tuple(where.values())
    else:
        validate_config(deployment["parameters"]["config"])
    if name == "nightly":
        (schedule,) = deployment["schedules"]
        assert len(schedule["cron"].split()) == 5
