"""OpenLineage run events from what a flow knows: pure builders, no I/O. A flow run is one
OpenLineage run (its id is the Prefect flow run id); each table it committed is a task-level run
whose parent-run facet points at the flow run. Datasets are named by storage location (the
OpenLineage convention for files on object stores: namespace ``s3://bucket``, name the path), with
a symlink to the catalog table; Kafka topics by broker (``kafka://host:port``, name the topic)."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Mapping, Sequence
from urllib.parse import urlparse

import attr
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    RunFacet,
    column_lineage_dataset,
    dataset_version_dataset,
    error_message_run,
    output_statistics_output_dataset,
    parent_run,
    schema_dataset,
    symlinks_dataset,
)
from openlineage.client.serde import Serde

from tasks.lineage.columns import COLUMN_SOURCES
from tasks.lineage.walk import OffsetRange

PRODUCER = "https://github.com/roman-numeral-service/lakehouse"
FACET_SCHEMA = PRODUCER + "/blob/main/tasks/lineage/events.py#LakehouseRunFacet"


@attr.define
class LakehouseRunFacet(RunFacet):
    """What the snapshot summaries record, in the event: snapshots read and committed, Kafka ranges."""

    inputSnapshots: dict[str, int] = attr.field(factory=dict)  # noqa: N815
    outputSnapshots: dict[str, int] = attr.field(factory=dict)  # noqa: N815
    kafkaOffsetRanges: list[dict] = attr.field(factory=list)  # noqa: N815

    @staticmethod
    def _get_schema() -> str:
        return FACET_SCHEMA


@dataclass(frozen=True)
class TableState:
    """One Iceberg table at one snapshot, as an event names and describes it."""

    identifier: str
    location: str
    snapshot_id: int | None = None
    columns: tuple[tuple[str, str], ...] = ()  # (name, type) of its schema
    rows: int | None = None  # added by the commit
    bytes: int | None = None
    files: int | None = None
    assertions: object | None = None  # an output's DataQualityAssertionsDatasetFacet (tasks/lineage/assertions.py)


@dataclass(frozen=True)
class RunFacts:
    """Everything an event of one run says, gathered by the thin reader in run.py."""

    job: str
    run_id: str
    inputs: tuple[TableState, ...] = ()
    outputs: tuple[TableState, ...] = ()
    kafka_bootstrap: str | None = None  # with kafka_ranges: the Kafka input
    kafka_ranges: tuple[OffsetRange, ...] = ()
    parent: tuple[str, str] | None = None  # (job, run id) of the flow run a task-level run belongs to
    root: tuple[str, str] | None = None  # (job, run id) of the outermost flow run, when nested
    extra: Mapping[str, int] = field(default_factory=dict)


def storage_name(location: str) -> tuple[str, str]:
    """(namespace, name) of a table by its location: ``s3://bucket`` and the key path; local
    files are namespace ``file`` and the absolute path."""
    parsed = urlparse(location)
    if parsed.scheme in ("", "file"):
        return "file", parsed.path or location
    return f"{parsed.scheme}://{parsed.netloc}", parsed.path.lstrip("/")


def kafka_namespace(bootstrap: str) -> str:
    """``kafka://host:port`` of the first bootstrap server."""
    return f"kafka://{bootstrap.split(',')[0].strip()}"


def _dataset_facets(state: TableState, catalog: str) -> dict:
    facets: dict = {"symlinks": symlinks_dataset.SymlinksDatasetFacet(
        identifiers=[symlinks_dataset.Identifier(namespace=catalog, name=state.identifier, type="TABLE")])}
    if state.columns:
        facets["schema"] = schema_dataset.SchemaDatasetFacet(
            fields=[schema_dataset.SchemaDatasetFacetFields(name=n, type=t) for n, t in state.columns])
    if state.snapshot_id is not None:
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=str(state.snapshot_id))
    if state.assertions is not None:
        facets["dataQualityAssertions"] = state.assertions
    return facets


def column_lineage(output: str, locations: Mapping[str, str]) -> column_lineage_dataset.ColumnLineageDatasetFacet | None:
    """The column-lineage facet of ``output`` (None for a table without a declared mapping);
    ``locations`` names each input table's storage location."""
    sources = COLUMN_SOURCES.get(output)
    if not sources:
        return None
    fields = {}
    for column, inputs in sources.items():
        fields[column] = column_lineage_dataset.Fields(inputFields=[
            column_lineage_dataset.InputField(*storage_name(locations[table]), field=source)
            for table, source in inputs if table in locations])
    return column_lineage_dataset.ColumnLineageDatasetFacet(fields=fields)


def build_event(kind: str, facts: RunFacts, namespace: str, catalog: str, when: datetime | None = None,
                error: BaseException | None = None) -> dict:
    """One run event (``START``, ``COMPLETE`` or ``FAIL``) as the JSON-ready dict every transport sends."""
    state = RunState[kind]
    locations = {t.identifier: t.location for t in (*facts.inputs, *facts.outputs)}
    inputs = [InputDataset(*storage_name(t.location), facets=_dataset_facets(t, catalog)) for t in facts.inputs]
    if facts.kafka_bootstrap and facts.kafka_ranges:
        for topic in sorted({r.topic for r in facts.kafka_ranges}):
            inputs.append(InputDataset(kafka_namespace(facts.kafka_bootstrap), topic))
    outputs = []
    for t in facts.outputs:
        facets = _dataset_facets(t, catalog)
        lineage = column_lineage(t.identifier, locations)
        if lineage is not None:
            facets["columnLineage"] = lineage
        stats = {}
        if t.rows is not None or t.bytes is not None or t.files is not None:
            stats["outputStatistics"] = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                rowCount=t.rows, size=t.bytes, fileCount=t.files)
        outputs.append(OutputDataset(*storage_name(t.location), facets=facets, outputFacets=stats))
    run_facets: dict = {"lakehouse": LakehouseRunFacet(
        inputSnapshots={t.identifier: t.snapshot_id for t in facts.inputs if t.snapshot_id is not None},
        outputSnapshots={t.identifier: t.snapshot_id for t in facts.outputs if t.snapshot_id is not None},
        kafkaOffsetRanges=[{"topic": r.topic, "partition": r.partition, "first": r.first, "last": r.last}
                           for r in facts.kafka_ranges],
    )}
    if facts.parent is not None:
        root = None
        if facts.root is not None:
            root = parent_run.Root(run=parent_run.RootRun(runId=facts.root[1]),
                                   job=parent_run.RootJob(namespace=namespace, name=facts.root[0]))
        run_facets["parent"] = parent_run.ParentRunFacet(
            run=parent_run.Run(runId=facts.parent[1]), job=parent_run.Job(namespace=namespace, name=facts.parent[0]),
            root=root)
    if error is not None:
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=f"{type(error).__name__}: {error}"[:2000], programmingLanguage="PYTHON",
            stackTrace="".join(traceback.format_exception(error))[-8000:])
    event = RunEvent(
        eventType=state,
        eventTime=(when or datetime.now(timezone.utc)).isoformat(),
        run=Run(runId=facts.run_id, facets=run_facets),
        job=Job(namespace=namespace, name=facts.job),
        inputs=inputs,
        outputs=outputs,
        producer=PRODUCER,
    )
    return Serde.to_dict(event)


def audit_row(event: Mapping) -> dict:
    """The row of ``audit.lineage_events`` that keeps ``event``."""
    import json

    run = event.get("run", {})
    parent = run.get("facets", {}).get("parent", {}).get("run", {}).get("runId")
    lakehouse = run.get("facets", {}).get("lakehouse", {})
    return {
        "event_time": datetime.fromisoformat(event["eventTime"]),
        "event_type": event.get("eventType"),
        "run_id": run.get("runId"),
        "job_namespace": event["job"]["namespace"],
        "job_name": event["job"]["name"],
        "parent_run_id": parent,
        "inputs": [f"{d['namespace']}/{d['name']}" for d in event.get("inputs", [])],
        "outputs": [f"{d['namespace']}/{d['name']}" for d in event.get("outputs", [])],
        "output_snapshots": json.dumps(lakehouse.get("outputSnapshots", {}), sort_keys=True),
        "event": json.dumps(event, sort_keys=True),
    }


def task_runs(flow: RunFacts, per_table: Sequence[RunFacts]) -> list[RunFacts]:
    """Task-level runs of ``flow``: each with the flow run as parent (and its root)."""
    return [attr_replace(t, parent=(flow.job, flow.run_id), root=flow.parent and (flow.root or flow.parent))
            for t in per_table]


def attr_replace(facts: RunFacts, **changes) -> RunFacts:
    from dataclasses import replace

    return replace(facts, **changes)
