"""What `dupflow run` starts before its flow: the embedded Prefect API, launched before Prefect is
imported (so that the imports and the local cluster start beside it), unless one is configured; and how
many match tasks a flow makes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from distributed import Client

from dupflow.match.job import BLOCK_IMAGES, cluster_blocks

LAUNCH = """
import json, sys, urllib.request
from dupflow.flows.embedded_api import EmbeddedApi
api = EmbeddedApi.start()
launched_with_prefect = "prefect" in sys.modules
url = api.wait()
with urllib.request.urlopen(url + "/health", timeout=5) as answer:
    healthy = answer.status == 200
with urllib.request.urlopen(url + "/admin/version", timeout=5) as answer:
    version = json.loads(answer.read())
api.stop()
print(json.dumps({"url": url, "prefect_imported": launched_with_prefect, "healthy": healthy, "version": version}))
"""


def test_the_embedded_api_starts_without_importing_prefect_and_stops(tmp_path: Path) -> None:
    import json
    import os

    from prefect import __version__ as prefect_version

    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home")}
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run([sys.executable, "-c", LAUNCH], env=env, capture_output=True, text=True, timeout=180,
                          check=True)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert not seen["prefect_imported"]
    assert seen["healthy"]
    assert seen["version"] == prefect_version  # Prefect's own server, of the installed release
    assert (tmp_path / "home" / "prefect.db").exists()
    with pytest.raises(urllib.error.URLError):  # stopped: nothing listens there any more
        urllib.request.urlopen(seen["url"] + "/health", timeout=2)


def test_a_configured_prefect_api_wins_over_the_embedded_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    from dupflow.flows.runtime import configured_api_url

    profiles = tmp_path / "profiles.toml"
    profiles.write_text(textwrap.dedent("""
        active = "team"
        [profiles.team]
        PREFECT_API_URL = "http://prefect.internal:4200/api"
    """))
    monkeypatch.setenv("PREFECT_PROFILES_PATH", str(profiles))
    embedded = "http://127.0.0.1:8123/api"
    monkeypatch.setenv("PREFECT_API_URL", embedded)  # what `dupflow run` exported for its own server
    assert configured_api_url(embedded) == "http://prefect.internal:4200/api"
    profiles.write_text('active = "team"\n[profiles.team]\n')
    assert configured_api_url(embedded) is None
    monkeypatch.setenv("PREFECT_API_URL", "http://team-server:4200/api")  # the user's own export
    assert configured_api_url(embedded) == "http://team-server:4200/api"
    assert configured_api_url() == "http://team-server:4200/api"


@pytest.mark.usefixtures("prefect_harness")
def test_a_run_under_an_exported_prefect_api_url_records_there_and_leaves_it_set(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The test session's own Prefect server stands for a team server exported in PREFECT_API_URL."""
    import os

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    from dupflow.config import validate_config
    from dupflow.flows.runtime import local_runtime

    url = PREFECT_API_URL.value()
    assert url
    monkeypatch.setenv("PREFECT_API_URL", url)
    config = validate_config({"datasets": [{"name": "a", "url": "/nowhere"}], "store": "/s", "out": "/o",
                              "cluster": {"workers": 1}})
    with local_runtime(config) as ran:
        assert ran.cluster.address  # its own local cluster ...
        assert PREFECT_API_URL.value() == url  # ... and the exported API, not an embedded one
        with get_client(sync_client=True) as client:
            assert str(client.api_url).rstrip("/") == url
        with Client(ran.cluster.address, set_as_default=False) as dask_client:  # type: ignore[no-untyped-call]
            trims = dask_client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_")
            profiled = dask_client.run(lambda dask_worker: "profile" in dask_worker.periodic_callbacks)
            imported = dask_client.run(lambda: "dupflow.tasks" in sys.modules)
        assert list(trims.values()) == [None]  # malloc keeps adapting (WORKER_CONFIG)
        assert list(profiled.values()) == [False]  # no stack sampling beside the encode
        assert list(imported.values()) == [True]  # the tasks were imported as the worker started
    assert os.environ["PREFECT_API_URL"] == url


def test_the_image_configures_dask_workers_as_dupflow_configures_its_local_ones() -> None:
    import dask

    from dupflow.flows.runtime import WORKER_CONFIG

    infra = Path(__file__).resolve().parents[1] / "infra"
    with dask.config.set(dask.config.collect(paths=[str(infra / "dask.yaml")], env={})):
        assert {key: dask.config.get(key) for key in WORKER_CONFIG} == WORKER_CONFIG
    assert WORKER_CONFIG["distributed.worker.profile.enabled"] is False
    assert "COPY infra/dask.yaml /etc/dask/" in (infra / "Dockerfile").read_text()


@pytest.mark.parametrize(("images", "threads", "blocks"), [
    (54, 2, 1), (BLOCK_IMAGES - 1, 8, 1), (3 * BLOCK_IMAGES, 8, 3), (20_000, 2, 2), (10**8, 16, 16)])
def test_a_flow_splits_matching_into_tasks_worth_their_bookkeeping(images: int, threads: int, blocks: int) -> None:
    assert cluster_blocks(images, threads) == blocks
