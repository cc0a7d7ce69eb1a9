"""``@emits_lineage``: one decorator under a flow's ``@flow`` that emits START when the run
begins, FAIL (with the error) if it raises, and COMPLETE with what it committed, read from the
snapshots its report names: their schema, statistics, the upstream snapshots their summaries
record and, for bronze, the Kafka offset ranges. Every table commit is also a task-level run
whose parent-run facet is the flow run (the Prefect flow run id). Emitting never fails a run."""

from __future__ import annotations

import functools
import inspect
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator, Mapping, Sequence

from tasks.commits import RUN_ID_KEY
from tasks.lineage.emit import append_audit, deliver, run_logger
from tasks.lineage.events import RunFacts, TableState, build_event, task_runs
from tasks.lineage.walk import SnapshotRecord, ancestry, bronze_ranges, upstreams
from tasks.settings import S3Role, Settings, load_settings

PARENT_JOB = "prefect-flow-run"  # the job name of a parent Prefect flow run (its flow is not known here)


def committed_snapshots(report: object) -> dict[str, int | None]:
    """Table -> snapshot id a flow's report says it committed: ``committed`` (silver, gold),
    ``snapshot_id`` (ingest: bronze), or the maintained ``tables`` (None: their current snapshot)."""
    from tasks.tables import BRONZE_CONVERSION_EVENTS_RAW

    if not isinstance(report, Mapping):
        return {}
    if isinstance(report.get("committed"), Mapping):
        return {str(k): int(v) for k, v in report["committed"].items() if v is not None}
    if "snapshot_id" in report and "topic" in report:
        return {BRONZE_CONVERSION_EVENTS_RAW.identifier: int(report["snapshot_id"])} if report["snapshot_id"] else {}
    if isinstance(report.get("tables"), Mapping) and not report.get("dry_run", True):
        return {str(k): None for k in report["tables"]}
    return {}


def _flow_run() -> tuple[str, str | None]:
    """This Prefect flow run's id (a new one outside Prefect) and its parent flow run's, if nested."""
    if "prefect" not in sys.modules:
        return str(uuid.uuid4()), None
    try:
        from prefect.runtime import flow_run

        run_id, parent = flow_run.id, flow_run.parent_flow_run_id
        return str(run_id or uuid.uuid4()), str(parent) if parent else None
    except Exception:  # noqa: BLE001 - no Prefect context, or its API is unreachable
        return str(uuid.uuid4()), None


def _location(settings: Settings, identifier: str, table=None) -> str:
    from tasks.tables import ALL_TABLES, AUDIT_LINEAGE_EVENTS

    spec = next((s for s in (*ALL_TABLES, AUDIT_LINEAGE_EVENTS) if s.identifier == identifier), None)
    if spec is not None:
        return spec.location(settings)
    return table.location() if table is not None else f"iceberg://{identifier}"


STATISTICS_KEYS = ("added-records", "added-files-size", "added-data-files")  # rows, bytes, files


def run_commits(history: Sequence[SnapshotRecord], snapshot_id: int, since_ms: int) -> list[SnapshotRecord]:
    """The commits of this run behind ``snapshot_id``, newest first: that snapshot and, when it is a
    flow's commit (its summary has a ``lakehouse.run-id``), its ancestors committed since the run
    began (``since_ms``, the rule of the Kafka ranges) that are flow commits too: a multi-batch run
    commits a table once per batch, each batch under its own run id, and a compaction between two
    batches (no run id) is not this run's. A snapshot without a run id (maintenance) is alone."""
    chain = ancestry(history, snapshot_id)
    if not chain or RUN_ID_KEY not in chain[0].summary:
        return chain[:1]
    return chain[:1] + [s for s in chain[1:] if s.timestamp_ms >= since_ms and RUN_ID_KEY in s.summary]


def run_statistics(history: Sequence[SnapshotRecord], snapshot_id: int,
                   since_ms: int) -> tuple[int | None, int | None, int | None]:
    """Rows, bytes and data files this run added to a table: summed over its commits
    (``run_commits``); None for a figure no summary records."""
    commits = run_commits(history, snapshot_id, since_ms)
    totals = []
    for key in STATISTICS_KEYS:
        values = [v for v in (_int(s.summary.get(key)) for s in commits) if v is not None]
        totals.append(sum(values) if values else None)
    return totals[0], totals[1], totals[2]


def read_outputs(settings: Settings, role: S3Role, committed: Mapping[str, int | None], since_ms: int,
                 job: str) -> list[RunFacts]:
    """One task-level run per committed table: the table at its snapshot (schema, the rows, bytes
    and files the run's commits added: ``run_statistics``), the upstream snapshots its summary
    records, and, for bronze, the Kafka ranges of the commits this run made (since ``since_ms``)."""
    from tasks.catalog import open_catalog
    from tasks.commits import OFFSETS_KEY
    from tasks.lineage.reading import snapshot_records

    if not committed:
        return []
    catalog = open_catalog(settings, role)
    runs = []
    for name, snapshot_id in committed.items():
        table = catalog.load_table(name)
        snapshot = table.snapshot_by_id(snapshot_id) if snapshot_id is not None else table.current_snapshot()
        if snapshot is None:
            continue
        summary = snapshot.summary.additional_properties if snapshot.summary is not None else {}
        history = snapshot_records(table)
        if not any(s.snapshot_id == snapshot.snapshot_id for s in history):  # not in the current lineage
            history = [*history, SnapshotRecord(snapshot.snapshot_id, None, 0, snapshot.timestamp_ms, dict(summary))]
        output = TableState(name, _location(settings, name, table), snapshot.snapshot_id,
                            tuple((f.name, str(f.field_type)) for f in table.schema().fields),
                            *run_statistics(history, snapshot.snapshot_id, since_ms))
        inputs = tuple(TableState(u, _location(settings, u), s) for u, s in upstreams(history, snapshot.snapshot_id).items())
        ranges = ()
        if OFFSETS_KEY in summary:
            mine = [s for s in ancestry(history, snapshot.snapshot_id) if s.timestamp_ms >= since_ms]
            ranges = tuple(r for s in reversed(mine) for r in bronze_ranges(history, s.snapshot_id))
        runs.append(RunFacts(f"{job}.{name}", str(uuid.uuid4()), inputs, (output,),
                             settings.kafka_bootstrap if ranges else None, ranges))
    return runs


def read_quality(settings: Settings, role: S3Role, report: object,
                 outputs: set[str]) -> tuple[list[dict], dict[tuple[str, str], tuple[str, ...]]]:
    """The audit.dq_results rows the run of ``report`` recorded on the ``outputs`` it committed, and
    (suite, expectation) -> the columns it reads, from the suite files; nothing when no suite
    checks any of ``outputs`` (ingest, maintenance): no read for them."""
    from pyiceberg.exceptions import NoSuchTableError
    from pyiceberg.expressions import And, In

    from tasks.catalog import open_catalog
    from tasks.lineage.assertions import checked_columns, run_ids
    from tasks.quality.suites import GOLD_DAILY_SUITE, SILVER_FACTS_SUITE, load_suite
    from tasks.tables import AUDIT_DQ_RESULTS

    ids = run_ids(report)
    if not settings.dq_enabled or not ids:
        return [], {}
    suites = [load_suite(settings, name) for name in (SILVER_FACTS_SUITE, GOLD_DAILY_SUITE)]
    tables = sorted({s.table for s in suites} & outputs)
    if not tables:
        return [], {}
    try:
        audit = open_catalog(settings, role).load_table(AUDIT_DQ_RESULTS.identifier)
    except NoSuchTableError:
        return [], {}
    rows = audit.scan(row_filter=And(In("run_id", ids), In("table_name", tables))).to_arrow().to_pylist()
    return rows, {(s.name, e.name): checked_columns(e.kwargs) for s in suites for e in s.expectations}


def _int(raw: str | None) -> int | None:
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


class FlowLineage:
    """The events of one flow run, START to COMPLETE or FAIL."""

    def __init__(self, settings: Settings, job: str, role: S3Role):
        self.settings, self.job, self.role = settings, job, role
        run_id, parent = _flow_run()
        self.facts = RunFacts(job, run_id, parent=(PARENT_JOB, parent) if parent else None)
        self.started_ms = int(time.time() * 1000) - 1000  # the catalog's clock may lag a little
        self.events: list[dict] = []

    def _emit(self, events: list[dict]) -> None:
        self.events += events
        deliver(self.settings, events)

    def start(self) -> None:
        try:
            self._emit([build_event("START", self.facts, self.settings.lineage_namespace, self._catalog())])
        except Exception as exc:  # noqa: BLE001
            run_logger().warning("lineage: no START event (%s: %s)", type(exc).__name__, exc)

    def complete(self, report: object) -> None:
        try:
            tasks = task_runs(self.facts, read_outputs(self.settings, self.role, committed_snapshots(report),
                                                       self.started_ms, self.job))
            tasks = self._with_quality(report, tasks)
            inputs = {t.identifier: t for r in tasks for t in r.inputs}
            whole = RunFacts(self.job, self.facts.run_id, tuple(inputs.values()),
                             tuple(o for r in tasks for o in r.outputs),
                             self.settings.kafka_bootstrap, tuple(x for r in tasks for x in r.kafka_ranges),
                             self.facts.parent, self.facts.root)
            namespace, catalog = self.settings.lineage_namespace, self._catalog()
            events = [build_event(kind, t, namespace, catalog) for t in tasks for kind in ("START", "COMPLETE")]
            self._finish(events + [build_event("COMPLETE", whole, namespace, catalog)], bool(tasks))
        except Exception as exc:  # noqa: BLE001
            run_logger().warning("lineage: no COMPLETE event (%s: %s)", type(exc).__name__, exc)

    def _with_quality(self, report: object, tasks: list[RunFacts]) -> list[RunFacts]:
        """``tasks`` with the run's data-quality assertions on the outputs they checked; as they were
        if those cannot be read (the events matter more than this facet)."""
        from tasks.lineage.assertions import with_assertions

        try:
            rows, columns = read_quality(self.settings, self.role, report, {o.identifier for t in tasks for o in t.outputs})
            return with_assertions(tasks, rows, columns) if rows else tasks
        except Exception as exc:  # noqa: BLE001
            run_logger().warning("lineage: no data-quality assertions (%s: %s)", type(exc).__name__, exc)
            return tasks

    def fail(self, error: BaseException) -> None:
        try:
            event = build_event("FAIL", self.facts, self.settings.lineage_namespace, self._catalog(), error=error)
            self._finish([event], True)
        except Exception as exc:  # noqa: BLE001
            run_logger().warning("lineage: no FAIL event (%s: %s)", type(exc).__name__, exc)

    def _finish(self, events: list[dict], audit: bool) -> None:
        """Send ``events``; keep the run's events in the audit table unless it committed nothing
        (an idle continuous loop would commit a row set every few seconds)."""
        self._emit(events)
        if audit:
            append_audit(self.settings, self.role, self.events)

    def _catalog(self) -> str:
        """The symlink namespace of catalog tables: the catalog's URI without credentials."""
        from urllib.parse import urlparse

        uri = urlparse(self.settings.catalog_uri or "")
        if uri.scheme.startswith("sqlite") or not uri.netloc:
            return f"iceberg+{uri.scheme or 'catalog'}://{self.settings.catalog_name}"
        return f"iceberg+{uri.scheme}://{uri.hostname}{f':{uri.port}' if uri.port else ''}"


_deferred: ThreadPoolExecutor | None = None  # set by ``completed_in_background``


@contextmanager
def completed_in_background() -> Iterator[None]:
    """Within it, a flow's COMPLETE event (read its snapshots and quality rows, send, append to
    audit.lineage_events) is sent by one background thread, in order, after the flow returns,
    rather than before: continuous mode runs a flow every few seconds, and each would wait a
    second or so for its own lineage. Leaving it waits until every pending event is sent. START
    and FAIL stay in the flow."""
    global _deferred
    if _deferred is not None:  # nested: the outer one drains
        yield
        return
    _deferred = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lineage")
    try:
        yield
    finally:
        pool, _deferred = _deferred, None
        pool.shutdown(wait=True)


def emits_lineage(job: str, role: S3Role) -> Callable:
    """Put under ``@flow``: START, then COMPLETE with the outputs of the report the flow returns,
    or FAIL with the exception (which is re-raised as it was)."""

    def decorate(fn: Callable) -> Callable:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                settings = signature.bind_partial(*args, **kwargs).arguments.get("settings") or load_settings()
            except Exception:  # noqa: BLE001 - the flow reports bad settings itself
                return fn(*args, **kwargs)
            lineage = FlowLineage(settings, job, role)
            lineage.start()
            try:
                report = fn(*args, **kwargs)
            except BaseException as exc:
                lineage.fail(exc)
                raise
            if _deferred is not None:  # continuous mode: the next run need not wait for this one's reads and audit commit
                _deferred.submit(lineage.complete, report)
            else:
                lineage.complete(report)
            return report

        try:  # Prefect resolves string annotations in the wrapper's module: give it the flow's, evaluated
            wrapper.__signature__ = inspect.signature(fn, eval_str=True)
        except Exception:  # noqa: BLE001 - a name only importable for type checking: leave them as they are
            pass
        return wrapper

    return decorate
