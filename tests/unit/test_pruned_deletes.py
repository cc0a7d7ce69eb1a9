"""A late duplicate's delete plans only its days' files of silver.fact_conversions, not all of silver."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import In

from tasks.commits import keys_on_days, replace_filter
from tasks.tables import SILVER_FACT_CONVERSIONS

DAYS = [date(2026, 11, 20) + timedelta(days=n) for n in range(6)]


def _facts(day: date, count: int) -> pa.Table:
    start = datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc)
    return pa.table({
        # key first, as random UUIDs are: every file's event_id bounds span the others' ids
        "event_id": pa.array([f"{n:02d}-{day}" for n in range(count)], pa.string()),
        "occurred_at": pa.array([start + timedelta(hours=n % 24) for n in range(count)], pa.timestamp("us", "UTC")),
        "event_date": pa.array([day] * count, pa.date32()),
    })


@pytest.fixture
def facts(tmp_path):
    """silver.fact_conversions' schema and day partitioning, with two files per day."""
    catalog = SqlCatalog("t", uri=f"sqlite:///{tmp_path / 'c.db'}", warehouse=(tmp_path / "w").as_uri())
    catalog.create_namespace("silver")
    table = catalog.create_table("silver.fact_conversions", schema=SILVER_FACT_CONVERSIONS.schema,
                                 partition_spec=SILVER_FACT_CONVERSIONS.partition_spec)
    target = table.schema().as_arrow()
    for _ in range(2):
        for day in DAYS:
            rows = _facts(day, 30)
            table.append(pa.Table.from_arrays(
                [rows.column(f.name) if f.name in rows.column_names else pa.nulls(rows.num_rows, f.type)
                 for f in target], schema=target))
    return table


def _planned(table, row_filter) -> int:
    return len(list(table.scan(row_filter=row_filter).plan_files()))


def test_the_day_bounded_filter_plans_only_the_late_events_days(facts):
    ids = ["03-2026-11-21", "07-2026-11-23"]
    unbounded = In("event_id", ids)
    bounded = keys_on_days("event_id", ids, "occurred_at", [date(2026, 11, 21), date(2026, 11, 23)])
    assert _planned(facts, unbounded) == 2 * len(DAYS)  # every file of silver
    assert _planned(facts, bounded) == 4  # two days, two files each
    # the same rows match either way
    assert sorted(facts.scan(row_filter=bounded).to_arrow().column("event_id").to_pylist()) == sorted(ids * 2)
    assert facts.scan(row_filter=unbounded).to_arrow().num_rows == 4


def test_the_flows_filter_takes_the_days_from_the_replacing_rows(facts):
    batch = pa.concat_tables([_facts(date(2026, 11, 22), 5), _facts(date(2026, 11, 25), 5)])
    replaced = ["01-2026-11-22", "04-2026-11-25"]
    row_filter = replace_filter(batch, "event_id", replaced, "occurred_at")
    assert _planned(facts, row_filter) == 4
    before = facts.scan().to_arrow().num_rows
    facts.delete(row_filter)
    after = facts.scan().to_arrow()
    assert before - after.num_rows == 4
    assert not set(replaced) & set(after.column("event_id").to_pylist())


def test_a_replacement_without_occurred_at_deletes_by_event_id_alone(facts):
    batch = pa.table({"event_id": ["01-2026-11-22"], "occurred_at": pa.array([None], pa.timestamp("us", "UTC"))})
    assert _planned(facts, replace_filter(batch, "event_id", ["01-2026-11-22"], "occurred_at")) == 2 * len(DAYS)


def test_a_delete_needs_keys_and_days():
    with pytest.raises(ValueError, match="no event_id values"):
        keys_on_days("event_id", [], "occurred_at", [date(2026, 1, 1)])
    with pytest.raises(ValueError, match="no days"):
        keys_on_days("event_id", ["a"], "occurred_at", [])
