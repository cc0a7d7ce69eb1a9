"""`tasks.verify` on a private lakehouse (SQLite catalog, file warehouse) written directly with
pyiceberg appends carrying the summaries the flows write: a consistent lakehouse passes, and each
crafted discrepancy fails the check named for it. No services, no flows."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest
from pyiceberg.expressions import EqualTo

from tasks.catalog import ensure_namespaces, open_catalog
from tasks.commits import (
    OFFSETS_KEY,
    REPORT_KEY,
    RUN_ID_KEY,
    append_with_offsets,
    encode_offsets,
    latest_offsets,
    upstream_key,
)
from tasks.settings import load_settings
from tasks.tables import (
    BRONZE_CONVERSION_EVENTS_RAW,
    GOLD_DAILY_CONVERSION_METRICS,
    SILVER_CONVERSION_EVENTS_REJECTED,
    SILVER_DIM_USERS,
    SILVER_FACT_CONVERSIONS,
    ensure_table,
)
from tasks.transforms.bronze import RecordColumns, concat_batches, records_to_arrow
from tasks.verify import RESET_KEY, KafkaGapProbe, VerifyReport, render_table, verify

TOPIC = "conversion-events"
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
BRONZE = BRONZE_CONVERSION_EVENTS_RAW.identifier
FACTS = SILVER_FACT_CONVERSIONS.identifier
# the first overwrite of a table deletes nothing, as the flows' first replace does
pytestmark = pytest.mark.filterwarnings("ignore:Delete operation did not match any records")


def event(n: int) -> dict:
    user = ("u-1", "u-2", None)[n % 3]
    plan = None if user is None else ("free" if n < 10 else "pro")
    return {
        "event_id": str(uuid.UUID(int=n + 1)), "occurred_at": T0 + timedelta(days=n % 2, minutes=n),
        "user_id": user, "user_plan": plan, "user_country": "DE" if user else None,
        "direction": "to_roman" if n % 3 else "from_roman", "success": n % 4 != 0,
    }


def value_of(n: int) -> bytes:
    body = dict(event(n), occurred_at=event(n)["occurred_at"].isoformat(), schema_version=1)
    return json.dumps(body).encode()


class Lake:
    """A private lakehouse and a minimal stand-in for ingest, silver and gold that writes what they
    would (rows and snapshot summaries), so tests can write exactly the discrepancy they want."""

    def __init__(self, tmp_path, monkeypatch):
        import os

        for key in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:
            monkeypatch.delenv(key)  # `make test` points LAKEHOUSE_CONFIG at the stack's file
        monkeypatch.setenv("LAKEHOUSE_PROFILE", "embedded")
        monkeypatch.setenv("LAKEHOUSE_CATALOG_URI", f"sqlite:///{tmp_path / 'catalog.db'}")
        monkeypatch.setenv("LAKEHOUSE_WAREHOUSE", (tmp_path / "warehouse").as_uri())
        monkeypatch.setenv("LAKEHOUSE_STATE_DIR", str(tmp_path))
        self.settings = load_settings()
        self.catalog = open_catalog(self.settings, "admin")
        ensure_namespaces(self.catalog, self.settings)
        self.landed: list[tuple[int, int, int | None, bytes | None, datetime, int]] = []  # p, o, n, value, ts, snapshot
        self.promoted: set[tuple[int, int]] = set()
        self.facts: list[dict] = []

    def table(self, spec):
        return ensure_table(self.catalog, self.settings, spec)

    def verify(self, *layers, **options) -> VerifyReport:
        return verify(self.catalog, self.settings, layers or ("bronze", "silver", "gold"), **options)

    # ---- bronze --------------------------------------------------------------------------------

    def land(self, records: dict[int, list], next_offsets: dict[int, int], *, lost: int = 0,
             offsets_from: dict[int, int] | None = None) -> int:
        """Append ``records`` (partition -> [offset or (offset, event number or raw bytes)]) as one
        ingest batch recording ``next_offsets``; an event number n lands ``value_of(n)``."""
        table = self.table(BRONZE_CONVERSION_EVENTS_RAW)
        expected = latest_offsets(table)
        at = T0 + timedelta(minutes=len(self.landed))
        batches, rows = [], []
        for partition, items in sorted(records.items()):
            columns = RecordColumns()
            for item in items:
                offset, what = item if isinstance(item, tuple) else (item, 100 * partition + item)
                value = what if isinstance(what, bytes) else value_of(what)
                ts = at + timedelta(seconds=offset)
                columns.offsets.append(offset)
                columns.timestamps_ms.append(int(ts.timestamp() * 1000))
                columns.keys.append(None)
                columns.values.append(value)
                columns.headers.append(None)
                rows.append((partition, offset, what if isinstance(what, int) else None, value, ts))
            batches.append(records_to_arrow(TOPIC, partition, columns, at, "run"))
        starts = offsets_from or {p: min(o if isinstance(o, int) else o[0] for o in items) for p, items in records.items()}
        report = {"topic": TOPIC, "records": len(rows), "offsets_from": starts, "lost_to_retention": lost,
                  "offsets_to": next_offsets}
        run_id = "run-" + uuid.uuid4().hex
        snapshot = append_with_offsets(table, concat_batches(batches), expected,
                                       {TOPIC: {**expected.get(TOPIC, {}), **next_offsets}}, run_id, report)
        self.landed += [(*row, snapshot) for row in rows]
        return snapshot

    def reset(self, partition: int, skipped_from: int, skipped_to: int) -> int:
        """What `lakehouse ingest reset` records: new offsets and the audited skip, no rows."""
        table = self.table(BRONZE_CONVERSION_EVENTS_RAW)
        offsets = latest_offsets(table)
        offsets[TOPIC][partition] = skipped_to + 1
        from tasks.offsets import ResetDecision, encode_reset

        audit = [ResetDecision(TOPIC, partition, skipped_from, skipped_to + 1, skipped_to + 1 - skipped_from,
                               "poison records", "test", "2026-11-30T00:00:00+00:00")]
        table.append(table.schema().as_arrow().empty_table(), snapshot_properties={
            OFFSETS_KEY: encode_offsets(offsets), RUN_ID_KEY: "reset", RESET_KEY: encode_reset(audit)})
        return table.current_snapshot().snapshot_id

    # ---- silver --------------------------------------------------------------------------------

    def promote(self, *, drop=(), double=(), report_facts_delta: int = 0, last_arrival_wins: bool = False) -> int:
        """Silver for every landed record not promoted yet: facts (first arrival wins), rejected
        (values that aren't events) and duplicates; then dim_users rebuilt from all facts.
        ``drop`` (partition, offset) records vanish; ``double`` ones are stored as facts twice."""
        bronze = self.table(BRONZE_CONVERSION_EVENTS_RAW)
        upto = bronze.current_snapshot().snapshot_id
        new = sorted((r for r in self.landed if (r[0], r[1]) not in self.promoted), key=lambda r: (r[4], r[0], r[1]),
                     reverse=last_arrival_wins)
        held = {f["event_id"] for f in self.facts}
        facts, rejected, dropped = [], [], 0
        for partition, offset, n, value, ts, snapshot in new:
            self.promoted.add((partition, offset))
            coords = {"source_topic": TOPIC, "source_partition": partition, "source_offset": offset,
                      "kafka_timestamp": ts, "bronze_snapshot_id": snapshot}
            if (partition, offset) in drop:
                continue
            if n is None:
                rejected.append({"reason_codes": ["MALFORMED_JSON"], "value": value, **coords})
                continue
            row = {**event(n), **coords, "event_type": "conversion", "schema_version": 1}
            row["event_date"] = row["occurred_at"].date()
            if row["event_id"] in held:
                dropped += 1
                continue
            held.add(row["event_id"])
            facts += [row, row] if (partition, offset) in double else [row]
        self.facts += facts
        common = {upstream_key(BRONZE): str(upto), RUN_ID_KEY: "silver-" + uuid.uuid4().hex}
        self._append(SILVER_CONVERSION_EVENTS_REJECTED, rejected,
                     {**common, REPORT_KEY: json.dumps({"rejected": len(rejected), "reasons": {}})})
        self._append(SILVER_FACT_CONVERSIONS, facts, {**common, REPORT_KEY: json.dumps(
            {"facts": len(facts) + report_facts_delta, "duplicates_dropped": dropped, "replaced_by_earlier_arrival": 0})})
        self.write_dim(self.versions(), common)
        return upto

    def versions(self) -> list[dict]:
        """SCD2 versions from the facts: a new version whenever plan or country changes."""
        out = []
        by_user: dict[str, list[dict]] = {}
        for f in self.facts:
            if f["user_id"] is not None:
                by_user.setdefault(f["user_id"], []).append(f)
        for user, facts in sorted(by_user.items()):
            facts.sort(key=lambda f: (f["occurred_at"], f["event_id"]))
            mine = []
            for f in facts:
                if not mine or (mine[-1]["user_plan"], mine[-1]["user_country"]) != (f["user_plan"], f["user_country"]):
                    if mine:
                        mine[-1]["valid_to"] = f["occurred_at"]
                    mine.append({"user_id": user, "user_plan": f["user_plan"], "user_country": f["user_country"],
                                 "valid_from": f["occurred_at"], "valid_to": None})
            out += mine
        for v in out:
            v["is_current"] = v["valid_to"] is None
            v["user_sk"] = int.from_bytes(hashlib.blake2b(f"{v['user_id']}|{v['valid_from']}".encode(),
                                                          digest_size=7).digest(), "big")
        return out

    def write_dim(self, versions: list[dict], summary: dict) -> None:
        table = self.table(SILVER_DIM_USERS)
        table.overwrite(pa.Table.from_pylist(versions, schema=table.schema().as_arrow()),
                        snapshot_properties={**summary, REPORT_KEY: json.dumps({"versions": len(versions)})})

    def _append(self, spec, rows: list[dict], summary: dict) -> int:
        table = self.table(spec)
        table.append(pa.Table.from_pylist(rows, schema=table.schema().as_arrow()), snapshot_properties=summary)
        return table.current_snapshot().snapshot_id

    # ---- gold ----------------------------------------------------------------------------------

    def build_gold(self, *, requests_delta: int = 0) -> int:
        """gold.daily_conversion_metrics from every fact, recording the facts' current snapshot."""
        facts = self.table(SILVER_FACT_CONVERSIONS)
        upto = facts.current_snapshot().snapshot_id
        groups: dict[tuple, dict] = {}
        for f in self.facts:
            g = groups.setdefault((f["event_date"], f["direction"]), {"requests": 0, "successes": 0, "users": set(),
                                                                     "anonymous_requests": 0})
            g["requests"] += 1
            g["successes"] += f["success"]
            g["anonymous_requests"] += f["user_id"] is None
            if f["user_id"] is not None:
                g["users"].add(f["user_id"])
        rows = []
        for (day, direction), g in sorted(groups.items()):
            rows.append({"event_date": day, "direction": direction, "requests": g["requests"],
                         "successes": g["successes"], "failures": g["requests"] - g["successes"],
                         "success_rate": g["successes"] / g["requests"], "unique_users": len(g["users"]),
                         "anonymous_requests": g["anonymous_requests"]})
        if rows:
            rows[0]["requests"] += requests_delta
        table = self.table(GOLD_DAILY_CONVERSION_METRICS)
        table.overwrite(pa.Table.from_pylist(rows, schema=table.schema().as_arrow()), snapshot_properties={
            upstream_key(FACTS): str(upto), RUN_ID_KEY: "gold", REPORT_KEY: json.dumps({"rows": len(rows)})})
        return upto


@pytest.fixture
def lake(tmp_path, monkeypatch) -> Lake:
    return Lake(tmp_path, monkeypatch)


def consistent(lake: Lake, **promote) -> Lake:
    """Two ingest batches around an audited reset and a recorded retention loss, a malformed
    value and a later duplicate; silver after each batch; gold after that."""
    lake.land({0: [0, 1, (2, b"{not json"), 3, 4, 5], 1: [0, 1, 2, (3, 1)]}, {0: 6, 1: 4})  # p1@3 repeats event 1
    lake.promote(**promote)
    lake.reset(0, 6, 9)  # p0 offsets 6..9 skipped on purpose, audited
    lake.land({0: [10, 11, 12], 1: [7, 8]}, {0: 13, 1: 9}, lost=3)  # p1 4..6 lost to retention before ingest
    lake.promote()
    lake.build_gold()
    return lake


def failed(report: VerifyReport) -> set[str]:
    return {check.name for check in report.checks if not check.ok}


# ---- the whole lakehouse ---------------------------------------------------------------------------

def test_consistent_lakehouse_passes_every_check(lake):
    report = consistent(lake).verify()
    assert report.ok, render_table(report)
    assert not report.warnings, render_table(report)
    names = [c.name for c in report.checks]
    assert names == ["bronze.offsets_contiguous", "bronze.offsets_unique", "bronze.offsets_within_recorded",
                     "silver.records_accounted", "silver.fact_event_ids_unique", "silver.batch_counts",
                     "silver.dim_users_scd2", "silver.upstream_snapshots", "gold.daily_conversion_metrics",
                     "gold.upstream_snapshots"]
    gaps = report.check("bronze.offsets_contiguous").counts
    assert (gaps["reset_gaps"], gaps["reset_offsets"]) == (1, 4)
    assert (gaps["retention_gaps"], gaps["retention_offsets"]) == (1, 3)
    assert gaps["unexplained_gaps"] == 0
    accounted = report.check("silver.records_accounted").counts
    assert (accounted["bronze_records"], accounted["facts"], accounted["rejected"], accounted["duplicates"]) == (15, 13, 1, 1)
    assert report.check("silver.batch_counts").counts["runs_checked"] == 2
    assert report.check("silver.dim_users_scd2").counts["versions"] == len(lake.versions()) > 2
    assert json.loads(json.dumps(report.as_dict()))["passed"] == 10


def test_tables_that_do_not_exist_pass_as_empty(lake):
    report = lake.verify()
    assert report.ok and {c.detail for c in report.checks} == {"empty"}


def test_report_renders_as_a_table_and_as_json(lake):
    lake.land({0: [0, 1, 3]}, {0: 4})
    report = lake.verify("bronze")
    text = render_table(report)
    assert text.splitlines()[0].split() == ["STATUS", "CHECK", "DETAIL"]
    assert text.splitlines()[1].split()[:2] == ["WARN", "bronze.offsets_contiguous"]
    assert text.splitlines()[-1].startswith("verify ok: 3 checks")
    data = json.loads(json.dumps(report.as_dict()))
    assert data["ok"] is True and data["warnings"] == 1 and data["first_failure"] is None
    assert [c["status"] for c in data["checks"]] == ["WARN", "PASS", "PASS"]


# ---- bronze ----------------------------------------------------------------------------------------

def test_missing_bronze_offsets_warn_without_kafka_and_fail_when_strict(lake):
    lake.land({0: [0, 1, 2, 6, 7], 1: [0, 1]}, {0: 8, 1: 2})  # p0 3..5 never landed
    report = lake.verify("bronze")
    contiguous = report.check("bronze.offsets_contiguous")
    assert report.ok and contiguous.warning, render_table(report)  # or an aborted transaction: tables can't tell
    assert "conversion-events[0] [3, 6)" in contiguous.detail and "--kafka" in contiguous.detail
    assert contiguous.counts["largest_unexplained_gap"] == 3
    assert contiguous.counts["unexplained_gaps_over_marker_size"] == 1
    strict = lake.verify("bronze", strict=True)
    assert failed(strict) == {"bronze.offsets_contiguous"}
    assert "conversion-events[0] [3, 6)" in strict.first_failure.detail


def test_marker_sized_gap_warns_by_default_and_fails_when_strict(lake):
    lake.land({0: [0, 1, 3, 4]}, {0: 6})  # a marker at 2 and one at 5 (the batch's tail)
    default = lake.verify("bronze")
    contiguous = default.check("bronze.offsets_contiguous")
    assert default.ok and contiguous.warning and contiguous.counts["unexplained_gaps"] == 2
    assert "consistent with transaction markers" in contiguous.detail
    assert failed(lake.verify("bronze", allow_unexplained_gaps=False)) == {"bronze.offsets_contiguous"}
    assert failed(lake.verify("bronze", strict=True)) == {"bronze.offsets_contiguous"}
    smaller = lake.verify("bronze", max_marker_gap=0).check("bronze.offsets_contiguous")
    assert smaller.ok and smaller.warning and "larger than max_marker_gap=0" in smaller.detail


def test_aborted_transaction_sized_gap_warns_without_kafka(lake):
    lake.land({0: [0, 1, 5]}, {0: 6})  # an aborted transaction of 2 records and its marker, or 3 lost records
    report = lake.verify("bronze")
    contiguous = report.check("bronze.offsets_contiguous")
    assert report.ok and contiguous.warning, render_table(report)
    assert "aborted transaction" in contiguous.detail and "run with --kafka to confirm" in contiguous.detail
    assert failed(lake.verify("bronze", strict=True)) == {"bronze.offsets_contiguous"}
    assert failed(lake.verify("bronze", allow_unexplained_gaps=False)) == {"bronze.offsets_contiguous"}
    larger = lake.verify("bronze", max_marker_gap=3).check("bronze.offsets_contiguous")
    assert larger.ok and larger.warning and "consistent with transaction markers" in larger.detail


def test_gap_covered_by_an_audited_reset_passes_even_when_strict(lake):
    lake.land({0: [0, 1]}, {0: 2})
    lake.reset(0, 2, 4)
    lake.land({0: [5, 6]}, {0: 7})
    report = lake.verify("bronze", strict=True)
    assert report.ok, render_table(report)
    assert report.check("bronze.offsets_contiguous").counts["reset_offsets"] == 3


def test_duplicated_offset_fails_offsets_unique(lake):
    lake.land({0: [0, 1, 2]}, {0: 3})
    table = lake.table(BRONZE_CONVERSION_EVENTS_RAW)
    again = table.scan(row_filter=EqualTo("offset", 1)).to_arrow()  # the same record landed a second time
    table.append(again, snapshot_properties={OFFSETS_KEY: encode_offsets({TOPIC: {0: 3}}), RUN_ID_KEY: "again"})
    report = lake.verify("bronze")
    assert failed(report) == {"bronze.offsets_unique"}
    assert "conversion-events[0]@1 x2" in report.first_failure.detail


def test_offset_at_or_past_the_recorded_next_offset_fails(lake):
    lake.land({0: [0, 1, 2, 3]}, {0: 3})  # offset 3 landed but the summary says 3 is next
    assert failed(lake.verify("bronze")) == {"bronze.offsets_within_recorded"}



# ---- bronze gaps against Kafka (a scripted broker) ------------------------------------------------

class _Message:
    def __init__(self, topic: str, partition: int, offset: int):
        self._coords = (topic, partition, offset)

    def error(self):
        return None

    def topic(self):
        return self._coords[0]

    def partition(self):
        return self._coords[1]

    def offset(self):
        return self._coords[2]


class ScriptedBroker:
    """A consumer over scripted partitions: (topic, partition) -> (committed records, low, high).
    Offsets in [low, high) without a record are transaction markers, aborted or compacted records,
    which read_committed skips. ``consume`` delivers the next records in order (``per_poll`` at a
    time); a poll with nothing left moves the position to the high watermark, as a fetch that skips
    a trailing gap does. ``stale_position``: ``position`` keeps the previous assignment's value
    until the new one fetches, as librdkafka may."""

    def __init__(self, partitions: dict[tuple[str, int], tuple[list[int], int, int]], per_poll: int = 10_000,
                 stale_position: bool = False):
        self.partitions, self.per_poll, self.stale_position = partitions, per_poll, stale_position
        self.assigned: tuple[str, int] | None = None
        self.next = 0
        self.positions: dict[tuple[str, int], int] = {}
        self.assignments: list[tuple[str, int, int]] = []
        self.closed = False

    def list_topics(self, topic, timeout):
        from types import SimpleNamespace

        mine = sorted(p for t, p in self.partitions if t == topic)
        return SimpleNamespace(topics={topic: SimpleNamespace(error=None if mine else "UNKNOWN_TOPIC_OR_PART",
                                                              partitions={p: None for p in mine})})

    def get_watermark_offsets(self, tp, timeout):
        _, low, high = self.partitions[(tp.topic, tp.partition)]
        return low, high

    def assign(self, tps):
        tp = tps[0]
        key = (tp.topic, tp.partition)
        self.assigned, self.next = key, max(tp.offset, self.partitions[key][1])
        self.assignments.append((tp.topic, tp.partition, tp.offset))
        if not self.stale_position:
            self.positions.pop(key, None)

    def consume(self, num_messages, timeout):
        records, _, high = self.partitions[self.assigned]
        pending = [o for o in records if o >= self.next][: min(num_messages, self.per_poll)]
        self.next = pending[-1] + 1 if pending else max(self.next, high)
        self.positions[self.assigned] = self.next
        return [_Message(*self.assigned, o) for o in pending]

    def position(self, tps):
        from types import SimpleNamespace

        return [SimpleNamespace(offset=self.positions.get((tps[0].topic, tps[0].partition), -1001))]

    def close(self):
        self.closed = True


def probe_of(broker: ScriptedBroker, **bounds) -> KafkaGapProbe:
    return KafkaGapProbe("unused:9092", consumer_factory=lambda: broker, poll_seconds=0, **bounds)


# The log of a transactional producer: 0-2 committed, marker 3; 4-5 aborted, abort marker 6;
# 7-8 committed, marker 9. read_committed delivers 0, 1, 2, 7, 8; bronze holds exactly those.
TX_RECORDS, TX_END = [0, 1, 2, 7, 8], 10


@pytest.mark.parametrize("per_poll", [10_000, 1])
@pytest.mark.parametrize("read_through", [1_000, 0])
def test_gaps_kafka_confirms_pass_even_when_strict(lake, per_poll, read_through):
    lake.land({0: TX_RECORDS, 1: [0, 1, 2]}, {0: TX_END, 1: 4})  # p1: marker 3
    assert lake.verify("bronze", strict=True).first_failure.name == "bronze.offsets_contiguous"  # tables alone
    broker = ScriptedBroker({(TOPIC, 0): (TX_RECORDS, 0, TX_END), (TOPIC, 1): ([0, 1, 2], 0, 4)}, per_poll=per_poll)
    report = lake.verify("bronze", strict=True, kafka=probe_of(broker, read_through=read_through))
    assert report.ok and not report.warnings, render_table(report)
    contiguous = report.check("bronze.offsets_contiguous")
    assert "3 gaps (6 offsets) confirmed by Kafka" in contiguous.detail
    assert contiguous.counts["kafka"]["confirmed_gaps"] == 3 and contiguous.counts["kafka"]["lost_records"] == 0
    assert broker.closed
    # one assignment per partition when the next gap is near (or already fetched past), else one per gap
    assert len(broker.assignments) == (3 if read_through == 0 and per_poll == 1 else 2)


@pytest.mark.parametrize("stale_position", [False, True])
def test_committed_record_inside_a_gap_fails_naming_it(lake, stale_position):
    lake.land({0: [0, 1, 2, 5, 7, 8]}, {0: TX_END})  # bronze lost 4 (Kafka has it); 3, 6 and 9 are markers
    broker = ScriptedBroker({(TOPIC, 0): ([0, 1, 2, 4, 5, 7, 8], 0, TX_END)}, stale_position=stale_position)
    report = lake.verify("bronze", kafka=probe_of(broker, read_through=0))  # not strict: fails anyway
    assert failed(report) == {"bronze.offsets_contiguous"}
    detail = report.first_failure.detail
    assert "records missing from bronze" in detail and "conversion-events[0]@4" in detail, detail
    kafka = report.first_failure.counts["kafka"]
    assert (kafka["lost_records"], kafka["lost_gaps"], kafka["confirmed_gaps"]) == (1, 1, 2)
    assert kafka["lost"] == ["conversion-events[0]@4"]


def test_gap_kafka_no_longer_has_is_an_unconfirmable_warning(lake):
    # retention moved the low watermark to 5: gap [3, 7) is partly gone, gap [0, ...) before it wholly
    lake.land({0: [2, 7, 8]}, {0: TX_END}, offsets_from={0: 0})  # ingest started at 0: gap [0, 2)
    broker = ScriptedBroker({(TOPIC, 0): ([7, 8], 5, TX_END)})
    report = lake.verify("bronze", kafka=probe_of(broker))
    contiguous = report.check("bronze.offsets_contiguous")
    assert report.ok and contiguous.warning, render_table(report)
    assert "2 gaps (6 offsets) unconfirmable: offsets below the low watermark 5" in contiguous.detail
    assert "1 gap (1 offsets) confirmed by Kafka" in contiguous.detail  # the marker at 9
    assert failed(lake.verify("bronze", strict=True, kafka=probe_of(broker))) == {"bronze.offsets_contiguous"}


def test_topic_that_no_longer_exists_is_an_unconfirmable_warning(lake):
    lake.land({0: TX_RECORDS}, {0: TX_END})
    report = lake.verify("bronze", kafka=probe_of(ScriptedBroker({("other", 0): ([], 0, 0)})))
    contiguous = report.check("bronze.offsets_contiguous")
    assert report.ok and contiguous.warning, render_table(report)
    assert "2 gaps (5 offsets) unconfirmable: topic no longer exists" in contiguous.detail


def test_probe_bound_leaves_the_smallest_gaps_unprobed_with_a_warning(lake):
    lake.land({0: TX_RECORDS}, {0: TX_END})  # gaps [3, 7) and [9, 10)
    broker = ScriptedBroker({(TOPIC, 0): (TX_RECORDS, 0, TX_END)})
    report = lake.verify("bronze", kafka=probe_of(broker, max_gaps=1, read_through=0))
    contiguous = report.check("bronze.offsets_contiguous")
    assert report.ok and contiguous.warning, render_table(report)
    assert "1 gap (4 offsets) confirmed by Kafka" in contiguous.detail  # the largest first
    assert "1 gap (1 offsets) not probed: the probe's bound max_gaps=1 cut it short" in contiguous.detail
    assert contiguous.counts["kafka"]["unprobed_gaps"] == 1
    assert broker.assignments == [(TOPIC, 0, 3)]


def test_probe_that_gets_no_answer_gives_up_on_the_gap_with_a_warning(lake):
    lake.land({0: TX_RECORDS}, {0: TX_END})

    class Silent(ScriptedBroker):
        def consume(self, num_messages, timeout):
            return []  # the fetch never completes; the position stays where it was

    broker = Silent({(TOPIC, 0): (TX_RECORDS, 0, TX_END)})
    report = lake.verify("bronze", kafka=probe_of(broker, stall_seconds=0.05, read_through=0))
    contiguous = report.check("bronze.offsets_contiguous")
    assert report.ok and contiguous.warning, render_table(report)
    assert "2 gaps (5 offsets) unconfirmable: no answer within 0.05s" in contiguous.detail
    assert len(broker.assignments) == 2


def test_probe_against_a_broker_that_cannot_be_reached_is_a_warning(lake):
    lake.land({0: TX_RECORDS}, {0: TX_END})

    def unreachable():
        raise RuntimeError("broker down")

    report = lake.verify("bronze", kafka=KafkaGapProbe("unused:9092", consumer_factory=unreachable))
    contiguous = report.check("bronze.offsets_contiguous")
    assert report.ok and contiguous.warning, render_table(report)
    assert "unconfirmable: Kafka error: RuntimeError: broker down" in contiguous.detail


def test_gaps_covered_by_a_reset_are_not_probed(lake):
    lake.land({0: [0, 1]}, {0: 2})
    lake.reset(0, 2, 4)
    lake.land({0: [5, 6]}, {0: 7})
    broker = ScriptedBroker({(TOPIC, 0): ([0, 1, 2, 3, 4, 5, 6], 0, 7)})  # 2..4 exist: the reset skipped them
    report = lake.verify("bronze", strict=True, kafka=probe_of(broker))
    assert report.ok, render_table(report)
    assert broker.assignments == [] and report.check("bronze.offsets_contiguous").counts["kafka"]["gaps"] == 0

# ---- silver ----------------------------------------------------------------------------------------

def test_bronze_record_absent_from_silver_fails_records_accounted(lake):
    report = consistent(lake, drop={(0, 4)}).verify("silver")
    assert "silver.records_accounted" in failed(report)
    assert "conversion-events[0]@4" in report.check("silver.records_accounted").detail


def test_fact_counted_twice_fails_records_accounted_and_unique_event_ids(lake):
    report = consistent(lake, double={(1, 1)}).verify("silver")
    assert {"silver.records_accounted", "silver.fact_event_ids_unique"} <= failed(report)
    assert "conversion-events[1]@1" in report.check("silver.records_accounted").detail


def test_duplicate_kept_instead_of_the_first_arrival_fails_records_accounted(lake):
    lake.land({0: [(0, 7)]}, {0: 1})
    lake.land({1: [(0, 7)]}, {1: 1})  # event 7 again, later
    lake.promote(last_arrival_wins=True)  # silver keeps the later copy
    report = lake.verify("silver")
    assert failed(report) == {"silver.records_accounted"}
    assert "first arrival must win" in report.first_failure.detail


def test_run_stopped_between_silver_commits_is_a_warning(lake):
    consistent(lake)
    upto = lake.land({0: [13, (14, b"[]")]}, {0: 15})
    lake.promoted |= {(0, 13), (0, 14)}
    rejected = [{"reason_codes": ["NOT_AN_OBJECT"], "value": b"[]", "source_topic": TOPIC, "source_partition": 0,
                 "source_offset": 14, "kafka_timestamp": lake.landed[-1][4], "bronze_snapshot_id": upto}]
    lake._append(SILVER_CONVERSION_EVENTS_REJECTED, rejected, {upstream_key(BRONZE): str(upto), REPORT_KEY: "{}"})
    report = lake.verify("silver")  # the quarantine committed, the facts not yet: the next run finishes it
    accounted = report.check("silver.records_accounted")
    assert report.ok and accounted.warning, render_table(report)
    assert accounted.counts["after_older_watermark"] == 1
    assert failed(lake.verify("silver", strict=True)) == {"silver.records_accounted"}


def test_silver_report_that_does_not_add_up_fails_batch_counts(lake):
    report = consistent(lake, report_facts_delta=1).verify("silver")
    assert failed(report) == {"silver.batch_counts"}


def test_overlapping_dim_users_versions_fail_scd2(lake):
    consistent(lake)
    versions = lake.versions()
    first = next(v for v in versions if v["user_id"] == "u-1" and v["valid_to"] is not None)
    first["valid_to"] += timedelta(minutes=30)  # runs into the next version
    lake.write_dim(versions, {upstream_key(BRONZE): str(lake.table(BRONZE_CONVERSION_EVENTS_RAW).current_snapshot().snapshot_id)})
    report = lake.verify("silver")
    assert failed(report) == {"silver.dim_users_scd2"}
    assert "overlapping versions" in report.first_failure.detail


def test_two_current_versions_fail_scd2(lake):
    consistent(lake)
    versions = lake.versions()
    for v in versions:
        v["valid_to"], v["is_current"] = None, True
    lake.write_dim(versions, {upstream_key(BRONZE): str(lake.table(BRONZE_CONVERSION_EVENTS_RAW).current_snapshot().snapshot_id)})
    assert failed(lake.verify("silver")) == {"silver.dim_users_scd2"}


def test_upstream_id_pointing_nowhere_fails_upstream_snapshots(lake):
    consistent(lake)
    facts = lake.table(SILVER_FACT_CONVERSIONS)
    facts.append(facts.schema().as_arrow().empty_table(), snapshot_properties={upstream_key(BRONZE): "12345"})
    report = lake.verify("silver")
    assert "silver.upstream_snapshots" in failed(report)
    assert "12345" in report.check("silver.upstream_snapshots").detail


# ---- gold ------------------------------------------------------------------------------------------

def test_gold_requests_off_by_one_fail_daily_conversion_metrics(lake):
    lake.land({0: [0, 1, 2, 3, 4, 5]}, {0: 6})
    lake.promote()
    lake.build_gold(requests_delta=1)
    report = lake.verify("gold")
    assert failed(report) == {"gold.daily_conversion_metrics"}
    assert "requests: gold" in report.first_failure.detail


def test_recount_agrees_with_the_gold_transform(lake):
    """The recount is plain pyarrow, not tasks/transforms/gold.py: on the same facts (with anonymous
    calls and failures) the real transform's rows pass, so both count the same things."""
    import daft

    from tasks.transforms import gold

    lake.land({0: list(range(12)), 1: list(range(7))}, {0: 12, 1: 7})
    lake.promote()
    facts = lake.table(SILVER_FACT_CONVERSIONS)
    built = gold.daily_conversion_metrics(daft.from_arrow(facts.scan().to_arrow())).to_arrow()
    table = lake.table(GOLD_DAILY_CONVERSION_METRICS)
    table.append(built.cast(table.schema().as_arrow()), snapshot_properties={
        upstream_key(FACTS): str(facts.current_snapshot().snapshot_id)})
    report = lake.verify("gold")
    assert report.ok, render_table(report)
    assert report.check("gold.daily_conversion_metrics").counts["requests"] == 19


def test_gold_is_recounted_at_the_silver_snapshot_it_was_built_from(lake):
    consistent(lake)
    lake.land({0: [13, 14]}, {0: 15})
    lake.promote()  # silver moves on after the gold build
    report = lake.verify()
    assert report.ok, render_table(report)
    assert report.check("gold.daily_conversion_metrics").counts["silver_snapshot"] != \
        lake.table(SILVER_FACT_CONVERSIONS).current_snapshot().snapshot_id


def test_gap_arithmetic_matches_a_brute_force_count():
    """The vectorized gap finding and interval subtraction behind bronze.offsets_contiguous,
    against sets of offsets, over random partitions and explanations."""
    import random

    import numpy as np

    from tasks.verify.bronze import _gaps, _subtract

    rng = random.Random(7)
    for _ in range(300):
        end = rng.randint(1, 60)
        present = sorted(rng.sample(range(end), rng.randint(0, end)))
        start = rng.choice([None, 0, rng.randint(0, end)])
        intervals = [(lo, lo + rng.randint(1, 8)) for lo in (rng.randint(-3, end) for _ in range(rng.randint(0, 4)))]
        a, b = _gaps(np.array(present, dtype=np.int64), start, end)
        first = min(present[0], start) if present and start is not None else present[0] if present else start
        missing = set(range(first, end)) - set(present) if first is not None else set()
        assert {o for lo, hi in zip(a.tolist(), b.tolist()) for o in range(lo, hi)} == missing
        touched, covered, ra, rb = _subtract(a, b, intervals)
        explained = {o for lo, hi in intervals for o in range(lo, hi)}
        assert covered == len(missing & explained)
        assert {o for lo, hi in zip(ra.tolist(), rb.tolist()) for o in range(lo, hi)} == missing - explained
        assert all(lo < hi for lo, hi in zip(ra.tolist(), rb.tolist()))
