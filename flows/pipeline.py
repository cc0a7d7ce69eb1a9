"""The whole path in one run: ingest until caught up, then silver, then gold (manual runs)."""

from __future__ import annotations

from typing import Optional

from prefect import flow

from flows.gold import gold_flow
from flows.ingest import ingest_flow
from flows.silver import silver_flow
from tasks.settings import Settings, load_settings


@flow(name="full-pipeline", log_prints=False)
def pipeline_flow(max_batches: int = 100, settings: Optional[Settings] = None) -> dict:
    settings = settings or load_settings()
    bronze = ingest_flow(max_batches=max_batches, settings=settings)
    silver = silver_flow(settings=settings)
    gold = gold_flow(settings=settings)
    return {"bronze": bronze, "silver": silver, "gold": gold}
