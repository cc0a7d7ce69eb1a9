"""The Daft jobs of one silver promotion: read, run the pure transforms, collect. No commits.

Each function runs where ``tasks.daft_host`` puts it (a warm actor on the Ray cluster, or the
flow's process) and returns what the flow's thin tasks commit: Arrow tables and small lists.
They open the catalog from Settings themselves, because a catalog object does not travel.
"""

from __future__ import annotations

from dataclasses import dataclass

import daft
import pyarrow as pa
from daft import DataFrame, col

from tasks.catalog import io_config, open_catalog
from tasks.scans import Increment, read_bronze_increment, read_days, read_users
from tasks.settings import Settings
from tasks.tables import SILVER_DIM_USERS, SILVER_FACT_CONVERSIONS, ensure_table
from tasks.transforms import silver


def check_increment(settings: Settings, increment: Increment) -> DataFrame:
    """The increment's bronze rows, validated once, in ``compute_partitions`` partitions hashed
    by event_id (``silver.spread``), kept where they were computed.

    With one, as one in-memory partition: on Ray every later join, groupby or window over the
    many partitions of a collected scan shuffles them (seconds each on a small box), while over
    one partition it runs in a single task. With more, every copy of an event sits in one
    partition and dedup runs as that many tasks over the cluster's nodes. Validation itself runs
    in parallel either way."""
    bronze = read_bronze_increment(increment, io_config(settings, "silver"))
    checked = silver.validate(bronze, settings.silver_max_value_bytes)
    if settings.compute_partitions <= 1:
        return daft.from_arrow(checked.to_arrow())
    return silver.spread(checked, settings.compute_partitions, "event_id").collect()


def rejected_rows(checked: DataFrame) -> pa.Table:
    return silver.rejected(checked).to_arrow()


@dataclass(frozen=True)
class NewFacts:
    """The facts to append, and what deduplication decided."""

    rows: pa.Table
    replaced_ids: list[str]  # stored events an earlier arrival in this batch replaces
    dropped: int  # duplicates dropped, within the batch and against history
    users: list[str]  # the batch's known users


def new_facts(settings: Settings, checked: DataFrame) -> NewFacts:
    """Deduplicate within the batch and against all of silver: the first arrivals to append.

    History is read only for the event days in the batch: a duplicate carries the same body, so
    the same occurred_at, so memory follows the batch, not silver's size. Dedup runs on narrow
    arrival columns and yields the few rows to drop; the facts are the candidates minus those,
    in one pass over the checked batch at the end.
    """
    candidates = silver.valid(checked)
    arrived = silver.arrivals(candidates).collect()
    drop = silver.later_copies(arrived).collect()
    batch = silver.without(arrived, drop).collect()
    facts_table = ensure_table(open_catalog(settings, "silver"), settings, SILVER_FACT_CONVERSIONS)
    days = [d for d in batch.select("event_date").distinct().to_pydict()["event_date"] if d is not None]
    # the arrival order needs the stored row's topic too: (timestamp, topic, partition, offset)
    history = read_days(facts_table, days, list(silver.ARRIVAL_COLUMNS), io_config(settings, "silver"))
    replaced_ids: list[str] = []
    if history is not None:
        # one join against history (five narrow columns); its small result serves both outputs. It
        # is held as one in-memory partition: once history passes Daft's broadcast threshold the
        # join hashes both sides, and its few rows would stay spread over that many partitions,
        # which every later join then shuffles (minutes per batch at ~1M silver rows, not seconds)
        matches = daft.from_arrow(silver.history_matches(batch, history).to_arrow())
        replaced_ids = sorted(set(silver.against_history(batch, matches)[1].to_pydict()["event_id"]))
        drop = drop.concat(silver.superseded(batch, matches))
    rows = silver.facts(silver.without(candidates, drop)).to_arrow()
    users = batch.where(col("user_id").not_null()).select("user_id").distinct().to_pydict()["user_id"]
    dropped = arrived.count_rows() - rows.num_rows + len(replaced_ids)
    return NewFacts(rows, replaced_ids, dropped, sorted(users))


def rebuilt_user_versions(settings: Settings, checked: DataFrame, users: list[str]) -> tuple[pa.Table, list[str]]:
    """The SCD2 versions of the touched users the batch may change, rebuilt from all their facts
    (silver.fact_conversions as committed), and those users.

    A user whose new events all sit inside a version with that version's plan and country keeps
    their versions as they are (see ``silver.disrupted_users``); the others are rebuilt from every
    fact they have, so the result never depends on arrival order or batching.
    """
    catalog = open_catalog(settings, "silver")
    dim_table = ensure_table(catalog, settings, SILVER_DIM_USERS)
    versions = read_users(dim_table, users, ["user_id", "user_plan", "user_country", "valid_from", "valid_to"],
                          io_config(settings, "silver"))
    rebuild = users
    if versions is not None and users:
        rebuild = sorted(silver.disrupted_users(silver.valid(checked), versions).to_pydict()["user_id"])
    facts_table = ensure_table(catalog, settings, SILVER_FACT_CONVERSIONS)
    if not rebuild or facts_table.current_snapshot() is None:
        return pa.table({name: pa.array([], pa.null()) for name in silver.DIM_USER_COLUMNS}), rebuild
    wanted = daft.from_arrow(pa.table({"user_id": pa.array(rebuild, pa.string())}))
    events = silver.events_of(daft.read_iceberg(facts_table, io_config=io_config(settings, "silver")), wanted)
    if settings.compute_partitions <= 1:
        # the windows run over one in-memory partition: over the scan's partitions Ray shuffles them
        events = daft.from_arrow(events.to_arrow())
    else:  # each user's events in one of N partitions: the windows run as N tasks over the cluster
        events = silver.spread(events, settings.compute_partitions, "user_id")
    # one order for every partition count: the committed file is the same
    versions = silver.user_versions(events).to_arrow().sort_by([("user_id", "ascending"), ("valid_from", "ascending")])
    return versions, rebuild
