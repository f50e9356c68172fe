"""How an upstream ingest job hands new data to dupflow, in the two ways Prefect offers.

- Event: `announce_ingest(name, prefix)` emits `ingest.completed`; the `on-ingest` deployment in
  prefect.yaml is triggered by it and matches the new prefix against the corpus. The ingest job does
  not wait and needs to know nothing about dupflow's settings.
- Call: `check_ingest(name, prefix)` starts the `adhoc` deployment with `run_deployment` and waits
  for its result, for a pipeline that must stop when the new data leaks into the corpus.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.deployments import run_deployment
from prefect.events import emit_event

__all__ = ["INGEST_EVENT", "announce_ingest", "check_ingest", "ingest_and_check"]

INGEST_EVENT = "ingest.completed"


def announce_ingest(dataset: str, prefix: str, *, corpus: str | None = None, store: str | None = None,
                    out: str | None = None) -> None:
    """Emit the event the `on-ingest` deployment listens for. `corpus`, `store` and `out` (URLs or absolute
    local paths) replace the deployment's defaults for this run (s3://images/corpus, s3://dupflow/store,
    s3://dupflow/runs/ingest/DATASET)."""
    where = {key: value for key, value in (("corpus", corpus), ("store", store), ("out", out)) if value}
    emit_event(event=INGEST_EVENT, resource={"prefect.resource.id": f"ingest.dataset.{dataset}"},
               payload={"dataset": dataset, "prefix": prefix, **where})


def check_ingest(dataset: str, prefix: str, *, corpus: str = "s3://images/corpus", store: str = "s3://dupflow/store",
                 out: str | None = None, deployment: str = "dupflow-dedup/adhoc") -> dict[str, Any]:
    """Run the dedup deployment on the new prefix against the corpus and wait; returns the run's state."""
    config = {
        "datasets": [{"name": dataset, "url": prefix}, {"name": "corpus", "url": corpus}],
        "match": {"reference": ["corpus"]},
        "store": store,
        "out": out or f"s3://dupflow/runs/ingest/{dataset}",
    }
    run = run_deployment(name=deployment, parameters={"config": config}, timeout=None)
    state = run.state  # type: ignore[union-attr]
    return {"flow_run": str(run.id), "state": state.name if state else None, "out": config["out"]}  # type: ignore[union-attr]


@flow(name="ingest-example")
def ingest_and_check(dataset: str, prefix: str, wait: bool = False) -> dict[str, Any] | None:
    """An upstream ingest flow's last step: announce the new prefix, or check it and wait."""
    log = get_run_logger()
    if wait:
        result = check_ingest(dataset, prefix)
        log.info("dupflow run %s finished %s; outputs in %s", result["flow_run"], result["state"], result["out"])
        return result
    announce_ingest(dataset, prefix)
    log.info("announced %s (%s): the on-ingest deployment will match it against the corpus", dataset, prefix)
    return None
