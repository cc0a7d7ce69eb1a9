"""Bronze rows → silver facts, quarantine rows and the SCD2 user dimension. Pure Daft, no I/O.

Each function takes and returns Daft DataFrames; the flow reads and commits around them.
Input columns of ``validate``: topic, partition, offset, kafka_timestamp, value, bronze_snapshot_id.
"""

from __future__ import annotations

import hashlib

import daft
import pyarrow as pa
from daft import DataFrame, DataType, Window, col
from daft.functions import rank, when

from tasks.transforms.contract import PARSED_TYPE, check_values


FACT_COLUMNS = (
    "event_id", "event_type", "schema_version", "occurred_at", "event_date", "user_id", "user_plan",
    "user_country", "direction", "input", "output", "success", "error_code", "latency_ms", "endpoint",
    "http_status", "client", "region", "cache_hit", "numeral_value", "source_topic", "source_partition",
    "source_offset", "kafka_timestamp", "bronze_snapshot_id",
)
REJECTED_COLUMNS = (
    "reason_codes", "reject_detail", "value", "source_topic", "source_partition", "source_offset",
    "kafka_timestamp", "bronze_snapshot_id",
)
DIM_USER_COLUMNS = ("user_sk", "user_id", "user_plan", "user_country", "valid_from", "valid_to", "is_current")


@daft.func.batch(return_dtype=DataType.from_arrow_type(PARSED_TYPE), unnest=True)
def _check_values(values: daft.Series, kafka_us: daft.Series, max_value_bytes: int) -> pa.Array:
    return check_values(values.to_arrow(), kafka_us.to_arrow(), max_value_bytes)


def validate(bronze: DataFrame, max_value_bytes: int) -> DataFrame:
    """Every bronze row with its typed fields and its reason codes (empty list when valid).

    The raw value is kept only for rejected rows (the quarantine stores it): a valid row's fields
    say everything, and ~400 bytes a row of JSON carried on would dominate the checked batch.
    """
    kafka_us = col("kafka_timestamp").to_unix_epoch("us")
    checked = bronze.select(
        col("topic").alias("source_topic"),
        col("partition").alias("source_partition"),
        col("offset").alias("source_offset"),
        col("kafka_timestamp"),
        col("value"),
        col("bronze_snapshot_id"),
        _check_values(col("value"), kafka_us, max_value_bytes),
    )
    rejected_value = when(col("reason_codes").list_count() > 0, then=col("value"))  # otherwise null
    return checked.with_columns({
        "occurred_at": col("occurred_at_us").cast(DataType.timestamp("us", "UTC")),
        "value": rejected_value,
    }).exclude("occurred_at_us")


def spread(frame: DataFrame, partitions: int, *keys: str) -> DataFrame:
    """``frame`` in ``partitions`` partitions hashed by ``keys``: every row of one key in one
    partition, so the joins, groupbys and windows over that key run as that many tasks, which
    Ray places on every node and core. With one, ``frame`` is left as it is: the caller keeps it in
    one in-memory partition, which on one small node beats any shuffle. The rows are the same for
    every count."""
    return frame.repartition(partitions, *keys) if partitions > 1 else frame


def rejected(checked: DataFrame) -> DataFrame:
    """Quarantine rows: every record that breaks the contract, with why, its raw bytes and where it came from."""
    return checked.where(col("reason_codes").list_count() > 0).select(*REJECTED_COLUMNS)


def valid(checked: DataFrame) -> DataFrame:
    return (
        checked.where(col("reason_codes").list_count() == 0)
        .with_column("event_date", col("occurred_at").date())
        .select(*FACT_COLUMNS)
    )


# First arrival wins, by a total order on Kafka records: (Kafka timestamp, topic, partition, offset).
# A record is one (topic, partition, offset), so two arrivals of an event never tie; without the topic,
# the same event from two topics at one instant, partition and offset did, and both were kept.
ARRIVAL_ORDER = ("kafka_timestamp", "source_topic", "source_partition", "source_offset")
ARRIVAL_COLUMNS = ("event_id", *ARRIVAL_ORDER)
ROW_KEY = ("event_id", "source_topic", "source_partition", "source_offset")  # one arrival of one event


def later_copies(events: DataFrame) -> DataFrame:
    """The rows (``ROW_KEY``) of repeated event_ids that are not the first arrival (lowest Kafka
    timestamp, then topic, then partition, then offset: ``ARRIVAL_ORDER``).

    Only the few ids that arrive more than once need the arrival order, so only their copies are
    ranked; the result is small. The rank of a copy is 1 + the number of copies strictly before it,
    so the first arrival is never named, even if the same record were read twice.
    """
    copies = events.groupby("event_id").agg(col("event_id").count().alias("copies"))
    repeated = copies.where(col("copies") > 1).select("event_id")
    # the repeated ids are few: broadcast them rather than shuffle every event (on Ray)
    several = events.join(repeated, on="event_id", how="semi", strategy="broadcast").select(*ARRIVAL_COLUMNS)
    by_arrival = Window().partition_by("event_id").order_by(*ARRIVAL_ORDER)
    return several.with_column("arrival", rank().over(by_arrival)).where(col("arrival") > 1).select(*ROW_KEY)


def first_arrivals(events: DataFrame) -> DataFrame:
    """One row per event_id: the first arrival (lowest Kafka timestamp, then topic, then partition,
    then offset)."""
    return without(events, later_copies(events))


def history_matches(batch: DataFrame, history: DataFrame) -> DataFrame:
    """The batch events silver already holds: event_id and whether the batch copy arrived earlier.

    ``history`` has event_id, kafka_timestamp, source_topic, source_partition and source_offset of
    silver rows that could match (same event days). The one join against history; its result is small
    (the duplicates), so the flow materializes it once and ``against_history`` reuses it.
    """
    stored = history.select(
        "event_id",
        col("kafka_timestamp").alias("stored_timestamp"),
        col("source_topic").alias("stored_topic"),
        col("source_partition").alias("stored_partition"),
        col("source_offset").alias("stored_offset"),
    )
    arrived = batch.select(*ARRIVAL_COLUMNS)
    # (timestamp, topic, partition, offset) < the stored one's, lexicographically
    earlier = col("source_offset") < col("stored_offset")
    for mine, theirs in (("source_partition", "stored_partition"), ("source_topic", "stored_topic"),
                         ("kafka_timestamp", "stored_timestamp")):
        earlier = (col(mine) < col(theirs)) | ((col(mine) == col(theirs)) & earlier)
    return arrived.join(stored, on="event_id").select("event_id", earlier.fill_null(False).alias("earlier"))


def against_history(batch: DataFrame, matches: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Split deduplicated batch events by what silver already holds (``history_matches``).

    Returns (rows to insert, event_ids whose silver row an earlier arrival now replaces). Batch rows
    that arrived after the stored one, or are the stored one, are duplicates and are dropped.
    """
    later = matches.where(~col("earlier")).select("event_id")  # a stored copy came first (or is this one)
    earlier = matches.where(col("earlier")).select("event_id")
    replaced = earlier.join(later, on="event_id", how="anti", strategy="broadcast")
    return batch.join(later, on="event_id", how="anti", strategy="broadcast"), replaced


def arrivals(events: DataFrame) -> DataFrame:
    """The narrow columns deduplication needs (plus the day and user the flow reports): the dedup
    joins move these, not the ~25 columns of a fact, which matters most when Ray shuffles them."""
    return events.select(*ARRIVAL_COLUMNS, "event_date", "user_id")


def superseded(batch: DataFrame, matches: DataFrame) -> DataFrame:
    """The rows (``ROW_KEY``) of ``batch`` that silver already holds from an earlier (or the same)
    arrival: duplicates to drop. Small, like ``matches``."""
    later = matches.where(~col("earlier")).select("event_id")
    return batch.join(later, on="event_id", how="semi", strategy="broadcast").select(*ROW_KEY)


def without(events: DataFrame, drop: DataFrame) -> DataFrame:
    """``events`` minus the rows ``drop`` names (``ROW_KEY``: the topic too, since two topics can
    hold the same partition and offset): a broadcast anti-join, the dropped rows are few."""
    key = list(ROW_KEY)
    return events.join(drop.select(*key), on=key, how="anti", strategy="broadcast")


def facts(rows: DataFrame) -> DataFrame:
    return rows.select(*FACT_COLUMNS)


# ---- SCD Type 2 users ---------------------------------------------------------------------------

def user_versions(events: DataFrame) -> DataFrame:
    """The SCD2 dimension of the users in ``events`` (all their valid events, any order).

    A version is a maximal run of consecutive events (by occurred_at, then event_id) with the same
    plan and country; valid_to is the next version's valid_from. Anonymous events are ignored.
    The result depends only on the set of events, never on their arrival order or batching.
    """
    import daft.functions as F
    from daft import Window

    known = events.where(col("user_id").not_null()).select(
        "user_id", "occurred_at", "event_id", "user_plan", "user_country"
    )
    by_time = Window().partition_by("user_id").order_by("occurred_at", "event_id")
    attrs_before = F.lag(col("user_plan"), 1).over(by_time), F.lag(col("user_country"), 1).over(by_time)
    flagged = known.with_columns(
        {
            "prev_plan": attrs_before[0],
            "prev_country": attrs_before[1],
            "first": F.row_number().over(by_time) == 1,
        }
    )
    starts = flagged.where(
        col("first")
        | ~col("user_plan").eq_null_safe(col("prev_plan"))
        | ~col("user_country").eq_null_safe(col("prev_country"))
    ).select("user_id", "user_plan", "user_country", col("occurred_at").alias("valid_from"), "event_id")
    by_start = Window().partition_by("user_id").order_by("valid_from", "event_id")
    versions = starts.with_column("valid_to", F.lead(col("valid_from"), 1).over(by_start))
    return versions.select(
        _surrogate_key(col("user_id"), col("valid_from"), col("event_id")).alias("user_sk"),
        "user_id",
        "user_plan",
        "user_country",
        "valid_from",
        "valid_to",
        col("valid_to").is_null().alias("is_current"),
    )


def events_of(facts: DataFrame, users: DataFrame) -> DataFrame:
    """The facts of ``users`` (a ``user_id`` column), as user_versions needs them.

    A semi-join with the ids broadcast: filtering with is_in over thousands of ids costs several
    times more.
    """
    return facts.select("user_id", "occurred_at", "event_id", "user_plan", "user_country").join(
        users.select("user_id"), on="user_id", how="semi", strategy="broadcast"
    )


def disrupted_users(events: DataFrame, versions: DataFrame) -> DataFrame:
    """The users (one ``user_id`` column) whose SCD2 versions ``events`` may change.

    ``versions`` are the dimension's current rows of those users. An event strictly inside one of
    its user's versions (after valid_from, before valid_to) with that version's plan and country
    changes nothing: the runs, their starts and ends stay the same. Every other event (a different
    plan or country, on a version boundary, before the first version, or of a user without versions)
    may split, merge or start a version, so its user is rebuilt from all their facts. Only those
    users are; in steady state that is the users whose plan or country just changed.
    """
    known = events.where(col("user_id").not_null()).select(
        col("user_id").cast(DataType.string()), "occurred_at", "user_plan", "user_country"
    )
    spans = versions.select(
        "user_id",
        col("user_plan").alias("version_plan"),
        col("user_country").alias("version_country"),
        "valid_from",
        "valid_to",
    )
    # A user's versions don't overlap, so an event sits inside at most one: a user is untouched
    # exactly when every one of their events is absorbed. Counting avoids a join on the events.
    absorbed = (
        known.join(spans, on="user_id", strategy="broadcast")
        .where(
            (col("occurred_at") > col("valid_from"))
            & (col("valid_to").is_null() | (col("occurred_at") < col("valid_to")))
            & col("user_plan").eq_null_safe(col("version_plan"))
            & col("user_country").eq_null_safe(col("version_country"))
        )
        .groupby("user_id")
        .agg(col("user_id").count().alias("absorbed"))
    )
    arrived = known.groupby("user_id").agg(col("user_id").count().alias("events"))
    return (
        arrived.join(absorbed, on="user_id", how="left")
        .where(col("absorbed").is_null() | (col("absorbed") < col("events")))
        .select("user_id")
    )


@daft.func.batch(return_dtype=DataType.int64())
def _surrogate_key(user_ids: daft.Series, valid_from: daft.Series, first_events: daft.Series) -> pa.Array:
    """Deterministic user_sk from the version's user, start and first event: the same version
    always gets the same key, and two versions starting at the same instant still differ."""
    out = []
    for user, start, first in zip(user_ids.to_pylist(), valid_from.to_pylist(), first_events.to_pylist()):
        digest = hashlib.blake2b(f"{user}|{start.isoformat()}|{first}".encode(), digest_size=8).digest()
        out.append(int.from_bytes(digest, "big", signed=True) & 0x7FFF_FFFF_FFFF_FFFF)
    return pa.array(out, pa.int64())
